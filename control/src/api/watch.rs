//! `?watch=true`: a chunked stream of `{"type": …, "object": …}` lines. Starts with synthetic
//! ADDED events for the current objects when resourceVersion is unset or "0", else from the
//! given revision; filters by selectors (an object that stops matching is sent as DELETED);
//! turns the store's progress notifications into BOOKMARKs when asked; reports a compacted
//! start as an ERROR event carrying a 410 Expired Status, as kube-apiserver does.

use super::handlers::{decode_entry, list_objects, Filter};
use super::request::{Query, ResourceTarget};
use super::{ApiState, Reply};
use crate::error::{ApiError, ApiResult};
use crate::registry::Resource;
use crate::storage::{Change, StorageError, WatchStream};
use crate::table::{self, IncludeObject};
use axum::body::{Body, Bytes};
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::Duration;

/// The longest a watch stays open (kube-apiserver's default minimum request timeout is 30 min;
/// clients re-watch from their last resourceVersion).
const MAX_WATCH: Duration = Duration::from_secs(30 * 60);

/// What one store change means to a watcher with `filter` (pure). `None`: nothing to send.
pub fn classify(
    change_new: Option<&Value>,
    change_old: Option<&Value>,
    filter: &Filter,
) -> Option<(&'static str, Value)> {
    let new_matches = change_new.is_some_and(|o| filter.matches(o));
    let old_matches = change_old.is_some_and(|o| filter.matches(o));
    match (change_new, new_matches, old_matches) {
        (Some(new), true, true) => Some(("MODIFIED", new.clone())),
        (Some(new), true, false) => Some(("ADDED", new.clone())),
        // Stopped matching: gone from this watcher's view, at the new revision.
        (Some(new), false, true) => {
            let mut gone = change_old.cloned().unwrap_or_default();
            gone["metadata"]["resourceVersion"] =
                new.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""));
            Some(("DELETED", gone))
        }
        (None, _, true) => change_old.map(|o| ("DELETED", o.clone())),
        _ => None,
    }
}

/// How the events are rendered.
struct Render {
    resource: &'static Resource,
    as_table: bool,
    include: IncludeObject,
    /// Column definitions go with the first table event only.
    first: bool,
}

impl Render {
    fn line(&mut self, kind: &str, object: Value, now: chrono::DateTime<chrono::Utc>) -> Bytes {
        let object = if self.as_table && kind != "ERROR" && kind != "BOOKMARK" {
            let rv = object.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""));
            let t = table::table(
                self.resource.printer,
                &[object],
                json!({"resourceVersion": rv}),
                now,
                self.include,
                self.first,
            );
            self.first = false;
            t
        } else {
            object
        };
        let mut bytes = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }
}

fn expired_status(message: String) -> Value {
    ApiError::expired(message).status()
}

pub async fn watch(state: &ApiState, t: &ResourceTarget, q: &Query, as_table: bool) -> ApiResult<Reply> {
    let r = t.resource;
    let ns = t.namespace.as_deref().filter(|_| r.namespaced);
    let filter = Filter::parse(r, q)?;
    let mut initial = VecDeque::new();
    let start = match q.resource_version.as_deref() {
        None | Some("0") => {
            let listed = list_objects(
                state,
                r,
                ns,
                &filter,
                &Query { limit: 0, continue_token: String::new(), resource_version: None, ..q.clone() },
            )
            .await?;
            initial.extend(listed.items.into_iter().map(|o| ("ADDED", o)));
            listed.revision
        }
        Some(v) => v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resource version {v:?}")))?,
    };
    let include = match q.include_object.as_deref() {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    };
    let mut render = Render { resource: r, as_table, include, first: true };
    let env = state.env.clone();
    let stream = match state.storage.watch(&r.key_prefix(ns), start).await {
        Ok(s) => s,
        Err(StorageError::Compacted { compact_revision }) => {
            let message = if compact_revision > 0 {
                format!("too old resource version: {start} ({compact_revision})")
            } else {
                format!("too old resource version: {start}")
            };
            let line = render.line("ERROR", expired_status(message), env.now());
            return Ok(Reply::Stream(Body::from_stream(futures::stream::iter([Ok::<_, std::io::Error>(line)]))));
        }
        Err(e) => return Err(e.into()),
    };
    let timeout = q.timeout_seconds.map(Duration::from_secs).unwrap_or(MAX_WATCH).min(MAX_WATCH);
    let mut shutdown = state.shutdown.clone();
    let stopped = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let state = WatchState { initial, stream, filter, render, bookmarks: q.allow_bookmarks, env, done: false };
    let events = futures::stream::unfold(state, |mut s| async move {
        let line = s.next_line().await?;
        Some((Ok::<_, std::io::Error>(line), s))
    });
    let bounded = events.take_until(async move {
        tokio::select! {
            _ = tokio::time::sleep(timeout) => {}
            _ = stopped => {}
        }
    });
    Ok(Reply::Stream(Body::from_stream(bounded)))
}

