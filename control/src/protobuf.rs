//! Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`), read side: turns a
//! request body into the JSON object the rest of the API server works with. Pure.
//!
//! client-go's generated clientsets send built-in kinds as protobuf and nothing makes them fall
//! back to JSON (a 415 only turns CBOR off), so `kubectl create configmap`, `create deployment`,
//! `drain` (its DeleteOptions) and every Go controller write protobuf. They all accept JSON
//! answers (`Accept: application/vnd.kubernetes.protobuf,application/json`), so only request
//! bodies need decoding.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` whose `typeMeta` names the kind
//! and whose `raw` is the object's message. The messages are described by Berth's own schema in
//! `control/proto` (compiled by `build.rs`), a subset of Kubernetes' covering what kubectl's
//! generators send. Protobuf readers skip fields they do not know, which here would silently
//! lose part of what the client asked for, so a kind or a field number outside the schema is
//! refused ([`DecodeError::Unsupported`], a 415 that asks for JSON) instead.
//!
//! The JSON follows Go's encoding of the same structs: field names as in JSON, `metav1.Time` as
//! RFC 3339, `IntOrString` as a number or a string, `Quantity` as its string, bytes as base64,
//! and zero scalars dropped unless the Go field is a pointer or has no `omitempty`
//! (`proto/fields.txt`).

use base64::Engine;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value as Proto};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::LazyLock;

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// What every Kubernetes protobuf body starts with.
const MAGIC: &[u8] = b"k8s\0";

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";

/// The kinds the schema describes, by `apiVersion` and `kind`: what kubectl's generators
/// create. Explicit, so that a message that is only ever part of an object (`PodSpec`) is not
/// taken for a kind.
const KINDS: &[(&str, &str, &str)] = &[
    ("v1", "ConfigMap", "k8s.io.api.core.v1.ConfigMap"),
    ("v1", "Secret", "k8s.io.api.core.v1.Secret"),
    ("v1", "Namespace", "k8s.io.api.core.v1.Namespace"),
    ("v1", "ServiceAccount", "k8s.io.api.core.v1.ServiceAccount"),
    ("v1", "Service", "k8s.io.api.core.v1.Service"),
    ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment"),
    ("batch/v1", "Job", "k8s.io.api.batch.v1.Job"),
];

/// Refusals end with this: JSON bodies carry any field of any kind.
const SEND_JSON: &str = "send JSON (e.g. kubectl apply -f)";

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    // Compiled by build.rs from files in the repository: failing to read it is a broken build.
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/kubernetes.fds")).as_ref())
        .expect("the descriptor set compiled by build.rs decodes")
});

/// `proto/fields.txt`: the `message.field` names whose zero value is kept (`... keep` lines).
static KEEP: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../proto/fields.txt")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.strip_suffix(" keep"))
        .collect()
});

/// Why a protobuf body was not decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not well-formed Kubernetes protobuf: 400 Bad Request.
    #[error("{0}")]
    Malformed(String),
    /// Well-formed, but with a kind or field outside Berth's schema: 415 Unsupported Media
    /// Type, since decoding it would drop part of the object.
    #[error("{0}")]
    Unsupported(String),
}

/// True if `media_type` (without parameters) is Kubernetes' protobuf.
pub fn is_protobuf(media_type: &str) -> bool {
    media_type.eq_ignore_ascii_case(MEDIA_TYPE)
}

/// Decodes a protobuf request body into the JSON form of the object it carries, with
/// `apiVersion` and `kind` from its envelope. The error says what is wrong with the body.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let malformed = DecodeError::Malformed;
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("the body does not start with the Kubernetes protobuf prefix \"k8s\\x00\"".into()))?;
    let unknown_desc = POOL.get_message_by_name(UNKNOWN).expect("the schema describes runtime.Unknown");
    let unknown = DynamicMessage::decode(unknown_desc, envelope)
        .map_err(|e| malformed(format!("the protobuf envelope is malformed: {e}")))?;
    refuse_unknown_fields(&unknown, "")?;
    let type_meta = match unknown.get_field_by_name("typeMeta").as_deref() {
        Some(Proto::Message(m)) => m.clone(),
        _ => return Err(malformed("the protobuf envelope has no typeMeta".into())),
    };
    refuse_unknown_fields(&type_meta, "")?;
    let (api_version, kind) = (string(&type_meta, "apiVersion"), string(&type_meta, "kind"));
    let encoding = string(&unknown, "contentEncoding");
    if !encoding.is_empty() {
        return Err(DecodeError::Unsupported(format!(
            "content encoding {encoding:?} of protobuf bodies is not supported: {SEND_JSON}"
        )));
    }
    let desc = message_for(&api_version, &kind).ok_or_else(|| {
        DecodeError::Unsupported(format!(
            "this server decodes protobuf bodies only for the kinds kubectl's generators send; \
             kind {kind:?} of {api_version:?} is not among them: {SEND_JSON}"
        ))
    })?;
    let object = DynamicMessage::decode(desc, bytes(&unknown, "raw").as_slice())
        .map_err(|e| malformed(format!("{kind} is malformed: {e}")))?;
    let mut json = message_json(&object, "")?;
    if let Value::Object(map) = &mut json {
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!(kind));
    }
    Ok(json)
}

