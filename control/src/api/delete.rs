//! DELETE and deletecollection: `DeleteOptions` (preconditions, `gracePeriodSeconds`,
//! `propagationPolicy`), what removing one object means right now (grace periods, finalizers),
//! and deletion propagation through ownerReferences: the plans of [`crate::gc`] carried out
//! against the store, inside the request.
//!
//! Berth has no garbage-collector controller yet, so the API server does its work where it can
//! see it happen: a DELETE runs its cascade before answering, and whenever an object is really
//! removed from the store ([`remove`], whichever path removes it) its dependents are collected
//! and an owner waiting for it in the foreground is looked at again. Dependents are found by
//! scanning the owner's namespace (every namespace for a cluster-scoped owner), with the owner's
//! uid as a byte prefilter; a collector with an in-memory owner graph should replace the scan
//! when deletes of large namespaces matter.

use super::handlers::{
    decode_entry, finalized, list_objects, namespace, parse_body, read, requested_rv, write_over, Call, Filter,
    CAS_RETRIES, STORE_PAGE,
};
use super::objects::name_of;
use super::{ApiState, Reply};
use crate::error::{ApiError, ApiResult};
use crate::gc::{self, Dependent, Propagation, Step};
use crate::meta;
use crate::registry::{self, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::service_ip;
use crate::storage::{StorageError, Write};
use axum::http::StatusCode;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::{json, Value};

/// How deep ownership may nest before a cascade stops (guards against reference cycles).
const MAX_DEPTH: usize = 16;

/// `DeleteOptions` from the body (JSON or protobuf) and the query.
#[derive(Debug)]
pub(super) struct DeleteOptions {
    pub grace: Option<i64>,
    pub propagation: Propagation,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    fn with(propagation: Propagation, uid: &str) -> DeleteOptions {
        DeleteOptions { grace: None, propagation, uid: Some(uid.to_string()), resource_version: None }
    }
}

fn delete_options(call: &Call) -> ApiResult<DeleteOptions> {
    let (q, body) = (call.query, call.body);
    let b = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { parse_body(call.headers, body)? };
    let policy = b.get("propagationPolicy").and_then(Value::as_str).or(q.propagation_policy.as_deref());
    let orphan = b.get("orphanDependents").and_then(Value::as_bool);
    let propagation = match (policy, orphan) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "DeleteOptions: propagationPolicy: orphanDependents and deletionPropagation cannot be both set",
            ))
        }
        (Some(p), None) => Propagation::parse(p).ok_or_else(|| {
            ApiError::bad_request(format!(
                "DeleteOptions: propagationPolicy: Unsupported value: {p:?}: \
                 supported values: \"Background\", \"Foreground\", \"Orphan\""
            ))
        })?,
        (None, Some(true)) => Propagation::Orphan,
        (None, _) => Propagation::Background,
    };
    let text = |pointer: &str| b.pointer(pointer).and_then(Value::as_str).map(str::to_string);
    Ok(DeleteOptions {
        grace: b.get("gracePeriodSeconds").and_then(Value::as_i64).or(q.grace_period_seconds),
        propagation,
        uid: text("/preconditions/uid"),
        resource_version: text("/preconditions/resourceVersion"),
    })
}

/// What removing an object means right now.
#[derive(Debug, PartialEq)]
enum Removal {
    /// Remove the key.
    Now,
    /// Keep it, marked for deletion (finalizers pending, or a pod its node must stop first).
    Mark(Value),
}

/// `object` marked deleted `grace` seconds from `now`.
fn mark(object: &Value, grace: i64, now: chrono::DateTime<chrono::Utc>) -> Value {
    let mut marked = object.clone();
    marked["metadata"]["deletionTimestamp"] = json!(meta::timestamp(now + chrono::Duration::seconds(grace)));
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    marked
}

