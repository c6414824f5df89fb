//! The resource verbs: get, list, create, update, patch, delete, deletecollection, and the
//! status and scale subresources. Each reads from the store, decides with the pure modules,
//! and writes with a compare-and-swap on the mod revision it read.

use super::delete::{self, Cascade};
use super::objects::{
    self, decode, name_of, prepare_create, prepare_update, same_content, with_resource_version, UpdateKind, WriteCtx,
};
use super::request::{Query, ResourceTarget, Subresource};
use super::{ApiState, Reply};
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::patch::{self, apply, PatchType};
use crate::registry::{self, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::service_ip::{self, Request};
use crate::storage::{Entry, StorageError, Write};
use crate::table::{self, IncludeObject};
use axum::http::{header, HeaderMap, Method, StatusCode};
use base64::Engine;
use serde_json::{json, Value};

/// Store reads per list request page (bounds memory per request when filtering).
pub(super) const STORE_PAGE: i64 = 500;
/// Times a patch or unconditional update is retried when the object changes underneath it.
pub(super) const CAS_RETRIES: usize = 8;

/// One request to a resource, as the verbs that read a body see it.
pub(super) struct Call<'a> {
    pub state: &'a ApiState,
    pub target: &'a ResourceTarget,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

pub async fn handle(
    state: &ApiState,
    method: &Method,
    t: ResourceTarget,
    q: Query,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Reply> {
    let as_table =
        headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("as=Table"));
    let name = t.name.clone();
    let call = Call { state, target: &t, query: &q, headers, body };
    match (method.as_str(), name, t.subresource) {
        ("GET", None, None) if q.watch => super::watch::watch(state, &t, &q, as_table).await,
        ("GET", None, None) => list(state, &t, &q, as_table).await,
        ("GET", Some(name), None) if q.watch => {
            let mut q = q.clone();
            q.field_selector = format!("metadata.name={name}");
            let t = ResourceTarget { name: None, ..t };
            super::watch::watch(state, &t, &q, as_table).await
        }
        ("GET", Some(name), sub) => get(state, &t, &name, sub, &q, as_table).await,
        ("POST", None, None) => create(&call).await,
        ("PUT", Some(name), sub) => update(&call, &name, sub).await,
        ("PATCH", Some(name), sub) => patch(&call, &name, sub).await,
        ("DELETE", Some(name), None) => delete::delete(&call, &name).await,
        ("DELETE", None, None) if t.resource.plural != "namespaces" => delete::delete_collection(&call).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            method,
            ApiError::qualified(t.resource.group, t.resource.plural)
        ))),
    }
}

pub(super) fn namespace(t: &ResourceTarget) -> Option<&str> {
    t.namespace.as_deref().filter(|_| t.resource.namespaced)
}

/// Decodes a stored value and stamps its resourceVersion.
pub fn decode_entry(entry: &Entry) -> ApiResult<Value> {
    let object: Value = serde_json::from_slice(&entry.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", entry.key)))?;
    Ok(with_resource_version(object, entry.mod_revision))
}

fn encode(object: &Value) -> ApiResult<Vec<u8>> {
    // Stored without resourceVersion: the store's mod revision is the source of truth.
    let mut o = object.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).map_err(|e| ApiError::internal(e.to_string()))
}

fn include_object(q: &Query) -> IncludeObject {
    match q.include_object.as_deref() {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    }
}

pub(super) async fn read(state: &ApiState, r: &Resource, ns: Option<&str>, name: &str) -> ApiResult<(Value, i64)> {
    let (entry, _) = state.storage.get(&r.key(ns, name)).await?;
    let entry = entry.ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
    Ok((decode_entry(&entry)?, entry.mod_revision))
}

async fn get(
    state: &ApiState,
    t: &ResourceTarget,
    name: &str,
    sub: Option<Subresource>,
    q: &Query,
    as_table: bool,
) -> ApiResult<Reply> {
    let r = t.resource;
    let (object, _) = read(state, r, namespace(t), name).await?;
    if sub == Some(Subresource::Scale) {
        return Ok(Reply::ok(objects::scale_of(&object)));
    }
    if as_table {
        let rv = object.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""));
        return Ok(Reply::ok(table::table(
            r.printer,
            &[object],
            json!({"resourceVersion": rv}),
            state.env.now(),
            include_object(q),
            true,
        )));
    }
    Ok(Reply::ok(object))
}

