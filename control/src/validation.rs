//! Validation of the built-in kinds beyond metadata: the fields the controllers and node agents
//! will rely on (selectors matching templates, containers with names and images, ports in
//! range, restart policies). Causes are worded as Kubernetes words them. Pure.

use crate::error::Cause;
use crate::meta::{is_dns1123_label, validate_labels};
use crate::selector::LabelSelector;
use serde_json::Value;
use std::collections::BTreeSet;

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn validate_port(causes: &mut Vec<Cause>, field: &str, port: Option<&Value>, required: bool) {
    match port.and_then(Value::as_i64) {
        Some(p) if (1..=65535).contains(&p) => {}
        Some(p) => causes.push(Cause::invalid_json(field, &Value::from(p), "must be between 1 and 65535, inclusive")),
        None if required => causes.push(Cause::required(field)),
        None => {}
    }
}

fn containers(causes: &mut Vec<Cause>, list: Option<&Value>, field: &str, required: bool) {
    let items = list.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if items.is_empty() && required {
        causes.push(Cause::required(field));
    }
    let mut names = BTreeSet::new();
    for (i, c) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(&format!("{at}.name")));
        } else if !is_dns1123_label(name) {
            causes.push(Cause::invalid(&format!("{at}.name"), name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
        } else if !names.insert(name.to_string()) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("{at}.name"),
                message: format!("Duplicate value: \"{name}\""),
            });
        }
        if c.get("image").and_then(Value::as_str).unwrap_or("").trim().is_empty() {
            causes.push(Cause::required(&format!("{at}.image")));
        }
        if let Some(ports) = c.get("ports").and_then(Value::as_array) {
            for (j, p) in ports.iter().enumerate() {
                validate_port(causes, &format!("{at}.ports[{j}].containerPort"), p.get("containerPort"), true);
            }
        }
    }
}

/// A PodSpec at `field` (`spec` of a Pod, `spec.template.spec` of a workload).
pub fn pod_spec(spec: Option<&Value>, field: &str, restart_allowed: &[&str]) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        causes.push(Cause::required(&format!("{field}.containers")));
        return causes;
    };
    containers(&mut causes, spec.get("containers"), &format!("{field}.containers"), true);
    containers(&mut causes, spec.get("initContainers"), &format!("{field}.initContainers"), false);
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !restart_allowed.contains(&policy) {
            causes.push(Cause::not_supported(&format!("{field}.restartPolicy"), policy, restart_allowed));
        }
    }
    if let Some(policy) = spec.get("dnsPolicy").and_then(Value::as_str) {
        let allowed = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
        if !allowed.contains(&policy) {
            causes.push(Cause::not_supported(&format!("{field}.dnsPolicy"), policy, &allowed));
        }
    }
    if let Some(g) = spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64) {
        if g < 0 {
            causes.push(Cause::invalid_json(
                &format!("{field}.terminationGracePeriodSeconds"),
                &Value::from(g),
                "must be greater than or equal to 0",
            ));
        }
    }
    causes
}

pub fn pod(object: &Value) -> Vec<Cause> {
    pod_spec(object.get("spec"), "spec", &["Always", "OnFailure", "Never"])
}

fn non_negative(causes: &mut Vec<Cause>, object: &Value, pointer: &str, field: &str) {
    if let Some(n) = object.pointer(pointer).and_then(Value::as_i64) {
        if n < 0 {
            causes.push(Cause::invalid_json(field, &Value::from(n), "must be greater than or equal to 0"));
        }
    }
}

