//! Server-side printing: `meta.k8s.io/v1` Tables with the columns Kubernetes' own printers use
//! for each kind, so `kubectl get` (which asks for Tables) prints what it prints against a real
//! cluster. Each row embeds the object's metadata for `--show-labels` and `-L`. Pure.

use crate::meta::{human_duration, parse_timestamp};
use crate::selector::LabelSelector;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub priority: u8,
}

const fn col(name: &'static str) -> Column {
    Column { name, kind: "string", format: "", priority: 0 }
}
const fn wide(name: &'static str) -> Column {
    Column { name, kind: "string", format: "", priority: 1 }
}
const NAME: Column = Column { name: "Name", kind: "string", format: "name", priority: 0 };
const AGE: Column = col("Age");

/// How one kind prints: its columns and a function from (object, now) to cells.
pub struct Printer {
    pub columns: &'static [Column],
    pub cells: fn(&Value, DateTime<Utc>) -> Vec<Value>,
}

fn s<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}
fn n(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}
fn name(o: &Value) -> Value {
    json!(s(o, "/metadata/name"))
}
fn or_none(v: &str) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v.into()
    }
}

/// Age since an RFC 3339 timestamp (`<unknown>` without one), as kubectl prints it.
pub fn age(o: &Value, pointer: &str, now: DateTime<Utc>) -> Value {
    match parse_timestamp(s(o, pointer)) {
        Some(t) => json!(human_duration((now - t).num_seconds())),
        None => json!("<unknown>"),
    }
}

fn created(o: &Value, now: DateTime<Utc>) -> Value {
    age(o, "/metadata/creationTimestamp", now)
}

fn array<'a>(o: &'a Value, pointer: &str) -> &'a [Value] {
    o.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn join(values: impl Iterator<Item = String>) -> String {
    values.collect::<Vec<_>>().join(",")
}

fn containers_and_images(o: &Value, template: &str) -> (Value, Value) {
    let cs = array(o, &format!("{template}/containers"));
    let names = join(cs.iter().map(|c| s(c, "/name").to_string()));
    let images = join(cs.iter().map(|c| s(c, "/image").to_string()));
    (json!(or_none(&names)), json!(or_none(&images)))
}

fn selector_text(o: &Value) -> Value {
    match o.pointer("/spec/selector").map(LabelSelector::from_object) {
        Some(Ok(sel)) => json!(or_none(&sel.render())),
        _ => json!("<none>"),
    }
}

// --- core/v1 -------------------------------------------------------------------------------

pub static NAMESPACE: Printer = Printer {
    columns: &[NAME, col("Status"), AGE],
    cells: |o, now| vec![name(o), json!(s(o, "/status/phase")), created(o, now)],
};

/// Pod STATUS as kubectl computes it: the phase, overridden by the reason of a waiting or
/// terminated container, `Terminating` once deletion started.
pub fn pod_status(o: &Value) -> String {
    let mut reason = s(o, "/status/reason").to_string();
    if reason.is_empty() {
        reason = s(o, "/status/phase").to_string();
    }
    for cs in array(o, "/status/containerStatuses") {
        let waiting = s(cs, "/state/waiting/reason");
        let terminated = s(cs, "/state/terminated/reason");
        if !waiting.is_empty() {
            reason = waiting.into();
        } else if !terminated.is_empty() {
            reason = terminated.into();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    if reason.is_empty() {
        reason = "Pending".into();
    }
    reason
}

fn pod_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let total = array(o, "/spec/containers").len();
    let statuses = array(o, "/status/containerStatuses");
    let ready = statuses.iter().filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true)).count();
    let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
    let ip = s(o, "/status/podIP");
    let gates = array(o, "/spec/readinessGates");
    vec![
        name(o),
        json!(format!("{ready}/{total}")),
        json!(pod_status(o)),
        json!(restarts.to_string()),
        created(o, now),
        json!(or_none(ip)),
        json!(or_none(s(o, "/spec/nodeName"))),
        json!(or_none(s(o, "/status/nominatedNodeName"))),
        json!(if gates.is_empty() { "<none>".to_string() } else { format!("0/{}", gates.len()) }),
    ]
}

pub static POD: Printer = Printer {
    columns: &[
        NAME,
        col("Ready"),
        col("Status"),
        col("Restarts"),
        AGE,
        wide("IP"),
        wide("Node"),
        wide("Nominated Node"),
        wide("Readiness Gates"),
    ],
    cells: pod_cells,
};