/// Selectors of a list or watch request.
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn parse(r: &Resource, q: &Query) -> ApiResult<Filter> {
        let labels = LabelSelector::parse(&q.label_selector)
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(&q.field_selector, r.field_selectors).map_err(ApiError::bad_request)?;
        Ok(Filter { labels, fields })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches_object(object) && self.fields.matches(object)
    }
}

/// A continue token: the list's revision and the next key, base64 JSON as Kubernetes does.
fn encode_continue(revision: i64, next_key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": revision, "start": next_key}).to_string())
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<(i64, String)> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_i64).filter(|rv| *rv > 0).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    // The key must stay inside the listed prefix: a token cannot read other resources.
    if !start.starts_with(prefix) {
        return Err(bad());
    }
    Ok((rv, start.to_string()))
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// A filtered list: the matching objects, the revision read at, and a continue token.
pub struct Listed {
    pub items: Vec<Value>,
    pub revision: i64,
    pub continue_token: Option<String>,
}

pub async fn list_objects(
    state: &ApiState,
    r: &Resource,
    ns: Option<&str>,
    filter: &Filter,
    q: &Query,
) -> ApiResult<Listed> {
    let prefix = r.key_prefix(ns);
    let (mut revision, mut start) = if q.continue_token.is_empty() {
        let exact = q.resource_version_match == "Exact";
        let rv = match (&q.resource_version, exact) {
            (Some(v), true) => {
                v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resource version {v:?}")))?
            }
            _ => 0,
        };
        (rv, String::new())
    } else {
        let (rv, start) = decode_continue(&q.continue_token, &prefix)?;
        (rv, start)
    };
    let limit = q.limit.max(0);
    // A pinned name needs no scan.
    if let Some(name) = filter.fields.pinned_name() {
        let (entry, current) = state.storage.get(&r.key(ns, name)).await?;
        let items = match entry {
            Some(e) if ns.is_some() || !r.namespaced => {
                let o = decode_entry(&e)?;
                if filter.matches(&o) {
                    vec![o]
                } else {
                    vec![]
                }
            }
            _ => Vec::new(),
        };
        if ns.is_some() || !r.namespaced {
            return Ok(Listed { items, revision: current, continue_token: None });
        }
    }
    let mut items = Vec::new();
    loop {
        let want = if limit > 0 { (limit - items.len() as i64).clamp(1, STORE_PAGE) } else { STORE_PAGE };
        let page = match state.storage.list(&prefix, &start, want, revision).await {
            Ok(page) => page,
            Err(StorageError::Compacted { .. }) if !q.continue_token.is_empty() => {
                return Err(ApiError::expired(CONTINUE_EXPIRED))
            }
            Err(StorageError::Compacted { .. }) => {
                return Err(ApiError::expired(format!("too old resource version: {revision}")))
            }
            Err(e) => return Err(e.into()),
        };
        // Every later page is read at the same revision, so the list is one consistent view.
        revision = page.revision;
        let last_key = page.entries.last().map(|e| e.key.clone());
        for entry in &page.entries {
            let object = decode_entry(entry)?;
            if filter.matches(&object) {
                items.push(object);
            }
        }
        let Some(last_key) = last_key else { break };
        if !page.more {
            break;
        }
        start = format!("{last_key}\0");
        if limit > 0 && items.len() as i64 >= limit {
            return Ok(Listed { items, revision, continue_token: Some(encode_continue(revision, &start)) });
        }
    }
    Ok(Listed { items, revision, continue_token: None })
}

async fn list(state: &ApiState, t: &ResourceTarget, q: &Query, as_table: bool) -> ApiResult<Reply> {
    let r = t.resource;
    let filter = Filter::parse(r, q)?;
    let listed = list_objects(state, r, namespace(t), &filter, q).await?;
    let mut list_meta = json!({"resourceVersion": listed.revision.to_string()});
    if let Some(token) = &listed.continue_token {
        list_meta["continue"] = json!(token);
    }
    if as_table {
        return Ok(Reply::ok(table::table(
            r.printer,
            &listed.items,
            list_meta,
            state.env.now(),
            include_object(q),
            true,
        )));
    }
    Ok(Reply::ok(json!({
        "kind": format!("{}List", r.kind),
        "apiVersion": r.api_version(),
        "metadata": list_meta,
        "items": listed.items,
    })))
}

