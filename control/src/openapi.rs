//! OpenAPI v3 documents: the `/openapi/v3` index and one document per group-version. kubectl
//! needs them for two things: `--validate=strict` (it looks for a PATCH operation carrying the
//! kind's `x-kubernetes-group-version-kind` and a `fieldValidation` parameter, then leaves
//! validation to the server) and `kubectl explain` (schemas in `components.schemas`, found by
//! the same extension). Schemas come from the k8s-openapi types. Pure; built once per process.

use crate::registry::{Resource, RESOURCES};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// `api/v1`, `apis/apps/v1`, …: the document names of the index.
fn doc_name(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The serialized documents by name, with a content hash for the index's cache-busting URLs.
fn documents() -> &'static BTreeMap<String, (String, Vec<u8>)> {
    static DOCS: OnceLock<BTreeMap<String, (String, Vec<u8>)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut names: Vec<(String, &str, &str)> = Vec::new();
        for r in RESOURCES {
            let name = doc_name(r.group, r.version);
            if !names.iter().any(|(n, _, _)| *n == name) {
                names.push((name, r.group, r.version));
            }
        }
        names
            .into_iter()
            .map(|(name, group, version)| {
                let bytes = serde_json::to_vec(&group_document(group, version)).unwrap_or_default();
                let hash = format!("{:016X}", fnv(&bytes));
                (name, (hash, bytes))
            })
            .collect()
    })
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}

/// `/openapi/v3`.
pub fn index() -> Value {
    let paths: Map<String, Value> = documents()
        .iter()
        .map(|(name, (hash, _))| {
            (name.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{name}?hash={hash}")}))
        })
        .collect();
    json!({"paths": paths})
}

/// `/openapi/v3/{name}` as bytes.
pub fn document(name: &str) -> Option<&'static [u8]> {
    documents().get(name.trim_matches('/')).map(|(_, bytes)| bytes.as_slice())
}

fn param(name: &str, location: &str, description: &str) -> Value {
    json!({"name": name, "in": location, "description": description, "required": location == "path", "schema": {"type": "string", "uniqueItems": true}})
}

fn operation_id(verb: &str, r: &Resource) -> String {
    let group: String = r
        .group
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .enumerate()
        .map(|(i, c)| if i == 0 { c.to_ascii_uppercase() } else { c })
        .collect();
    let group = if group.is_empty() { "Core".to_string() } else { group };
    let scope = if r.namespaced { "Namespaced" } else { "" };
    format!("{verb}{group}V1{scope}{}", r.kind)
}

fn paths_for(r: &Resource, gvk: &Value) -> Vec<(String, Value)> {
    let base = if r.group.is_empty() { "/api/v1".to_string() } else { format!("/apis/{}/{}", r.group, r.version) };
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    let schema_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(r))});
    let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}});
    let body = |types: &[&str]| {
        let content: Map<String, Value> =
            types.iter().map(|t| (t.to_string(), json!({"schema": schema_ref}))).collect();
        json!({"content": content, "required": true})
    };
    let field_validation = param(
        "fieldValidation",
        "query",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
    );
    let write_params = vec![
        param("dryRun", "query", "When present, indicates that modifications should not be persisted."),
        param(
            "fieldManager",
            "query",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        field_validation,
    ];
    let mut path_params = vec![param("name", "path", "name of the resource")];
    let mut collection_params = Vec::new();
    if r.namespaced {
        path_params.push(param("namespace", "path", "object name and auth scope, such as for teams and projects"));
        collection_params.push(param(
            "namespace",
            "path",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    let op = |verb: &str, action: &str, extra: Value| {
        let mut o = json!({
            "operationId": operation_id(verb, r),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "responses": ok,
        });
        if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
            o.extend(extra.clone());
        }
        o
    };
    let mut patch_params = write_params.clone();
    patch_params.push(param("force", "query", "Force is going to \"force\" Apply requests."));
    vec![
        (
            collection,
            json!({
                "get": op("list", "list", json!({})),
                "post": op("create", "post", json!({"parameters": write_params, "requestBody": body(&["application/json", "application/yaml"])})),
                "parameters": collection_params,
            }),
        ),
        (
            item,
            json!({
                "get": op("read", "get", json!({})),
                "put": op("replace", "put", json!({"parameters": write_params, "requestBody": body(&["application/json", "application/yaml"])})),
                "patch": op("patch", "patch", json!({"parameters": patch_params, "requestBody": body(&[
                    "application/json-patch+json", "application/merge-patch+json",
                    "application/strategic-merge-patch+json", "application/apply-patch+yaml"])})),
                "delete": op("delete", "delete", json!({})),
                "parameters": path_params,
            }),
        ),
    ]
}

fn schema_name(r: &Resource) -> String {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    r.types.schema(&mut generator).0
}

/// The OpenAPI v3 document of one group-version.
pub fn group_document(group: &str, version: &str) -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    let mut kinds = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let (name, _) = r.types.schema(&mut generator);
        // Operations carry one GVK object; schemas a list of them (as in Kubernetes' documents).
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        paths.extend(paths_for(r, &gvk));
        kinds.push((name, json!([gvk])));
    }
    let mut schemas = generator.take_definitions(true);
    for (type_name, schema) in schemas.iter_mut() {
        let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else { continue };
        for (property, prop_schema) in properties.iter_mut() {
            if let (Some((strategy, key)), Some(prop)) =
                (crate::patch::strategy::schema_extensions(type_name, property), prop_schema.as_object_mut())
            {
                prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
                if let Some(key) = key {
                    prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
                }
            }
        }
    }
    for (name, gvk) in kinds {
        if let Some(schema) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
            schema.insert("x-kubernetes-group-version-kind".into(), gvk);
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::discovery::KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lists_every_group_version() {
        let index = index();
        let paths = index["paths"].as_object().unwrap();
        assert!(paths.contains_key("api/v1") && paths.contains_key("apis/apps/v1"));
        let url = paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
    }

    #[test]
    fn patch_operations_declare_field_validation() {
        let doc: Value = serde_json::from_slice(document("apis/apps/v1").unwrap()).unwrap();
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        let spec = &schemas["io.k8s.api.apps.v1.DeploymentSpec"];
        assert!(spec["properties"]["replicas"]["description"].as_str().unwrap().contains("Defaults to 1"));
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(
            (containers["x-kubernetes-patch-strategy"].as_str(), containers["x-kubernetes-patch-merge-key"].as_str()),
            (Some("merge"), Some("name"))
        );
        let ports = &schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let text = serde_json::to_string(&doc).unwrap();
        assert!(!text.contains("#/$defs"), "every reference points into components.schemas");
    }
}
