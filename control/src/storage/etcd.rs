//! [`Storage`] over the etcd v3 gRPC API: works against the local Berth member, a remote Berth
//! cluster or a real etcd. Writes are single Txns (compare on `create_revision`/`mod_revision`,
//! read the key back on failure) — the pattern kube-apiserver uses with etcd.

use super::{prefix_end, Change, Entry, Page, Revision, Storage, StorageError, WatchBatch, WatchStream, Write};
use berth_proto::etcdserverpb::kv_client::KvClient;
use berth_proto::etcdserverpb::watch_client::WatchClient;
use berth_proto::etcdserverpb::{
    compare, request_op, response_op, watch_request, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RangeResponse, RequestOp, TxnRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use berth_proto::mvccpb;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Bound on one unary store call: long enough for a leader election, short enough that a
/// replica without quorum answers 503 instead of hanging the client.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest store response accepted (etcd's default request limit is 1.5 MiB per object; a
/// list page of many objects is larger).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Clone)]
pub struct EtcdStorage {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    /// How often watches ask for a progress notification (which becomes a bookmark).
    progress_interval: Duration,
}

impl EtcdStorage {
    /// A client for the store at `url` (`http://host:port`). Connects lazily, so the API server
    /// can start before its store does and reconnects after store restarts.
    pub fn connect_lazy(url: &str, progress_interval: Duration) -> Result<EtcdStorage, StorageError> {
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| StorageError::Internal(format!("store URL {url:?}: {e}")))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(EtcdStorage {
            kv: KvClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
            watch: WatchClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
            progress_interval,
        })
    }

    async fn txn(&self, request: TxnRequest) -> Result<berth_proto::etcdserverpb::TxnResponse, StorageError> {
        bounded(self.kv.clone().txn(request)).await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StorageError> {
        bounded(self.kv.clone().range(request)).await
    }

    /// One Txn: every write's compare, every write if they all hold; otherwise every key is
    /// read back so the conflict can name the write that failed.
    async fn commit_writes(&self, writes: Vec<Write>) -> Result<Revision, StorageError> {
        let compares = writes.iter().map(condition).collect();
        let reads = writes
            .iter()
            .map(|w| RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: w.key().as_bytes().to_vec(),
                    ..Default::default()
                })),
            })
            .collect();
        let ops = writes.iter().map(|w| RequestOp { request: Some(operation(w)) }).collect();
        let response = self.txn(TxnRequest { compare: compares, success: ops, failure: reads }).await?;
        if response.succeeded {
            return Ok(response.header.map(|h| h.revision).unwrap_or_default());
        }
        let currents = response.responses.into_iter().map(|r| match r.response {
            Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next().map(entry),
            _ => None,
        });
        let failed = writes.iter().zip(currents).find(|(w, current)| !w.holds(current.as_ref()));
        Err(match failed {
            Some((w, current)) => StorageError::Conflict { key: w.key().to_string(), current },
            // Not expected: the reads run in the same Txn as the compares, so they show the failing one.
            None => StorageError::Conflict {
                key: writes.first().map(|w| w.key().to_string()).unwrap_or_default(),
                current: None,
            },
        })
    }
}

fn condition(write: &Write) -> Compare {
    let (target, union) = match write {
        Write::Create { .. } => (compare::CompareTarget::Create, compare::TargetUnion::CreateRevision(0)),
        Write::Update { expected, .. } | Write::Delete { expected, .. } => {
            (compare::CompareTarget::Mod, compare::TargetUnion::ModRevision(*expected))
        }
    };
    compare(write.key(), target, union)
}

fn operation(write: &Write) -> request_op::Request {
    match write {
        Write::Create { key, value } | Write::Update { key, value, .. } => {
            request_op::Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.clone(),
                ..Default::default()
            })
        }
        Write::Delete { key, .. } => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
    }
}

/// A unary store call within [`CALL_TIMEOUT`], its status mapped to a storage error.
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, StorageError> {
    let response = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| StorageError::Unavailable("timed out waiting for the store".into()))?
        .map_err(map_status)?;
    Ok(response.into_inner())
}

fn entry(kv: mvccpb::KeyValue) -> Entry {
    Entry { key: String::from_utf8_lossy(&kv.key).into_owned(), value: kv.value, mod_revision: kv.mod_revision }
}

fn compare(key: &str, target: compare::CompareTarget, union: compare::TargetUnion) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(union),
        range_end: Vec::new(),
    }
}

