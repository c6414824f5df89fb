//! The life cycle of an object on write, pure: decoding a request body as its kind (with
//! `fieldValidation`), the metadata the server owns (uid, creationTimestamp, generation,
//! managedFields), status/spec separation between a resource and its `status` subresource,
//! defaulting and validation.

use super::request::{FieldValidation, Subresource};
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::patch::apply::{record_update, Writer};
use crate::registry::{DefaultCtx, Resource};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Metadata fields only the server sets.
const SYSTEM_FIELDS: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
    "managedFields",
];

/// Decodes a request body as `resource`'s kind. Returns the object normalised through the
/// kind's type (unknown fields dropped) and the warnings to send; under Strict, unknown fields
/// are an error.
pub fn decode(resource: &Resource, input: &Value, validation: FieldValidation) -> ApiResult<(Value, Vec<String>)> {
    let kind = resource.kind;
    let api_version = resource.api_version();
    let Some(map) = input.as_object() else {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: the body is not a JSON object",
            resource.version
        )));
    };
    if let Some(v) = map.get("apiVersion").and_then(Value::as_str) {
        if v != api_version {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    if let Some(k) = map.get("kind").and_then(Value::as_str) {
        if k != kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({kind})"
            )));
        }
    }
    let mut object = input.clone();
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    let cannot = |why: String| {
        ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: {why}",
            resource.version
        ))
    };
    let normalised = resource.types.round_trip(&object).map_err(cannot)?;
    let mut unknown = Vec::new();
    unknown_fields(&object, &normalised, "", &mut unknown);
    let mut warnings = Vec::new();
    match validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
            return Err(cannot(format!("strict decoding error: {}", list.join(", "))));
        }
        FieldValidation::Warn => warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\""))),
        _ => {}
    }
    Ok((normalised, warnings))
}