struct WatchState {
    initial: VecDeque<(&'static str, Value)>,
    stream: WatchStream,
    filter: Filter,
    render: Render,
    bookmarks: bool,
    env: crate::env::Env,
    done: bool,
}

impl WatchState {
    async fn next_line(&mut self) -> Option<Bytes> {
        if let Some((kind, object)) = self.initial.pop_front() {
            return Some(self.render.line(kind, object, self.env.now()));
        }
        loop {
            if self.done {
                return None;
            }
            // Buffered lines of a batch with several changes.
            if let Some((kind, object)) = self.initial.pop_front() {
                return Some(self.render.line(kind, object, self.env.now()));
            }
            match self.stream.next().await {
                None => return None,
                Some(Err(StorageError::Compacted { compact_revision })) => {
                    self.done = true;
                    let status = expired_status(format!("too old resource version ({compact_revision})"));
                    return Some(self.render.line("ERROR", status, self.env.now()));
                }
                // The store went away: end the stream; the client re-watches from its last
                // resourceVersion (possibly at another replica).
                Some(Err(_)) => return None,
                Some(Ok(batch)) => {
                    if batch.changes.is_empty() {
                        if self.bookmarks && batch.revision > 0 {
                            let object = json!({
                                "kind": self.render.resource.kind,
                                "apiVersion": self.render.resource.api_version(),
                                "metadata": {"resourceVersion": batch.revision.to_string()},
                            });
                            return Some(self.render.line("BOOKMARK", object, self.env.now()));
                        }
                        continue;
                    }
                    for change in batch.changes {
                        if let Some(event) = self.event(change) {
                            self.initial.push_back(event);
                        }
                    }
                }
            }
        }
    }

    fn event(&self, change: Change) -> Option<(&'static str, Value)> {
        let decode = |e: &crate::storage::Entry| decode_entry(e).ok();
        match change {
            Change::Put { entry, prev } => {
                let new = decode(&entry)?;
                let old = prev.as_ref().and_then(decode);
                classify(Some(&new), old.as_ref(), &self.filter)
            }
            Change::Delete { revision, prev, .. } => {
                let mut old = prev.as_ref().and_then(decode)?;
                old["metadata"]["resourceVersion"] = json!(revision.to_string());
                classify(None, Some(&old), &self.filter)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::{FieldSelector, LabelSelector};

    fn filter(labels: &str) -> Filter {
        Filter { labels: LabelSelector::parse(labels).unwrap(), fields: FieldSelector::default() }
    }

    fn obj(app: &str, rv: &str) -> Value {
        json!({"metadata": {"name": "x", "labels": {"app": app}, "resourceVersion": rv}})
    }

    #[test]
    fn selector_transitions() {
        let f = filter("app=web");
        assert_eq!(classify(Some(&obj("web", "2")), None, &f).unwrap().0, "ADDED");
        assert_eq!(classify(Some(&obj("web", "3")), Some(&obj("web", "2")), &f).unwrap().0, "MODIFIED");
        assert_eq!(classify(Some(&obj("web", "3")), Some(&obj("db", "2")), &f).unwrap().0, "ADDED");
        let (kind, object) = classify(Some(&obj("db", "4")), Some(&obj("web", "3")), &f).unwrap();
        assert_eq!((kind, object["metadata"]["resourceVersion"].as_str()), ("DELETED", Some("4")));
        assert!(classify(Some(&obj("db", "4")), Some(&obj("db", "3")), &f).is_none());
        assert_eq!(classify(None, Some(&obj("web", "5")), &f).unwrap().0, "DELETED");
        assert!(classify(None, Some(&obj("db", "5")), &f).is_none());
    }
}