fn node_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ready = array(o, "/status/conditions").iter().find(|c| s(c, "/type") == "Ready").map(|c| s(c, "/status"));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(str::to_string)).collect())
        .unwrap_or_default();
    let address = |t: &str| {
        array(o, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == t)
            .map(|a| s(a, "/address").to_string())
            .unwrap_or_default()
    };
    vec![
        name(o),
        json!(status),
        json!(or_none(&roles.join(","))),
        created(o, now),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        json!(or_none(&address("InternalIP"))),
        json!(or_none(&address("ExternalIP"))),
        json!(s(o, "/status/nodeInfo/osImage")),
        json!(s(o, "/status/nodeInfo/kernelVersion")),
        json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
    ]
}

pub static NODE: Printer = Printer {
    columns: &[
        NAME,
        col("Status"),
        col("Roles"),
        AGE,
        col("Version"),
        wide("Internal-IP"),
        wide("External-IP"),
        wide("OS-Image"),
        wide("Kernel-Version"),
        wide("Container-Runtime"),
    ],
    cells: node_cells,
};

fn service_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let kind = s(o, "/spec/type");
    let ports = join(array(o, "/spec/ports").iter().map(|p| {
        let node_port = n(p, "/nodePort");
        let proto = s(p, "/protocol");
        if node_port > 0 {
            format!("{}:{}/{}", n(p, "/port"), node_port, proto)
        } else {
            format!("{}/{}", n(p, "/port"), proto)
        }
    }));
    let mut external: Vec<String> =
        array(o, "/spec/externalIPs").iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
    for ingress in array(o, "/status/loadBalancer/ingress") {
        let ip = if s(ingress, "/ip").is_empty() { s(ingress, "/hostname") } else { s(ingress, "/ip") };
        external.push(ip.to_string());
    }
    let external = match (kind, external.is_empty()) {
        ("ExternalName", _) => s(o, "/spec/externalName").to_string(),
        ("LoadBalancer", true) => "<pending>".into(),
        (_, true) => "<none>".into(),
        _ => external.join(","),
    };
    let selector = o
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| join(m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))))
        .unwrap_or_default();
    vec![
        name(o),
        json!(kind),
        json!(or_none(s(o, "/spec/clusterIP"))),
        json!(external),
        json!(or_none(&ports)),
        created(o, now),
        json!(or_none(&selector)),
    ]
}

pub static SERVICE: Printer = Printer {
    columns: &[NAME, col("Type"), col("Cluster-IP"), col("External-IP"), col("Port(s)"), AGE, wide("Selector")],
    cells: service_cells,
};

fn endpoints_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut list = Vec::new();
    for subset in array(o, "/subsets") {
        for a in array(subset, "/addresses") {
            let ports = array(subset, "/ports");
            if ports.is_empty() {
                list.push(s(a, "/ip").to_string());
            }
            for p in ports {
                list.push(format!("{}:{}", s(a, "/ip"), n(p, "/port")));
            }
        }
    }
    let text =
        if list.len() > 3 { format!("{} + {} more...", list[..3].join(","), list.len() - 3) } else { list.join(",") };
    vec![name(o), json!(or_none(&text)), created(o, now)]
}

pub static ENDPOINTS: Printer = Printer { columns: &[NAME, col("Endpoints"), AGE], cells: endpoints_cells };

fn count_keys(o: &Value, fields: &[&str]) -> i64 {
    fields.iter().map(|f| o.get(*f).and_then(Value::as_object).map_or(0, |m| m.len() as i64)).sum()
}

pub static CONFIGMAP: Printer = Printer {
    columns: &[NAME, Column { name: "Data", kind: "integer", format: "", priority: 0 }, AGE],
    cells: |o, now| vec![name(o), json!(count_keys(o, &["data", "binaryData"])), created(o, now)],
};

pub static SECRET: Printer = Printer {
    columns: &[NAME, col("Type"), Column { name: "Data", kind: "integer", format: "", priority: 0 }, AGE],
    cells: |o, now| vec![name(o), json!(s(o, "/type")), json!(count_keys(o, &["data"])), created(o, now)],
};

pub static SERVICE_ACCOUNT: Printer = Printer {
    columns: &[NAME, Column { name: "Secrets", kind: "integer", format: "", priority: 0 }, AGE],
    cells: |o, now| vec![name(o), json!(array(o, "/secrets").len()), created(o, now)],
};

fn event_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let last = ["/lastTimestamp", "/eventTime", "/metadata/creationTimestamp"]
        .iter()
        .find(|p| !s(o, p).is_empty())
        .map(|p| age(o, p, now))
        .unwrap_or(json!("<unknown>"));
    let first = if s(o, "/firstTimestamp").is_empty() { created(o, now) } else { age(o, "/firstTimestamp", now) };
    let object = format!("{}/{}", s(o, "/involvedObject/kind").to_lowercase(), s(o, "/involvedObject/name"));
    let source =
        if s(o, "/source/component").is_empty() { s(o, "/reportingComponent") } else { s(o, "/source/component") };
    vec![
        last,
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(object),
        json!(s(o, "/message")),
        json!(s(o, "/involvedObject/fieldPath")),
        json!(source),
        first,
        json!(n(o, "/count").max(1).to_string()),
        name(o),
    ]
}