/// Decides how to remove `object` (pure). Pods bound to a node get `deletionTimestamp` and are
/// removed when the node agent confirms (or with grace 0); objects with finalizers wait for
/// them.
fn plan_removal(r: &Resource, object: &Value, grace: Option<i64>, now: chrono::DateTime<chrono::Utc>) -> Removal {
    let finalizers = object.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    let on_node =
        r.kind == "Pod" && object.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let default_grace = object.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
    let grace = if on_node { grace.unwrap_or(default_grace).max(0) } else { 0 };
    let marked = object.pointer("/metadata/deletionTimestamp").is_some();
    if !finalizers && grace == 0 {
        return Removal::Now;
    }
    if marked && grace > 0 {
        // Already being deleted: a second delete only shortens the grace period.
        let mut shorter = object.clone();
        let current = object.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(grace);
        shorter["metadata"]["deletionGracePeriodSeconds"] = json!(grace.min(current));
        return Removal::Mark(shorter);
    }
    if marked && !finalizers {
        return Removal::Now;
    }
    if marked {
        return Removal::Mark(object.clone());
    }
    Removal::Mark(mark(object, grace, now))
}

/// Where a cascade stands, passed down to the deletes it causes.
#[derive(Clone, Debug, Default)]
pub(super) struct Cascade {
    depth: usize,
    /// The uid of the owner whose cascade this request runs: removing one of its dependents
    /// need not look at it again (the running cascade does, once the round is over).
    running: Option<String>,
    /// The whole namespace is being deleted: nothing needs propagating inside it.
    teardown: bool,
}

impl Cascade {
    fn under(&self, owner: &Value) -> Cascade {
        Cascade { depth: self.depth + 1, running: Some(gc::uid(owner).to_string()), teardown: self.teardown }
    }
}

/// The result of deleting one object.
pub(super) struct Deleted {
    /// The last version of the object (marked, if it is not gone yet).
    pub object: Value,
    /// It is gone from the store.
    pub gone: bool,
}

pub(super) async fn delete(call: &Call<'_>, name: &str) -> ApiResult<Reply> {
    let opts = delete_options(call)?;
    let t = call.target;
    let dry_run = call.query.dry_run;
    let deleted = delete_one(call.state, t.resource, namespace(t), name, &opts, dry_run, Cascade::default()).await?;
    let pending = !deleted.gone && deleted.object.pointer("/metadata/deletionTimestamp").is_some();
    let code = if pending && !dry_run { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok(Reply::Json { code, body: deleted.object, warnings: Vec::new() })
}

pub(super) async fn delete_collection(call: &Call<'_>) -> ApiResult<Reply> {
    let (t, q) = (call.target, call.query);
    let r = t.resource;
    let opts = delete_options(call)?;
    let filter = Filter::parse(r, q)?;
    let everything = super::request::Query { limit: 0, continue_token: String::new(), ..q.clone() };
    let listed = list_objects(call.state, r, namespace(t), &filter, &everything).await?;
    let mut deleted = Vec::new();
    for object in listed.items {
        let ns = object.pointer("/metadata/namespace").and_then(Value::as_str);
        match delete_one(call.state, r, ns, name_of(&object), &opts, q.dry_run, Cascade::default()).await {
            Ok(d) => deleted.push(d.object),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Reply::ok(
        json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": {}, "items": deleted}),
    ))
}

/// What one round of a plan ended in.
enum Outcome {
    Done(Deleted),
    /// Something changed underneath, or dependents were deleted: read and plan again.
    Again,
}

/// Deletes one object: checks the preconditions, then runs its deletion plan in rounds.
pub(super) fn delete_one<'a>(
    state: &'a ApiState,
    r: &'static Resource,
    ns: Option<&'a str>,
    name: &'a str,
    opts: &'a DeleteOptions,
    dry_run: bool,
    cascade: Cascade,
) -> BoxFuture<'a, ApiResult<Deleted>> {
    // Boxed: deleting an object deletes its dependents, which is this same function.
    async move {
        if cascade.depth > MAX_DEPTH {
            return Err(ApiError::internal(format!("ownerReferences nest deeper than {MAX_DEPTH} levels")));
        }
        for _ in 0..CAS_RETRIES {
            let (object, revision) = read(state, r, ns, name).await?;
            check_preconditions(r, name, &object, revision, opts)?;
            if dry_run {
                return Ok(Deleted { object, gone: false });
            }
            if r.plural == "namespaces" {
                delete_namespace_contents(state, name).await?;
            }
            let propagation = if cascade.teardown { Propagation::Background } else { opts.propagation };
            let found = if gc::pending(&object).unwrap_or(propagation) == Propagation::Background {
                Found::default()
            } else {
                find_dependents(state, r, &object).await?
            };
            let steps = gc::plan(&object, propagation, &found.dependents);
            match run(state, r, ns, name, (object, revision), steps, &found, opts, &cascade).await? {
                Outcome::Done(deleted) => return Ok(deleted),
                Outcome::Again => continue,
            }
        }
        Err(ApiError::conflict(r.group, r.plural, name, "the object kept changing while being deleted"))
    }
    .boxed()
}

