//! Discovery documents: `/version`, `/api`, `/apis`, and the per-group-version
//! `APIResourceList`s kubectl reads to map kinds and short names to URLs. Pure.

use crate::registry::{Resource, RESOURCES};
use serde_json::{json, Value};

/// The Kubernetes version Berth's API mirrors.
pub const KUBERNETES_VERSION: &str = "v1.32.0";

pub fn version(git_version: &str) -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("{KUBERNETES_VERSION}+berth-{git_version}"),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// `/api`: the legacy core group's versions.
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
}

fn group_json(group: &str) -> Value {
    let gv = format!("{group}/v1");
    json!({
        "name": group,
        "versions": [{"groupVersion": gv, "version": "v1"}],
        "preferredVersion": {"groupVersion": gv, "version": "v1"},
    })
}

/// `/apis`: every named group.
pub fn groups() -> Value {
    let groups: Vec<Value> = crate::registry::groups().into_iter().filter(|g| !g.is_empty()).map(group_json).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`.
pub fn group(name: &str) -> Option<Value> {
    crate::registry::groups().contains(&name).then(|| {
        let mut g = group_json(name);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const SUB_VERBS: &[&str] = &["get", "patch", "update"];

fn entry(r: &Resource) -> Value {
    let verbs: Vec<&str> = if r.plural == "namespaces" {
        VERBS.iter().copied().filter(|v| *v != "deletecollection").collect()
    } else {
        VERBS.to_vec()
    };
    let mut e = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": verbs,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    e
}

/// `/api/v1` or `/apis/{group}/{version}`: the resources and subresources served there.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        resources.push(entry(r));
        if r.status_subresource {
            resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": SUB_VERBS}));
        }
        if r.scale_subresource {
            resources.push(json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": SUB_VERBS}));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_resources() {
        let list = resource_list("apps", "v1").unwrap();
        assert_eq!(list["groupVersion"], "apps/v1");
        let resources = list["resources"].as_array().unwrap();
        let deploy = resources.iter().find(|r| r["name"] == "deployments").unwrap();
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["categories"], json!(["all"]));
        let scale = resources.iter().find(|r| r["name"] == "deployments/scale").unwrap();
        assert_eq!((scale["group"].as_str(), scale["kind"].as_str()), (Some("autoscaling"), Some("Scale")));
        assert!(resource_list("apps", "v2").is_none());
    }

    #[test]
    fn groups_list_named_groups_only() {
        let g = groups();
        let names: Vec<&str> = g["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["apps", "coordination.k8s.io", "discovery.k8s.io", "batch"]);
        assert!(group("apps").is_some() && group("nope").is_none());
    }
}
