//! The resource registry: one table entry per kind says everything the generic API machinery
//! needs — names, scope, subresources, the Rust type it decodes as, defaulting, validation,
//! field selectors and table columns. Adding a kind is adding an entry.

use crate::defaults;
use crate::error::Cause;
use crate::meta::NameRule;
use crate::table::{self, Printer};
use crate::validation as v;
use k8s_openapi::api::{
    apps::v1 as apps, batch::v1 as batch, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::marker::PhantomData;

/// The Rust type of a kind, used to decode (dropping unknown fields, rejecting wrong types) and
/// to produce its OpenAPI schema.
pub trait TypeOps: Sync {
    /// Decodes `object` as the type and encodes it back: unknown fields are dropped.
    fn round_trip(&self, object: &Value) -> Result<Value, String>;
    /// Adds the type's schema (and every schema it refers to) to `generator`; returns its name.
    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> (String, schemars::Schema);
}

pub struct Typed<T>(PhantomData<fn() -> T>);

impl<T> Typed<T> {
    pub const fn new() -> Typed<T> {
        Typed(PhantomData)
    }
}

impl<T> Default for Typed<T> {
    fn default() -> Typed<T> {
        Typed::new()
    }
}

impl<T: DeserializeOwned + Serialize + schemars::JsonSchema> TypeOps for Typed<T> {
    fn round_trip(&self, object: &Value) -> Result<Value, String> {
        let typed: T = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(typed).map_err(|e| e.to_string())
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> (String, schemars::Schema) {
        (T::schema_name().into_owned(), generator.subschema_for::<T>())
    }
}

/// What the registry knows about a kind's scale subresource (`autoscaling/v1` Scale).
#[derive(Clone, Copy, Debug)]
pub struct ScaleSpec;

/// Context defaulting may need beyond the object itself.
pub struct DefaultCtx<'a> {
    pub uid: &'a str,
    /// An address for a new Service that needs a cluster IP.
    pub cluster_ip: Option<&'a str>,
}

pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    pub categories: &'static [&'static str],
    pub status_subresource: bool,
    pub scale_subresource: bool,
    /// `metadata.generation` is tracked (bumped when `spec` changes).
    pub tracks_generation: bool,
    /// A create keeps `status` (nodes register with theirs); otherwise it is reset.
    pub status_on_create: bool,
    pub name_rule: NameRule,
    pub field_selectors: &'static [&'static str],
    pub types: &'static dyn TypeOps,
    pub defaults: fn(&mut Value, &DefaultCtx),
    pub validate: fn(&Value) -> Vec<Cause>,
    /// Fields that may not change on update.
    pub immutable: &'static [&'static str],
    pub printer: &'static Printer,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `/registry/{resource}/` with the namespace segment if given.
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/", self.storage_name()),
            _ => format!("/registry/{}/", self.storage_name()),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }

    /// The storage directory: the plural, qualified by group where Kubernetes does so to keep
    /// kinds of different groups apart.
    fn storage_name(&self) -> &'static str {
        self.plural
    }
}

