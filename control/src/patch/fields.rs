//! Field sets for server-side apply: which leaf fields of an object a manager owns, in the
//! `FieldsV1` encoding Kubernetes stores in `metadata.managedFields` (`f:name` for a field,
//! `k:{"name":"web"}` for a keyed list item, `v:"x"` for a set member). Pure.

use super::strategy::{list_strategy, ListStrategy};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// A path of FieldsV1 tokens from the object root to a leaf.
pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// Fields that belong to the system, never to a manager.
const SYSTEM_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The leaf fields set in `object` (apiVersion, kind, status and system metadata excluded).
pub fn fields_of(kind: &str, object: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = object.as_object() else { return out };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" | "status" => continue,
            "metadata" => {
                if let Some(meta) = value.as_object() {
                    for (mk, mv) in meta {
                        if SYSTEM_META.contains(&mk.as_str()) {
                            continue;
                        }
                        let mut schema = vec!["metadata".to_string(), mk.clone()];
                        let mut path = vec!["f:metadata".to_string(), format!("f:{mk}")];
                        walk(kind, &mut schema, &mut path, mv, &mut out);
                    }
                }
            }
            _ => {
                let mut schema = vec![key.clone()];
                let mut path = vec![format!("f:{key}")];
                walk(kind, &mut schema, &mut path, value, &mut out);
            }
        }
    }
    out
}

/// Fields of `status` only (for the status subresource's managers).
pub fn status_fields_of(kind: &str, object: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(status) = object.get("status") {
        walk(kind, &mut vec!["status".to_string()], &mut vec!["f:status".to_string()], status, &mut out);
    }
    out
}

fn walk(kind: &str, schema: &mut Vec<String>, path: &mut Path, value: &Value, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                schema.push(k.clone());
                path.push(format!("f:{k}"));
                walk(kind, schema, path, v, out);
                path.pop();
                schema.pop();
            }
        }
        Value::Array(items) => match list_strategy(kind, schema) {
            ListStrategy::Atomic => {
                out.insert(path.clone());
            }
            ListStrategy::Set => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
                if items.is_empty() {
                    out.insert(path.clone());
                }
            }
            ListStrategy::MergeKey(key) => {
                for item in items {
                    let id = item.get(key).cloned().unwrap_or(Value::Null);
                    path.push(format!("k:{}", json!({ key: id })));
                    walk(kind, schema, path, item, out);
                    path.pop();
                }
                if items.is_empty() {
                    out.insert(path.clone());
                }
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at `path` in `object`, if present.
pub fn get<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = object;
    for token in path {
        current = step(current, token)?;
    }
    Some(current)
}

fn step<'a>(current: &'a Value, token: &str) -> Option<&'a Value> {
    if let Some(field) = token.strip_prefix("f:") {
        current.get(field)
    } else if let Some(key) = token.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        current.as_array()?.iter().find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
    } else if let Some(value) = token.strip_prefix("v:") {
        let value: Value = serde_json::from_str(value).ok()?;
        current.as_array()?.iter().find(|item| **item == value)
    } else if let Some(index) = token.strip_prefix("i:") {
        current.as_array()?.get(index.parse::<usize>().ok()?)
    } else {
        None
    }
}

/// Removes the field at `path` from `object`. Removing a keyed item's key field removes the
/// item; parents left empty by the removal stay (an empty map is still a value someone set).
pub fn remove(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    // A keyed item's own key field: the item goes.
    if parents.last().is_some_and(|p| p.starts_with("k:")) {
        if let (Some(field), Some(key)) = (last.strip_prefix("f:"), parents.last().and_then(|p| p.strip_prefix("k:"))) {
            if serde_json::from_str::<Map<String, Value>>(key).is_ok_and(|k| k.contains_key(field)) {
                remove(object, parents);
                return;
            }
        }
    }
    let mut current = object;
    for token in parents {
        let next = if let Some(field) = token.strip_prefix("f:") {
            current.get_mut(field)
        } else if let Some(key) = token.strip_prefix("k:") {
            let Ok(key) = serde_json::from_str::<Map<String, Value>>(key) else { return };
            current
                .as_array_mut()
                .and_then(|items| items.iter_mut().find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v))))
        } else {
            None
        };
        match next {
            Some(n) => current = n,
            None => return,
        }
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = current.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(key) = last.strip_prefix("k:") {
        if let (Ok(key), Some(items)) = (serde_json::from_str::<Map<String, Value>>(key), current.as_array_mut()) {
            items.retain(|item| !key.iter().all(|(k, v)| item.get(k) == Some(v)));
        }
    } else if let Some(value) = last.strip_prefix("v:") {
        if let (Ok(value), Some(items)) = (serde_json::from_str::<Value>(value), current.as_array_mut()) {
            items.retain(|item| *item != value);
        }
    }
}

/// Encodes a set as FieldsV1 JSON.
pub fn encode(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for token in path {
            let entry = node.entry(token.clone()).or_insert_with(|| json!({}));
            if token.starts_with("k:") {
                entry.as_object_mut().expect("FieldsV1 nodes are objects").entry(".").or_insert_with(|| json!({}));
            }
            node = entry.as_object_mut().expect("FieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// Decodes FieldsV1 JSON into a set of leaf paths.
pub fn decode(fields: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn go(node: &Map<String, Value>, path: &mut Path, out: &mut FieldSet) {
        let children: Vec<(&String, &Value)> = node.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, v) in children {
            path.push(k.clone());
            go(v.as_object().unwrap_or(&Map::new()), path, out);
            path.pop();
        }
    }
    if let Some(map) = fields.as_object() {
        go(map, &mut Vec::new(), &mut out);
    }
    out
}

/// `.spec.template.spec.containers[name="web"].image`, as conflict messages print paths.
pub fn render(path: &[String]) -> String {
    let mut out = String::new();
    for token in path {
        if let Some(f) = token.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = token.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = token.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else {
            out.push_str(&format!("[{token}]"));
        }
    }
    out
}

/// True if one path is a prefix of the other (they name overlapping fields).
pub fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["x"]},
               "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
               "status": {"replicas": 2}})
    }

    #[test]
    fn leaves_of_an_object() {
        let set = fields_of("Deployment", &deployment());
        let rendered: Vec<String> = set.iter().map(|p| render(p)).collect();
        assert_eq!(
            rendered,
            vec![
                ".metadata.finalizers[=\"x\"]",
                ".metadata.labels.app",
                ".spec.replicas",
                ".spec.template.spec.containers[name=\"web\"].image",
                ".spec.template.spec.containers[name=\"web\"].name",
            ]
        );
    }

    #[test]
    fn encode_decode_round_trip() {
        let set = fields_of("Deployment", &deployment());
        let encoded = encode(&set);
        assert!(encoded["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"].get(".").is_some());
        assert_eq!(decode(&encoded), set);
    }

    #[test]
    fn get_and_remove() {
        let mut d = deployment();
        let image: Path = vec!["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"web\"}", "f:image"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(get(&d, &image), Some(&json!("nginx")));
        remove(&mut d, &image);
        assert_eq!(d["spec"]["template"]["spec"]["containers"], json!([{"name": "web"}]));
        let name: Path = vec!["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"web\"}", "f:name"]
            .into_iter()
            .map(String::from)
            .collect();
        remove(&mut d, &name);
        assert_eq!(d["spec"]["template"]["spec"]["containers"], json!([]));
        remove(&mut d, &["f:metadata".to_string(), "f:finalizers".to_string(), "v:\"x\"".to_string()]);
        assert_eq!(d["metadata"]["finalizers"], json!([]));
    }
}
