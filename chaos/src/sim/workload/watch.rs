//! The watch workload: watchers on prefixes that run across the faults. Each watcher watches
//! from revision 1 (so the true history is known from its start), and whenever its stream
//! breaks, is cancelled, or falls silent, re-creates it — on another member — from the last
//! revision it received + 1. Every response of every incarnation is recorded for the watch
//! checker.
//!
//! Silence: the workload writes continuously, so a silent stream is stalled or served by a
//! member that a partition left behind. After a short silence the watcher asks for a progress
//! notification (exercising bookmarks); if the stream stays silent, it moves on.

use crate::history::EventKind;
use crate::sim::client::{watch_response, with_deadline, Cluster};
use crate::sim::record::Shared;
use crate::watch_check::{KeyRange, WatchIncarnation, WatcherRecord};
use berth_proto::etcdserverpb as pb;
use rand::rngs::StdRng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Bound on opening a stream.
const OPEN_DEADLINE: Duration = Duration::from_secs(2);
/// Silence after which a progress notification is requested, and after which the stream is
/// abandoned.
const QUIET: Duration = Duration::from_millis(1_500);
/// Watchers stop at the latest this long after the workload stopped, healed or not.
const DRAIN_MS: u64 = 40_000;
/// Pause before re-creating a watch.
const BACKOFF_MS: u64 = 100;

pub struct Watcher {
    pub id: u64,
    pub range: KeyRange,
    pub prev_kv: bool,
    pub cluster: Cluster,
    pub rng: StdRng,
    /// The workload stops writing at this tick; the watcher keeps going until the heal is done
    /// (so it catches up with the final state), bounded by [`DRAIN_MS`].
    pub workload_end: u64,
}

impl Watcher {
    pub async fn run(mut self, shared: Arc<Shared>) {
        let mut member = self.cluster.first(self.id);
        let mut record =
            WatcherRecord { id: self.id, range: self.range.clone(), prev_kv: self.prev_kv, incarnations: Vec::new() };
        let mut next_start = 1;
        while !shared.healed() && shared.now() < self.workload_end + DRAIN_MS {
            let incarnation = self.incarnation(member, next_start, &shared).await;
            if let Some(last) = incarnation.responses.iter().flat_map(|r| r.events.iter()).map(|e| e.revision()).max() {
                next_start = next_start.max(last + 1);
            }
            // A watch that was never acknowledged recorded nothing worth checking.
            if !incarnation.responses.is_empty() {
                record.incarnations.push(incarnation);
            }
            self.cluster.reset(member);
            member = self.cluster.other(member, &mut self.rng);
            tokio::time::sleep(Duration::from_millis(BACKOFF_MS)).await;
        }
        shared.lock().watchers.push(record);
    }

    /// One watch stream on `member`, from `start`, until it ends or goes silent.
    async fn incarnation(&mut self, member: usize, start: i64, shared: &Shared) -> WatchIncarnation {
        let mut incarnation = WatchIncarnation { start_revision: start, responses: Vec::new() };
        // The request stream stays open (the sender lives here) until the incarnation ends.
        let (requests, rx) = mpsc::channel(4);
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: self.range.key.0.clone(),
                range_end: self.range.range_end.0.clone(),
                start_revision: start,
                prev_kv: self.prev_kv,
                ..Default::default()
            })),
        };
        if requests.send(create).await.is_err() {
            return incarnation;
        }
        let mut stream =
            match with_deadline(OPEN_DEADLINE, self.cluster.watch(member).watch(ReceiverStream::new(rx))).await {
                Ok(stream) => stream,
                Err(_) => return incarnation,
            };
        let mut asked_progress = false;
        loop {
            if shared.healed() || shared.now() >= self.workload_end + DRAIN_MS {
                break;
            }
            match tokio::time::timeout(QUIET, stream.message()).await {
                Ok(Ok(Some(response))) => {
                    asked_progress = false;
                    let response = watch_response(&response);
                    shared.observed(response.events.iter().filter(|e| e.kind == EventKind::Put).map(|e| &e.kv));
                    let canceled = response.canceled;
                    incarnation.responses.push(response);
                    if canceled {
                        break;
                    }
                }
                // The stream ended or broke.
                Ok(Ok(None)) | Ok(Err(_)) => break,
                Err(_) if !asked_progress => {
                    asked_progress = true;
                    let progress = pb::WatchRequest {
                        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                            pb::WatchProgressRequest {},
                        )),
                    };
                    if requests.send(progress).await.is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        incarnation
    }
}
