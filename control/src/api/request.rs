//! Parsing a request line: which document or resource a path names, and the query parameters
//! Kubernetes defines for each verb. Pure.

use crate::error::ApiError;
use crate::registry::{self, Resource};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Status,
    Scale,
}

/// What a path names.
#[derive(Debug)]
pub enum Target {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList { group: String, version: String },
    OpenApiIndex,
    OpenApiDocument(String),
    Resource(ResourceTarget),
}

#[derive(Debug, Clone)]
pub struct ResourceTarget {
    pub resource: &'static Resource,
    /// `None`: all namespaces (or a cluster-scoped kind).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<Subresource>,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", ApiError::qualified(self.group, self.plural))
    }
}

/// Maps a URL path to its target.
pub fn parse_path(path: &str) -> Result<Target, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let not_found = || ApiError::not_found_path(path);
    match segments.as_slice() {
        ["version"] => Ok(Target::Version),
        ["healthz"] | ["livez"] | ["readyz"] => Ok(Target::Health),
        ["healthz" | "livez" | "readyz", _] => Ok(Target::Health),
        ["api"] => Ok(Target::CoreVersions),
        ["apis"] => Ok(Target::Groups),
        ["apis", group] => Ok(Target::Group(group.to_string())),
        ["openapi", "v3"] => Ok(Target::OpenApiIndex),
        ["openapi", "v3", rest @ ..] => Ok(Target::OpenApiDocument(rest.join("/"))),
        ["api", "v1"] => Ok(Target::ResourceList { group: String::new(), version: "v1".into() }),
        ["apis", group, version] => Ok(Target::ResourceList { group: group.to_string(), version: version.to_string() }),
        ["api", "v1", rest @ ..] => resource_target("", "v1", rest).ok_or_else(not_found).map(Target::Resource),
        ["apis", group, version, rest @ ..] => {
            resource_target(group, version, rest).ok_or_else(not_found).map(Target::Resource)
        }
        _ => Err(not_found()),
    }
}

fn subresource(name: &str, r: &Resource) -> Option<Subresource> {
    match name {
        "status" if r.status_subresource => Some(Subresource::Status),
        "scale" if r.scale_subresource => Some(Subresource::Scale),
        _ => None,
    }
}

fn resource_target(group: &str, version: &str, rest: &[&str]) -> Option<ResourceTarget> {
    let find = |plural: &str| registry::find(group, version, plural);
    let target = |resource: &'static Resource,
                  namespace: Option<&str>,
                  name: Option<&str>,
                  sub: Option<Subresource>| ResourceTarget {
        resource,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub,
    };
    match rest {
        // namespaces/{name}/status is the Namespace's own subresource, not a namespaced kind.
        ["namespaces", name, sub]
            if group.is_empty() && find("namespaces").and_then(|r| subresource(sub, r)).is_some() =>
        {
            let r = find("namespaces")?;
            Some(target(r, None, Some(name), subresource(sub, r)))
        }
        ["namespaces", ns, plural, tail @ ..] => {
            let r = find(plural)?;
            if !r.namespaced {
                return None;
            }
            match tail {
                [] => Some(target(r, Some(ns), None, None)),
                [name] => Some(target(r, Some(ns), Some(name), None)),
                [name, sub] => Some(target(r, Some(ns), Some(name), Some(subresource(sub, r)?))),
                _ => None,
            }
        }
        [plural] => Some(target(find(plural)?, None, None, None)),
        [plural, name] => {
            let r = find(plural)?;
            // A namespaced kind has no items outside a namespace.
            (!r.namespaced).then(|| target(r, None, Some(name), None))
        }
        [plural, name, sub] => {
            let r = find(plural)?;
            if r.namespaced {
                return None;
            }
            Some(target(r, None, Some(name), Some(subresource(sub, r)?)))
        }
        _ => None,
    }
}

/// The query parameters of every verb, parsed.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub label_selector: String,
    pub field_selector: String,
    pub limit: i64,
    pub continue_token: String,
    pub resource_version: Option<String>,
    pub resource_version_match: String,
    pub watch: bool,
    pub allow_bookmarks: bool,
    pub timeout_seconds: Option<u64>,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    pub force: bool,
    pub dry_run: bool,
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub include_object: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    /// The server's default.
    #[default]
    Warn,
    Strict,
}

