//! Kubernetes' defaulting for the built-in kinds, applied to objects as JSON after decoding, so
//! that what the server stores and returns looks like what kube-apiserver would (and the
//! controllers can rely on the fields being set). Pure.

use serde_json::{json, Value};

/// Sets `object[path]` to `value` if it is missing or null; creates parent objects as needed.
pub fn set_default(object: &mut Value, path: &[&str], value: Value) {
    let mut current = object;
    for (i, key) in path.iter().enumerate() {
        if !current.is_object() {
            return;
        }
        let map = current.as_object_mut().expect("checked above");
        if i == path.len() - 1 {
            if map.get(*key).is_none_or(Value::is_null) {
                map.insert(key.to_string(), value);
            }
            return;
        }
        let entry = map.entry(key.to_string()).or_insert_with(|| json!({}));
        if entry.is_null() {
            *entry = json!({});
        }
        current = entry;
    }
}

fn each_in(object: &mut Value, path: &[&str], mut f: impl FnMut(&mut Value)) {
    let mut current = object;
    for key in path {
        match current.get_mut(*key) {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Some(items) = current.as_array_mut() {
        items.iter_mut().for_each(&mut f);
    }
}

fn default_container(c: &mut Value) {
    set_default(c, &["terminationMessagePath"], json!("/dev/termination-log"));
    set_default(c, &["terminationMessagePolicy"], json!("File"));
    let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    // `:latest` or no tag means the image can change under the same name.
    let last = image.rsplit('/').next().unwrap_or("");
    let policy = if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
        "IfNotPresent"
    } else {
        "Always"
    };
    set_default(c, &["imagePullPolicy"], json!(policy));
    each_in(c, &["ports"], |p| set_default(p, &["protocol"], json!("TCP")));
    set_default(c, &["resources"], json!({}));
}

/// Defaults of a PodSpec (in Pods and every pod template).
pub fn pod_spec(spec: &mut Value, restart_default: Option<&str>) {
    if !spec.is_object() {
        return;
    }
    if let Some(policy) = restart_default {
        set_default(spec, &["restartPolicy"], json!(policy));
    }
    set_default(spec, &["terminationGracePeriodSeconds"], json!(30));
    set_default(spec, &["dnsPolicy"], json!("ClusterFirst"));
    set_default(spec, &["schedulerName"], json!("default-scheduler"));
    set_default(spec, &["securityContext"], json!({}));
    each_in(spec, &["containers"], default_container);
    each_in(spec, &["initContainers"], default_container);
}

fn template(object: &mut Value, restart_default: Option<&str>) {
    if let Some(spec) = object.pointer_mut("/spec/template/spec") {
        pod_spec(spec, restart_default);
    }
    if let Some(meta) = object.pointer_mut("/spec/template/metadata") {
        if meta.is_null() {
            *meta = json!({});
        }
    } else if let Some(t) = object.pointer_mut("/spec/template") {
        if let Some(map) = t.as_object_mut() {
            map.insert("metadata".into(), json!({}));
        }
    }
}

pub fn pod(object: &mut Value) {
    if let Some(spec) = object.get_mut("spec") {
        pod_spec(spec, Some("Always"));
    }
    set_default(object, &["spec", "enableServiceLinks"], json!(true));
    set_default(object, &["spec", "priority"], json!(0));
    set_default(object, &["spec", "serviceAccountName"], json!("default"));
}

pub fn deployment(object: &mut Value) {
    set_default(object, &["spec", "replicas"], json!(1));
    set_default(object, &["spec", "strategy", "type"], json!("RollingUpdate"));
    if object.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
        set_default(object, &["spec", "strategy", "rollingUpdate", "maxUnavailable"], json!("25%"));
        set_default(object, &["spec", "strategy", "rollingUpdate", "maxSurge"], json!("25%"));
    }
    set_default(object, &["spec", "revisionHistoryLimit"], json!(10));
    set_default(object, &["spec", "progressDeadlineSeconds"], json!(600));
    template(object, Some("Always"));
}

pub fn replica_set(object: &mut Value) {
    set_default(object, &["spec", "replicas"], json!(1));
    template(object, Some("Always"));
}

pub fn stateful_set(object: &mut Value) {
    set_default(object, &["spec", "replicas"], json!(1));
    set_default(object, &["spec", "podManagementPolicy"], json!("OrderedReady"));
    set_default(object, &["spec", "updateStrategy", "type"], json!("RollingUpdate"));
    if object.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
        set_default(object, &["spec", "updateStrategy", "rollingUpdate", "partition"], json!(0));
    }
    set_default(object, &["spec", "revisionHistoryLimit"], json!(10));
    set_default(object, &["spec", "persistentVolumeClaimRetentionPolicy", "whenDeleted"], json!("Retain"));
    set_default(object, &["spec", "persistentVolumeClaimRetentionPolicy", "whenScaled"], json!("Retain"));
    template(object, Some("Always"));
}

