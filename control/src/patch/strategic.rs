//! Kubernetes' strategic merge patch: a JSON merge patch whose lists merge by the strategies in
//! [`super::strategy`], with the directives `$patch` (replace/delete/merge), `$retainKeys`,
//! `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`. This is what
//! `kubectl apply` (client-side) and `kubectl patch` (default type) send. Pure.

use super::strategy::{list_strategy, ListStrategy};
use serde_json::{Map, Value};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Applies `patch` to `original`, an object of `kind`.
pub fn apply(kind: &str, original: &Value, patch: &Value) -> Result<Value, String> {
    let Value::Object(patch) = patch else { return Err("strategic merge patch must be a JSON object".into()) };
    let mut path = Vec::new();
    let merged = merge_map(kind, &mut path, original.as_object(), patch)?;
    Ok(merged.map(Value::Object).unwrap_or(Value::Null))
}

/// Merges `patch` into `original`; `None` means the map is deleted (`$patch: delete`).
fn merge_map(
    kind: &str,
    path: &mut Vec<String>,
    original: Option<&Map<String, Value>>,
    patch: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, String> {
    let directive = patch.get(PATCH).and_then(Value::as_str);
    match directive {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove(PATCH);
            return Ok(Some(strip_directives(replaced)));
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other:?} in map")),
    }
    let mut result = original.cloned().unwrap_or_default();
    // Directives about sibling lists are applied after the lists themselves are merged.
    let mut orders = Vec::new();
    for (key, value) in patch {
        if key == PATCH || key == RETAIN_KEYS {
            continue;
        }
        if let Some(list) = key.strip_prefix(SET_ORDER) {
            orders.push((list.to_string(), value.clone()));
            continue;
        }
        if let Some(list) = key.strip_prefix(DELETE_PRIMITIVE) {
            let remove = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = result.get_mut(list) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if value.is_null() {
            result.remove(key);
            continue;
        }
        path.push(key.clone());
        let merged = merge_value(kind, path, result.get(key), value)?;
        path.pop();
        match merged {
            Some(v) => {
                result.insert(key.clone(), v);
            }
            None => {
                result.remove(key);
            }
        }
    }
    for (list, order) in orders {
        path.push(list.clone());
        let strategy = list_strategy(kind, path);
        path.pop();
        if let (Some(Value::Array(items)), Some(order)) = (result.get_mut(&list), order.as_array()) {
            reorder(items, order, strategy);
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let keep: Vec<&str> =
            retain.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        result.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(result))
}

fn merge_value(
    kind: &str,
    path: &mut Vec<String>,
    original: Option<&Value>,
    patch: &Value,
) -> Result<Option<Value>, String> {
    match patch {
        Value::Object(p) => {
            let orig = original.and_then(Value::as_object);
            Ok(merge_map(kind, path, orig, p)?.map(Value::Object))
        }
        Value::Array(p) => {
            let orig = original.and_then(Value::as_array);
            merge_list(kind, path, orig, p).map(|l| Some(Value::Array(l)))
        }
        other => Ok(Some(other.clone())),
    }
}

fn merge_list(
    kind: &str,
    path: &mut Vec<String>,
    original: Option<&Vec<Value>>,
    patch: &[Value],
) -> Result<Vec<Value>, String> {
    let strategy = list_strategy(kind, path);
    // A `{"$patch": "replace"}` item replaces the whole list with the other items.
    let replace = patch.iter().any(|item| item.get(PATCH).and_then(Value::as_str) == Some("replace"));
    let items: Vec<&Value> =
        patch.iter().filter(|item| item.get(PATCH).and_then(Value::as_str) != Some("replace")).collect();
    if replace {
        return Ok(items.into_iter().cloned().map(strip_value).collect());
    }
    match strategy {
        ListStrategy::Atomic => Ok(items.into_iter().cloned().map(strip_value).collect()),
        ListStrategy::Set => {
            let mut result = original.cloned().unwrap_or_default();
            for item in items {
                if !result.contains(item) {
                    result.push(item.clone());
                }
            }
            Ok(result)
        }
        ListStrategy::MergeKey(key) => {
            let mut result = original.cloned().unwrap_or_default();
            for item in items {
                let Some(id) = item.get(key) else {
                    return Err(format!("map: {item} does not contain declared merge key: {key}"));
                };
                let position = result.iter().position(|o| o.get(key) == Some(id));
                if item.get(PATCH).and_then(Value::as_str) == Some("delete") {
                    if let Some(i) = position {
                        result.remove(i);
                    }
                    continue;
                }
                let patch_map = item.as_object().ok_or_else(|| format!("list item {item} is not an object"))?;
                match position {
                    Some(i) => {
                        let merged = merge_map(kind, path, result[i].as_object(), patch_map)?;
                        match merged {
                            Some(m) => result[i] = Value::Object(m),
                            None => {
                                result.remove(i);
                            }
                        }
                    }
                    None => {
                        if let Some(m) = merge_map(kind, path, None, patch_map)? {
                            result.push(Value::Object(m));
                        }
                    }
                }
            }
            Ok(result)
        }
    }
}

/// Orders `items` as `order` says (by merge key or primitive value); items not named in the
/// order keep their relative order after the named ones.
fn reorder(items: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let id = |item: &Value| -> Value {
        match strategy {
            ListStrategy::MergeKey(key) => item.get(key).cloned().unwrap_or(Value::Null),
            _ => item.clone(),
        }
    };
    let order_ids: Vec<Value> = order.iter().map(id).collect();
    let mut named: Vec<(usize, Value)> = Vec::new();
    let mut rest = Vec::new();
    for item in items.drain(..) {
        match order_ids.iter().position(|o| *o == id(&item)) {
            Some(i) => named.push((i, item)),
            None => rest.push(item),
        }
    }
    named.sort_by_key(|(i, _)| *i);
    items.extend(named.into_iter().map(|(_, v)| v));
    items.extend(rest);
}

fn strip_directives(mut map: Map<String, Value>) -> Map<String, Value> {
    map.retain(|k, _| !k.starts_with('$'));
    for v in map.values_mut() {
        *v = strip_value(std::mem::take(v));
    }
    map
}

fn strip_value(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives(m)),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_value).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"metadata": {"labels": {"app": "web"}, "finalizers": ["a"]},
               "spec": {"template": {"spec": {"containers": [
                   {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
                   {"name": "sidecar", "image": "busybox"}]}}}})
    }

    #[test]
    fn lists_merge_by_key() {
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]}]}}}});
        let out = apply("Deployment", &deployment(), &p).unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(cs[0]["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
        assert_eq!(cs[1]["name"], "sidecar");
    }

    #[test]
    fn delete_and_replace_directives() {
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}});
        let out = apply("Deployment", &deployment(), &p).unwrap();
        assert_eq!(out["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
        let p = json!({"metadata": {"labels": {"$patch": "replace", "tier": "x"}}});
        assert_eq!(apply("Deployment", &deployment(), &p).unwrap()["metadata"]["labels"], json!({"tier": "x"}));
        let p = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "i"}]}}}});
        assert_eq!(
            apply("Deployment", &deployment(), &p).unwrap()["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "i"}])
        );
        let p = json!({"metadata": {"$patch": "delete"}});
        assert!(apply("Deployment", &deployment(), &p).unwrap().get("metadata").is_none());
    }

    #[test]
    fn primitive_lists_and_order() {
        let p = json!({"metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]}});
        assert_eq!(apply("Deployment", &deployment(), &p).unwrap()["metadata"]["finalizers"], json!(["b"]));
        let p = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}], "containers": [{"name": "web", "image": "nginx:3"}]}}}});
        let out = apply("Deployment", &deployment(), &p).unwrap();
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["sidecar", "web"]);
    }

    #[test]
    fn retain_keys_and_nulls() {
        let o = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        assert_eq!(apply("Deployment", &o, &p).unwrap()["spec"]["strategy"], json!({"type": "Recreate"}));
        let p = json!({"spec": {"strategy": null}});
        assert_eq!(apply("Deployment", &o, &p).unwrap()["spec"], json!({}));
    }

    #[test]
    fn atomic_lists_are_replaced() {
        let o = json!({"spec": {"tolerations": [{"key": "a"}]}});
        let p = json!({"spec": {"tolerations": [{"key": "b"}]}});
        assert_eq!(apply("Pod", &o, &p).unwrap()["spec"]["tolerations"], json!([{"key": "b"}]));
        assert!(apply(
            "Deployment",
            &deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})
        )
        .is_err());
    }
}
