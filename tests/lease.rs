//! Integration tests of the etcd Lease API through the project's own generated gRPC clients,
//! against real 3-member clusters of the built `berth` binary: grant (server-chosen and explicit
//! ids, minimum and maximum TTL), revoke deleting every attached key in one revision, keep-alive
//! and time-to-live of unknown leases, expiry committed through Raft so every member deletes the
//! same keys at the same revision, and a lease kept alive through a leader kill.
//!
//! Waiting is always polling with a deadline. The only timing facts asserted are generous
//! bounds on expiry itself (a lease that is not renewed is gone well within a minute; one that
//! is renewed every second with a TTL of several seconds survives).

mod common;

use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::kv_client::KvClient;
use berth_proto::etcdserverpb::lease_client::LeaseClient;
use berth_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use common::grpc::{assert_status, channel, eventually, get, keys, prefix, rev, runtime};
use common::{Cluster, OP_DEADLINE, START_DEADLINE};
use std::time::{Duration, Instant};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

type Kv = KvClient<Channel>;
type Leases = LeaseClient<Channel>;

/// Berth's minimum lease TTL: 1.5 × its maximum election timeout (1.3 s), rounded up.
const MIN_TTL: i64 = 2;
/// etcd's maximum lease TTL.
const MAX_TTL: i64 = 9_000_000_000;
/// How long an unrenewed lease may take to disappear everywhere: its TTL plus the leader's scan
/// interval and a commit, with a wide margin for a loaded CI machine.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(45);

/// Clients for member `i`.
fn kv(cluster: &Cluster, i: usize) -> Kv {
    KvClient::new(channel(&cluster.client_url(i)))
}

fn leases(cluster: &Cluster, i: usize) -> Leases {
    LeaseClient::new(channel(&cluster.client_url(i)))
}

/// Waits until every running member serves linearizable reads (a leader is elected and known).
async fn ready(cluster: &Cluster) {
    for i in 0..cluster.len() {
        if !cluster.is_running(i) {
            continue;
        }
        let kv = kv(cluster, i);
        eventually(START_DEADLINE, &format!("member {i} to serve reads"), || {
            let mut kv = kv.clone();
            async move { kv.range(get("ready/probe")).await.ok() }
        })
        .await;
    }
}

/// The index of the member every live member agrees leads (Maintenance.Status: the leader is
/// the member whose own id is the reported leader).
async fn leader_index(cluster: &Cluster) -> Option<usize> {
    let mut ids = Vec::new();
    let mut leaders = Vec::new();
    for i in 0..cluster.len() {
        if !cluster.is_running(i) {
            ids.push(None);
            continue;
        }
        let mut m = MaintenanceClient::new(channel(&cluster.client_url(i)));
        let status = m.status(pb::StatusRequest {}).await.ok()?.into_inner();
        ids.push(Some(status.header?.member_id));
        leaders.push(status.leader);
    }
    let leader = *leaders.first()?;
    if leader == 0 || leaders.iter().any(|l| *l != leader) {
        return None;
    }
    ids.iter().position(|id| *id == Some(leader))
}

fn put_leased(key: &str, lease: i64) -> pb::PutRequest {
    pb::PutRequest { key: key.into(), value: b"v".to_vec(), lease, ..Default::default() }
}

/// A serializable (local state) read of `p` at `revision` (0 = current) on one member.
fn local_prefix(p: &str, revision: i64) -> pb::RangeRequest {
    pb::RangeRequest { serializable: true, revision, ..prefix(p) }
}

async fn grant(leases: &mut Leases, id: i64, ttl: i64) -> Result<pb::LeaseGrantResponse, tonic::Status> {
    leases.lease_grant(pb::LeaseGrantRequest { id, ttl }).await.map(|r| r.into_inner())
}

async fn time_to_live(leases: &mut Leases, id: i64) -> pb::LeaseTimeToLiveResponse {
    leases.lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true }).await.unwrap().into_inner()
}