fn no_defaults(_: &mut Value, _: &DefaultCtx) {}
fn no_validation(_: &Value) -> Vec<Cause> {
    Vec::new()
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

macro_rules! resource {
    ($group:expr, $kind:expr, $plural:expr, $singular:expr, $type:ty, {$($field:ident: $value:expr),* $(,)?}) => {
        Resource {
            $($field: $value,)*
            ..base($group, $kind, $plural, $singular, &Typed::<$type>::new())
        }
    };
}

/// The entry of a namespaced kind with no subresources, defaults or validation.
const fn base(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    types: &'static dyn TypeOps,
) -> Resource {
    Resource {
        group,
        version: "v1",
        kind,
        plural,
        singular,
        short_names: NONE,
        namespaced: true,
        categories: NONE,
        status_subresource: false,
        scale_subresource: false,
        tracks_generation: false,
        status_on_create: false,
        name_rule: NameRule::Subdomain,
        field_selectors: NONE,
        types,
        defaults: no_defaults,
        validate: no_validation,
        immutable: NONE,
        printer: &table::CONFIGMAP,
    }
}

/// Every kind the API server serves, in discovery order.
pub static RESOURCES: &[Resource] = &[
    resource!("", "Namespace", "namespaces", "namespace", core::Namespace, {
        short_names: &["ns"], namespaced: false, status_subresource: true, name_rule: NameRule::Label,
        field_selectors: &["status.phase"], defaults: |o, _| defaults::namespace(o), printer: &table::NAMESPACE,
        status_on_create: true,
    }),
    resource!("", "Pod", "pods", "pod", core::Pod, {
        short_names: &["po"], categories: ALL, status_subresource: true, field_selectors: POD_FIELDS,
        defaults: |o, _| defaults::pod(o), validate: v::pod, printer: &table::POD,
    }),
    resource!("", "Node", "nodes", "node", core::Node, {
        short_names: &["no"], namespaced: false, status_subresource: true, status_on_create: true,
        field_selectors: &["spec.unschedulable"], printer: &table::NODE,
    }),
    resource!("", "Service", "services", "service", core::Service, {
        short_names: &["svc"], categories: ALL, status_subresource: true, name_rule: NameRule::Dns1035,
        field_selectors: &["spec.clusterIP", "spec.type"],
        defaults: |o, ctx| defaults::service(o, ctx.cluster_ip), validate: v::service,
        immutable: &["spec.clusterIP"], printer: &table::SERVICE,
    }),
    resource!("", "Endpoints", "endpoints", "endpoints", core::Endpoints, {
        short_names: &["ep"], defaults: |o, _| defaults::endpoints(o), printer: &table::ENDPOINTS,
    }),
    resource!("", "ConfigMap", "configmaps", "configmap", core::ConfigMap, {
        short_names: &["cm"], printer: &table::CONFIGMAP,
    }),
    resource!("", "Secret", "secrets", "secret", core::Secret, {
        field_selectors: &["type"], defaults: |o, _| defaults::secret(o), immutable: &["type"], printer: &table::SECRET,
    }),
    resource!("", "Event", "events", "event", core::Event, {
        short_names: &["ev"], field_selectors: EVENT_FIELDS, printer: &table::EVENT,
    }),
    resource!("", "ServiceAccount", "serviceaccounts", "serviceaccount", core::ServiceAccount, {
        short_names: &["sa"], printer: &table::SERVICE_ACCOUNT,
    }),
    resource!("apps", "Deployment", "deployments", "deployment", apps::Deployment, {
        short_names: &["deploy"], categories: ALL, status_subresource: true, scale_subresource: true,
        tracks_generation: true, defaults: |o, _| defaults::deployment(o), validate: v::deployment,
        immutable: &["spec.selector"], printer: &table::DEPLOYMENT,
    }),
    resource!("apps", "ReplicaSet", "replicasets", "replicaset", apps::ReplicaSet, {
        short_names: &["rs"], categories: ALL, status_subresource: true, scale_subresource: true,
        tracks_generation: true, field_selectors: &["status.replicas"],
        defaults: |o, _| defaults::replica_set(o), validate: |o| v::workload(o, &["Always"], true),
        immutable: &["spec.selector"], printer: &table::REPLICA_SET,
    }),
    resource!("apps", "DaemonSet", "daemonsets", "daemonset", apps::DaemonSet, {
        short_names: &["ds"], categories: ALL, status_subresource: true, tracks_generation: true,
        defaults: |o, _| defaults::daemon_set(o), validate: |o| v::workload(o, &["Always"], true),
        immutable: &["spec.selector"], printer: &table::DAEMON_SET,
    }),
    resource!("apps", "StatefulSet", "statefulsets", "statefulset", apps::StatefulSet, {
        short_names: &["sts"], categories: ALL, status_subresource: true, scale_subresource: true,
        tracks_generation: true, defaults: |o, _| defaults::stateful_set(o), validate: |o| v::workload(o, &["Always"], true),
        immutable: &["spec.selector", "spec.serviceName", "spec.podManagementPolicy"], printer: &table::STATEFUL_SET,
    }),
    resource!("coordination.k8s.io", "Lease", "leases", "lease", coordination::Lease, {
        validate: v::lease, printer: &table::LEASE,
    }),
    resource!("discovery.k8s.io", "EndpointSlice", "endpointslices", "endpointslice", discovery::EndpointSlice, {
        defaults: |o, _| defaults::endpoint_slice(o), validate: v::endpoint_slice, immutable: &["addressType"],
        printer: &table::ENDPOINT_SLICE,
    }),
    resource!("batch", "Job", "jobs", "job", batch::Job, {
        categories: ALL, status_subresource: true, tracks_generation: true, field_selectors: &["status.successful"],
        defaults: |o, ctx| defaults::job(o, ctx.uid), validate: v::job,
        immutable: &["spec.selector", "spec.template", "spec.completions"], printer: &table::JOB,
    }),
];

/// The served API groups and their versions, in discovery order (core first).
pub fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !groups.contains(&r.group) {
            groups.push(r.group);
        }
    }
    groups
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_consistent() {
        for r in RESOURCES {
            assert!(r.plural.ends_with('s'), "{}", r.plural);
            assert_eq!(r.singular, r.kind.to_lowercase());
            assert!(find(r.group, r.version, r.plural).is_some());
            assert!(std::ptr::eq(by_kind(r.group, r.kind).unwrap(), r));
            assert_eq!(
                r.printer.columns.len(),
                (r.printer.cells)(&serde_json::json!({}), chrono::Utc::now()).len(),
                "{}",
                r.kind
            );
        }
        assert_eq!(groups(), vec!["", "apps", "coordination.k8s.io", "discovery.k8s.io", "batch"]);
        assert_eq!(RESOURCES[9].key(Some("default"), "web"), "/registry/deployments/default/web");
        assert_eq!(RESOURCES[0].key(Some("x"), "kube-system"), "/registry/namespaces/kube-system");
    }

    #[test]
    fn round_trip_drops_unknown_fields_and_rejects_wrong_types() {
        let cm = find("", "v1", "configmaps").unwrap();
        let out = cm
            .types
            .round_trip(&serde_json::json!({"metadata": {"name": "x"}, "data": {"a": "b"}, "bogus": 1}))
            .unwrap();
        assert!(out.get("bogus").is_none());
        assert_eq!(out["data"]["a"], "b");
        assert!(cm.types.round_trip(&serde_json::json!({"data": {"a": 1}})).is_err());
    }
}