fn check_preconditions(r: &Resource, name: &str, object: &Value, revision: i64, opts: &DeleteOptions) -> ApiResult<()> {
    if let Some(uid) = &opts.uid {
        let actual = gc::uid(object);
        if uid != actual {
            return Err(ApiError::conflict(
                r.group,
                r.plural,
                name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
            ));
        }
    }
    if let Some(rv) = &opts.resource_version {
        if rv.parse::<i64>().ok() != Some(revision) {
            return Err(ApiError::conflict(
                r.group,
                r.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, \
                     ResourceVersion in object meta: {revision}"
                ),
            ));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // The object's identity, its state, the plan and its context.
async fn run(
    state: &ApiState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    (mut owner, mut revision): (Value, i64),
    steps: Vec<Step>,
    found: &Found,
    opts: &DeleteOptions,
    cascade: &Cascade,
) -> ApiResult<Outcome> {
    let now = state.env.now();
    let mut again = false;
    for step in steps {
        match step {
            Step::MarkOwner { finalizer } => {
                let held = gc::with_finalizer(&owner, finalizer);
                let marked = match plan_removal(r, &held, opts.grace, now) {
                    Removal::Mark(marked) => marked,
                    // Unreachable with a finalizer added; mark it anyway rather than remove it.
                    Removal::Now => mark(&held, 0, now),
                };
                match write_over(state, r, ns, name, marked, revision).await? {
                    Some(stored) => (revision, owner) = (requested_rv(&stored).unwrap_or(0), stored),
                    None => return Ok(Outcome::Again),
                }
            }
            Step::DeleteOwner => {
                return match plan_removal(r, &owner, opts.grace, now) {
                    Removal::Now => Ok(match remove(state, r, ns, name, &owner, revision, cascade).await? {
                        true => Outcome::Done(Deleted { object: owner, gone: true }),
                        false => Outcome::Again,
                    }),
                    // Already marked as it would be: nothing to write.
                    Removal::Mark(marked) if marked == owner => {
                        Ok(Outcome::Done(Deleted { object: owner, gone: false }))
                    }
                    Removal::Mark(marked) => Ok(match write_over(state, r, ns, name, marked, revision).await? {
                        Some(stored) => Outcome::Done(Deleted { object: stored, gone: false }),
                        None => Outcome::Again,
                    }),
                };
            }
            Step::DeleteDependent { index, propagation } => {
                found.delete(state, index, propagation, cascade.under(&owner)).await?;
                again = true;
            }
            Step::Release { index, object } => {
                match found.release(state, index, object).await {
                    Ok(Some(_)) => {}
                    Err(e) if e.code == 404 => {}
                    // Changed meanwhile: plan again rather than finalize with it still attached.
                    Ok(None) => return Ok(Outcome::Again),
                    Err(e) => return Err(e),
                }
            }
            Step::FinalizeOwner { finalizer } => {
                let released = gc::without_finalizer(&owner, finalizer);
                if finalized(&released) {
                    return Ok(match remove(state, r, ns, name, &released, revision, cascade).await? {
                        true => Outcome::Done(Deleted { object: released, gone: true }),
                        false => Outcome::Again,
                    });
                }
                return Ok(match write_over(state, r, ns, name, released, revision).await? {
                    Some(stored) => Outcome::Done(Deleted { object: stored, gone: false }),
                    None => Outcome::Again,
                });
            }
            Step::Wait => return Ok(Outcome::Done(Deleted { object: owner, gone: false })),
        }
    }
    Ok(if again { Outcome::Again } else { Outcome::Done(Deleted { object: owner, gone: false }) })
}

/// Removes `object` (read at `revision`) from the store, with what goes with it (a Service's
/// cluster IP reservation, in the same transaction), then lets its removal propagate. False
/// when the object changed meanwhile.
pub(super) async fn remove(
    state: &ApiState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    object: &Value,
    revision: i64,
    cascade: &Cascade,
) -> ApiResult<bool> {
    let key = r.key(ns, name);
    let mut writes = vec![Write::Delete { key: key.clone(), expected: revision }];
    if let Some(ip) = service_ip::held(object).filter(|_| r.kind == "Service") {
        let (reservation, _) = state.storage.get(&service_ip::key(ip)).await?;
        // Only its own reservation: the address may have been taken over since (by a Service
        // created before reservations existed, whose delete must not free it).
        if let Some(entry) = reservation.filter(|e| {
            serde_json::from_slice::<Value>(&e.value)
                .is_ok_and(|v| v.pointer("/spec/parentRef/uid").and_then(Value::as_str) == Some(gc::uid(object)))
        }) {
            writes.push(Write::Delete { key: entry.key, expected: entry.mod_revision });
        }
    }
    match state.storage.commit(writes).await {
        Ok(_) => {}
        Err(StorageError::Conflict { key: k, current: None }) if k == key => {
            return Err(ApiError::not_found(r.group, r.plural, name))
        }
        Err(StorageError::Conflict { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    if !cascade.teardown && cascade.depth < MAX_DEPTH {
        removed(state, r, object, cascade).await;
    }
    Ok(true)
}

/// After `object` is gone: its dependents are garbage (or lose their reference, if another
/// owner holds them), and an owner deleting in the foreground may now be free to go. The
/// object's own delete has succeeded, so failures here are logged, not returned.
async fn removed(state: &ApiState, r: &'static Resource, object: &Value, cascade: &Cascade) {
    let result = async {
        collect_dependents(state, r, object, cascade).await?;
        resume_owners(state, object, cascade).await
    };
    if let Err(e) = result.await {
        tracing::warn!(object = %gc::uid(object), kind = r.kind, "propagating a deletion failed: {}", e.message);
    }
}

async fn collect_dependents(state: &ApiState, r: &Resource, owner: &Value, cascade: &Cascade) -> ApiResult<()> {
    let found = find_dependents(state, r, owner).await?;
    for step in gc::plan_removed(gc::uid(owner), &found.dependents) {
        let (index, outcome) = match step {
            Step::DeleteDependent { index, propagation } => {
                (index, found.delete(state, index, propagation, cascade.under(owner)).await)
            }
            Step::Release { index, object } => (index, found.release(state, index, object).await.map(|_| ())),
            _ => continue,
        };
        match outcome {
            Err(e) if e.code != 404 && e.code != 409 => {
                let dependent = name_of(&found.dependents[index].object);
                tracing::warn!(dependent = %dependent, "collecting a dependent failed: {}", e.message);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Looks again at the owners of a removed `dependent` that are deleting in the foreground.
async fn resume_owners(state: &ApiState, dependent: &Value, cascade: &Cascade) -> ApiResult<()> {
    for reference in gc::owner_refs(dependent) {
        let uid = reference.get("uid").and_then(Value::as_str).unwrap_or("");
        if cascade.running.as_deref() == Some(uid) {
            continue;
        }
        let Some((r, ns, name)) = resolve(reference, dependent) else { continue };
        let owner = match read(state, r, ns.as_deref(), &name).await {
            Ok((owner, _)) => owner,
            Err(e) if e.code == 404 => continue,
            Err(e) => return Err(e),
        };
        if gc::uid(&owner) == uid && gc::pending(&owner) == Some(Propagation::Foreground) {
            let opts = DeleteOptions::with(Propagation::Foreground, uid);
            match delete_one(state, r, ns.as_deref(), &name, &opts, false, cascade.under(dependent)).await {
                Err(e) if e.code != 404 && e.code != 409 => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The registry entry, namespace and name an ownerReference of `dependent` points to; `None`
/// for a kind the API server does not serve.
fn resolve(reference: &Value, dependent: &Value) -> Option<(&'static Resource, Option<String>, String)> {
    let api_version = reference.get("apiVersion").and_then(Value::as_str)?;
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let r = registry::by_kind(group, reference.get("kind").and_then(Value::as_str)?)?;
    let name = reference.get("name").and_then(Value::as_str)?.to_string();
    let ns = dependent.pointer("/metadata/namespace").and_then(Value::as_str).filter(|_| r.namespaced);
    Some((r, ns.map(str::to_string), name))
}

/// A dependent's kind and the revision it was read at (its namespace and name are the
/// object's).
struct Place {
    resource: &'static Resource,
    revision: i64,
}

/// The dependents of an owner, and where each is.
#[derive(Default)]
struct Found {
    dependents: Vec<Dependent>,
    places: Vec<Place>,
}

impl Found {
    /// The store key's parts of dependent `index`: kind, namespace, name.
    fn place(&self, index: usize) -> (&'static Resource, Option<&str>, &str) {
        let object = &self.dependents[index].object;
        let ns = object.pointer("/metadata/namespace").and_then(Value::as_str);
        (self.places[index].resource, ns, name_of(object))
    }

    /// Deletes dependent `index` with `propagation`, as a step of `cascade`. A 404 or a 409 (a
    /// precondition failed: the name now holds another object) means it is gone already.
    async fn delete(
        &self,
        state: &ApiState,
        index: usize,
        propagation: Propagation,
        cascade: Cascade,
    ) -> ApiResult<()> {
        let (r, ns, name) = self.place(index);
        let opts = DeleteOptions::with(propagation, gc::uid(&self.dependents[index].object));
        match delete_one(state, r, ns, name, &opts, false, cascade).await {
            Err(e) if e.code != 404 && e.code != 409 => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes dependent `index` back as `object` over the version it was read at (see
    /// [`write_over`]).
    async fn release(&self, state: &ApiState, index: usize, object: Value) -> ApiResult<Option<Value>> {
        let (r, ns, name) = self.place(index);
        write_over(state, r, ns, name, object, self.places[index].revision).await
    }
}

/// Every object with an ownerReference to `owner`'s uid: in its namespace for a namespaced
/// owner, anywhere for a cluster-scoped one.
async fn find_dependents(state: &ApiState, owner_r: &Resource, owner: &Value) -> ApiResult<Found> {
    let mut found = Found::default();
    let uid = gc::uid(owner);
    if uid.is_empty() {
        return Ok(found);
    }
    let owner_ns = owner.pointer("/metadata/namespace").and_then(Value::as_str).filter(|_| owner_r.namespaced);
    for r in registry::RESOURCES.iter() {
        // A namespaced owner can only have dependents in its own namespace.
        if owner_ns.is_some() && !r.namespaced {
            continue;
        }
        let prefix = r.key_prefix(owner_ns);
        let mut start = String::new();
        loop {
            let page = state.storage.list(&prefix, &start, STORE_PAGE, 0).await?;
            for entry in &page.entries {
                // Cheap test first: only objects whose bytes mention the uid are decoded.
                if !entry.value.windows(uid.len()).any(|w| w == uid.as_bytes()) {
                    continue;
                }
                let object = decode_entry(entry)?;
                if gc::owner_ref(&object, uid).is_none() {
                    continue;
                }
                let other_owner_alive = other_owner_alive(state, &object, uid).await?;
                found.places.push(Place { resource: r, revision: entry.mod_revision });
                found.dependents.push(Dependent { object, other_owner_alive });
            }
            match page.entries.last() {
                Some(last) if page.more => start = format!("{}\0", last.key),
                _ => break,
            }
        }
    }
    Ok(found)
}

/// Whether an owner of `dependent` other than `owner_uid` exists and is not itself waiting for
/// its dependents to go. An owner of a kind Berth does not serve counts as alive: better keep
/// an object than delete one that something still owns.
async fn other_owner_alive(state: &ApiState, dependent: &Value, owner_uid: &str) -> ApiResult<bool> {
    for reference in gc::owner_refs(dependent) {
        let uid = reference.get("uid").and_then(Value::as_str).unwrap_or("");
        if uid == owner_uid {
            continue;
        }
        let Some((r, ns, name)) = resolve(reference, dependent) else { return Ok(true) };
        match read(state, r, ns.as_deref(), &name).await {
            Ok((other, _)) if gc::uid(&other) == uid && gc::pending(&other) != Some(Propagation::Foreground) => {
                return Ok(true)
            }
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Deletes every namespaced object in namespace `ns` (what the namespace controller does in
/// Kubernetes; done inline until Berth has one).
async fn delete_namespace_contents(state: &ApiState, ns: &str) -> ApiResult<()> {
    let opts =
        DeleteOptions { grace: Some(0), propagation: Propagation::Background, uid: None, resource_version: None };
    let teardown = Cascade { teardown: true, ..Cascade::default() };
    for r in registry::RESOURCES.iter().filter(|r| r.namespaced) {
        let all = Filter { labels: LabelSelector::default(), fields: FieldSelector::default() };
        let listed = list_objects(state, r, Some(ns), &all, &super::request::Query::default()).await?;
        for object in listed.items {
            match delete_one(state, r, Some(ns), name_of(&object), &opts, false, teardown.clone()).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_plans() {
        let pods = registry::find("", "v1", "pods").unwrap();
        let now = meta::parse_timestamp("2025-01-01T00:00:00Z").unwrap();
        let unbound = json!({"metadata": {"name": "p"}, "spec": {}});
        assert_eq!(plan_removal(pods, &unbound, None, now), Removal::Now);
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}});
        match plan_removal(pods, &bound, None, now) {
            Removal::Mark(m) => {
                assert_eq!(m["metadata"]["deletionTimestamp"], "2025-01-01T00:00:10Z");
                assert_eq!(m["metadata"]["deletionGracePeriodSeconds"], 10);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(plan_removal(pods, &bound, Some(0), now), Removal::Now);
        let cms = registry::find("", "v1", "configmaps").unwrap();
        let held = json!({"metadata": {"name": "c", "finalizers": ["x"]}});
        assert!(matches!(plan_removal(cms, &held, None, now), Removal::Mark(_)));
        let still_held = mark(&held, 0, now);
        assert_eq!(plan_removal(cms, &still_held, None, now), Removal::Mark(still_held.clone()));
    }
}

/// The cascade against an in-memory store, request by request.
#[cfg(test)]
mod cascade_tests {
    use crate::api::testing::Server;
    use serde_json::{json, Value};

    const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
    const REPLICASETS: &str = "/apis/apps/v1/namespaces/default/replicasets";
    const PODS: &str = "/api/v1/namespaces/default/pods";

    fn owned_by(owner: &Value, block: bool) -> Value {
        json!([{"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": block}])
    }

    fn workload(name: &str, owners: Value) -> String {
        json!({"metadata": {"name": name, "ownerReferences": owners},
               "spec": {"selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
        .to_string()
    }

    async fn create(server: &Server, path: &str, body: &str) -> Value {
        let (code, object) = server.call("POST", path, body).await;
        assert_eq!(code, 201, "{object}");
        object
    }

    /// A Deployment, a ReplicaSet it owns, and a Pod the ReplicaSet owns (`node`: bound).
    async fn family(server: &Server, node: Option<&str>) -> (Value, Value, Value) {
        let d = create(server, DEPLOYMENTS, &workload("web", json!(null))).await;
        let rs = create(server, REPLICASETS, &workload("web-1", owned_by(&d, true))).await;
        let pod = json!({"metadata": {"name": "web-1-a", "ownerReferences": owned_by(&rs, true)},
                         "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]}});
        let pod = create(server, PODS, &pod.to_string()).await;
        (d, rs, pod)
    }

    async fn exists(server: &Server, path: &str) -> Option<Value> {
        match server.call("GET", path, "").await {
            (200, object) => Some(object),
            (404, _) => None,
            (code, body) => panic!("{code}: {body}"),
        }
    }

    async fn delete(server: &Server, path: &str, policy: &str) -> (u16, Value) {
        server.call("DELETE", path, &json!({"propagationPolicy": policy}).to_string()).await
    }

    #[tokio::test]
    async fn background_deletes_dependents_after_the_owner() {
        let server = Server::start(1).await;
        family(&server, None).await;
        let (code, body) = delete(&server, &format!("{DEPLOYMENTS}/web"), "Background").await;
        assert_eq!(code, 200, "{body}");
        assert!(exists(&server, &format!("{REPLICASETS}/web-1")).await.is_none());
        assert!(exists(&server, &format!("{PODS}/web-1-a")).await.is_none(), "recursively");
    }

    #[tokio::test]
    async fn foreground_waits_for_blocking_dependents() {
        let server = Server::start(2).await;
        // The pod is on a node: deleting it only marks it until its node confirms.
        family(&server, Some("n1")).await;
        let (code, owner) = delete(&server, &format!("{DEPLOYMENTS}/web"), "Foreground").await;
        assert_eq!(code, 202, "{owner}");
        assert_eq!(owner["metadata"]["finalizers"], json!(["foregroundDeletion"]));
        assert!(owner["metadata"]["deletionTimestamp"].is_string());
        let rs = exists(&server, &format!("{REPLICASETS}/web-1")).await.expect("the RS waits for its pod");
        assert_eq!(rs["metadata"]["finalizers"], json!(["foregroundDeletion"]));
        let pod = exists(&server, &format!("{PODS}/web-1-a")).await.expect("the pod is terminating");
        assert!(pod["metadata"]["deletionTimestamp"].is_string());
        // The node confirms: the pod goes, then the RS, then the Deployment.
        let (code, body) = server.call("DELETE", &format!("{PODS}/web-1-a?gracePeriodSeconds=0"), "").await;
        assert_eq!(code, 200, "{body}");
        assert!(exists(&server, &format!("{REPLICASETS}/web-1")).await.is_none());
        assert!(exists(&server, &format!("{DEPLOYMENTS}/web")).await.is_none());
    }

    #[tokio::test]
    async fn foreground_with_nothing_to_wait_for_finishes_in_the_request() {
        let server = Server::start(3).await;
        family(&server, None).await;
        let (code, body) = delete(&server, &format!("{DEPLOYMENTS}/web"), "Foreground").await;
        assert_eq!(code, 200, "{body}");
        assert!(server.store.dump().keys().all(|k| !k.contains("web")), "{:?}", server.store.dump().keys());
    }

    #[tokio::test]
    async fn orphan_releases_dependents() {
        let server = Server::start(4).await;
        family(&server, None).await;
        let (code, body) = delete(&server, &format!("{DEPLOYMENTS}/web"), "Orphan").await;
        assert_eq!(code, 200, "{body}");
        assert!(exists(&server, &format!("{DEPLOYMENTS}/web")).await.is_none());
        let rs = exists(&server, &format!("{REPLICASETS}/web-1")).await.expect("orphaned, not deleted");
        assert!(rs["metadata"].get("ownerReferences").is_none(), "{rs}");
        let pod = exists(&server, &format!("{PODS}/web-1-a")).await.expect("still owned by the RS");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], rs["metadata"]["uid"]);
    }

    #[tokio::test]
    async fn a_dependent_with_another_owner_survives() {
        let server = Server::start(5).await;
        let a = create(&server, DEPLOYMENTS, &workload("a", json!(null))).await;
        let b = create(&server, DEPLOYMENTS, &workload("b", json!(null))).await;
        let mut owners = owned_by(&a, false);
        owners.as_array_mut().unwrap().extend(owned_by(&b, false).as_array().unwrap().clone());
        owners[1]["controller"] = json!(false);
        create(&server, REPLICASETS, &workload("shared", owners)).await;
        assert_eq!(delete(&server, &format!("{DEPLOYMENTS}/a"), "Background").await.0, 200);
        let rs = exists(&server, &format!("{REPLICASETS}/shared")).await.expect("b still owns it");
        let mut only_b = owned_by(&b, false);
        only_b[0]["controller"] = json!(false);
        assert_eq!(rs["metadata"]["ownerReferences"], only_b);
        assert_eq!(delete(&server, &format!("{DEPLOYMENTS}/b"), "Background").await.0, 200);
        assert!(exists(&server, &format!("{REPLICASETS}/shared")).await.is_none(), "no owner left");
    }

    #[tokio::test]
    async fn bad_delete_options_are_400() {
        let server = Server::start(6).await;
        family(&server, None).await;
        let (code, body) = delete(&server, &format!("{DEPLOYMENTS}/web"), "Sideways").await;
        assert_eq!(code, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains("Unsupported value: \"Sideways\""), "{body}");
        let both = json!({"propagationPolicy": "Orphan", "orphanDependents": true}).to_string();
        assert_eq!(server.call("DELETE", &format!("{DEPLOYMENTS}/web"), &both).await.0, 400);
        assert_eq!(server.call("DELETE", &format!("{DEPLOYMENTS}/web"), "{").await.0, 400);
        assert!(exists(&server, &format!("{DEPLOYMENTS}/web")).await.is_some());
    }
}
