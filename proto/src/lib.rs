//! Generated protobuf messages and gRPC stubs for Berth.
//!
//! The `.proto` sources live in `proto/` and are compiled by `build.rs`
//! (protox + tonic-prost-build). `mvccpb`, `authpb` and `etcdserverpb` are
//! wire- and path-compatible with etcd v3.5's API; `berthraftpb` is Berth's
//! own opaque Raft peer transport. This crate holds generated code only.

/// etcd storage records: `KeyValue` and watch `Event`.
#[allow(clippy::all)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd authentication records: `User`, `Role`, `Permission`.
#[allow(clippy::all)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcd v3 client API: KV, Watch, Lease, Cluster, Maintenance and Auth.
#[allow(clippy::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// Berth's internal Raft peer transport with opaque payloads.
#[allow(clippy::all)]
pub mod berthraftpb {
    tonic::include_proto!("berthraftpb");
}

#[cfg(test)]
mod tests {
    //! Wire-format and gRPC-path checks against etcd v3.5's field numbers.
    //!
    //! Expected bytes are written by hand from etcd's field numbers
    //! (tag = field_number << 3 | wire_type), so a wrong number in a `.proto`
    //! file makes these tests fail.

    use super::{authpb, berthraftpb, etcdserverpb as pb, mvccpb};
    use prost::Message;
    use std::future::Future;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use tonic::codegen::{http, Service};

    /// Splits protobuf wire bytes into `(field_number, encoded_field)` pairs,
    /// stably sorted by field number, so that encoder field ordering (prost
    /// writes oneofs last) does not matter.
    fn fields(mut buf: &[u8]) -> Vec<(u64, Vec<u8>)> {
        fn varint(buf: &mut &[u8]) -> (u64, usize) {
            let (mut v, mut shift, mut n) = (0u64, 0, 0);
            loop {
                let b = buf[n];
                v |= u64::from(b & 0x7f) << shift;
                shift += 7;
                n += 1;
                if b & 0x80 == 0 {
                    *buf = &buf[n..];
                    return (v, n);
                }
            }
        }
        let mut out = Vec::new();
        while !buf.is_empty() {
            let start = buf;
            let (key, key_len) = varint(&mut buf);
            let body_len = match key & 7 {
                0 => varint(&mut buf).1,
                1 => 8,
                2 => {
                    let (len, len_len) = varint(&mut buf);
                    buf = &buf[len as usize..];
                    len_len + len as usize
                }
                5 => 4,
                wt => panic!("unexpected wire type {wt}"),
            };
            if key & 7 == 1 || key & 7 == 5 {
                buf = &buf[body_len..];
            }
            out.push((key >> 3, start[..key_len + body_len].to_vec()));
        }
        out.sort_by_key(|(field, _)| *field);
        out
    }