/// An open keep-alive stream: one request in, one response out.
struct KeepAlive {
    tx: tokio::sync::mpsc::Sender<pb::LeaseKeepAliveRequest>,
    rx: tonic::Streaming<pb::LeaseKeepAliveResponse>,
}

impl KeepAlive {
    async fn open(leases: &mut Leases) -> KeepAlive {
        let (tx, requests) = tokio::sync::mpsc::channel(4);
        let rx = leases.lease_keep_alive(ReceiverStream::new(requests)).await.unwrap().into_inner();
        KeepAlive { tx, rx }
    }

    /// Renews `id` and returns the TTL answered (0: no such lease).
    async fn renew(&mut self, id: i64) -> i64 {
        self.tx.send(pb::LeaseKeepAliveRequest { id }).await.unwrap();
        let resp = tokio::time::timeout(OP_DEADLINE, self.rx.message())
            .await
            .expect("keep-alive answered in time")
            .expect("keep-alive stream healthy")
            .expect("keep-alive stream open");
        assert_eq!(resp.id, id);
        assert!(resp.header.is_some());
        resp.ttl
    }
}

/// Grant (ids, minimum and maximum TTL), put with a lease, time-to-live with keys from every
/// member, keep-alive and time-to-live of unknown leases, list, and revoke deleting every
/// attached key in one revision.
#[test]
fn grant_keep_alive_time_to_live_list_and_revoke() {
    let cluster = Cluster::start(3);
    runtime().block_on(async {
        ready(&cluster).await;
        let mut l0 = leases(&cluster, 0);
        let mut l1 = leases(&cluster, 1);
        let mut l2 = leases(&cluster, 2);
        let mut kv0 = kv(&cluster, 0);

        // Server-chosen ids: positive, distinct, with the TTL asked for.
        let a = grant(&mut l0, 0, 60).await.unwrap();
        let b = grant(&mut l1, 0, 60).await.unwrap();
        assert!(a.id > 0 && b.id > 0 && a.id != b.id, "{a:?} {b:?}");
        assert_eq!((a.ttl, b.ttl), (60, 60));
        assert!(a.error.is_empty());

        // An explicit id is kept; taking it twice is etcd's "lease already exists".
        let explicit = grant(&mut l2, 4242, 30).await.unwrap();
        assert_eq!((explicit.id, explicit.ttl), (4242, 30));
        assert_status(
            grant(&mut l0, 4242, 30).await.unwrap_err(),
            Code::FailedPrecondition,
            "etcdserver: lease already exists",
        );
        assert_status(
            grant(&mut l1, a.id, 30).await.unwrap_err(),
            Code::FailedPrecondition,
            "etcdserver: lease already exists",
        );

        // A TTL below the minimum is raised; one above the maximum is refused.
        assert_eq!(grant(&mut l0, 0, 1).await.unwrap().ttl, MIN_TTL);
        assert_eq!(grant(&mut l0, 0, -5).await.unwrap().ttl, MIN_TTL);
        assert_eq!(grant(&mut l0, 0, MAX_TTL).await.unwrap().ttl, MAX_TTL);
        assert_status(
            grant(&mut l1, 0, MAX_TTL + 1).await.unwrap_err(),
            Code::OutOfRange,
            "etcdserver: too large lease TTL",
        );

        // Keys attached through different members.
        kv0.put(put_leased("lease-api/k1", a.id)).await.unwrap();
        kv(&cluster, 1).put(put_leased("lease-api/k2", a.id)).await.unwrap();
        kv(&cluster, 2).put(put_leased("lease-api/k3", a.id)).await.unwrap();
        kv0.put(put_leased("lease-api/other", b.id)).await.unwrap();
        kv0.put(put_leased("lease-api/none", 0)).await.unwrap();
        let err = kv0.put(put_leased("lease-api/bad", 999_999_999)).await.unwrap_err();
        assert_status(err, Code::NotFound, "etcdserver: requested lease not found");
        // A key moved to another lease leaves the first one.
        kv0.put(put_leased("lease-api/k3", b.id)).await.unwrap();

        // Every member answers time-to-live as the leader sees it.
        for l in [&mut l0, &mut l1, &mut l2] {
            let ttl = time_to_live(l, a.id).await;
            assert_eq!((ttl.id, ttl.granted_ttl), (a.id, 60));
            // Up to one election timeout (rounded up to a second) above the granted TTL: a
            // freshly elected leader extends every lease it finds, as etcd's does, and right
            // after start-up this grant may precede that promotion.
            assert!(ttl.ttl > 0 && ttl.ttl <= 62, "{ttl:?}");
            assert_eq!(ttl.keys, vec![b"lease-api/k1".to_vec(), b"lease-api/k2".to_vec()]);
            let without_keys =
                l.lease_time_to_live(pb::LeaseTimeToLiveRequest { id: a.id, keys: false }).await.unwrap().into_inner();
            assert!(without_keys.keys.is_empty());
        }

        // Unknown leases: time-to-live answers -1, keep-alive answers TTL 0, neither errs.
        let unknown = time_to_live(&mut l1, 123_456_789).await;
        assert_eq!((unknown.id, unknown.ttl, unknown.granted_ttl), (123_456_789, -1, 0));
        assert!(unknown.header.is_some());
        for l in [&mut l0, &mut l1] {
            let mut stream = KeepAlive::open(l).await;
            assert_eq!(stream.renew(a.id).await, 60);
            assert_eq!(stream.renew(123_456_789).await, 0);
            assert_eq!(stream.renew(0).await, 0);
            assert_eq!(stream.renew(b.id).await, 60, "the stream goes on after an unknown lease");
        }

        // Listed by every member.
        for l in [&mut l0, &mut l1, &mut l2] {
            let listed: Vec<i64> = l
                .lease_leases(pb::LeaseLeasesRequest {})
                .await
                .unwrap()
                .into_inner()
                .leases
                .iter()
                .map(|s| s.id)
                .collect();
            for id in [a.id, b.id, 4242] {
                assert!(listed.contains(&id), "{id} missing from {listed:?}");
            }
        }

        // Revoke through a member that did not grant it: both keys go in one revision.
        let before = kv0.range(prefix("lease-api/")).await.unwrap().into_inner();
        assert_eq!(
            keys(&before),
            ["lease-api/k1", "lease-api/k2", "lease-api/k3", "lease-api/none", "lease-api/other"]
        );
        let revoked = l2.lease_revoke(pb::LeaseRevokeRequest { id: a.id }).await.unwrap().into_inner();
        let r = rev(&revoked.header);
        assert_eq!(r, rev(&before.header) + 1, "one revision for the whole revoke");
        let at = |revision| pb::RangeRequest { revision, ..prefix("lease-api/") };
        assert_eq!(keys(&kv0.range(at(r - 1)).await.unwrap().into_inner()).len(), 5);
        assert_eq!(
            keys(&kv0.range(at(r)).await.unwrap().into_inner()),
            ["lease-api/k3", "lease-api/none", "lease-api/other"]
        );
        // Every member applied it at that revision.
        for i in 0..3 {
            let mut kv = kv(&cluster, i);
            eventually(OP_DEADLINE, "the revoke to reach every member", || {
                let mut kv = kv.clone();
                async move {
                    let now = kv.range(local_prefix("lease-api/", 0)).await.ok()?.into_inner();
                    (rev(&now.header) >= r).then_some(())
                }
            })
            .await;
            let at_r = kv.range(local_prefix("lease-api/", r)).await.unwrap().into_inner();
            assert_eq!(at_r.count, 3, "member {i}");
            let before_r = kv.range(local_prefix("lease-api/", r - 1)).await.unwrap().into_inner();
            assert_eq!(before_r.count, 5, "member {i}");
        }

        // Gone: time-to-live -1, keep-alive 0, revoke again NotFound, no longer listed.
        assert_eq!(time_to_live(&mut l0, a.id).await.ttl, -1);
        assert_eq!(KeepAlive::open(&mut l1).await.renew(a.id).await, 0);
        let err = l0.lease_revoke(pb::LeaseRevokeRequest { id: a.id }).await.unwrap_err();
        assert_status(err, Code::NotFound, "etcdserver: requested lease not found");
        let err = l0.lease_revoke(pb::LeaseRevokeRequest { id: 0 }).await.unwrap_err();
        assert_status(err, Code::NotFound, "etcdserver: requested lease not found");
        let listed = l1.lease_leases(pb::LeaseLeasesRequest {}).await.unwrap().into_inner();
        assert!(!listed.leases.iter().any(|s| s.id == a.id));
        // A revoked lease's id can be granted again.
        assert_eq!(grant(&mut l1, a.id, 10).await.unwrap().id, a.id);
        // Revoking a lease without keys changes no revision.
        let now = rev(&kv0.range(get("lease-api/none")).await.unwrap().into_inner().header);
        let revoked = l0.lease_revoke(pb::LeaseRevokeRequest { id: 4242 }).await.unwrap().into_inner();
        assert_eq!(rev(&revoked.header), now);
    });
}