pub static EVENT: Printer = Printer {
    columns: &[
        col("Last Seen"),
        col("Type"),
        col("Reason"),
        col("Object"),
        col("Message"),
        wide("Subobject"),
        wide("Source"),
        wide("First Seen"),
        wide("Count"),
        Column { name: "Name", kind: "string", format: "name", priority: 1 },
    ],
    cells: event_cells,
};

// --- apps/v1, batch/v1 ---------------------------------------------------------------------

fn deployment_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (containers, images) = containers_and_images(o, "/spec/template/spec");
    vec![
        name(o),
        json!(format!("{}/{}", n(o, "/status/readyReplicas"), n(o, "/spec/replicas"))),
        json!(n(o, "/status/updatedReplicas")),
        json!(n(o, "/status/availableReplicas")),
        created(o, now),
        containers,
        images,
        selector_text(o),
    ]
}

const INT: &str = "integer";
pub static DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        col("Ready"),
        Column { name: "Up-to-date", kind: INT, format: "", priority: 0 },
        Column { name: "Available", kind: INT, format: "", priority: 0 },
        AGE,
        wide("Containers"),
        wide("Images"),
        wide("Selector"),
    ],
    cells: deployment_cells,
};

fn replica_set_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (containers, images) = containers_and_images(o, "/spec/template/spec");
    vec![
        name(o),
        json!(n(o, "/spec/replicas")),
        json!(n(o, "/status/replicas")),
        json!(n(o, "/status/readyReplicas")),
        created(o, now),
        containers,
        images,
        selector_text(o),
    ]
}

pub static REPLICA_SET: Printer = Printer {
    columns: &[
        NAME,
        Column { name: "Desired", kind: INT, format: "", priority: 0 },
        Column { name: "Current", kind: INT, format: "", priority: 0 },
        Column { name: "Ready", kind: INT, format: "", priority: 0 },
        AGE,
        wide("Containers"),
        wide("Images"),
        wide("Selector"),
    ],
    cells: replica_set_cells,
};

fn daemon_set_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (containers, images) = containers_and_images(o, "/spec/template/spec");
    let node_selector = o
        .pointer("/spec/template/spec/nodeSelector")
        .and_then(Value::as_object)
        .map(|m| join(m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))))
        .unwrap_or_default();
    vec![
        name(o),
        json!(n(o, "/status/desiredNumberScheduled")),
        json!(n(o, "/status/currentNumberScheduled")),
        json!(n(o, "/status/numberReady")),
        json!(n(o, "/status/updatedNumberScheduled")),
        json!(n(o, "/status/numberAvailable")),
        json!(or_none(&node_selector)),
        created(o, now),
        containers,
        images,
        selector_text(o),
    ]
}

pub static DAEMON_SET: Printer = Printer {
    columns: &[
        NAME,
        Column { name: "Desired", kind: INT, format: "", priority: 0 },
        Column { name: "Current", kind: INT, format: "", priority: 0 },
        Column { name: "Ready", kind: INT, format: "", priority: 0 },
        Column { name: "Up-to-date", kind: INT, format: "", priority: 0 },
        Column { name: "Available", kind: INT, format: "", priority: 0 },
        col("Node Selector"),
        AGE,
        wide("Containers"),
        wide("Images"),
        wide("Selector"),
    ],
    cells: daemon_set_cells,
};

fn stateful_set_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (containers, images) = containers_and_images(o, "/spec/template/spec");
    vec![
        name(o),
        json!(format!("{}/{}", n(o, "/status/readyReplicas"), n(o, "/spec/replicas"))),
        created(o, now),
        containers,
        images,
    ]
}

pub static STATEFUL_SET: Printer =
    Printer { columns: &[NAME, col("Ready"), AGE, wide("Containers"), wide("Images")], cells: stateful_set_cells };