/// Decodes a request body by its Content-Type: JSON (the default), YAML, or Kubernetes'
/// protobuf (what client-go's typed clients send for built-in kinds).
pub(super) fn parse_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/json" | "" | "*/*" => {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("json: {e}")))
        }
        "application/yaml" => serde_yaml_ng::from_slice(body).map_err(|e| ApiError::bad_request(format!("yaml: {e}"))),
        media if crate::protobuf::is_protobuf(media) => crate::protobuf::decode(body).map_err(|e| match e {
            crate::protobuf::DecodeError::Malformed(m) => ApiError::bad_request(m),
            crate::protobuf::DecodeError::Unsupported(m) => ApiError::unsupported_content(m),
        }),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// The field manager of a request: the parameter, or the client's name from its User-Agent
/// (`kubectl-client-side-apply/v1.32.0 (...)` → `kubectl-client-side-apply`), as Kubernetes does.
fn manager(q: &Query, headers: &HeaderMap) -> String {
    if let Some(m) = &q.field_manager {
        return m.clone();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|m| !m.is_empty())
        .unwrap_or("unknown")
        .chars()
        .take(128)
        .collect()
}

async fn ensure_namespace(state: &ApiState, r: &Resource, ns: Option<&str>) -> ApiResult<()> {
    if !r.namespaced {
        return Ok(());
    }
    let ns = ns.ok_or_else(|| ApiError::method_not_allowed("a namespaced resource is created in a namespace"))?;
    let namespaces = registry::find("", "v1", "namespaces").expect("namespaces are registered");
    let (entry, _) = state.storage.get(&namespaces.key(None, ns)).await?;
    let entry = entry.ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
    let object = decode_entry(&entry)?;
    if object.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError {
            code: 403,
            reason: "Forbidden",
            ..ApiError::bad_request(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ))
        });
    }
    Ok(())
}

async fn create(call: &Call<'_>) -> ApiResult<Reply> {
    let Call { state, target: t, query: q, headers, body } = *call;
    let r = t.resource;
    let input = parse_body(headers, body)?;
    let (object, warnings) = decode(r, &input, q.field_validation)?;
    let manager = manager(q, headers);
    let ctx = WriteCtx { resource: r, namespace: namespace(t), manager: &manager, now: state.env.now() };
    let (uid, suffix) = (state.env.uid(), state.env.random_bytes());
    let prepare = |ip: Option<&str>| prepare_create(&ctx, object.clone(), &uid, suffix, ip, false);
    let stored = create_object(state, r, namespace(t), q.dry_run, prepare).await?;
    Ok(Reply::Json { code: StatusCode::CREATED, body: stored, warnings })
}

/// Stores a new object made by `prepare`, which is given the cluster IP a new Service gets
/// (`None` for other kinds, or to see what the Service asks for). A Service's address is
/// reserved in the same transaction that creates it; a random pick that turns out taken is
/// replaced by another.
async fn create_object(
    state: &ApiState,
    r: &Resource,
    ns: Option<&str>,
    dry_run: bool,
    prepare: impl Fn(Option<&str>) -> ApiResult<Value>,
) -> ApiResult<Value> {
    let asked = prepare(None)?;
    ensure_namespace(state, r, ns).await?;
    let request = if r.kind == "Service" { service_ip::request(&asked) } else { Request::Nothing };
    match request {
        Request::Nothing => write_new(state, r, ns, asked, dry_run, None).await,
        Request::Exact(ip) if !service_ip::in_range(ip) => Err(service_ip::not_in_range(name_of(&asked), ip)),
        Request::Exact(ip) => write_new(state, r, ns, asked, dry_run, Some(ip)).await,
        Request::Any => {
            for _ in 0..service_ip::ATTEMPTS {
                let ip = service_ip::candidate(state.env.random_bytes());
                let object = prepare(Some(&ip.to_string()))?;
                match write_new(state, r, ns, object, dry_run, Some(ip)).await {
                    // The address is taken: pick another.
                    Err(e) if e.code == 422 => continue,
                    result => return result,
                }
            }
            Err(service_ip::range_full())
        }
    }
}

/// Creates `object`, and the reservation of `ip` with it. The only 422 it returns is `ip` being
/// held by another Service.
async fn write_new(
    state: &ApiState,
    r: &Resource,
    ns: Option<&str>,
    object: Value,
    dry_run: bool,
    ip: Option<std::net::Ipv4Addr>,
) -> ApiResult<Value> {
    let name = name_of(&object).to_string();
    let key = r.key(ns, &name);
    let mut writes = vec![Write::Create { key: key.clone(), value: encode(&object)? }];
    if let Some(ip) = ip {
        let reservation = service_ip::reservation(ip, ns.unwrap_or(""), &name, crate::gc::uid(&object));
        writes.push(Write::Create { key: service_ip::key(ip), value: encode(&reservation)? });
    }
    if dry_run {
        // Nothing is written; an address already taken is still an error.
        return match ip {
            Some(ip) if state.storage.get(&service_ip::key(ip)).await?.0.is_some() => {
                Err(service_ip::already_allocated(&name, ip))
            }
            _ => Ok(object),
        };
    }
    match (state.storage.commit(writes).await, ip) {
        (Ok(revision), _) => Ok(with_resource_version(object, revision)),
        (Err(StorageError::Conflict { key: k, .. }), Some(ip)) if k != key => {
            Err(service_ip::already_allocated(&name, ip))
        }
        (Err(StorageError::Conflict { .. }), _) => Err(ApiError::already_exists(r.group, r.plural, &name)),
        (Err(e), _) => Err(e.into()),
    }
}

/// Writes `object` over the version at `expected`; `None` when the key changed meanwhile.
pub(super) async fn write_over(
    state: &ApiState,
    r: &Resource,
    ns: Option<&str>,
    name: &str,
    object: Value,
    expected: i64,
) -> ApiResult<Option<Value>> {
    match state.storage.update(&r.key(ns, name), encode(&object)?, expected).await {
        Ok(revision) => Ok(Some(with_resource_version(object, revision))),
        Err(StorageError::Conflict { current: None, .. }) => Err(ApiError::not_found(r.group, r.plural, name)),
        Err(StorageError::Conflict { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn requested_rv(object: &Value) -> Option<i64> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
}

/// After an update, an object being deleted whose last finalizer is gone is deleted for real.
pub(super) fn finalized(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
        && object.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty())
        && object.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) == 0
}

async fn commit_update(
    state: &ApiState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    (old, expected): (&Value, i64),
    new: Value,
    dry_run: bool,
) -> ApiResult<Option<Value>> {
    if same_content(old, &new) || dry_run {
        return Ok(Some(if dry_run { new } else { old.clone() }));
    }
    if finalized(&new) {
        let removed = delete::remove(state, r, ns, name, &new, expected, &Cascade::default()).await?;
        return Ok(removed.then_some(new));
    }
    write_over(state, r, ns, name, new, expected).await
}

async fn update(call: &Call<'_>, name: &str, sub: Option<Subresource>) -> ApiResult<Reply> {
    let Call { state, target: t, query: q, headers, body } = *call;
    let r = t.resource;
    let ns = namespace(t);
    let input = parse_body(headers, body)?;
    if sub == Some(Subresource::Scale) {
        let replicas = input.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
        let precondition = requested_rv(&input);
        return scale_to(state, t, name, replicas, precondition, &manager(q, headers)).await;
    }
    let (new, warnings) = decode(r, &input, q.field_validation)?;
    let given = name_of(&new);
    if given != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    let precondition = requested_rv(&new);
    let manager = manager(q, headers);
    for _ in 0..CAS_RETRIES {
        let (old, revision) = read(state, r, ns, name).await?;
        if let Some(p) = precondition {
            if p != revision {
                return Err(ApiError::stale(r.group, r.plural, name));
            }
        }
        let ctx = WriteCtx { resource: r, namespace: ns, manager: &manager, now: state.env.now() };
        let object = prepare_update(&ctx, &old, new.clone(), sub, UpdateKind::Update)?;
        match commit_update(state, r, ns, name, (&old, revision), object, q.dry_run).await? {
            Some(stored) => return Ok(Reply::Json { code: StatusCode::OK, body: stored, warnings }),
            None if precondition.is_some() => return Err(ApiError::stale(r.group, r.plural, name)),
            None => continue,
        }
    }
    Err(ApiError::stale(r.group, r.plural, name))
}

async fn scale_to(
    state: &ApiState,
    t: &ResourceTarget,
    name: &str,
    replicas: i64,
    precondition: Option<i64>,
    manager: &str,
) -> ApiResult<Reply> {
    let r = t.resource;
    let ns = namespace(t);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![crate::error::Cause::invalid_json(
                "spec.replicas",
                &json!(replicas),
                "must be greater than or equal to 0",
            )],
        ));
    }
    for _ in 0..CAS_RETRIES {
        let (old, revision) = read(state, r, ns, name).await?;
        if precondition.is_some_and(|p| p != revision) {
            return Err(ApiError::stale(r.group, r.plural, name));
        }
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        let ctx = WriteCtx { resource: r, namespace: ns, manager, now: state.env.now() };
        let object = prepare_update(&ctx, &old, new, Some(Subresource::Scale), UpdateKind::Update)?;
        if let Some(stored) = commit_update(state, r, ns, name, (&old, revision), object, false).await? {
            return Ok(Reply::ok(objects::scale_of(&stored)));
        }
    }
    Err(ApiError::stale(r.group, r.plural, name))
}

async fn patch(call: &Call<'_>, name: &str, sub: Option<Subresource>) -> ApiResult<Reply> {
    let Call { state, target: t, query: q, headers, body } = *call;
    let r = t.resource;
    let ns = namespace(t);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let kind =
        PatchType::from_content_type(content_type).ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
    let patch_doc: Value = match kind {
        PatchType::Apply => serde_json::from_slice(body)
            .or_else(|_| serde_yaml_ng::from_slice(body))
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
        _ => serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
    };
    let manager = manager(q, headers);
    if kind == PatchType::Apply && q.field_manager.is_none() {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    for _ in 0..CAS_RETRIES {
        let current = state.storage.get(&r.key(ns, name)).await?.0;
        let (old, revision) = match current {
            Some(e) => (decode_entry(&e)?, e.mod_revision),
            None if kind == PatchType::Apply && sub.is_none() => {
                return apply_create(state, t, name, &patch_doc, q, &manager).await
            }
            None => return Err(ApiError::not_found(r.group, r.plural, name)),
        };
        if sub == Some(Subresource::Scale) {
            let scale = objects::scale_of(&old);
            let patched = apply_patch(kind, "Scale", &scale, &patch_doc)?;
            let replicas = patched.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
            return scale_to(
                state,
                t,
                name,
                replicas,
                requested_rv(&patched).filter(|p| Some(*p) != requested_rv(&scale)),
                &manager,
            )
            .await;
        }
        let (object, warnings) = if kind == PatchType::Apply {
            let (decoded, warnings) = decode(r, &patch_doc, q.field_validation)?;
            let config = objects::prune(&patch_doc, &decoded);
            let now = meta::timestamp(state.env.now());
            let api_version = r.api_version();
            let subresource = if sub == Some(Subresource::Status) { "status" } else { "" };
            let writer =
                apply::Writer { kind: r.kind, manager: &manager, api_version: &api_version, subresource, now: &now };
            let merged = apply::apply(&writer, Some(&old), &config, q.force)?;
            let ctx = WriteCtx { resource: r, namespace: ns, manager: &manager, now: state.env.now() };
            (prepare_update(&ctx, &old, merged, sub, UpdateKind::Apply)?, warnings)
        } else {
            let patched = apply_patch(kind, r.kind, &old, &patch_doc)?;
            let (decoded, warnings) = decode(r, &patched, q.field_validation)?;
            if name_of(&decoded) != name {
                return Err(ApiError::bad_request(
                    "metadata.name: the name of the object cannot be changed by a patch",
                ));
            }
            let ctx = WriteCtx { resource: r, namespace: ns, manager: &manager, now: state.env.now() };
            (prepare_update(&ctx, &old, decoded, sub, UpdateKind::Update)?, warnings)
        };
        // A resourceVersion in the patch is a precondition, as in Kubernetes.
        let precondition = if kind == PatchType::Apply {
            None
        } else {
            patch_doc.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|s| s.parse::<i64>().ok())
        };
        if precondition.is_some_and(|p| p != revision) {
            return Err(ApiError::stale(r.group, r.plural, name));
        }
        if let Some(stored) = commit_update(state, r, ns, name, (&old, revision), object, q.dry_run).await? {
            return Ok(Reply::Json { code: StatusCode::OK, body: stored, warnings });
        }
    }
    Err(ApiError::stale(r.group, r.plural, name))
}

fn apply_patch(kind: PatchType, object_kind: &str, old: &Value, patch_doc: &Value) -> ApiResult<Value> {
    match kind {
        PatchType::Json => patch::json_patch(old, patch_doc).map_err(|e| ApiError {
            code: 422,
            reason: "Invalid",
            ..ApiError::bad_request(e)
        }),
        PatchType::Merge => patch::merge_patch(old, patch_doc).map_err(ApiError::bad_request),
        PatchType::Strategic => patch::strategic::apply(object_kind, old, patch_doc).map_err(ApiError::bad_request),
        PatchType::Apply => Err(ApiError::bad_request("apply patches are not supported on this subresource")),
    }
}

/// Server-side apply of an object that does not exist yet: a create owned by the applier.
async fn apply_create(
    state: &ApiState,
    t: &ResourceTarget,
    name: &str,
    config: &Value,
    q: &Query,
    manager: &str,
) -> ApiResult<Reply> {
    let r = t.resource;
    let (decoded, warnings) = decode(r, config, q.field_validation)?;
    let config = objects::prune(config, &decoded);
    if name_of(&config) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            name_of(&config)
        )));
    }
    let now = meta::timestamp(state.env.now());
    let api_version = r.api_version();
    let writer = apply::Writer { kind: r.kind, manager, api_version: &api_version, subresource: "", now: &now };
    let mut object = apply::apply(&writer, None, &config, q.force)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(r.kind);
    let ctx = WriteCtx { resource: r, namespace: namespace(t), manager, now: state.env.now() };
    let (uid, suffix) = (state.env.uid(), state.env.random_bytes());
    let prepare = |ip: Option<&str>| prepare_create(&ctx, object.clone(), &uid, suffix, ip, true);
    let stored = create_object(state, r, namespace(t), q.dry_run, prepare).await?;
    Ok(Reply::Json { code: StatusCode::CREATED, body: stored, warnings })
}

/// Used by the bootstrap: creates `object` unless it exists.
pub async fn ensure_exists(state: &ApiState, r: &'static Resource, object: Value) -> ApiResult<()> {
    let ctx = WriteCtx { resource: r, namespace: None, manager: "berth-bootstrap", now: state.env.now() };
    let object = prepare_create(&ctx, object, &state.env.uid(), state.env.random_bytes(), None, false)?;
    match write_new(state, r, None, object, false, None).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_bodies_outside_the_schema_are_415_and_broken_ones_400() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, crate::protobuf::MEDIA_TYPE.parse().unwrap());
        // An envelope naming v1 Pod, which the protobuf schema does not describe.
        let pod = b"k8s\0\x0a\x09\x0a\x02v1\x12\x03Pod";
        let err = parse_body(&headers, pod).unwrap_err();
        assert_eq!((err.code, err.reason), (415, "UnsupportedMediaType"), "{err}");
        assert!(err.message.contains("send JSON"), "{err}");
        let err = parse_body(&headers, b"k8s\0\xff").unwrap_err();
        assert_eq!((err.code, err.reason), (400, "BadRequest"), "{err}");
    }

    mod cluster_ips {
        use crate::api::testing::Server;
        use crate::env::Env;
        use crate::service_ip;
        use crate::storage::Storage;
        use serde_json::{json, Value};

        const SERVICES: &str = "/api/v1/namespaces/default/services";

        fn service(name: &str, ip: Option<&str>) -> String {
            json!({"metadata": {"name": name}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}).to_string()
        }

        fn ip_of(service: &Value) -> String {
            service["spec"]["clusterIP"].as_str().unwrap_or_default().to_string()
        }

        #[tokio::test]
        async fn a_taken_address_is_422_until_its_service_is_deleted() {
            let server = Server::start(7).await;
            let (code, first) = server.call("POST", SERVICES, &service("a", Some("10.96.0.10"))).await;
            assert_eq!((code, ip_of(&first).as_str()), (201, "10.96.0.10"), "{first}");
            let (code, err) = server.call("POST", SERVICES, &service("b", Some("10.96.0.10"))).await;
            assert_eq!(code, 422, "{err}");
            assert_eq!(
                err["message"],
                "Service \"b\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.10\"}: failed to allocate IP 10.96.0.10: provided IP is already allocated"
            );
            let (code, err) =
                server.call("POST", &format!("{SERVICES}?dryRun=All"), &service("b", Some("10.96.0.10"))).await;
            assert_eq!(code, 422, "a dry run says so too: {err}");
            assert_eq!(server.call("POST", SERVICES, &service("c", Some("10.200.0.1"))).await.0, 422);
            assert_eq!(server.call("POST", SERVICES, &service("c", Some("nonsense"))).await.0, 422);
            assert_eq!(server.call("DELETE", &format!("{SERVICES}/a"), "").await.0, 200);
            assert!(!server.store.dump().contains_key("/registry/ipaddresses/10.96.0.10"), "released with its service");
            let (code, second) = server.call("POST", SERVICES, &service("b", Some("10.96.0.10"))).await;
            assert_eq!((code, ip_of(&second).as_str()), (201, "10.96.0.10"), "{second}");
        }

        #[tokio::test]
        async fn a_random_pick_that_is_taken_is_replaced() {
            let seed = 8;
            let server = Server::start(seed).await;
            // Replay the server's draws: the namespace's uid and name suffix, then the
            // Service's, then its first candidate address.
            let shadow = Env::with(server.state.env.clock.clone(), seed);
            for _ in 0..2 {
                let _ = shadow.uid();
                let _: [u8; 5] = shadow.random_bytes();
            }
            let first = service_ip::candidate(shadow.random_bytes());
            let second = service_ip::candidate(shadow.random_bytes());
            let taken = service_ip::reservation(first, "elsewhere", "other", "u-other");
            server.store.create(&service_ip::key(first), serde_json::to_vec(&taken).unwrap()).await.unwrap();
            let (code, created) = server.call("POST", SERVICES, &service("a", None)).await;
            assert_eq!(code, 201, "{created}");
            assert_eq!(ip_of(&created), second.to_string());
            assert_eq!(created["spec"]["clusterIPs"], json!([second.to_string()]));
            let held = &server.store.dump()[&service_ip::key(second)];
            assert_eq!(held["spec"]["parentRef"]["uid"], created["metadata"]["uid"]);
        }

        #[tokio::test]
        async fn many_services_never_share_an_address() {
            let server = Server::start(9).await;
            let mut seen = std::collections::BTreeSet::new();
            for i in 0..40 {
                let (code, created) = server.call("POST", SERVICES, &service(&format!("s{i}"), None)).await;
                assert_eq!(code, 201, "{created}");
                assert!(seen.insert(ip_of(&created)), "{created}");
            }
            let (code, headless) = server.call("POST", SERVICES, &service("headless", Some("None"))).await;
            assert_eq!((code, ip_of(&headless).as_str()), (201, "None"));
            let reservations = server.store.dump().keys().filter(|k| k.starts_with("/registry/ipaddresses/")).count();
            assert_eq!(reservations, 40);
        }
    }

    #[test]
    fn continue_tokens() {
        let token = encode_continue(42, "/registry/pods/default/b\0");
        assert_eq!(decode_continue(&token, "/registry/pods/").unwrap(), (42, "/registry/pods/default/b\0".to_string()));
        assert_eq!(decode_continue(&token, "/registry/secrets/").unwrap_err().code, 400);
        assert_eq!(decode_continue("!!", "/registry/pods/").unwrap_err().code, 400);
    }

    #[test]
    fn finalized_objects() {
        assert!(finalized(&json!({"metadata": {"deletionTimestamp": "x", "finalizers": []}})));
        assert!(!finalized(&json!({"metadata": {"deletionTimestamp": "x", "finalizers": ["a"]}})));
        assert!(!finalized(&json!({"metadata": {}})));
    }
}