/// Paths of fields present (non-null) in `input` but dropped by decoding into the kind's type.
pub fn unknown_fields(input: &Value, decoded: &Value, path: &str, out: &mut Vec<String>) {
    match (input, decoded) {
        (Value::Object(i), Value::Object(d)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match d.get(k) {
                    None => out.push(p),
                    Some(dv) => unknown_fields(v, dv, &p, out),
                }
            }
        }
        (Value::Array(i), Value::Array(d)) if i.len() == d.len() => {
            for (n, (iv, dv)) in i.iter().zip(d).enumerate() {
                unknown_fields(iv, dv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// `input` without the fields decoding dropped: a partial object (an apply configuration)
/// keeps only what it said, unlike the decoded form, which has every required field.
pub fn prune(input: &Value, decoded: &Value) -> Value {
    match (input, decoded) {
        (Value::Object(i), Value::Object(d)) => Value::Object(
            i.iter()
                .filter_map(|(k, v)| d.get(k).map(|dv| (k.clone(), if v.is_null() { v.clone() } else { prune(v, dv) })))
                .collect(),
        ),
        (Value::Array(i), Value::Array(d)) if i.len() == d.len() => {
            Value::Array(i.iter().zip(d).map(|(iv, dv)| prune(iv, dv)).collect())
        }
        _ => input.clone(),
    }
}

/// What a write needs besides the objects.
pub struct WriteCtx<'a> {
    pub resource: &'static Resource,
    pub namespace: Option<&'a str>,
    pub manager: &'a str,
    pub now: DateTime<Utc>,
}

impl WriteCtx<'_> {
    fn writer<'b>(&'b self, now: &'b str, subresource: &'b str, api_version: &'b str) -> Writer<'b> {
        Writer { kind: self.resource.kind, manager: self.manager, api_version, subresource, now }
    }
}

fn metadata(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("just ensured")
}

pub fn name_of(object: &Value) -> &str {
    object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

/// Checks and fills `metadata.namespace` against the request's namespace.
pub fn place(resource: &Resource, object: &mut Value, namespace: Option<&str>) -> ApiResult<()> {
    let meta = metadata(object);
    if !resource.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let ns = namespace.unwrap_or("");
    match meta.get("namespace").and_then(Value::as_str) {
        Some(given) if !given.is_empty() && given != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta.insert("namespace".into(), json!(ns));
            Ok(())
        }
    }
}

/// Turns a decoded object into the object to store on create. `uid` is the new object's uid,
/// `suffix` the random part of a generated name, `cluster_ip` an address for a new Service.
/// `apply_managed` is true when server-side apply already computed managedFields.
pub fn prepare_create(
    ctx: &WriteCtx,
    mut object: Value,
    uid: &str,
    suffix: [u8; 5],
    cluster_ip: Option<&str>,
    apply_managed: bool,
) -> ApiResult<Value> {
    let r = ctx.resource;
    place(r, &mut object, ctx.namespace)?;
    let managed = object.pointer("/metadata/managedFields").cloned();
    let meta = metadata(&mut object);
    for f in SYSTEM_FIELDS {
        meta.remove(*f);
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    if name.is_empty() {
        if let Some(base) = meta.get("generateName").and_then(Value::as_str).filter(|b| !b.is_empty()) {
            let generated = meta::generated_name(base, suffix);
            meta.insert("name".into(), json!(generated));
        }
    }
    let now = meta::timestamp(ctx.now);
    meta.insert("uid".into(), json!(uid));
    meta.insert("creationTimestamp".into(), json!(now));
    if r.tracks_generation {
        meta.insert("generation".into(), json!(1));
    }
    if r.status_subresource && !r.status_on_create {
        if let Some(map) = object.as_object_mut() {
            map.remove("status");
        }
    }
    if r.kind == "Pod" {
        object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
    }
    (r.defaults)(&mut object, &DefaultCtx { uid, cluster_ip });
    validate(r, &object, None)?;
    let api_version = r.api_version();
    if apply_managed {
        if let Some(m) = managed {
            metadata(&mut object).insert("managedFields".into(), m);
        }
    } else {
        record_update(&ctx.writer(&now, "", &api_version), None, &mut object);
    }
    Ok(object)
}

fn validate(r: &Resource, object: &Value, old: Option<&Value>) -> ApiResult<()> {
    let mut causes = meta::validate_metadata(object, r.name_rule, r.namespaced);
    causes.extend((r.validate)(object));
    if let Some(old) = old {
        causes.extend(crate::validation::immutable(object, old, r.immutable));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(r.group, r.kind, name_of(object), causes))
    }
}

/// How an update came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    /// PUT or a non-apply PATCH: the writer takes the fields it changed.
    Update,
    /// Server-side apply: managedFields were computed by the apply.
    Apply,
}

/// Turns a decoded new version of `old` into the object to store. The caller has checked the
/// resourceVersion precondition.
pub fn prepare_update(
    ctx: &WriteCtx,
    old: &Value,
    new: Value,
    sub: Option<Subresource>,
    how: UpdateKind,
) -> ApiResult<Value> {
    let r = ctx.resource;
    let mut new = new;
    place(r, &mut new, ctx.namespace)?;
    let mut object = match sub {
        // The status subresource changes status only (and who manages it).
        Some(Subresource::Status) => {
            let mut o = old.clone();
            match new.get("status") {
                Some(status) => o["status"] = status.clone(),
                None => {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if how == UpdateKind::Apply {
                if let Some(m) = new.pointer("/metadata/managedFields") {
                    metadata(&mut o).insert("managedFields".into(), m.clone());
                }
            }
            o
        }
        _ => {
            if r.status_subresource {
                match old.get("status") {
                    Some(status) => new["status"] = status.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
            let meta = metadata(&mut new);
            for f in
                ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "name"]
            {
                match old_meta.get(f) {
                    Some(v) => meta.insert(f.to_string(), v.clone()),
                    None => meta.remove(f),
                };
            }
            meta.remove("resourceVersion");
            meta.remove("selfLink");
            if how == UpdateKind::Update {
                // Clients cannot rewrite ownership through a plain update.
                match old_meta.get("managedFields") {
                    Some(v) => meta.insert("managedFields".into(), v.clone()),
                    None => meta.remove("managedFields"),
                };
            }
            new
        }
    };
    let uid = object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
    let cluster_ip = old.pointer("/spec/clusterIP").and_then(Value::as_str).map(str::to_string);
    (r.defaults)(&mut object, &DefaultCtx { uid: &uid, cluster_ip: cluster_ip.as_deref() });
    validate(r, &object, Some(old))?;
    if r.tracks_generation && object.get("spec") != old.get("spec") {
        let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        metadata(&mut object).insert("generation".into(), json!(generation + 1));
    }
    if how == UpdateKind::Update {
        let now = meta::timestamp(ctx.now);
        let api_version = r.api_version();
        let subresource = match sub {
            Some(Subresource::Status) => "status",
            Some(Subresource::Scale) => "scale",
            None => "",
        };
        let mut stripped_old = old.clone();
        if let Some(m) = stripped_old.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        record_update(&ctx.writer(&now, subresource, &api_version), Some(&stripped_old), &mut object);
    }
    Ok(object)
}

/// True when `a` and `b` differ only in when managers last wrote (no write needed).
pub fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            if let Some(Value::Array(entries)) = m.get_mut("managedFields") {
                for e in entries {
                    if let Some(e) = e.as_object_mut() {
                        e.remove("time");
                    }
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// Sets `metadata.resourceVersion`.
pub fn with_resource_version(mut object: Value, revision: i64) -> Value {
    metadata(&mut object).insert("resourceVersion".into(), json!(revision.to_string()));
    object
}

/// The `autoscaling/v1` Scale of a workload.
pub fn scale_of(object: &Value) -> Value {
    let selector = object
        .pointer("/spec/selector")
        .and_then(|s| crate::selector::LabelSelector::from_object(s).ok())
        .map(|s| s.render())
        .unwrap_or_default();
    let meta = object.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": selector},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    fn ctx() -> WriteCtx<'static> {
        WriteCtx {
            resource: find("apps", "v1", "deployments").unwrap(),
            namespace: Some("default"),
            manager: "test",
            now: meta::parse_timestamp("2025-01-01T00:00:00Z").unwrap(),
        }
    }

    fn deployment() -> Value {
        json!({"metadata": {"name": "web", "uid": "client-set"},
               "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
               "status": {"replicas": 9}})
    }

    #[test]
    fn decode_reports_unknown_fields() {
        let r = find("apps", "v1", "deployments").unwrap();
        let mut d = deployment();
        d["spec"]["bogus"] = json!(1);
        d["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("x");
        let (_, warnings) = decode(r, &d, FieldValidation::Warn).unwrap();
        assert_eq!(
            warnings,
            vec!["unknown field \"spec.bogus\"", "unknown field \"spec.template.spec.containers[0].imagee\""]
        );
        let err = decode(r, &d, FieldValidation::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("strict decoding error: unknown field \"spec.bogus\""), "{}", err.message);
        assert!(decode(r, &json!({"apiVersion": "v1", "kind": "Deployment"}), FieldValidation::Ignore).is_err());
    }

    #[test]
    fn prune_keeps_what_the_input_said() {
        let r = find("apps", "v1", "deployments").unwrap();
        let input = json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "bogus": 1}});
        let (decoded, _) = decode(r, &input, FieldValidation::Ignore).unwrap();
        assert!(decoded["spec"].get("selector").is_some(), "decoding fills required fields");
        assert_eq!(prune(&input, &decoded), json!({"metadata": {"name": "web"}, "spec": {"replicas": 2}}));
    }

    #[test]
    fn create_sets_server_fields() {
        let o = prepare_create(&ctx(), deployment(), "u-1", [0; 5], None, false).unwrap();
        assert_eq!(o["metadata"]["uid"], "u-1");
        assert_eq!(o["metadata"]["namespace"], "default");
        assert_eq!(o["metadata"]["generation"], 1);
        assert_eq!(o["metadata"]["creationTimestamp"], "2025-01-01T00:00:00Z");
        assert!(o.get("status").is_none(), "status is reset on create");
        assert_eq!(o["spec"]["replicas"], 1);
        assert_eq!(o["metadata"]["managedFields"][0]["manager"], "test");
    }

    #[test]
    fn generation_follows_spec_only() {
        let c = ctx();
        let old = prepare_create(&c, deployment(), "u-1", [0; 5], None, false).unwrap();
        let mut labelled = old.clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        let o = prepare_update(&c, &old, labelled, None, UpdateKind::Update).unwrap();
        assert_eq!(o["metadata"]["generation"], 1);
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(3);
        scaled["status"] = json!({"replicas": 100});
        let o = prepare_update(&c, &old, scaled, None, UpdateKind::Update).unwrap();
        assert_eq!(o["metadata"]["generation"], 2);
        assert!(o.get("status").is_none(), "the main resource cannot write status");
        let status = prepare_update(
            &c,
            &old,
            json!({"metadata": {"name": "web", "labels": {"no": "pe"}}, "status": {"replicas": 1}}),
            Some(Subresource::Status),
            UpdateKind::Update,
        )
        .unwrap();
        assert_eq!(status["status"]["replicas"], 1);
        assert!(status["metadata"].get("labels").is_none());
        assert_eq!(status["spec"], old["spec"]);
    }

    #[test]
    fn invalid_objects_are_422() {
        let mut d = deployment();
        d["metadata"]["name"] = json!("Web_1");
        let err = prepare_create(&ctx(), d, "u", [0; 5], None, false).unwrap_err();
        assert_eq!((err.code, err.reason), (422, "Invalid"));
        assert!(
            err.message.starts_with("Deployment.apps \"Web_1\" is invalid: metadata.name: Invalid value: \"Web_1\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn generate_name_and_scale() {
        let mut d = deployment();
        d["metadata"] = json!({"generateName": "web-"});
        let o = prepare_create(&ctx(), d, "u", [1, 2, 3, 4, 5], None, false).unwrap();
        assert_eq!(name_of(&o), "web-cdfgh");
        let s = scale_of(&with_resource_version(o, 7));
        assert_eq!(s["spec"]["replicas"], 1);
        assert_eq!(s["status"]["selector"], "app=web");
        assert_eq!(s["metadata"]["resourceVersion"], "7");
    }
}