fn boolean(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE")
}

/// Parses a decoded query string. Unknown parameters are ignored, as Kubernetes does.
pub fn parse_query(pairs: &BTreeMap<String, String>) -> Result<Query, ApiError> {
    let mut q = Query::default();
    for (key, value) in pairs {
        match key.as_str() {
            "labelSelector" => q.label_selector = value.clone(),
            "fieldSelector" => q.field_selector = value.clone(),
            "limit" => {
                q.limit = value.parse().map_err(|_| ApiError::bad_request(format!("invalid limit {value:?}")))?;
            }
            "continue" => q.continue_token = value.clone(),
            "resourceVersion" => q.resource_version = Some(value.clone()).filter(|v| !v.is_empty()),
            "resourceVersionMatch" => q.resource_version_match = value.clone(),
            "watch" => q.watch = boolean(value),
            "allowWatchBookmarks" => q.allow_bookmarks = boolean(value),
            "timeoutSeconds" => q.timeout_seconds = value.parse().ok(),
            "fieldManager" => q.field_manager = Some(value.clone()).filter(|v| !v.is_empty()),
            "fieldValidation" => {
                q.field_validation = match value.as_str() {
                    "Ignore" => FieldValidation::Ignore,
                    "Warn" | "" => FieldValidation::Warn,
                    "Strict" => FieldValidation::Strict,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
                        )))
                    }
                }
            }
            "force" => q.force = boolean(value),
            "dryRun" => q.dry_run = value == "All",
            "propagationPolicy" => q.propagation_policy = Some(value.clone()),
            "gracePeriodSeconds" => q.grace_period_seconds = value.parse().ok(),
            "includeObject" => q.include_object = Some(value.clone()),
            _ => {}
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourceTarget {
        match parse_path(path).unwrap() {
            Target::Resource(t) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let t = resource("/apis/apps/v1/namespaces/default/deployments/web/scale");
        assert_eq!(
            (t.resource.plural, t.namespace.as_deref(), t.name.as_deref(), t.subresource),
            ("deployments", Some("default"), Some("web"), Some(Subresource::Scale))
        );
        let t = resource("/api/v1/pods");
        assert_eq!((t.resource.plural, t.namespace, t.name), ("pods", None, None));
        let t = resource("/api/v1/namespaces/kube-system");
        assert_eq!((t.resource.plural, t.name.as_deref()), ("namespaces", Some("kube-system")));
        let t = resource("/api/v1/namespaces/x/status");
        assert_eq!(
            (t.resource.plural, t.name.as_deref(), t.subresource),
            ("namespaces", Some("x"), Some(Subresource::Status))
        );
        let t = resource("/api/v1/namespaces/x/configmaps");
        assert_eq!((t.resource.plural, t.namespace.as_deref()), ("configmaps", Some("x")));
        let t = resource("/api/v1/nodes/n1/status");
        assert_eq!(t.subresource, Some(Subresource::Status));
        assert!(parse_path("/api/v1/namespaces/x/configmaps/c/scale").is_err());
        assert!(parse_path("/api/v1/configmaps/c").is_err());
        assert!(parse_path("/apis/apps/v1/widgets").is_err());
        assert!(matches!(parse_path("/apis/apps/v1").unwrap(), Target::ResourceList { .. }));
        assert!(
            matches!(parse_path("/openapi/v3/apis/apps/v1").unwrap(), Target::OpenApiDocument(d) if d == "apis/apps/v1")
        );
    }

    #[test]
    fn queries() {
        let pairs: BTreeMap<String, String> =
            [("limit", "500"), ("watch", "true"), ("fieldValidation", "Strict"), ("resourceVersion", "")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let q = parse_query(&pairs).unwrap();
        assert_eq!(
            (q.limit, q.watch, q.field_validation, q.resource_version),
            (500, true, FieldValidation::Strict, None)
        );
        let bad: BTreeMap<String, String> = [("fieldValidation".to_string(), "Loud".to_string())].into();
        assert_eq!(parse_query(&bad).unwrap_err().code, 400);
    }
}
