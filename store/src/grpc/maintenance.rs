//! The etcd `Maintenance` service: member status, backups (`Snapshot`), consistency hashes
//! (`HashKV`, `Hash`), leadership transfer (`MoveLeader`) and etcd's no-op-here maintenance
//! calls (`Defragment`, `Alarm`).

use super::convert;
use crate::cluster::{self, AdminRequest};
use crate::error::StoreError;
use crate::ids::{MemberId, Revision};
use crate::member::Member;
use crate::mvcc::{EventKind, StoredEvent};
use crate::raft::state_machine::backup_data;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use std::pin::Pin;
use tonic::{Request, Response, Status};

/// The etcd API version Berth speaks; clients gate features on it.
pub const API_VERSION: &str = "3.5.0";

/// Bytes per `SnapshotResponse` (etcd sends 32 KiB; larger chunks mean fewer messages, and stay
/// far below any client's 4 MiB default message limit).
const SNAPSHOT_CHUNK: usize = 64 * 1024;

/// The consistency hash etcd's `HashKV` defines: a CRC-32 over every retained version of every
/// key with `mod_revision <= revision`, in (revision, sub) order. Replicas that applied the same
/// log (and so the same compactions) hold the same versions, hence the same hash at the same
/// revision, whatever their current revision; a mismatch means their histories diverged.
pub fn hash_kv(events: &[StoredEvent], revision: Revision) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for e in events.iter().take_while(|e| e.event.kv.mod_revision <= revision) {
        let kv = &e.event.kv;
        // Lengths first, so that no two different versions encode to the same bytes.
        hasher.update(&(kv.key.len() as u64).to_le_bytes());
        hasher.update(&kv.key);
        hasher.update(&kv.mod_revision.0.to_le_bytes());
        hasher.update(&e.sub.to_le_bytes());
        hasher.update(&[matches!(e.event.kind, EventKind::Put) as u8]);
        hasher.update(&kv.create_revision.0.to_le_bytes());
        hasher.update(&kv.version.to_le_bytes());
        hasher.update(&kv.lease.map_or(0, |l| l.0).to_le_bytes());
        hasher.update(&(kv.value.len() as u64).to_le_bytes());
        hasher.update(&kv.value);
    }
    hasher.finalize()
}

impl MaintenanceService {
    fn header(&self, revision: Revision) -> pb::ResponseHeader {
        convert::response_header(self.member.header(revision))
    }

    fn current_header(&self) -> pb::ResponseHeader {
        self.header(self.member.kv().read().mvcc.revision())
    }

    /// The history up to `revision` (0 = current) with the current and compacted revisions.
    fn history(&self, revision: i64) -> Result<(Vec<StoredEvent>, Revision, Revision, Revision), StoreError> {
        let state = self.member.kv().read();
        let (current, compacted) = (state.mvcc.revision(), state.mvcc.compacted());
        let at = if revision > 0 { Revision(revision) } else { current };
        if at > current {
            return Err(StoreError::FutureRevision);
        }
        if at < compacted {
            return Err(StoreError::Compacted);
        }
        Ok((state.mvcc.stored_events(), at, current, compacted))
    }
}

#[derive(Clone)]
pub struct MaintenanceService {
    member: Member,
}

pub fn maintenance_server(member: Member) -> MaintenanceServer<MaintenanceService> {
    MaintenanceServer::new(MaintenanceService { member })
}

type SnapshotStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    /// Berth raises no alarms (no space quota, corruption is reported by the checksums of the
    /// storage layer), so every action answers with an empty alarm list.
    async fn alarm(&self, req: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        let req = req.into_inner();
        if pb::alarm_request::AlarmAction::try_from(req.action).is_err() {
            return Err(StoreError::InvalidArgument(format!("invalid alarm action {}", req.action)).into());
        }
        Ok(Response::new(pb::AlarmResponse { header: Some(self.current_header()), alarms: Vec::new() }))
    }

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let metrics = self.member.raft().metrics().borrow().clone();
        let revision = self.member.kv().read().mvcc.revision();
        let db_size = self.member.engine().size_on_disk() as i64;
        let me = self.member.id().0;
        let is_learner = metrics.membership_config.membership().learner_ids().any(|id| id == me);
        Ok(Response::new(pb::StatusResponse {
            header: Some(convert::response_header(self.member.header(revision))),
            version: API_VERSION.to_string(),
            db_size,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |id| id.index),
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner,
        }))
    }

    /// sled compacts its own log-structured files in the background and has no defragment
    /// call; answering success keeps `etcdctl defrag` and operators' scripts working.
    async fn defragment(&self, _: Request<pb::DefragmentRequest>) -> Result<Response<pb::DefragmentResponse>, Status> {
        Ok(Response::new(pb::DefragmentResponse { header: Some(self.current_header()) }))
    }

    /// etcd hashes its whole backend file here; Berth's nearest equivalent is the hash of the
    /// whole key space history at the current revision (the same as `HashKV` with revision 0).
    async fn hash(&self, _: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        let (events, at, current, _) = self.history(0)?;
        let hash = hash_kv(&events, at);
        Ok(Response::new(pb::HashResponse { header: Some(self.header(current)), hash }))
    }

    async fn hash_kv(&self, req: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
        let (events, at, current, compacted) = self.history(req.into_inner().revision)?;
        let hash = hash_kv(&events, at);
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.header(current)),
            hash,
            // etcd reports -1 until the first compaction.
            compact_revision: if compacted.0 == 0 { -1 } else { compacted.0 },
            hash_revision: at.0,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// A consistent backup of this member's applied state (one read-locked copy of the
    /// history), in the format of [`crate::backup`], streamed in chunks.
    async fn snapshot(&self, _: Request<pb::SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        let (payload, revision) = {
            let state = self.member.kv().read();
            let payload = backup_data(&state).map_err(|e| StoreError::Internal(e.to_string()))?;
            (payload, state.mvcc.revision())
        };
        // Hashing a large store takes a while: keep it off the request threads.
        let file = tokio::task::spawn_blocking(move || crate::backup::encode(&payload))
            .await
            .map_err(|e| StoreError::Internal(format!("encoding the snapshot: {e}")))?;
        let header = self.header(revision);
        let total = file.len();
        let chunks: Vec<Result<pb::SnapshotResponse, Status>> = file
            .chunks(SNAPSHOT_CHUNK)
            .scan(0usize, |sent, chunk| {
                *sent += chunk.len();
                Some(Ok(pb::SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: (total - *sent) as u64,
                    blob: chunk.to_vec(),
                }))
            })
            .collect();
        tracing::info!(revision = %revision, bytes = total, "streaming a snapshot");
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = MemberId(req.into_inner().target_id);
        cluster::execute(&self.member, AdminRequest::MoveLeader { target }).await?;
        Ok(Response::new(pb::MoveLeaderResponse { header: Some(self.current_header()) }))
    }

    async fn downgrade(&self, _: Request<pb::DowngradeRequest>) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented("Downgrade is not supported"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{Command, Mvcc, PutRequest};

    fn store(values: &[(&str, &str)]) -> Mvcc {
        let mut mvcc = Mvcc::default();
        for (k, v) in values {
            mvcc.apply(&Command::Put(PutRequest::new(k.as_bytes(), v.as_bytes()))).unwrap();
        }
        mvcc
    }

    #[test]
    fn hash_kv_depends_on_history_up_to_the_revision_only() {
        let a = store(&[("a", "1"), ("b", "2")]);
        let mut b = store(&[("a", "1"), ("b", "2")]);
        assert_eq!(hash_kv(&a.stored_events(), a.revision()), hash_kv(&b.stored_events(), b.revision()));
        // A replica further ahead hashes the same at the earlier revision, differently now.
        let at = a.revision();
        b.apply(&Command::Put(PutRequest::new(&b"c"[..], &b"3"[..]))).unwrap();
        assert_eq!(hash_kv(&a.stored_events(), at), hash_kv(&b.stored_events(), at));
        assert_ne!(hash_kv(&a.stored_events(), at), hash_kv(&b.stored_events(), b.revision()));
        // Different values at the same revisions hash differently.
        let c = store(&[("a", "1"), ("b", "X")]);
        assert_ne!(hash_kv(&a.stored_events(), at), hash_kv(&c.stored_events(), at));
        // Restoring the history (as a snapshot install does) keeps the hash.
        let restored = Mvcc::restore(b.stored_events(), Vec::new(), b.revision(), b.compacted());
        assert_eq!(hash_kv(&restored.stored_events(), at), hash_kv(&b.stored_events(), at));
    }
}
