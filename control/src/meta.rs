//! Object metadata rules shared by every kind: name syntax (DNS-1123 and friends), label and
//! annotation syntax, timestamps, generated names and uids. Pure.

use crate::error::Cause;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// Which name syntax a kind's objects must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: lowercase alphanumerics, '-' and '.', ≤ 253 (most kinds).
    Subdomain,
    /// DNS-1123 label: lowercase alphanumerics and '-', ≤ 63 (namespaces).
    Label,
    /// DNS-1035 label: a label that starts with a letter (services).
    Dns1035,
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_label(s: &str) -> bool {
    is_label(s)
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Problems with `name` under `rule`, as Kubernetes words them (empty when valid).
pub fn name_problems(rule: NameRule, name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    match rule {
        NameRule::Subdomain => {
            if name.len() > 253 {
                problems.push("must be no more than 253 characters".to_string());
            }
            if !is_dns1123_subdomain(name) {
                problems.push(DNS1123_SUBDOMAIN_MSG.to_string());
            }
        }
        NameRule::Label => {
            if name.len() > 63 {
                problems.push("must be no more than 63 characters".to_string());
            }
            if !is_label(name) || name.len() > 63 {
                problems.push(DNS1123_LABEL_MSG.to_string());
            }
        }
        NameRule::Dns1035 => {
            if name.len() > 63 {
                problems.push("must be no more than 63 characters".to_string());
            }
            if !is_label(name) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
                problems.push(DNS1035_MSG.to_string());
            }
        }
    }
    problems
}

/// A qualified name (label and annotation keys): optional DNS subdomain prefix and '/', then a
/// name of ≤ 63 alphanumerics, '-', '_', '.', starting and ending alphanumeric.
pub fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || !is_dns1123_subdomain(prefix) {
            return Some("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into());
        }
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    (!ok).then(|| "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into())
}

pub fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let ok = value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric();
    (!ok).then(|| "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into())
}

/// Validates `metadata` of an object: name, labels, annotations.
pub fn validate_metadata(object: &Value, rule: NameRule, namespaced: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = object.get("metadata").cloned().unwrap_or(json!({}));
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired",
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        });
    } else {
        for p in name_problems(rule, name) {
            causes.push(Cause::invalid("metadata.name", name, &p));
        }
    }
    if namespaced && meta.get("namespace").and_then(Value::as_str).unwrap_or("").is_empty() {
        causes.push(Cause::required("metadata.namespace"));
    }
    causes.extend(validate_labels(meta.get("labels"), "metadata.labels"));
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (key, value) in annotations {
            if let Some(p) = qualified_name_problem(key) {
                causes.push(Cause::invalid("metadata.annotations", key, &p));
            }
            total += key.len() + value.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                field: "metadata.annotations".into(),
                message: "Too long: must have at most 262144 bytes".into(),
            });
        }
    }
    causes
}

pub fn validate_labels(labels: Option<&Value>, field: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(labels) = labels.and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(p) = qualified_name_problem(key) {
                causes.push(Cause::invalid(field, key, &p));
            }
            let value = value.as_str().unwrap_or("");
            if let Some(p) = label_value_problem(value) {
                causes.push(Cause::invalid(&format!("{field}.{key}"), value, &p));
            }
        }
    }
    causes
}

/// RFC 3339 with second precision, as Kubernetes serializes `metav1.Time`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// Characters of generated name suffixes (no vowels, no look-alikes), as Kubernetes uses.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `generateName` + 5 characters chosen from `random` bytes.
pub fn generated_name(base: &str, random: [u8; 5]) -> String {
    // Kubernetes truncates the base so the result stays a valid 63-character label.
    let base: String = base.chars().take(58).collect();
    let suffix: String = random.iter().map(|b| SUFFIX_ALPHABET[*b as usize % SUFFIX_ALPHABET.len()] as char).collect();
    format!("{base}{suffix}")
}

/// A version-4 UUID text from 16 random bytes.
pub fn uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// `kubectl`'s human-readable age: 45s, 3m12s, 5h, 2d3h, 400d, 3y20d.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let minutes = s / 60;
    let hours = s / 3600;
    let days = hours / 24;
    if s < 120 {
        format!("{s}s")
    } else if minutes < 10 {
        if s % 60 == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{}s", s % 60)
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        if minutes % 60 == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{}m", minutes % 60)
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        if hours % 24 == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{}h", hours % 24)
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        format!("{}y{}d", days / 365, days % 365)
    } else {
        format!("{}y", days / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name_problems(NameRule::Subdomain, "web-1.example").is_empty());
        assert!(!name_problems(NameRule::Subdomain, "Web").is_empty());
        assert!(!name_problems(NameRule::Label, "a.b").is_empty());
        assert!(!name_problems(NameRule::Dns1035, "1abc").is_empty());
        assert!(name_problems(NameRule::Dns1035, "abc-1").is_empty());
        assert!(!name_problems(NameRule::Label, &"a".repeat(64)).is_empty());
    }

    #[test]
    fn label_syntax() {
        assert!(qualified_name_problem("app.kubernetes.io/name").is_none());
        assert!(qualified_name_problem("-x").is_some());
        assert!(qualified_name_problem("/x").is_some());
        assert!(label_value_problem("").is_none());
        assert!(label_value_problem("a b").is_some());
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(192), "3m12s");
        assert_eq!(human_duration(3600 * 5), "5h");
        assert_eq!(human_duration(3600 * 24 * 3 + 3600), "3d1h");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn ids() {
        let u = uuid_v4([0xab; 16]);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_eq!(generated_name("web-", [0, 1, 2, 3, 4]), "web-bcdfg");
    }
}
