//! Patch strategies of the built-in kinds' list fields (Kubernetes' `patchStrategy` and
//! `patchMergeKey` struct tags): which lists merge by a key, which are sets of primitives, and
//! which are atomic (replaced whole). Used by strategic merge patch and server-side apply.

/// How a list field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced as a whole.
    Atomic,
    /// Items are identified by the value of this field.
    MergeKey(&'static str),
    /// A set of primitives: union.
    Set,
}

/// The strategy of the list at `path` (field names only, no indices) in an object of `kind`.
pub fn list_strategy(kind: &str, path: &[String]) -> ListStrategy {
    use ListStrategy::*;
    let Some(field) = path.last().map(String::as_str) else { return Atomic };
    let parent = path.len().checked_sub(2).map(|i| path[i].as_str()).unwrap_or("");
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => MergeKey("name"),
        "volumeMounts" => MergeKey("mountPath"),
        "volumeDevices" => MergeKey("devicePath"),
        "hostAliases" => MergeKey("ip"),
        "topologySpreadConstraints" => MergeKey("topologyKey"),
        "ownerReferences" => MergeKey("uid"),
        "finalizers" if parent == "metadata" => Set,
        "conditions" => MergeKey("type"),
        "addresses" if kind == "Node" => MergeKey("type"),
        "podIPs" | "hostIPs" => MergeKey("ip"),
        "secrets" if kind == "ServiceAccount" => MergeKey("name"),
        "ports" if matches!(parent, "containers" | "initContainers" | "ephemeralContainers") => {
            MergeKey("containerPort")
        }
        "ports" if kind == "Service" && path.len() == 2 => MergeKey("port"),
        _ => Atomic,
    }
}

/// The patch extensions (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`) of
/// property `property` of the OpenAPI schema `type_name`, so that kubectl computes the same
/// strategic merge patches the server applies.
pub fn schema_extensions(type_name: &str, property: &str) -> Option<(&'static str, Option<&'static str>)> {
    let short = type_name.rsplit('.').next().unwrap_or(type_name);
    let p = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if short == "DeploymentSpec" && property == "strategy" {
        return Some(("retainKeys", None));
    }
    let strategy = match short {
        "Container" | "EphemeralContainer" => list_strategy("Pod", &p(&["spec", "containers", property])),
        "ObjectMeta" => list_strategy("", &p(&["metadata", property])),
        "ServiceSpec" => list_strategy("Service", &p(&["spec", property])),
        "NodeStatus" => list_strategy("Node", &p(&["status", property])),
        "ServiceAccount" => list_strategy("ServiceAccount", &p(&[property])),
        _ => list_strategy("", &p(&["", property])),
    };
    match strategy {
        ListStrategy::Atomic => None,
        ListStrategy::Set => Some(("merge", None)),
        ListStrategy::MergeKey(key) if property == "volumes" => Some(("merge,retainKeys", Some(key))),
        ListStrategy::MergeKey(key) => Some(("merge", Some(key))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn strategies() {
        assert_eq!(
            list_strategy("Deployment", &p(&["spec", "template", "spec", "containers"])),
            ListStrategy::MergeKey("name")
        );
        assert_eq!(
            list_strategy("Deployment", &p(&["spec", "template", "spec", "containers", "ports"])),
            ListStrategy::MergeKey("containerPort")
        );
        assert_eq!(list_strategy("Service", &p(&["spec", "ports"])), ListStrategy::MergeKey("port"));
        assert_eq!(list_strategy("EndpointSlice", &p(&["ports"])), ListStrategy::Atomic);
        assert_eq!(list_strategy("Pod", &p(&["metadata", "finalizers"])), ListStrategy::Set);
        assert_eq!(list_strategy("Pod", &p(&["spec", "tolerations"])), ListStrategy::Atomic);
    }
}
