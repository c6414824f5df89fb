//! Cluster membership through the project's own generated gRPC client, against real
//! `berth server` processes: members publish their client URLs; a fourth member is added while
//! the log is already purged and catches up by snapshot; it is removed and stops; a learner is
//! added, caught up and promoted; leadership is moved; the leader itself is removed and the
//! others elect a new one; and `HashKV` agrees on every member at the same revision throughout.

mod common;

use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::cluster_client::ClusterClient;
use berth_proto::etcdserverpb::kv_client::KvClient;
use berth_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use common::grpc::{channel, eventually, put};
use common::{Cluster, OP_DEADLINE, START_DEADLINE};
use tonic::transport::Channel;
use tonic::Code;

/// Small snapshot settings, so that a few dozen writes purge the log and a new member can only
/// catch up from a snapshot.
const SNAPSHOT_FLAGS: &[&str] = &["--snapshot-count", "20", "--experimental-snapshot-catchup-entries", "5"];

fn kv(url: &str) -> KvClient<Channel> {
    KvClient::new(channel(url))
}

fn members(url: &str) -> ClusterClient<Channel> {
    ClusterClient::new(channel(url))
}

fn maintenance(url: &str) -> MaintenanceClient<Channel> {
    MaintenanceClient::new(channel(url))
}

fn assert_status(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, message: &str) {
    let e = result.expect_err(message);
    assert_eq!((e.code(), e.message()), (code, message), "{e:?}");
}

async fn list(url: &str) -> Vec<pb::Member> {
    let mut members =
        members(url).member_list(pb::MemberListRequest { linearizable: true }).await.unwrap().into_inner().members;
    members.sort_by_key(|m| m.id);
    members
}

/// The leader's id as member `url` reports it, once it knows one.
async fn leader(url: &str) -> u64 {
    eventually(OP_DEADLINE, "a leader", || async {
        let status = maintenance(url).status(pb::StatusRequest {}).await.ok()?.into_inner();
        (status.leader != 0).then_some(status.leader)
    })
    .await
}

async fn member_id(url: &str) -> u64 {
    let status = maintenance(url).status(pb::StatusRequest {}).await.unwrap().into_inner();
    status.header.unwrap().member_id
}

/// Waits until every member in `urls` answers `HashKV` at the current revision of the first,
/// and checks they all agree on the hash and the compaction point.
async fn assert_hashes_agree(urls: &[String]) {
    let revision = kv(&urls[0]).range(pb::RangeRequest { key: b"x".to_vec(), ..Default::default() }).await.unwrap();
    let revision = revision.into_inner().header.unwrap().revision;
    let mut seen = Vec::new();
    for url in urls {
        let answer = eventually(OP_DEADLINE, &format!("{url} to reach revision {revision}"), || async {
            maintenance(url).hash_kv(pb::HashKvRequest { revision }).await.ok().map(|r| r.into_inner())
        })
        .await;
        assert_eq!(answer.hash_revision, revision);
        seen.push((url.clone(), answer.hash, answer.compact_revision));
    }
    assert!(seen.windows(2).all(|w| (w[0].1, w[0].2) == (w[1].1, w[1].2)), "HashKV differs at {revision}: {seen:?}");
}