fn job_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (containers, images) = containers_and_images(o, "/spec/template/spec");
    let conditions = array(o, "/status/conditions");
    let has = |t: &str| conditions.iter().any(|c| s(c, "/type") == t && s(c, "/status") == "True");
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    };
    let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{}/{c}", n(o, "/status/succeeded")),
        None => format!("{}/1 of {}", n(o, "/status/succeeded"), n(o, "/spec/parallelism")),
    };
    let duration = match (parse_timestamp(s(o, "/status/startTime")), parse_timestamp(s(o, "/status/completionTime"))) {
        (Some(start), Some(end)) => human_duration((end - start).num_seconds()),
        (Some(start), None) => human_duration((now - start).num_seconds()),
        _ => String::new(),
    };
    vec![
        name(o),
        json!(status),
        json!(completions),
        json!(duration),
        created(o, now),
        containers,
        images,
        selector_text(o),
    ]
}

pub static JOB: Printer = Printer {
    columns: &[
        NAME,
        col("Status"),
        col("Completions"),
        col("Duration"),
        AGE,
        wide("Containers"),
        wide("Images"),
        wide("Selector"),
    ],
    cells: job_cells,
};

// --- coordination, discovery ---------------------------------------------------------------

pub static LEASE: Printer = Printer {
    columns: &[NAME, col("Holder"), AGE],
    cells: |o, now| vec![name(o), json!(s(o, "/spec/holderIdentity")), created(o, now)],
};

fn endpoint_slice_cells(o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports = join(array(o, "/ports").iter().map(|p| n(p, "/port").to_string()));
    let addresses: Vec<String> = array(o, "/endpoints")
        .iter()
        .flat_map(|e| array(e, "/addresses").iter().filter_map(|a| a.as_str().map(str::to_string)))
        .collect();
    let text = if addresses.len() > 3 {
        format!("{} + {} more...", addresses[..3].join(","), addresses.len() - 3)
    } else {
        addresses.join(",")
    };
    vec![
        name(o),
        json!(s(o, "/addressType")),
        json!(if ports.is_empty() { "<unset>".to_string() } else { ports }),
        json!(or_none(&text)),
        created(o, now),
    ]
}

pub static ENDPOINT_SLICE: Printer =
    Printer { columns: &[NAME, col("AddressType"), col("Ports"), col("Endpoints"), AGE], cells: endpoint_slice_cells };

/// What each row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// The column definitions of `printer` as Table JSON.
pub fn column_definitions(printer: &Printer) -> Vec<Value> {
    printer
        .columns
        .iter()
        .map(|c| {
            let description = match c.name {
                "Name" => "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
                "Age" => "CreationTimestamp is a timestamp representing the server time when this object was created.",
                _ => "",
            };
            json!({"name": c.name, "type": c.kind, "format": c.format, "description": description, "priority": c.priority})
        })
        .collect()
}

/// One row for `object`.
pub fn row(printer: &Printer, object: &Value, now: DateTime<Utc>, include: IncludeObject) -> Value {
    let mut row = json!({"cells": (printer.cells)(object, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => row["object"] = object.clone(),
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or(json!({})),
            })
        }
    }
    row
}

/// A whole Table for `objects`; `list_meta` is the list's `metadata` (resourceVersion,
/// continue) and `with_columns` false leaves the definitions out (later watch events).
pub fn table(
    printer: &Printer,
    objects: &[Value],
    list_meta: Value,
    now: DateTime<Utc>,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": if with_columns { column_definitions(printer) } else { Vec::new() },
        "rows": objects.iter().map(|o| row(printer, o, now, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        parse_timestamp("2025-01-01T00:10:00Z").unwrap()
    }

    #[test]
    fn deployment_row() {
        let d = json!({"metadata": {"name": "web", "creationTimestamp": "2025-01-01T00:00:00Z", "labels": {"app": "web"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = table(&DEPLOYMENT, &[d], json!({"resourceVersion": "7"}), now(), IncludeObject::Metadata, true);
        assert_eq!(t["rows"][0]["cells"], json!(["web", "2/3", 3, 2, "10m", "nginx", "nginx:1.27", "app=web"]));
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["app"], "web");
        let names: Vec<&str> =
            t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names[..5], ["Name", "Ready", "Up-to-date", "Available", "Age"]);
    }

    #[test]
    fn pod_row() {
        let p = json!({"metadata": {"name": "p", "creationTimestamp": "2025-01-01T00:09:30Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [{"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let cells = (POD.cells)(&p, now());
        assert_eq!(
            cells,
            vec![
                json!("p"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("3"),
                json!("30s"),
                json!("10.0.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        assert_eq!(pod_status(&json!({"metadata": {}, "status": {}})), "Pending");
    }

    #[test]
    fn service_row() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.7", "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web"}}});
        let cells = (SERVICE.cells)(&svc, now());
        assert_eq!(
            cells[..5],
            [json!("web"), json!("ClusterIP"), json!("10.96.0.7"), json!("<none>"), json!("80/TCP")]
        );
        assert_eq!(cells[6], json!("app=web"));
    }
}