    /// Asserts that `msg` encodes to the fields of `expected` and that
    /// `expected` decodes back to `msg`.
    fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, expected: &[u8]) {
        let encoded = msg.encode_to_vec();
        assert_eq!(fields(&encoded), fields(expected), "encoded {encoded:02x?}");
        assert_eq!(&M::decode(expected).expect("decode expected bytes"), msg);
    }

    #[test]
    fn range_request_wire() {
        let msg = pb::RangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            limit: 10,
            revision: 5,
            sort_order: pb::range_request::SortOrder::Descend as i32,
            sort_target: pb::range_request::SortTarget::Mod as i32,
            serializable: true,
            keys_only: true,
            count_only: true,
            min_mod_revision: 1,
            max_mod_revision: 2,
            min_create_revision: 3,
            max_create_revision: 4,
        };
        #[rustfmt::skip]
        let expected = [
            0x0a, 1, b'a', // 1 key (len)
            0x12, 1, b'b', // 2 range_end (len)
            0x18, 10,      // 3 limit
            0x20, 5,       // 4 revision
            0x28, 2,       // 5 sort_order = DESCEND
            0x30, 3,       // 6 sort_target = MOD
            0x38, 1,       // 7 serializable
            0x40, 1,       // 8 keys_only
            0x48, 1,       // 9 count_only
            0x50, 1,       // 10 min_mod_revision
            0x58, 2,       // 11 max_mod_revision
            0x60, 3,       // 12 min_create_revision
            0x68, 4,       // 13 max_create_revision
        ];
        assert_wire(&msg, &expected);
    }

    #[test]
    fn put_request_wire() {
        let msg = pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 7,
            prev_kv: true,
            ignore_value: true,
            ignore_lease: true,
        };
        #[rustfmt::skip]
        let expected = [
            0x0a, 1, b'k', // 1 key
            0x12, 1, b'v', // 2 value
            0x18, 7,       // 3 lease
            0x20, 1,       // 4 prev_kv
            0x28, 1,       // 5 ignore_value
            0x30, 1,       // 6 ignore_lease
        ];
        assert_wire(&msg, &expected);
    }

    #[test]
    fn compare_wire_with_range_end() {
        let msg = pb::Compare {
            result: pb::compare::CompareResult::NotEqual as i32,
            target: pb::compare::CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            target_union: Some(pb::compare::TargetUnion::ModRevision(300)),
            range_end: b"z".to_vec(),
        };
        #[rustfmt::skip]
        let expected = [
            0x08, 3,             // 1 result = NOT_EQUAL
            0x10, 2,             // 2 target = MOD
            0x1a, 1, b'k',       // 3 key
            0x30, 0xac, 0x02,    // 6 mod_revision = 300
            0x82, 0x04, 1, b'z', // 64 range_end: (64 << 3 | 2) = 514 = varint 82 04
        ];
        assert_wire(&msg, &expected);

        let other_targets = [
            (pb::compare::TargetUnion::Version(1), vec![0x20, 1]),
            (pb::compare::TargetUnion::CreateRevision(1), vec![0x28, 1]),
            (pb::compare::TargetUnion::Value(b"v".to_vec()), vec![0x3a, 1, b'v']),
            (pb::compare::TargetUnion::Lease(1), vec![0x40, 1]),
        ];
        for (target, expected) in other_targets {
            let msg = pb::Compare { target_union: Some(target), ..Default::default() };
            assert_wire(&msg, &expected);
        }
    }

    #[test]
    fn txn_request_wire() {
        let msg = pb::TxnRequest {
            compare: vec![pb::Compare::default()],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                    prev_kv: true,
                    ..Default::default()
                })),
            }],
        };
        #[rustfmt::skip]
        let expected = [
            0x0a, 0,                          // 1 compare: empty Compare
            0x12, 5, 0x12, 3, 0x0a, 1, b'k',  // 2 success: RequestOp.request_put(2){key}
            0x1a, 4, 0x1a, 2, 0x18, 1,        // 3 failure: RequestOp.request_delete_range(3){prev_kv(3)}
        ];
        assert_wire(&msg, &expected);
    }

    #[test]
    fn watch_create_request_wire() {
        let create = pb::WatchCreateRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            start_revision: 100,
            progress_notify: true,
            filters: vec![
                pb::watch_create_request::FilterType::Noput as i32,
                pb::watch_create_request::FilterType::Nodelete as i32,
            ],
            prev_kv: true,
            watch_id: 9,
            fragment: true,
        };
        #[rustfmt::skip]
        let expected = [
            0x0a, 1, b'a',  // 1 key
            0x12, 1, b'b',  // 2 range_end
            0x18, 100,      // 3 start_revision
            0x20, 1,        // 4 progress_notify
            0x2a, 2, 0, 1,  // 5 filters, packed: NOPUT, NODELETE
            0x30, 1,        // 6 prev_kv
            0x38, 9,        // 7 watch_id
            0x40, 1,        // 8 fragment
        ];
        assert_wire(&create, &expected);

        let req = pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)) };
        let mut wrapped = vec![0x0a, expected.len() as u8];
        wrapped.extend_from_slice(&expected);
        assert_wire(&req, &wrapped);

        let cancel = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CancelRequest(pb::WatchCancelRequest { watch_id: 3 })),
        };
        assert_wire(&cancel, &[0x12, 2, 0x08, 3]);
        let progress = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
        };
        assert_wire(&progress, &[0x1a, 0]);
    }

    #[test]
    fn watch_response_and_event_wire() {
        let msg = pb::WatchResponse {
            header: None,
            watch_id: 2,
            created: true,
            canceled: true,
            compact_revision: 4,
            cancel_reason: "x".into(),
            fragment: true,
            events: vec![mvccpb::Event {
                r#type: mvccpb::event::EventType::Delete as i32,
                kv: Some(mvccpb::KeyValue { key: b"k".to_vec(), mod_revision: 5, ..Default::default() }),
                prev_kv: Some(mvccpb::KeyValue {
                    create_revision: 1,
                    version: 2,
                    value: b"v".to_vec(),
                    lease: 6,
                    ..Default::default()
                }),
            }],
        };
        #[rustfmt::skip]
        let expected = [
            0x10, 2,          // 2 watch_id
            0x18, 1,          // 3 created
            0x20, 1,          // 4 canceled
            0x28, 4,          // 5 compact_revision
            0x32, 1, b'x',    // 6 cancel_reason
            0x38, 1,          // 7 fragment
            0x5a, 20,         // 11 events
                0x08, 1,      //   Event.type = DELETE
                0x12, 5,      //   Event.kv
                    0x0a, 1, b'k', 0x18, 5,           // key(1), mod_revision(3)
                0x1a, 9,      //   Event.prev_kv
                    0x10, 1, 0x20, 2, 0x2a, 1, b'v', 0x30, 6, // create_rev(2) version(4) value(5) lease(6)
        ];
        assert_wire(&msg, &expected);
    }

    #[test]
    fn status_response_wire() {
        let msg = pb::StatusResponse {
            header: Some(pb::ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 }),
            version: "3.5.0".into(),
            db_size: 4096,
            leader: 2,
            raft_index: 10,
            raft_term: 4,
            raft_applied_index: 9,
            errors: vec!["x".into()],
            db_size_in_use: 2048,
            is_learner: true,
        };
        #[rustfmt::skip]
        let expected = [
            0x0a, 8, 0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4, // 1 header {cluster_id, member_id, revision, raft_term}
            0x12, 5, b'3', b'.', b'5', b'.', b'0',       // 2 version
            0x18, 0x80, 0x20,                            // 3 dbSize = 4096
            0x20, 2,                                     // 4 leader
            0x28, 10,                                    // 5 raftIndex
            0x30, 4,                                     // 6 raftTerm
            0x38, 9,                                     // 7 raftAppliedIndex
            0x42, 1, b'x',                               // 8 errors
            0x48, 0x80, 0x10,                            // 9 dbSizeInUse = 2048
            0x50, 1,                                     // 10 isLearner
        ];
        assert_wire(&msg, &expected);
    }

    #[test]
    fn hash_kv_and_lease_wire() {
        let hash = pb::HashKvResponse { header: None, hash: 7, compact_revision: 8, hash_revision: 9 };
        assert_wire(&hash, &[0x10, 7, 0x18, 8, 0x20, 9]);
        assert_wire(&pb::HashKvRequest { revision: 3 }, &[0x08, 3]);

        assert_wire(&pb::LeaseGrantRequest { ttl: 60, id: 5 }, &[0x08, 60, 0x10, 5]);
        let ttl =
            pb::LeaseTimeToLiveResponse { header: None, id: 1, ttl: 2, granted_ttl: 3, keys: vec![b"k".to_vec()] };
        assert_wire(&ttl, &[0x10, 1, 0x18, 2, 0x20, 3, 0x2a, 1, b'k']);
        let checkpoint =
            pb::LeaseCheckpointRequest { checkpoints: vec![pb::LeaseCheckpoint { id: 1, remaining_ttl: 2 }] };
        assert_wire(&checkpoint, &[0x0a, 4, 0x08, 1, 0x10, 2]);
    }

    #[test]
    fn member_alarm_and_auth_wire() {
        let member = pb::Member {
            id: 1,
            name: "n".into(),
            peer_ur_ls: vec!["p".into()],
            client_ur_ls: vec!["c".into()],
            is_learner: true,
        };
        assert_wire(&member, &[0x08, 1, 0x12, 1, b'n', 0x1a, 1, b'p', 0x22, 1, b'c', 0x28, 1]);
        assert_wire(&pb::MemberListRequest { linearizable: true }, &[0x08, 1]);

        let alarm = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Deactivate as i32,
            member_id: 4,
            alarm: pb::AlarmType::Corrupt as i32,
        };
        assert_wire(&alarm, &[0x08, 2, 0x10, 4, 0x18, 2]);
        assert_eq!(pb::AlarmType::Nospace as i32, 1);

        let grant = pb::AuthRoleGrantPermissionRequest {
            name: "r".into(),
            perm: Some(authpb::Permission {
                perm_type: authpb::permission::Type::Readwrite as i32,
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
            }),
        };
        #[rustfmt::skip]
        let expected = [
            0x0a, 1, b'r',
            0x12, 8, 0x08, 2, 0x12, 1, b'a', 0x1a, 1, b'b',
        ];
        assert_wire(&grant, &expected);

        let user = authpb::User {
            name: b"u".to_vec(),
            password: b"p".to_vec(),
            roles: vec!["r".into()],
            options: Some(authpb::UserAddOptions { no_password: true }),
        };
        #[rustfmt::skip]
        let expected = [
            0x0a, 1, b'u', 0x12, 1, b'p', 0x1a, 1, b'r', 0x22, 2, 0x08, 1,
        ];
        assert_wire(&user, &expected);
    }

    #[test]
    fn service_names() {
        use tonic::server::NamedService;
        assert_eq!(<pb::kv_server::KvServer<()> as NamedService>::NAME, "etcdserverpb.KV");
        assert_eq!(<pb::watch_server::WatchServer<()> as NamedService>::NAME, "etcdserverpb.Watch");
        assert_eq!(<pb::lease_server::LeaseServer<()> as NamedService>::NAME, "etcdserverpb.Lease");
        assert_eq!(<pb::cluster_server::ClusterServer<()> as NamedService>::NAME, "etcdserverpb.Cluster");
        assert_eq!(<pb::maintenance_server::MaintenanceServer<()> as NamedService>::NAME, "etcdserverpb.Maintenance");
        assert_eq!(<pb::auth_server::AuthServer<()> as NamedService>::NAME, "etcdserverpb.Auth");
        assert_eq!(
            <berthraftpb::raft_transport_server::RaftTransportServer<()> as NamedService>::NAME,
            "berthraftpb.RaftTransport"
        );
    }

    /// A gRPC channel stand-in that records request paths and answers every
    /// call with `UNIMPLEMENTED`.
    #[derive(Clone, Default)]
    struct PathRecorder(Arc<Mutex<Vec<String>>>);

    impl Service<http::Request<tonic::body::Body>> for PathRecorder {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            self.0.lock().unwrap().push(req.uri().path().to_owned());
            std::future::ready(Ok(tonic::Status::unimplemented("recorder").into_http()))
        }
    }

    /// Drives a future that never really waits (the recorder answers at once).
    fn block_on<F: Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..1000 {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
        }
        panic!("future did not complete");
    }

    #[test]
    fn client_method_paths() {
        use tonic::codegen::tokio_stream;

        let rec = PathRecorder::default();
        let mut kv = pb::kv_client::KvClient::new(rec.clone());
        let mut watch = pb::watch_client::WatchClient::new(rec.clone());
        let mut lease = pb::lease_client::LeaseClient::new(rec.clone());
        let mut cluster = pb::cluster_client::ClusterClient::new(rec.clone());
        let mut maint = pb::maintenance_client::MaintenanceClient::new(rec.clone());
        let mut auth = pb::auth_client::AuthClient::new(rec.clone());
        let mut raft = berthraftpb::raft_transport_client::RaftTransportClient::new(rec.clone());

        assert!(block_on(kv.range(pb::RangeRequest::default())).is_err());
        assert!(block_on(kv.put(pb::PutRequest::default())).is_err());
        assert!(block_on(kv.delete_range(pb::DeleteRangeRequest::default())).is_err());
        assert!(block_on(kv.txn(pb::TxnRequest::default())).is_err());
        assert!(block_on(kv.compact(pb::CompactionRequest::default())).is_err());
        let watch_reqs = tokio_stream::iter(vec![pb::WatchRequest::default()]);
        assert!(block_on(watch.watch(watch_reqs)).is_err());
        assert!(block_on(lease.lease_grant(pb::LeaseGrantRequest::default())).is_err());
        assert!(block_on(lease.lease_revoke(pb::LeaseRevokeRequest::default())).is_err());
        let keepalive_reqs = tokio_stream::iter(vec![pb::LeaseKeepAliveRequest::default()]);
        assert!(block_on(lease.lease_keep_alive(keepalive_reqs)).is_err());
        assert!(block_on(lease.lease_time_to_live(pb::LeaseTimeToLiveRequest::default())).is_err());
        assert!(block_on(lease.lease_leases(pb::LeaseLeasesRequest::default())).is_err());
        assert!(block_on(cluster.member_add(pb::MemberAddRequest::default())).is_err());
        assert!(block_on(cluster.member_remove(pb::MemberRemoveRequest::default())).is_err());
        assert!(block_on(cluster.member_update(pb::MemberUpdateRequest::default())).is_err());
        assert!(block_on(cluster.member_list(pb::MemberListRequest::default())).is_err());
        assert!(block_on(cluster.member_promote(pb::MemberPromoteRequest::default())).is_err());
        assert!(block_on(maint.alarm(pb::AlarmRequest::default())).is_err());
        assert!(block_on(maint.status(pb::StatusRequest::default())).is_err());
        assert!(block_on(maint.defragment(pb::DefragmentRequest::default())).is_err());
        assert!(block_on(maint.hash(pb::HashRequest::default())).is_err());
        assert!(block_on(maint.hash_kv(pb::HashKvRequest::default())).is_err());
        assert!(block_on(maint.snapshot(pb::SnapshotRequest::default())).is_err());
        assert!(block_on(maint.move_leader(pb::MoveLeaderRequest::default())).is_err());
        assert!(block_on(maint.downgrade(pb::DowngradeRequest::default())).is_err());
        assert!(block_on(auth.auth_enable(pb::AuthEnableRequest::default())).is_err());
        assert!(block_on(auth.authenticate(pb::AuthenticateRequest::default())).is_err());
        assert!(block_on(auth.user_add(pb::AuthUserAddRequest::default())).is_err());
        assert!(block_on(auth.role_grant_permission(pb::AuthRoleGrantPermissionRequest::default())).is_err());
        let payload = || berthraftpb::Payload::default();
        assert!(block_on(raft.append_entries(tokio_stream::iter(vec![payload()]))).is_err());
        assert!(block_on(raft.vote(payload())).is_err());
        assert!(block_on(raft.install_snapshot(payload())).is_err());
        assert!(block_on(raft.propose(payload())).is_err());
        assert!(block_on(raft.read_index(payload())).is_err());

        let paths = rec.0.lock().unwrap().clone();
        let expected = [
            "/etcdserverpb.KV/Range",
            "/etcdserverpb.KV/Put",
            "/etcdserverpb.KV/DeleteRange",
            "/etcdserverpb.KV/Txn",
            "/etcdserverpb.KV/Compact",
            "/etcdserverpb.Watch/Watch",
            "/etcdserverpb.Lease/LeaseGrant",
            "/etcdserverpb.Lease/LeaseRevoke",
            "/etcdserverpb.Lease/LeaseKeepAlive",
            "/etcdserverpb.Lease/LeaseTimeToLive",
            "/etcdserverpb.Lease/LeaseLeases",
            "/etcdserverpb.Cluster/MemberAdd",
            "/etcdserverpb.Cluster/MemberRemove",
            "/etcdserverpb.Cluster/MemberUpdate",
            "/etcdserverpb.Cluster/MemberList",
            "/etcdserverpb.Cluster/MemberPromote",
            "/etcdserverpb.Maintenance/Alarm",
            "/etcdserverpb.Maintenance/Status",
            "/etcdserverpb.Maintenance/Defragment",
            "/etcdserverpb.Maintenance/Hash",
            "/etcdserverpb.Maintenance/HashKV",
            "/etcdserverpb.Maintenance/Snapshot",
            "/etcdserverpb.Maintenance/MoveLeader",
            "/etcdserverpb.Maintenance/Downgrade",
            "/etcdserverpb.Auth/AuthEnable",
            "/etcdserverpb.Auth/Authenticate",
            "/etcdserverpb.Auth/UserAdd",
            "/etcdserverpb.Auth/RoleGrantPermission",
            "/berthraftpb.RaftTransport/AppendEntries",
            "/berthraftpb.RaftTransport/Vote",
            "/berthraftpb.RaftTransport/InstallSnapshot",
            "/berthraftpb.RaftTransport/Propose",
            "/berthraftpb.RaftTransport/ReadIndex",
        ];
        assert_eq!(paths, expected);
    }
}