/// An unrenewed lease expires: the leader commits its revoke, so every member deletes all its
/// keys at the same single revision. A lease renewed meanwhile survives.
#[test]
fn expiry_deletes_keys_on_every_member_at_one_revision() {
    let cluster = Cluster::start(3);
    runtime().block_on(async {
        ready(&cluster).await;
        let mut l0 = leases(&cluster, 0);
        let doomed = grant(&mut l0, 0, MIN_TTL).await.unwrap();
        let kept = grant(&mut leases(&cluster, 1), 0, 5).await.unwrap();
        let mut last = 0;
        for (i, key) in ["expiry/a", "expiry/b", "expiry/c"].into_iter().enumerate() {
            last = rev(&kv(&cluster, i).put(put_leased(key, doomed.id)).await.unwrap().into_inner().header);
        }
        kv(&cluster, 0).put(put_leased("expiry/kept", kept.id)).await.unwrap();
        kv(&cluster, 0).put(put_leased("expiry/plain", 0)).await.unwrap();

        // Renew the kept lease (through a third member) until the doomed one is gone everywhere.
        let mut renewals = KeepAlive::open(&mut leases(&cluster, 2)).await;
        let start = Instant::now();
        let mut next_renewal = Instant::now();
        let mut gone = [false; 3];
        while gone.iter().any(|g| !g) {
            assert!(start.elapsed() < EXPIRY_DEADLINE, "lease did not expire on every member: {gone:?}");
            if Instant::now() >= next_renewal {
                assert_eq!(renewals.renew(kept.id).await, 5, "the renewed lease is alive");
                next_renewal = Instant::now() + Duration::from_secs(1);
            }
            for (i, gone) in gone.iter_mut().enumerate() {
                let left = kv(&cluster, i).range(local_prefix("expiry/", 0)).await.unwrap().into_inner();
                *gone = keys(&left) == ["expiry/kept", "expiry/plain"];
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // Each member's history: the three keys disappear together, at the same revision.
        let mut deleted_at = Vec::new();
        for i in 0..3 {
            let mut kv = kv(&cluster, i);
            let current = rev(&kv.range(local_prefix("expiry/", 0)).await.unwrap().into_inner().header);
            let count_at = |revision: i64| {
                let mut kv = kv.clone();
                async move {
                    let r = kv.range(local_prefix("expiry/", revision)).await.unwrap().into_inner();
                    keys(&r).into_iter().filter(|k| ["expiry/a", "expiry/b", "expiry/c"].contains(&k.as_str())).count()
                }
            };
            let mut revision = last;
            assert_eq!(count_at(revision).await, 3);
            while count_at(revision + 1).await == 3 {
                revision += 1;
                assert!(revision < current, "member {i}: keys never deleted in its history");
            }
            assert_eq!(count_at(revision + 1).await, 0, "member {i}: all keys deleted in one revision");
            deleted_at.push(revision + 1);
        }
        assert!(deleted_at.iter().all(|r| *r == deleted_at[0]), "delete revisions differ: {deleted_at:?}");

        // The lease itself is gone; the renewed one is not.
        assert_eq!(time_to_live(&mut l0, doomed.id).await.ttl, -1);
        assert_eq!(renewals.renew(doomed.id).await, 0);
        let kept_ttl = time_to_live(&mut l0, kept.id).await;
        assert!(kept_ttl.ttl > 0, "{kept_ttl:?}");
    });
}

/// A lease kept alive through a follower survives the leader's crash (the new leader gives it
/// its full TTL again), and the new leader expires it once the renewals stop.
#[test]
fn lease_survives_leader_failover() {
    let mut cluster = Cluster::start(3);
    runtime().block_on(async {
        ready(&cluster).await;
        let leader = eventually(START_DEADLINE, "a leader", || leader_index(&cluster)).await;
        let follower = (leader + 1) % 3;
        let mut lf = leases(&cluster, follower);
        const TTL: i64 = 5;
        let lease = grant(&mut lf, 0, TTL).await.unwrap();
        kv(&cluster, follower).put(put_leased("failover/key", lease.id)).await.unwrap();
        let mut renewals = KeepAlive::open(&mut lf).await;
        assert_eq!(renewals.renew(lease.id).await, TTL);

        cluster.kill(leader);
        // Renew once a second, through the election and for well over a TTL after it. A
        // renewal may wait for the new leader, but must never find the lease gone.
        let killed_at = Instant::now();
        let new_leader = loop {
            assert_eq!(renewals.renew(lease.id).await, TTL, "lease lost during the election");
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(new_leader) = leader_index(&cluster).await {
                break new_leader;
            }
            assert!(killed_at.elapsed() < START_DEADLINE, "no new leader after the kill");
        };
        assert_ne!(new_leader, leader);
        // The new leader's lessor took over (and gave every lease its full TTL again).
        let log = cluster.log(new_leader);
        assert!(log.contains("lessor promoted"), "member {new_leader} leads but never promoted its lessor");
        for _ in 0..(2 * TTL) {
            assert_eq!(renewals.renew(lease.id).await, TTL, "lease lost after the failover");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let ttl = time_to_live(&mut lf, lease.id).await;
        assert!(ttl.ttl > 0 && ttl.granted_ttl == TTL, "{ttl:?}");
        assert_eq!(ttl.keys, vec![b"failover/key".to_vec()]);
        for i in (0..3).filter(|i| *i != leader) {
            let r =
                kv(&cluster, i).range(pb::RangeRequest { serializable: true, ..get("failover/key") }).await.unwrap();
            assert_eq!(r.into_inner().count, 1, "member {i} still has the key");
        }

        // Renewals stop: the new leader expires the lease and the survivors delete the key.
        drop(renewals);
        for i in (0..3).filter(|i| *i != leader) {
            let kv = kv(&cluster, i);
            eventually(EXPIRY_DEADLINE, "the lease to expire after the failover", || {
                let mut kv = kv.clone();
                async move {
                    let r = kv.range(pb::RangeRequest { serializable: true, ..get("failover/key") }).await.ok()?;
                    (r.into_inner().count == 0).then_some(())
                }
            })
            .await;
        }
        assert_eq!(time_to_live(&mut lf, lease.id).await.ttl, -1);
    });
}
