//! Patch application, pure: JSON Patch (RFC 6902), JSON merge patch (RFC 7386), Kubernetes'
//! strategic merge patch, and server-side apply with field ownership.

pub mod apply;
pub mod fields;
pub mod strategic;
pub mod strategy;

use serde_json::Value;

/// The patch types of `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Applies an RFC 6902 JSON Patch document.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, String> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON Patch: {e}"))?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| e.to_string())?;
    Ok(doc)
}

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(original: &Value, patch: &Value) -> Result<Value, String> {
    if !patch.is_object() {
        return Err("merge patch must be a JSON object".into());
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_and_merge_patches() {
        let o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1}});
        let p = json!([{"op": "replace", "path": "/spec/replicas", "value": 3}, {"op": "remove", "path": "/metadata/labels/a"}]);
        assert_eq!(json_patch(&o, &p).unwrap(), json!({"metadata": {"labels": {"b": "2"}}, "spec": {"replicas": 3}}));
        assert!(json_patch(&o, &json!([{"op": "test", "path": "/spec/replicas", "value": 2}])).is_err());
        let m = merge_patch(&o, &json!({"metadata": {"labels": {"a": null, "c": "3"}}})).unwrap();
        assert_eq!(m["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(PatchType::from_content_type("application/apply-patch+yaml; charset=utf-8"), Some(PatchType::Apply));
    }
}