#[test]
fn membership_changes_snapshot_catch_up_and_consistency() {
    let mut c = Cluster::start_with(3, SNAPSHOT_FLAGS);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let url = |c: &Cluster, i: usize| c.client_url(i);
    rt.block_on(async {
        let (u0, u1, u2) = (url(&c, 0), url(&c, 1), url(&c, 2));
        eventually(START_DEADLINE, "the cluster to accept writes", || async {
            kv(&u0).put(put("ready", "1")).await.ok()
        })
        .await;

        // Every member publishes its name and client URLs once it runs.
        eventually(OP_DEADLINE, "every member to publish its client URLs", || async {
            let all = list(&u1).await;
            let mut urls: Vec<Vec<String>> = all.iter().map(|m| m.client_ur_ls.clone()).collect();
            urls.sort();
            let mut expected = vec![vec![u0.clone()], vec![u1.clone()], vec![u2.clone()]];
            expected.sort();
            (urls == expected && all.iter().all(|m| !m.name.is_empty())).then_some(())
        })
        .await;

        // etcd's errors, with their codes.
        let existing_peer = c.peer_url(0);
        let add = |urls: Vec<String>, is_learner| pb::MemberAddRequest { peer_ur_ls: urls, is_learner };
        assert_status(
            members(&u1).member_add(add(vec![existing_peer], false)).await,
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        );
        assert_status(
            members(&u1).member_add(add(vec!["127.0.0.1:1".into()], false)).await,
            Code::InvalidArgument,
            "etcdserver: given member URLs are invalid",
        );
        assert_status(
            members(&u1).member_remove(pb::MemberRemoveRequest { id: 42 }).await,
            Code::NotFound,
            "etcdserver: member not found",
        );
        let some_voter = list(&u0).await[0].id;
        assert_status(
            members(&u2).member_promote(pb::MemberPromoteRequest { id: some_voter }).await,
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member",
        );

        // Enough writes that every member snapshots and purges its log.
        for i in 0..60 {
            kv(&u0).put(put(format!("data/{i:03}"), format!("v{i}"))).await.unwrap();
        }

        // A fourth voter, added through a member that may be a follower (forwarded to the leader),
        // is "unstarted" until it runs.
        let m3 = c.reserve_member();
        let added = members(&u1).member_add(add(vec![c.peer_url(m3)], false)).await.unwrap().into_inner();
        let new = added.member.expect("the added member");
        assert!(new.name.is_empty() && !new.is_learner && new.peer_ur_ls == [c.peer_url(m3)], "{new:?}");
        assert_eq!(added.members.len(), 4);
        c.restart(m3);
        let u3 = url(&c, m3);
        eventually(OP_DEADLINE, "the new member to serve the data written before it joined", || async {
            let r = kv(&u3).range(pb::RangeRequest { key: b"data/059".to_vec(), ..Default::default() }).await.ok()?;
            (r.into_inner().kvs.first()?.value == b"v59").then_some(())
        })
        .await;
        assert!(
            c.log(m3).contains("installing snapshot"),
            "the new member joined after the log was purged, so it must have caught up from a snapshot"
        );
        eventually(OP_DEADLINE, "the new member to publish itself", || async {
            let all = list(&u0).await;
            all.iter().any(|m| m.id == new.id && m.name == c.name(m3) && m.client_ur_ls == [u3.clone()]).then_some(())
        })
        .await;
        assert_eq!(member_id(&u3).await, new.id, "the member id the cluster assigned is the one the member uses");
        assert_hashes_agree(&[u0.clone(), u1.clone(), u2.clone(), u3.clone()]).await;

        // Removing it: the membership shrinks and the removed member stops by itself.
        let left = members(&u2).member_remove(pb::MemberRemoveRequest { id: new.id }).await.unwrap().into_inner();
        assert_eq!(left.members.len(), 3);
        assert!(left.members.iter().all(|m| m.id != new.id));
        c.wait_exit(m3, OP_DEADLINE);

        // A learner: added, started, and promoted once it has caught up.
        let m4 = c.reserve_member();
        let learner = members(&u0).member_add(add(vec![c.peer_url(m4)], true)).await.unwrap().into_inner();
        let learner = learner.member.expect("the added learner");
        assert!(learner.is_learner);
        c.restart(m4);
        let u4 = url(&c, m4);
        let promoted = eventually(OP_DEADLINE, "the learner to be promotable", || async {
            match members(&u1).member_promote(pb::MemberPromoteRequest { id: learner.id }).await {
                Ok(r) => Some(r.into_inner()),
                Err(e)
                    if e.message() == "etcdserver: can only promote a learner member which is in sync with leader" =>
                {
                    None
                }
                Err(e) => panic!("promote failed: {e:?}"),
            }
        })
        .await;
        assert!(promoted.members.iter().any(|m| m.id == learner.id && !m.is_learner), "{promoted:?}");
        // The promoted member learns of its promotion when it applies the membership entry.
        eventually(OP_DEADLINE, "the promoted member to report itself a voter", || async {
            let status = maintenance(&u4).status(pb::StatusRequest {}).await.ok()?.into_inner();
            (!status.is_learner).then_some(())
        })
        .await;

        // MoveLeader to a chosen follower.
        let urls = [u0.clone(), u1.clone(), u2.clone(), u4.clone()];
        let old = leader(&u0).await;
        let mut target = None;
        for u in &urls {
            let id = member_id(u).await;
            if id != old {
                target = Some((id, u.clone()));
            }
        }
        let (target, _) = target.expect("a follower");
        maintenance(&u2).move_leader(pb::MoveLeaderRequest { target_id: target }).await.unwrap();
        eventually(OP_DEADLINE, "every member to follow the new leader", || async {
            for u in &urls {
                if leader(u).await != target {
                    return None;
                }
            }
            Some(())
        })
        .await;

        // Removing the leader: the others elect a new one and carry on; it stops by itself.
        let leader_index = {
            let mut found = None;
            for (i, u) in [(0, &u0), (1, &u1), (2, &u2), (m4, &u4)] {
                if member_id(u).await == target {
                    found = Some(i);
                }
            }
            found.expect("the leader is one of the members")
        };
        let survivors: Vec<String> =
            [0, 1, 2, m4].into_iter().filter(|i| *i != leader_index).map(|i| url(&c, i)).collect();
        let after = members(&survivors[0]).member_remove(pb::MemberRemoveRequest { id: target }).await.unwrap();
        assert!(after.into_inner().members.iter().all(|m| m.id != target));
        let new_leader = eventually(OP_DEADLINE, "a new leader", || async {
            let l = leader(&survivors[1]).await;
            (l != target).then_some(l)
        })
        .await;
        assert_ne!(new_leader, target);
        eventually(OP_DEADLINE, "writes after the leader's removal", || async {
            kv(&survivors[2]).put(put("after/leader-removed", "yes")).await.ok()
        })
        .await;
        c.wait_exit(leader_index, OP_DEADLINE);
        assert_eq!(list(&survivors[0]).await.len(), 3);
        assert_hashes_agree(&survivors).await;
    });
}