/// The message of `kind` in `api_version`: one of [`KINDS`], or DeleteOptions, which every
/// group version carries (client-go sends it with the version of the resource it deletes).
fn message_for(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let name = match KINDS.iter().find(|(v, k, _)| *v == api_version && *k == kind) {
        Some((_, _, message)) => message.to_string(),
        None if kind == "DeleteOptions" => format!("{META}.DeleteOptions"),
        None => return None,
    };
    Some(POOL.get_message_by_name(&name).expect("every kind in KINDS is described"))
}

/// Refuses `message` if its body had a field number its descriptor does not list: prost-reflect
/// keeps such fields aside instead of failing, and turning the rest into JSON would lose them.
/// `path` is where the message sits in the object's JSON, for the error.
fn refuse_unknown_fields(message: &DynamicMessage, path: &str) -> Result<(), DecodeError> {
    match message.unknown_fields().next() {
        None => Ok(()),
        Some(field) => {
            let place = if path.is_empty() { String::new() } else { format!(" (at {path})") };
            Err(DecodeError::Unsupported(format!(
                "this server decodes protobuf bodies only for the fields kubectl's generators send; \
                 field {} of {}{place} is not among them: {SEND_JSON}",
                field.number(),
                message.descriptor().full_name(),
            )))
        }
    }
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The JSON of `message`, found at `path` in the object; every message on the way is checked
/// for fields outside the schema.
fn message_json(message: &DynamicMessage, path: &str) -> Result<Value, DecodeError> {
    refuse_unknown_fields(message, path)?;
    let desc = message.descriptor();
    let name = desc.full_name();
    // Types whose Go JSON encoding is custom.
    match name {
        "k8s.io.apimachinery.pkg.apis.meta.v1.Time" => return time(message),
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => {
            return Ok(if int(message, "type") == 1 {
                json!(string(message, "strVal"))
            } else {
                json!(int(message, "intVal"))
            })
        }
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => return Ok(json!(string(message, "string"))),
        "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1" => return fields_v1(&bytes(message, "Raw")),
        _ => {}
    }
    let mut out = Map::new();
    for (field, value) in message.fields() {
        let keep = KEEP.contains(format!("{name}.{}", field.name()).as_str());
        let json = match value {
            Proto::List(items) if items.is_empty() => continue,
            Proto::Map(entries) if entries.is_empty() => continue,
            scalar if is_zero(scalar) && !keep => continue,
            other => value_json(other, &child(path, field.name()))?,
        };
        if !json.is_null() {
            out.insert(field.name().to_string(), json);
        }
    }
    Ok(Value::Object(out))
}

fn value_json(value: &Proto, path: &str) -> Result<Value, DecodeError> {
    Ok(match value {
        Proto::Bool(b) => json!(b),
        Proto::I32(n) | Proto::EnumNumber(n) => json!(n),
        Proto::I64(n) => json!(n),
        Proto::U32(n) => json!(n),
        Proto::U64(n) => json!(n),
        Proto::F32(n) => json!(n),
        Proto::F64(n) => json!(n),
        Proto::String(s) => json!(s),
        // Go encodes []byte as standard base64.
        Proto::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Proto::Message(m) => message_json(m, path)?,
        Proto::List(items) => Value::Array(
            items.iter().enumerate().map(|(i, v)| value_json(v, &format!("{path}[{i}]"))).collect::<Result<_, _>>()?,
        ),
        Proto::Map(entries) => {
            // Sorted, so the same body always gives the same JSON.
            let mut map = Map::new();
            let mut sorted: Vec<_> = entries.iter().map(|(k, v)| (map_key(k), v)).collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, v) in sorted {
                let json = value_json(v, &format!("{path}[{key}]"))?;
                map.insert(key, json);
            }
            Value::Object(map)
        }
    })
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

fn is_zero(value: &Proto) -> bool {
    match value {
        Proto::Bool(b) => !b,
        Proto::I32(n) | Proto::EnumNumber(n) => *n == 0,
        Proto::I64(n) => *n == 0,
        Proto::U32(n) => *n == 0,
        Proto::U64(n) => *n == 0,
        Proto::F32(n) => *n == 0.0,
        Proto::F64(n) => *n == 0.0,
        Proto::String(s) => s.is_empty(),
        Proto::Bytes(b) => b.is_empty(),
        Proto::Message(_) | Proto::List(_) | Proto::Map(_) => false,
    }
}

fn int(message: &DynamicMessage, field: &str) -> i64 {
    match message.get_field_by_name(field).as_deref() {
        Some(Proto::I32(n)) => i64::from(*n),
        Some(Proto::I64(n)) => *n,
        _ => 0,
    }
}

fn string(message: &DynamicMessage, field: &str) -> String {
    match message.get_field_by_name(field).as_deref() {
        Some(Proto::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn bytes(message: &DynamicMessage, field: &str) -> Vec<u8> {
    match message.get_field_by_name(field).as_deref() {
        Some(Proto::Bytes(b)) => b.to_vec(),
        _ => Vec::new(),
    }
}

/// `metav1.Time`; the zero time is JSON `null`.
fn time(message: &DynamicMessage) -> Result<Value, DecodeError> {
    let (seconds, nanos) = (int(message, "seconds"), int(message, "nanos"));
    if seconds == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let t = chrono::DateTime::from_timestamp(seconds, u32::try_from(nanos).unwrap_or(0))
        .ok_or_else(|| DecodeError::Malformed(format!("time {seconds}s is out of range")))?;
    Ok(json!(crate::meta::timestamp(t)))
}

/// The field set of a managedFields entry, which `FieldsV1` carries as JSON text.
fn fields_v1(raw: &[u8]) -> Result<Value, DecodeError> {
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(raw).map_err(|e| DecodeError::Malformed(format!("fieldsV1 is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::{encode_key, encode_varint, WireType};
    use prost::Message;

    /// Request bodies captured from kubectl v1.32 (`kubectl -v=9`).
    const CONFIGMAP: &[u8] = include_bytes!("../testdata/protobuf/configmap.pb");
    const DEPLOYMENT: &[u8] = include_bytes!("../testdata/protobuf/deployment.pb");
    const SERVICE: &[u8] = include_bytes!("../testdata/protobuf/service.pb");
    const JOB: &[u8] = include_bytes!("../testdata/protobuf/job.pb");
    const NAMESPACE: &[u8] = include_bytes!("../testdata/protobuf/namespace.pb");
    const SECRET: &[u8] = include_bytes!("../testdata/protobuf/secret.pb");
    const SERVICE_ACCOUNT: &[u8] = include_bytes!("../testdata/protobuf/serviceaccount.pb");
    const DELETE_OPTIONS: &[u8] = include_bytes!("../testdata/protobuf/drain-deleteoptions.pb");

    /// Field `number` holding `value` (a string or a message), as on the wire.
    fn wire(number: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(number, WireType::LengthDelimited, &mut out);
        encode_varint(value.len() as u64, &mut out);
        out.extend_from_slice(value);
        out
    }

    /// A whole body: the magic and an envelope around `raw`.
    fn body(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [wire(1, api_version.as_bytes()), wire(2, kind.as_bytes())].concat();
        [MAGIC, &wire(1, &type_meta), &wire(2, raw)].concat()
    }

    /// The object message inside a captured body.
    fn raw_of(captured: &[u8]) -> Vec<u8> {
        let envelope = DynamicMessage::decode(POOL.get_message_by_name(UNKNOWN).unwrap(), &captured[4..]).unwrap();
        bytes(&envelope, "raw")
    }

    fn unsupported(body: &[u8]) -> String {
        match decode(body) {
            Err(DecodeError::Unsupported(message)) => message,
            other => panic!("not refused as unsupported: {other:?}"),
        }
    }

    #[test]
    fn kubectl_create_bodies_decode_as_kubectl_would_write_them_in_json() {
        // The JSON kubectl prints for the same command with `--dry-run=client -o json`, minus
        // `creationTimestamp: null` and empty `status` objects (absent and null are the same).
        assert_eq!(
            decode(CONFIGMAP).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b", "e": ""}})
        );
        assert_eq!(
            decode(DEPLOYMENT).unwrap(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "d", "labels": {"app": "d"}},
                   "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}}, "strategy": {},
                            "template": {"metadata": {"labels": {"app": "d"}},
                                         "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {},
                                                                  "ports": [{"containerPort": 80}]}]}}},
                   "status": {}})
        );
        assert_eq!(
            decode(SERVICE).unwrap(),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "labels": {"app": "svc"}},
                   "spec": {"type": "ClusterIP", "selector": {"app": "svc"},
                            "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}]},
                   "status": {"loadBalancer": {}}})
        );
        let job = decode(JOB).unwrap();
        assert_eq!(job["kind"], "Job");
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0],
            json!({"name": "j", "image": "busybox", "command": ["echo", "hi"], "resources": {}})
        );
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(
            decode(NAMESPACE).unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n1"}, "spec": {}, "status": {}})
        );
        assert_eq!(
            decode(SECRET).unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "Yg=="}})
        );
        assert_eq!(
            decode(SERVICE_ACCOUNT).unwrap(),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}})
        );
    }

    #[test]
    fn a_pointer_to_zero_survives() {
        // `kubectl drain --grace-period=0`: gracePeriodSeconds is *int64, so 0 means "now".
        assert_eq!(
            decode(DELETE_OPTIONS).unwrap(),
            json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
        );
    }

    #[test]
    fn metadata_and_container_fields_beyond_the_captures_decode() {
        // metadata: annotations, finalizers, an owner, a managedFields entry, a creation time.
        let time = [vec![0x08], {
            let mut v = Vec::new();
            encode_varint(1_735_689_600, &mut v);
            v
        }]
        .concat();
        let owner =
            [wire(1, b"ReplicaSet"), wire(3, b"rs"), wire(4, b"u1"), wire(5, b"apps/v1"), vec![0x30, 0x01]].concat();
        let managed = [wire(1, b"kubectl"), wire(2, b"Update"), wire(7, &wire(1, br#"{"f:data":{}}"#))].concat();
        let annotation = [wire(1, b"note"), wire(2, b"")].concat();
        let meta = [
            wire(2, b"gen-"),
            wire(8, &time),
            wire(12, &annotation),
            wire(13, &owner),
            wire(14, b"example.com/keep"),
            wire(17, &managed),
        ]
        .concat();
        let cm = decode(&body("v1", "ConfigMap", &wire(1, &meta))).unwrap();
        assert_eq!(
            cm["metadata"],
            json!({"generateName": "gen-", "creationTimestamp": "2025-01-01T00:00:00Z", "annotations": {"note": ""},
                   "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "u1", "apiVersion": "apps/v1", "controller": true}],
                   "finalizers": ["example.com/keep"],
                   "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:data": {}}}]})
        );
        // A container with args, env, resources and pull policy; a string IntOrString.
        let quantity = |q: &str| wire(1, q.as_bytes());
        let limits = [wire(1, b"cpu"), wire(2, &quantity("500m"))].concat();
        let requests = [wire(1, b"memory"), wire(2, &quantity("64Mi"))].concat();
        let env = [wire(1, b"MODE"), wire(2, b"fast")].concat();
        let container = [
            wire(1, b"c"),
            wire(2, b"nginx"),
            wire(4, b"--quiet"),
            wire(7, &env),
            wire(8, &[wire(1, &limits), wire(2, &requests)].concat()),
            wire(13, b"/dev/termination-log"),
            wire(14, b"IfNotPresent"),
            wire(20, b"File"),
        ]
        .concat();
        let strategy =
            [wire(1, b"RollingUpdate"), wire(2, &wire(2, &[vec![0x08, 0x01], wire(3, b"25%")].concat()))].concat();
        let spec =
            [wire(3, &wire(2, &[wire(2, &container), wire(3, b"Always")].concat())), wire(4, &strategy)].concat();
        let d = decode(&body("apps/v1", "Deployment", &wire(2, &spec))).unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"],
            json!({"restartPolicy": "Always", "containers": [{
                "name": "c", "image": "nginx", "args": ["--quiet"], "env": [{"name": "MODE", "value": "fast"}],
                "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}},
                "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent",
                "terminationMessagePolicy": "File"}]})
        );
        assert_eq!(d["spec"]["strategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}));
    }

    #[test]
    fn a_field_outside_the_schema_is_refused_not_dropped() {
        // A toleration (PodSpec field 22) in a Deployment's pod template.
        let toleration = wire(1, b"dedicated");
        let pod_spec = [wire(2, &wire(1, b"c")), wire(22, &toleration)].concat();
        let deployment = wire(2, &wire(3, &wire(2, &pod_spec)));
        assert_eq!(
            unsupported(&body("apps/v1", "Deployment", &deployment)),
            "this server decodes protobuf bodies only for the fields kubectl's generators send; field 22 of \
             k8s.io.api.core.v1.PodSpec (at spec.template.spec) is not among them: send JSON (e.g. kubectl apply -f)"
        );
        // An unknown varint at the top of a captured ConfigMap, and inside a container's
        // resources (a Quantity's field 2), are refused the same way.
        let mut raw = raw_of(CONFIGMAP);
        raw.extend([0x48, 0x01]);
        assert!(unsupported(&body("v1", "ConfigMap", &raw)).contains("field 9 of k8s.io.api.core.v1.ConfigMap is not"));
        let limits = [wire(1, b"cpu"), wire(2, &[wire(1, b"1"), vec![0x10, 0x01]].concat())].concat();
        let container = [wire(1, b"c"), wire(8, &wire(1, &limits))].concat();
        let job = wire(2, &wire(6, &wire(2, &wire(2, &container))));
        let message = unsupported(&body("batch/v1", "Job", &job));
        assert!(
            message.contains(
                "field 2 of k8s.io.apimachinery.pkg.api.resource.Quantity \
                              (at spec.template.spec.containers[0].resources.limits[cpu])"
            ),
            "{message}"
        );
        // And in the envelope.
        let mut envelope = CONFIGMAP.to_vec();
        envelope.extend([0x28, 0x01]);
        assert!(unsupported(&envelope).contains("field 5 of k8s.io.apimachinery.pkg.runtime.Unknown"));
    }

    #[test]
    fn a_kind_outside_the_schema_is_refused() {
        let message = unsupported(&body("v1", "Pod", &wire(1, &wire(1, b"p"))));
        assert_eq!(
            message,
            "this server decodes protobuf bodies only for the kinds kubectl's generators send; kind \"Pod\" of \
             \"v1\" is not among them: send JSON (e.g. kubectl apply -f)"
        );
        // A message that is only part of objects is no kind; a kind in the wrong group neither.
        assert!(unsupported(&body("v1", "PodSpec", b"")).contains("kind \"PodSpec\""));
        assert!(unsupported(&body("v1", "Deployment", b"")).contains("kind \"Deployment\" of \"v1\""));
        // DeleteOptions come with the version of whatever is deleted.
        assert_eq!(decode(&body("apps/v1", "DeleteOptions", b"")).unwrap()["kind"], "DeleteOptions");
    }

    #[test]
    fn bad_bodies_are_errors() {
        let malformed = |b: &[u8]| match decode(b) {
            Err(DecodeError::Malformed(message)) => message,
            other => panic!("not malformed: {other:?}"),
        };
        assert!(malformed(b"{}").contains("prefix"));
        assert!(malformed(b"k8s\0\xff\xff").contains("malformed"));
        let truncated = &DEPLOYMENT[..DEPLOYMENT.len() - 20];
        assert!(decode(truncated).is_err());
        let mut encoded = Vec::new();
        encode_key(3, WireType::LengthDelimited, &mut encoded);
        encode_varint(4, &mut encoded);
        encoded.extend(b"gzip");
        let gzip = [CONFIGMAP, &encoded].concat();
        assert!(unsupported(&gzip).contains("content encoding \"gzip\""));
    }

    #[test]
    fn every_kept_field_is_a_scalar_of_the_schema() {
        // `keep` only changes how a zero scalar is treated; anything else is a typo.
        assert!(KEEP.len() > 40, "fields.txt is read");
        for field in KEEP.iter() {
            let (message, name) = field.rsplit_once('.').unwrap();
            let desc = POOL.get_message_by_name(message).unwrap_or_else(|| panic!("{message}"));
            let f = desc.get_field_by_name(name).unwrap_or_else(|| panic!("{field}"));
            assert!(!f.is_list() && !f.is_map() && f.kind().as_message().is_none(), "{field}");
        }
    }

    #[test]
    fn every_kind_is_described() {
        for (_, kind, message) in KINDS {
            assert_eq!(POOL.get_message_by_name(message).unwrap().name(), *kind);
        }
        // A captured envelope re-encodes byte for byte: the schema has all of its fields.
        let envelope = DynamicMessage::decode(POOL.get_message_by_name(UNKNOWN).unwrap(), &CONFIGMAP[4..]).unwrap();
        assert_eq!(envelope.encode_to_vec(), CONFIGMAP[4..].to_vec());
    }

    #[test]
    fn special_types() {
        assert_eq!(fields_v1(b"{\"a\":1}").unwrap(), json!({"a": 1}));
        assert!(fields_v1(b"\x01").is_err());
        let time_desc = POOL.get_message_by_name(&format!("{META}.Time")).unwrap();
        let mut t = DynamicMessage::new(time_desc);
        t.set_field_by_name("seconds", Proto::I64(1_735_689_600));
        assert_eq!(message_json(&t, "").unwrap(), json!("2025-01-01T00:00:00Z"));
    }
}