pub fn daemon_set(object: &mut Value) {
    set_default(object, &["spec", "updateStrategy", "type"], json!("RollingUpdate"));
    if object.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
        set_default(object, &["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"], json!(1));
        set_default(object, &["spec", "updateStrategy", "rollingUpdate", "maxSurge"], json!(0));
    }
    set_default(object, &["spec", "revisionHistoryLimit"], json!(10));
    template(object, Some("Always"));
}

/// Job defaults; `uid` is the new Job's uid, from which the selector is generated unless the
/// user manages it (`manualSelector`), as Kubernetes does.
pub fn job(object: &mut Value, uid: &str) {
    let parallelism = object.pointer("/spec/parallelism").cloned();
    set_default(object, &["spec", "completions"], json!(1));
    set_default(object, &["spec", "parallelism"], parallelism.unwrap_or(json!(1)));
    set_default(object, &["spec", "backoffLimit"], json!(6));
    set_default(object, &["spec", "completionMode"], json!("NonIndexed"));
    set_default(object, &["spec", "suspend"], json!(false));
    set_default(object, &["spec", "podReplacementPolicy"], json!("TerminatingOrFailed"));
    template(object, None);
    let manual = object.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
    if !manual && object.pointer("/spec/selector").is_none() && !uid.is_empty() {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        set_default(object, &["spec", "selector"], json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid),
            ("batch.kubernetes.io/job-name", name.as_str()),
            ("controller-uid", uid),
            ("job-name", name.as_str()),
        ] {
            set_default(object, &["spec", "template", "metadata", "labels", k], json!(v));
        }
    }
}

/// Service defaults; `cluster_ip` is the address allocated for it (if it needs one).
pub fn service(object: &mut Value, cluster_ip: Option<&str>) {
    set_default(object, &["spec", "type"], json!("ClusterIP"));
    set_default(object, &["spec", "sessionAffinity"], json!("None"));
    let kind = object.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if kind != "ExternalName" {
        set_default(object, &["spec", "internalTrafficPolicy"], json!("Cluster"));
        if let Some(ip) = cluster_ip {
            set_default(object, &["spec", "clusterIP"], json!(ip));
        }
        let ip = object.pointer("/spec/clusterIP").cloned();
        if let Some(ip) = ip {
            set_default(object, &["spec", "clusterIPs"], json!([ip]));
        }
        set_default(object, &["spec", "ipFamilies"], json!(["IPv4"]));
        set_default(object, &["spec", "ipFamilyPolicy"], json!("SingleStack"));
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        set_default(object, &["spec", "externalTrafficPolicy"], json!("Cluster"));
    }
    each_in(object, &["spec", "ports"], |p| {
        set_default(p, &["protocol"], json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            set_default(p, &["targetPort"], port);
        }
    });
    set_default(object, &["status", "loadBalancer"], json!({}));
}

pub fn namespace(object: &mut Value) {
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    if !name.is_empty() {
        // Set by Kubernetes on every namespace so selectors can pick namespaces by name.
        set_default(object, &["metadata", "labels", "kubernetes.io/metadata.name"], json!(name));
    }
    set_default(object, &["spec", "finalizers"], json!(["kubernetes"]));
    set_default(object, &["status", "phase"], json!("Active"));
}

/// Secret defaults; also folds `stringData` into `data` (base64), as Kubernetes does on write.
pub fn secret(object: &mut Value) {
    use base64::Engine;
    set_default(object, &["type"], json!("Opaque"));
    let string_data = object.as_object_mut().and_then(|m| m.remove("stringData"));
    if let Some(Value::Object(entries)) = string_data {
        set_default(object, &["data"], json!({}));
        if let Some(data) = object.get_mut("data").and_then(Value::as_object_mut) {
            for (k, v) in entries {
                let text = v.as_str().unwrap_or("").as_bytes().to_vec();
                data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(text)));
            }
        }
    }
}

pub fn endpoints(object: &mut Value) {
    each_in(object, &["subsets"], |s| each_in(s, &["ports"], |p| set_default(p, &["protocol"], json!("TCP"))));
}

pub fn endpoint_slice(object: &mut Value) {
    each_in(object, &["ports"], |p| set_default(p, &["protocol"], json!("TCP")));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults_match_kubernetes() {
        let mut d = json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}}});
        deployment(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn explicit_values_win() {
        let mut d = json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}}});
        deployment(&mut d);
        assert_eq!(d["spec"]["replicas"], 0);
        assert!(d["spec"]["strategy"].get("rollingUpdate").is_none());
    }

    #[test]
    fn services_and_secrets() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        service(&mut s, Some("10.96.0.10"));
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        let mut sec = json!({"stringData": {"k": "v"}});
        secret(&mut sec);
        assert_eq!(sec, json!({"type": "Opaque", "data": {"k": "dg=="}}));
    }

    #[test]
    fn job_selector_is_generated() {
        let mut j = json!({"metadata": {"name": "pi"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}}});
        job(&mut j, "u-1");
        assert_eq!(j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], "u-1");
        assert_eq!(j["spec"]["template"]["metadata"]["labels"]["job-name"], "pi");
        assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "Never");
    }
}