/// A workload with `spec.selector` and `spec.template`: the selector must be valid, non-empty
/// and select the template's labels (otherwise its controller could never find its pods).
pub fn workload(object: &Value, restart_allowed: &[&str], selector_required: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    non_negative(&mut causes, object, "/spec/replicas", "spec.replicas");
    let template_labels = object.pointer("/spec/template/metadata/labels");
    causes.extend(validate_labels(template_labels, "spec.template.metadata.labels"));
    match object.pointer("/spec/selector") {
        None | Some(Value::Null) if selector_required => causes.push(Cause::required("spec.selector")),
        None | Some(Value::Null) => {}
        Some(sel) => match LabelSelector::from_object(sel) {
            Err(e) => causes.push(Cause::invalid_json("spec.selector", sel, &e)),
            Ok(s) if s.is_empty() => {
                causes.push(Cause::invalid_json("spec.selector", sel, "empty selector is invalid for deployment"))
            }
            Ok(s) => {
                let labels = crate::selector::labels_of(object.pointer("/spec/template").unwrap_or(&Value::Null));
                if !s.matches(&labels) {
                    causes.push(Cause::invalid_json(
                        "spec.template.metadata.labels",
                        template_labels.unwrap_or(&Value::Null),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        },
    }
    causes.extend(pod_spec(object.pointer("/spec/template/spec"), "spec.template.spec", restart_allowed));
    causes
}

pub fn deployment(object: &Value) -> Vec<Cause> {
    let mut causes = workload(object, &["Always"], true);
    non_negative(&mut causes, object, "/spec/revisionHistoryLimit", "spec.revisionHistoryLimit");
    if let Some(t) = str_at(object, "/spec/strategy/type") {
        if !["RollingUpdate", "Recreate"].contains(&t) {
            causes.push(Cause::not_supported("spec.strategy.type", t, &["Recreate", "RollingUpdate"]));
        }
    }
    causes
}

pub fn job(object: &Value) -> Vec<Cause> {
    let mut causes = workload(object, &["OnFailure", "Never"], false);
    if object.pointer("/spec/template/spec/restartPolicy").is_none() {
        causes.push(Cause::not_supported("spec.template.spec.restartPolicy", "Always", &["OnFailure", "Never"]));
    }
    for f in ["parallelism", "completions", "backoffLimit"] {
        non_negative(&mut causes, object, &format!("/spec/{f}"), &format!("spec.{f}"));
    }
    causes
}

pub fn service(object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let kind = str_at(object, "/spec/type").unwrap_or("ClusterIP");
    let allowed = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !allowed.contains(&kind) {
        causes.push(Cause::not_supported("spec.type", kind, &allowed));
    }
    let ports = object.pointer("/spec/ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let headless = str_at(object, "/spec/clusterIP") == Some("None");
    if ports.is_empty() && kind != "ExternalName" && !headless {
        causes.push(Cause::required("spec.ports"));
    }
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        validate_port(&mut causes, &format!("spec.ports[{i}].port"), p.get("port"), true);
        if ports.len() > 1 && p.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
            causes.push(Cause::required(&format!("spec.ports[{i}].name")));
        }
        let key = (
            p.get("port").and_then(Value::as_i64),
            p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string(),
        );
        if !seen.insert(key) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("spec.ports[{i}]"),
                message: "Duplicate value: port and protocol".into(),
            });
        }
    }
    // Berth's services are IPv4 single-stack; the address itself is allocated on create.
    if let Some(ip) = str_at(object, "/spec/clusterIP").filter(|ip| !ip.is_empty() && *ip != "None") {
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            causes.push(Cause::invalid("spec.clusterIPs[0]", ip, "must be a valid IPv4 address, (e.g. 10.9.8.7)"));
        }
    }
    if kind == "ExternalName" && str_at(object, "/spec/externalName").unwrap_or("").is_empty() {
        causes.push(Cause::required("spec.externalName"));
    }
    causes
}

pub fn lease(object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    non_negative(&mut causes, object, "/spec/leaseDurationSeconds", "spec.leaseDurationSeconds");
    causes
}

pub fn endpoint_slice(object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let t = object.get("addressType").and_then(Value::as_str).unwrap_or("");
    if !["IPv4", "IPv6", "FQDN"].contains(&t) {
        causes.push(Cause::not_supported("addressType", t, &["FQDN", "IPv4", "IPv6"]));
    }
    causes
}

/// Fields that may not change after creation (apps/v1 selectors, for instance: changing one
/// would orphan every pod of the workload).
pub fn immutable(object: &Value, old: &Value, fields: &[&str]) -> Vec<Cause> {
    fields
        .iter()
        .filter(|f| {
            let pointer = format!("/{}", f.replace('.', "/"));
            old.pointer(&pointer) != object.pointer(&pointer)
        })
        .map(|f| {
            Cause::invalid_json(
                f,
                object.pointer(&format!("/{}", f.replace('.', "/"))).unwrap_or(&Value::Null),
                "field is immutable",
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment_with(selector: Value, labels: Value, containers: Value) -> Value {
        json!({"spec": {"selector": selector, "template": {"metadata": {"labels": labels}, "spec": {"restartPolicy": "Always", "containers": containers}}}})
    }

    #[test]
    fn selector_must_match_template() {
        let ok = deployment_with(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
            json!([{"name": "c", "image": "i"}]),
        );
        assert!(deployment(&ok).is_empty());
        let bad = deployment_with(
            json!({"matchLabels": {"app": "db"}}),
            json!({"app": "web"}),
            json!([{"name": "c", "image": "i"}]),
        );
        let causes = deployment(&bad);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        let empty = deployment_with(json!({}), json!({"app": "web"}), json!([{"name": "c", "image": "i"}]));
        assert_eq!(deployment(&empty)[0].field, "spec.selector");
    }

    #[test]
    fn containers_need_names_and_images() {
        let d = deployment_with(
            json!({"matchLabels": {"a": "b"}}),
            json!({"a": "b"}),
            json!([{"name": "c"}, {"name": "c", "image": "i"}]),
        );
        let fields: Vec<String> = deployment(&d).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, vec!["spec.template.spec.containers[0].image", "spec.template.spec.containers[1].name"]);
    }

    #[test]
    fn services_need_ports() {
        assert_eq!(service(&json!({"spec": {}}))[0].field, "spec.ports");
        assert!(service(&json!({"spec": {"ports": [{"port": 80}]}})).is_empty());
        assert_eq!(service(&json!({"spec": {"ports": [{"port": 0}]}}))[0].field, "spec.ports[0].port");
    }

    #[test]
    fn immutable_fields() {
        let old = json!({"spec": {"selector": {"matchLabels": {"a": "b"}}}});
        let new = json!({"spec": {"selector": {"matchLabels": {"a": "c"}}}});
        assert_eq!(immutable(&new, &old, &["spec.selector"]).len(), 1);
        assert!(immutable(&old, &old, &["spec.selector"]).is_empty());
    }
}
