//! Server-side apply and `managedFields` bookkeeping. Each manager (`fieldManager` and whether
//! it applied or updated) owns a set of leaf fields. An apply sets the fields of its
//! configuration, removes fields it applied before and no longer does (unless someone else
//! owns them too), and conflicts with other owners of fields it would change (409, unless
//! forced, which takes the fields over). Updates (create, update, patch) take ownership of the
//! fields they change without conflicts. Pure: the caller provides the time.

use super::fields::{self, FieldSet};
use super::strategic;
use crate::error::{ApiError, Cause};
use serde_json::{json, Value};

/// One `metadata.managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Manager {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Manager {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields::encode(&self.fields),
        });
        if !self.subresource.is_empty() {
            v["subresource"] = json!(self.subresource);
        }
        v
    }

    fn same_owner(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

pub fn read_managers(object: &Value) -> Vec<Manager> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| Manager {
                    manager: e.get("manager").and_then(Value::as_str).unwrap_or("").to_string(),
                    operation: e.get("operation").and_then(Value::as_str).unwrap_or("Update").to_string(),
                    api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string(),
                    time: e.get("time").and_then(Value::as_str).unwrap_or("").to_string(),
                    subresource: e.get("subresource").and_then(Value::as_str).unwrap_or("").to_string(),
                    fields: fields::decode(e.get("fieldsV1").unwrap_or(&Value::Null)),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_managers(object: &mut Value, managers: Vec<Manager>) {
    let entries: Vec<Value> = managers.iter().filter(|m| !m.fields.is_empty()).map(Manager::to_json).collect();
    if entries.is_empty() && object.get("metadata").is_none() {
        return;
    }
    let Some(map) = object.as_object_mut() else { return };
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Who is writing and how.
pub struct Writer<'a> {
    pub kind: &'a str,
    pub manager: &'a str,
    pub api_version: &'a str,
    /// `""` for the main resource, `"status"` or `"scale"` for a subresource.
    pub subresource: &'a str,
    pub now: &'a str,
}

/// Records a non-apply write from `old` (None on create) to `new`: the writer takes the fields
/// whose values it set or changed; fields that disappeared leave every set.
pub fn record_update(writer: &Writer, old: Option<&Value>, new: &mut Value) {
    let mut managers = old.map(read_managers).unwrap_or_default();
    let field_set = |o: &Value| {
        if writer.subresource == "status" {
            fields::status_fields_of(writer.kind, o)
        } else {
            fields::fields_of(writer.kind, o)
        }
    };
    let new_fields = field_set(new);
    let changed: FieldSet = match old {
        None => new_fields.clone(),
        Some(old) => new_fields.iter().filter(|p| fields::get(old, p) != fields::get(new, p)).cloned().collect(),
    };
    for m in &mut managers {
        // Fields that no longer exist are owned by nobody; changed fields move to the writer.
        m.fields.retain(|p| fields::get(new, p).is_some() && !changed.contains(p));
    }
    if !changed.is_empty() {
        match managers.iter_mut().find(|m| m.same_owner(writer.manager, "Update", writer.subresource)) {
            Some(m) => {
                m.fields.extend(changed);
                m.time = writer.now.to_string();
                m.api_version = writer.api_version.to_string();
            }
            None => managers.push(Manager {
                manager: writer.manager.to_string(),
                operation: "Update".into(),
                api_version: writer.api_version.to_string(),
                time: writer.now.to_string(),
                subresource: writer.subresource.to_string(),
                fields: changed,
            }),
        }
    }
    write_managers(new, managers);
}

/// Server-side apply of `config` onto `live` (None: the object does not exist yet). Returns the
/// new object with its managedFields; system metadata is the caller's business.
pub fn apply(writer: &Writer, live: Option<&Value>, config: &Value, force: bool) -> Result<Value, ApiError> {
    let live = live.cloned().unwrap_or_else(|| json!({}));
    let mut managers = read_managers(&live);
    let applied = fields::fields_of(writer.kind, config);

    // Conflicts: another owner of a field this apply would change.
    let mut conflicts: Vec<(String, String, String)> = Vec::new();
    for m in managers.iter() {
        if m.same_owner(writer.manager, "Apply", writer.subresource) {
            continue;
        }
        for p in &applied {
            let owned = m.fields.iter().any(|q| fields::overlaps(p, q));
            if owned && fields::get(config, p) != fields::get(&live, p) {
                conflicts.push((m.manager.clone(), m.api_version.clone(), fields::render(p)));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(conflicts));
    }
    if force {
        for m in managers.iter_mut().filter(|m| !m.same_owner(writer.manager, "Apply", writer.subresource)) {
            m.fields.retain(|q| {
                !applied.iter().any(|p| fields::overlaps(p, q) && fields::get(config, p) != fields::get(&live, p))
            });
        }
    }

    // Merge the configuration in, then drop what this manager no longer applies.
    let mut result = strategic::apply(writer.kind, &live, &strip_system(config)).map_err(ApiError::bad_request)?;
    let previous = managers
        .iter()
        .find(|m| m.same_owner(writer.manager, "Apply", writer.subresource))
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    for p in previous.difference(&applied) {
        let shared =
            managers.iter().any(|m| !m.same_owner(writer.manager, "Apply", writer.subresource) && m.fields.contains(p));
        if !shared {
            fields::remove(&mut result, p);
        }
    }
    managers.retain(|m| !m.same_owner(writer.manager, "Apply", writer.subresource));
    managers.push(Manager {
        manager: writer.manager.to_string(),
        operation: "Apply".into(),
        api_version: writer.api_version.to_string(),
        time: writer.now.to_string(),
        subresource: writer.subresource.to_string(),
        fields: applied,
    });
    write_managers(&mut result, managers);
    Ok(result)
}

/// The configuration without fields an apply may not set (they are the server's).
fn strip_system(config: &Value) -> Value {
    let mut c = config.clone();
    if let Some(meta) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
            "deletionTimestamp",
        ] {
            meta.remove(k);
        }
    }
    c
}

fn conflict_error(conflicts: Vec<(String, String, String)>) -> ApiError {
    let causes: Vec<Cause> = conflicts
        .iter()
        .map(|(m, v, f)| Cause {
            reason: "FieldManagerConflict",
            field: f.clone(),
            message: format!("conflict with \"{m}\" using {v}"),
        })
        .collect();
    let message = if conflicts.len() == 1 {
        let (m, v, f) = &conflicts[0];
        format!("Apply failed with 1 conflict: conflict with \"{m}\" using {v}: {f}")
    } else {
        let lines: Vec<String> =
            conflicts.iter().map(|(m, v, f)| format!("conflict with \"{m}\" using {v}: {f}")).collect();
        format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
    };
    ApiError::apply_conflict(message, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer<'a>(manager: &'a str) -> Writer<'a> {
        Writer { kind: "ConfigMap", manager, api_version: "v1", subresource: "", now: "2025-01-01T00:00:00Z" }
    }

    #[test]
    fn apply_creates_and_owns() {
        let cfg =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let out = apply(&writer("alice"), None, &cfg, false).unwrap();
        assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
        let managers = read_managers(&out);
        assert_eq!(managers.len(), 1);
        assert_eq!(managers[0].operation, "Apply");
        assert_eq!(managers[0].fields.len(), 2);
    }

    #[test]
    fn removed_fields_go_unless_shared() {
        let cfg = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let live = apply(&writer("alice"), None, &cfg, false).unwrap();
        let out = apply(&writer("alice"), Some(&live), &json!({"metadata": {"name": "c"}, "data": {"a": "1"}}), false)
            .unwrap();
        assert_eq!(out["data"], json!({"a": "1"}));
        // Bob applied b too (same value): it stays when Alice drops it.
        let live = apply(&writer("alice"), None, &cfg, false).unwrap();
        let live = apply(&writer("bob"), Some(&live), &json!({"data": {"b": "2"}}), false).unwrap();
        let out = apply(&writer("alice"), Some(&live), &json!({"data": {"a": "1"}}), false).unwrap();
        assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
    }

    #[test]
    fn conflicts_unless_forced() {
        let live = apply(&writer("alice"), None, &json!({"data": {"a": "1"}}), false).unwrap();
        let err = apply(&writer("bob"), Some(&live), &json!({"data": {"a": "2"}}), false).unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(err.message, "Apply failed with 1 conflict: conflict with \"alice\" using v1: .data.a");
        let out = apply(&writer("bob"), Some(&live), &json!({"data": {"a": "2"}}), true).unwrap();
        assert_eq!(out["data"]["a"], "2");
        let managers = read_managers(&out);
        assert_eq!(managers.len(), 1, "alice lost her only field: {managers:?}");
        assert_eq!(managers[0].manager, "bob");
    }

    #[test]
    fn updates_take_changed_fields() {
        let mut created = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        record_update(&writer("kubectl-create"), None, &mut created);
        let mut edited = created.clone();
        edited["data"]["a"] = json!("2");
        edited["data"]["b"] = json!("3");
        record_update(&writer("kubectl-edit"), Some(&created), &mut edited);
        let managers = read_managers(&edited);
        assert_eq!(managers.len(), 1, "{managers:?}");
        assert_eq!(managers[0].manager, "kubectl-edit");
        let err = apply(&writer("alice"), Some(&edited), &json!({"data": {"a": "9"}}), false).unwrap_err();
        assert!(err.message.contains("kubectl-edit"));
    }
}