/// Maps a gRPC status to a storage error by etcd's codes and message strings.
fn map_status(status: tonic::Status) -> StorageError {
    let message = status.message().to_string();
    if message.contains("required revision has been compacted") {
        // The exact compact revision is not in the message; callers only need "too old".
        return StorageError::Compacted { compact_revision: 0 };
    }
    if message.contains("future revision") {
        return StorageError::FutureRevision;
    }
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Aborted => {
            StorageError::Unavailable(if message.is_empty() { status.code().to_string() } else { message })
        }
        _ => StorageError::Internal(format!("{}: {message}", status.code())),
    }
}

impl Storage for EtcdStorage {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<(Option<Entry>, Revision), StorageError>> {
        let request = RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() };
        async move {
            let response = self.range(request).await?;
            let revision = response.header.map(|h| h.revision).unwrap_or_default();
            Ok((response.kvs.into_iter().next().map(entry), revision))
        }
        .boxed()
    }

    fn list(
        &self,
        prefix: &str,
        start: &str,
        limit: i64,
        revision: Revision,
    ) -> BoxFuture<'_, Result<Page, StorageError>> {
        let key = if start.is_empty() { prefix } else { start };
        let request = RangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            limit,
            revision,
            ..Default::default()
        };
        async move {
            let response = self.range(request).await?;
            let header_revision = response.header.map(|h| h.revision).unwrap_or_default();
            Ok(Page {
                entries: response.kvs.into_iter().map(entry).collect(),
                // A historical read happened at `revision`; the header carries the current one.
                revision: if revision > 0 { revision } else { header_revision },
                more: response.more,
            })
        }
        .boxed()
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<Revision, StorageError>> {
        self.commit_writes(writes).boxed()
    }

    fn watch(&self, prefix: &str, after: Revision) -> BoxFuture<'_, Result<WatchStream, StorageError>> {
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                start_revision: after + 1,
                prev_kv: true,
                progress_notify: true,
                ..Default::default()
            })),
        };
        let interval = self.progress_interval;
        // The request stream stays open for the life of the watch: first the create, then a
        // progress request now and then (answered with the revision the watch has reached).
        let progress = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
            tokio::time::Instant::now() + interval,
            interval,
        ))
        .map(|_| WatchRequest {
            request_union: Some(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})),
        });
        let requests = futures::stream::once(async move { create }).chain(progress);
        async move {
            let mut client = self.watch.clone();
            let mut responses = tokio::time::timeout(CALL_TIMEOUT, client.watch(requests))
                .await
                .map_err(|_| StorageError::Unavailable("timed out waiting for the store".into()))?
                .map_err(map_status)?
                .into_inner();
            // Wait for the creation so that a compacted start is reported before any event.
            let first = tokio::time::timeout(CALL_TIMEOUT, responses.message())
                .await
                .map_err(|_| StorageError::Unavailable("timed out waiting for the store".into()))?
                .map_err(map_status)?
                .ok_or_else(|| StorageError::Unavailable("the store closed the watch".into()))?;
            if first.canceled || first.compact_revision > 0 {
                return Err(canceled(&first));
            }
            let stream = futures::stream::unfold(Some(responses), |state| async move {
                let mut responses = state?;
                loop {
                    match responses.message().await {
                        Ok(Some(response)) => {
                            if response.canceled || response.compact_revision > 0 {
                                return Some((Err(canceled(&response)), None));
                            }
                            if response.created {
                                continue;
                            }
                            let revision = response.header.map(|h| h.revision).unwrap_or_default();
                            let changes = response.events.into_iter().filter_map(change).collect();
                            return Some((Ok(WatchBatch { revision, changes }), Some(responses)));
                        }
                        Ok(None) => {
                            return Some((Err(StorageError::Unavailable("the store closed the watch".into())), None))
                        }
                        Err(status) => return Some((Err(map_status(status)), None)),
                    }
                }
            });
            Ok(stream.boxed())
        }
        .boxed()
    }
}

fn canceled(response: &berth_proto::etcdserverpb::WatchResponse) -> StorageError {
    if response.compact_revision > 0 {
        StorageError::Compacted { compact_revision: response.compact_revision }
    } else {
        StorageError::Unavailable(format!("the store canceled the watch: {}", response.cancel_reason))
    }
}

fn change(event: mvccpb::Event) -> Option<Change> {
    let kv = event.kv?;
    let prev = event.prev_kv.map(entry);
    if event.r#type == mvccpb::event::EventType::Delete as i32 {
        Some(Change::Delete { key: String::from_utf8_lossy(&kv.key).into_owned(), revision: kv.mod_revision, prev })
    } else {
        Some(Change::Put { entry: entry(kv), prev })
    }
}
