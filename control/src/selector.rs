//! Label and field selectors: parsing the query-string syntax (`app=web,tier in (a,b),!canary`)
//! and the `LabelSelector` object form, and matching objects. Pure.

use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Op::Equals | Op::In => value.is_some_and(|v| self.values.contains(v)),
            Op::NotEquals | Op::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
        }
    }
}

/// A label selector: all requirements must hold. Empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches an object's `metadata.labels`.
    pub fn matches_object(&self, object: &Value) -> bool {
        self.is_empty() || self.matches(&labels_of(object))
    }

    /// Parses the query-string syntax.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Converts a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`).
    pub fn from_object(selector: &Value) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in labels {
                let value = value.as_str().ok_or_else(|| format!("matchLabels[{key}] must be a string"))?;
                requirements.push(Requirement { key: key.clone(), op: Op::Equals, values: vec![value.to_string()] });
            }
        }
        if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
            for expr in exprs {
                let key = expr.get("key").and_then(Value::as_str).ok_or("matchExpressions: key is required")?;
                let values: Vec<String> = expr
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| vs.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                let op = match expr.get("operator").and_then(Value::as_str) {
                    Some("In") => Op::In,
                    Some("NotIn") => Op::NotIn,
                    Some("Exists") => Op::Exists,
                    Some("DoesNotExist") => Op::DoesNotExist,
                    other => return Err(format!("{other:?} is not a valid label selector operator")),
                };
                let needs_values = matches!(op, Op::In | Op::NotIn);
                if needs_values == values.is_empty() {
                    return Err(if needs_values {
                        "values: must be specified when `operator` is 'In' or 'NotIn'".to_string()
                    } else {
                        "values: may not be specified when `operator` is 'Exists' or 'DoesNotExist'".to_string()
                    });
                }
                requirements.push(Requirement { key: key.to_string(), op, values });
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// The query-string form (what `kubectl get -o wide` shows as SELECTOR).
    pub fn render(&self) -> String {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r.op {
                Op::Equals => format!("{}={}", r.key, r.values.join(",")),
                Op::NotEquals => format!("{}!={}", r.key, r.values.join(",")),
                Op::In => format!("{} in ({})", r.key, r.values.join(",")),
                Op::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
            })
            .collect();
        parts.join(",")
    }
}

pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
        .unwrap_or_default()
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key is empty".into());
    }
    if key.chars().any(|c| c.is_whitespace() || "=!(),".contains(c)) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(())
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        validate_key(key)?;
        return Ok(Requirement { key: key.into(), op: Op::DoesNotExist, values: vec![] });
    }
    for (token, op) in [("!=", Op::NotEquals), ("==", Op::Equals), ("=", Op::Equals)] {
        if let Some((key, value)) = part.split_once(token) {
            let key = key.trim();
            validate_key(key)?;
            return Ok(Requirement { key: key.into(), op, values: vec![value.trim().to_string()] });
        }
    }
    let words: Vec<&str> = part.splitn(3, char::is_whitespace).filter(|w| !w.is_empty()).collect();
    if words.len() == 1 {
        validate_key(words[0])?;
        return Ok(Requirement { key: words[0].into(), op: Op::Exists, values: vec![] });
    }
    // `key in (a,b)` / `key notin (a,b)`; the rest after the operator may contain spaces.
    let (key, rest) =
        part.trim().split_once(char::is_whitespace).ok_or_else(|| format!("unable to parse requirement {part:?}"))?;
    let rest = rest.trim_start();
    let (op, list) = if let Some(list) = rest.strip_prefix("notin") {
        (Op::NotIn, list)
    } else if let Some(list) = rest.strip_prefix("in") {
        (Op::In, list)
    } else {
        return Err(format!("unable to parse requirement {part:?}: found '{rest}', expected: in, notin, =, ==, !="));
    };
    validate_key(key)?;
    let list = list.trim();
    let inner = list
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement {part:?}: expected a parenthesised list of values"))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
    if values.is_empty() {
        return Err(format!(
            "unable to parse requirement {part:?}: for 'in', 'notin' operators, values set can't be empty"
        ));
    }
    Ok(Requirement { key: key.into(), op, values })
}

/// One `field=value` / `field!=value` term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub value: String,
    pub negated: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses `a=b,c!=d`; only fields in `supported` (plus `metadata.name`/`metadata.namespace`)
    /// are accepted, as Kubernetes does per kind.
    pub fn parse(text: &str, supported: &[&str]) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!("invalid selector: '{text}'; can't understand '{part}'"));
            };
            let field = field.trim();
            if !(field == "metadata.name" || field == "metadata.namespace" || supported.contains(&field)) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push(FieldTerm { field: field.into(), value: value.trim().into(), negated });
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|t| (field_value(object, &t.field) == t.value) != t.negated)
    }

    /// The single name this selector pins (`metadata.name=x`), which lets a read skip the scan.
    pub fn pinned_name(&self) -> Option<&str> {
        self.terms.iter().find(|t| t.field == "metadata.name" && !t.negated).map(|t| t.value.as_str())
    }
}

/// The value of a dotted field path as a field selector compares it (missing = "").
pub fn field_value(object: &Value, path: &str) -> String {
    let mut current = object;
    for segment in path.split('.') {
        match current.get(segment) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn equality_and_set_based_selectors() {
        let s = LabelSelector::parse("app=web,tier in (front, back),!canary,env!=prod,track").unwrap();
        assert_eq!(s.requirements.len(), 5);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front"), ("track", "x")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "front"), ("track", "x"), ("canary", "1")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "mid"), ("track", "x")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "back"), ("track", "x"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "back")])));
        let n = LabelSelector::parse("tier notin (a,b)").unwrap();
        assert!(n.matches(&labels(&[])));
        assert!(!n.matches(&labels(&[("tier", "a")])));
        assert!(LabelSelector::parse("a in ()").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
        assert_eq!(LabelSelector::parse("app==web").unwrap().render(), "app=web");
    }

    #[test]
    fn object_form() {
        let s = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]
        }))
        .unwrap();
        assert_eq!(s.render(), "app=web,tier in (a)");
        assert!(LabelSelector::from_object(&json!({"matchExpressions": [{"key": "k", "operator": "In"}]})).is_err());
        assert!(LabelSelector::from_object(&json!({"matchExpressions": [{"key": "k", "operator": "Foo"}]})).is_err());
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let s =
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", &["spec.nodeName", "status.phase"]).unwrap();
        assert!(s.matches(&pod));
        let unscheduled = FieldSelector::parse("spec.nodeName=", &["spec.nodeName"]).unwrap();
        assert!(!unscheduled.matches(&pod));
        assert!(unscheduled.matches(&json!({"spec": {}})));
        assert_eq!(FieldSelector::parse("metadata.name=p", &[]).unwrap().pinned_name(), Some("p"));
        assert_eq!(FieldSelector::parse("spec.foo=1", &[]).unwrap_err(), "field label not supported: spec.foo");
    }
}
