//! Integration tests of the etcd KV API through the project's own generated gRPC client,
//! against real `berth server` processes: every Range/Put/DeleteRange/Txn/Compact option with
//! etcd's exact errors, durability across kill -9, leader failover without losing an
//! acknowledged write, and a member catching up from its data dir and from a snapshot.

mod common;

use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::kv_client::KvClient;
use common::grpc::{assert_status, get, keys, leader_index, prefix, put, rev, runtime};
use common::{poll_until, Cluster, OP_DEADLINE, START_DEADLINE};
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::request_op::Request as Op;
use pb::response_op::Response as OpResponse;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

type Kv = KvClient<Channel>;

async fn connect(url: &str) -> Kv {
    let channel = Channel::from_shared(url.to_string()).unwrap().connect_lazy();
    KvClient::new(channel).max_decoding_message_size(64 << 20)
}

/// Retries a put until the member answers: the first request after start waits for an election.
async fn ready(kv: &mut Kv) {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        match kv.put(put("ready/probe", "1")).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("member never became ready: {e}"),
        }
    }
}

fn compare(key: &str, target: CompareTarget, result: CompareResult, value: TargetUnion) -> pb::Compare {
    pb::Compare {
        key: key.as_bytes().to_vec(),
        target: target as i32,
        result: result as i32,
        target_union: Some(value),
        ..Default::default()
    }
}

fn op_put(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp { request: Some(Op::RequestPut(put(key, value))) }
}

#[test]
fn every_kv_option_on_one_member_and_durability_across_kill() {
    let mut cluster = Cluster::start(1);
    let url = cluster.client_url(0);
    runtime().block_on(async {
        let mut kv = connect(&url).await;
        ready(&mut kv).await;
        // The embedded control plane writes objects of its own, so revisions are taken from the
        // responses rather than counted from a starting point.
        let base = rev(&kv.range(get("x")).await.unwrap().into_inner().header);

        // Put: a new revision each; header filled like etcd's.
        let r = kv.put(put("opt/a", "3")).await.unwrap().into_inner();
        let h = r.header.unwrap();
        let rev_a1 = h.revision;
        assert!(rev_a1 > base);
        assert!(h.cluster_id != 0 && h.member_id != 0 && h.raft_term >= 1, "{h:?}");
        let rev_b = rev(&kv.put(put("opt/b", "1")).await.unwrap().into_inner().header);
        let rev_c = rev(&kv.put(put("opt/c", "2")).await.unwrap().into_inner().header);
        assert!(rev_a1 < rev_b && rev_b < rev_c);
        let mut p = put("opt/a", "4");
        p.prev_kv = true;
        let r = kv.put(p).await.unwrap().into_inner();
        let prev = r.prev_kv.unwrap();
        assert_eq!((prev.value.as_slice(), prev.mod_revision, prev.version), (&b"3"[..], rev_a1, 1));
        let rev_a2 = rev(&r.header);

        // Range: single key, prefix, from-key, historical, limit/more/count.
        let a = kv.range(get("opt/a")).await.unwrap().into_inner();
        assert!(rev(&a.header) >= rev_a2);
        let kv_a = &a.kvs[0];
        assert_eq!((kv_a.create_revision, kv_a.mod_revision, kv_a.version), (rev_a1, rev_a2, 2));
        assert_eq!(keys(&kv.range(prefix("opt/")).await.unwrap().into_inner()), ["opt/a", "opt/b", "opt/c"]);
        let from_b = pb::RangeRequest { key: b"opt/b".to_vec(), range_end: vec![0], ..Default::default() };
        assert_eq!(keys(&kv.range(from_b).await.unwrap().into_inner())[..2], ["opt/b", "opt/c"]);
        let old = kv.range(pb::RangeRequest { revision: rev_a1, ..get("opt/a") }).await.unwrap().into_inner();
        assert_eq!(old.kvs[0].value.as_slice(), b"3");
        assert!(rev(&old.header) >= rev_a2, "historical read, current header");
        let limited = kv.range(pb::RangeRequest { limit: 2, ..prefix("opt/") }).await.unwrap().into_inner();
        assert_eq!((limited.kvs.len(), limited.more, limited.count), (2, true, 3));

        // Sorting; a non-key target with order NONE sorts ascending.
        let sorted = |target: pb::range_request::SortTarget, order: pb::range_request::SortOrder| pb::RangeRequest {
            sort_target: target as i32,
            sort_order: order as i32,
            ..prefix("opt/")
        };
        use pb::range_request::{SortOrder as O, SortTarget as T};
        assert_eq!(keys(&kv.range(sorted(T::Value, O::None)).await.unwrap().into_inner()), ["opt/b", "opt/c", "opt/a"]);
        assert_eq!(
            keys(&kv.range(sorted(T::Key, O::Descend)).await.unwrap().into_inner()),
            ["opt/c", "opt/b", "opt/a"]
        );
        assert_eq!(
            keys(&kv.range(sorted(T::Mod, O::Descend)).await.unwrap().into_inner()),
            ["opt/a", "opt/c", "opt/b"]
        );
        assert_eq!(
            keys(&kv.range(sorted(T::Create, O::Ascend)).await.unwrap().into_inner()),
            ["opt/a", "opt/b", "opt/c"]
        );
        assert_eq!(keys(&kv.range(sorted(T::Version, O::Descend)).await.unwrap().into_inner())[0], "opt/a");

        // keys_only, count_only, serializable, revision filters.
        let r = kv.range(pb::RangeRequest { keys_only: true, ..prefix("opt/") }).await.unwrap().into_inner();
        assert!(r.kvs.iter().all(|kv| kv.value.is_empty()) && r.kvs.len() == 3);
        let r = kv.range(pb::RangeRequest { count_only: true, ..prefix("opt/") }).await.unwrap().into_inner();
        assert_eq!((r.count, r.kvs.len()), (3, 0));
        let r = kv.range(pb::RangeRequest { serializable: true, ..prefix("opt/") }).await.unwrap().into_inner();
        assert_eq!(r.kvs.len(), 3);
        let r = kv.range(pb::RangeRequest { min_mod_revision: rev_c, ..prefix("opt/") }).await.unwrap().into_inner();
        assert_eq!(keys(&r), ["opt/a", "opt/c"]);
        let r = kv.range(pb::RangeRequest { max_create_revision: rev_b, ..prefix("opt/") }).await.unwrap().into_inner();
        assert_eq!(keys(&r), ["opt/a", "opt/b"]);
        let r = pb::RangeRequest { min_create_revision: rev_b, max_mod_revision: rev_b, ..prefix("opt/") };
        assert_eq!(keys(&kv.range(r).await.unwrap().into_inner()), ["opt/b"]);

        // Put flags: ignore_value / ignore_lease keep what is stored; contradictions rejected.
        let r = kv.put(pb::PutRequest { ignore_value: true, ..put("opt/b", "") }).await.unwrap().into_inner();
        let b = kv.range(get("opt/b")).await.unwrap().into_inner().kvs[0].clone();
        assert_eq!((b.value.as_slice(), b.mod_revision, b.version), (&b"1"[..], rev(&r.header), 2));
        let e = kv.put(pb::PutRequest { ignore_value: true, ..put("opt/missing", "") }).await.unwrap_err();
        assert_status(e, Code::InvalidArgument, "etcdserver: key not found");
        let e = kv.put(pb::PutRequest { ignore_value: true, ..put("opt/b", "v") }).await.unwrap_err();
        assert_status(e, Code::InvalidArgument, "etcdserver: value is provided");
        let e = kv.put(pb::PutRequest { ignore_lease: true, lease: 7, ..put("opt/b", "v") }).await.unwrap_err();
        assert_status(e, Code::InvalidArgument, "etcdserver: lease is provided");
        let e = kv.put(pb::PutRequest { lease: 0x1234, ..put("opt/leased", "v") }).await.unwrap_err();
        assert_status(e, Code::NotFound, "etcdserver: requested lease not found");
        let e = kv.put(put("", "v")).await.unwrap_err();
        assert_status(e, Code::InvalidArgument, "etcdserver: key is not provided");
        let e = kv.range(get("")).await.unwrap_err();
        assert_status(e, Code::InvalidArgument, "etcdserver: key is not provided");
        // Errors changed nothing.
        assert_eq!(kv.range(prefix("opt/")).await.unwrap().into_inner().count, 3, "no key appeared");
        assert_eq!(kv.range(get("opt/b")).await.unwrap().into_inner().kvs[0], b, "opt/b untouched");

        // Binary keys and values, NUL and 0xff included.
        let key = b"bin/\x00\xff\x00k".to_vec();
        let value = vec![0u8, 255, 0, 10, 13];
        kv.put(put(key.clone(), value.clone())).await.unwrap();
        let r = kv.range(get(key.clone())).await.unwrap().into_inner();
        assert_eq!((r.kvs[0].key.clone(), r.kvs[0].value.clone()), (key.clone(), value));

        // DeleteRange: prev_kvs, count; deleting nothing takes no revision.
        kv.put(put("del/1", "a")).await.unwrap();
        kv.put(put("del/2", "b")).await.unwrap();
        let mut d = pb::DeleteRangeRequest { key: b"del/".to_vec(), range_end: b"del0".to_vec(), ..Default::default() };
        d.prev_kv = true;
        let r = kv.delete_range(d.clone()).await.unwrap().into_inner();
        assert_eq!((r.deleted, r.prev_kvs.len()), (2, 2));
        let deleted_at = rev(&r.header);
        // One request, one revision: a read just below it still sees both keys.
        let before = kv.range(pb::RangeRequest { revision: deleted_at - 1, ..prefix("del/") }).await.unwrap();
        assert_eq!(before.into_inner().count, 2);
        let r = kv.delete_range(d).await.unwrap().into_inner();
        assert_eq!(r.deleted, 0);

        // Txn: compares on every target (with range_end), both branches, nested txns, one revision.
        let mut all_opt = compare("opt/", CompareTarget::Version, CompareResult::Greater, TargetUnion::Version(0));
        all_opt.range_end = b"opt0".to_vec();
        let txn = pb::TxnRequest {
            compare: vec![
                all_opt,
                compare("opt/a", CompareTarget::Value, CompareResult::Equal, TargetUnion::Value(b"4".to_vec())),
                compare("opt/a", CompareTarget::Create, CompareResult::Equal, TargetUnion::CreateRevision(rev_a1)),
                compare("opt/a", CompareTarget::Mod, CompareResult::Equal, TargetUnion::ModRevision(rev_a2)),
                compare("opt/a", CompareTarget::Lease, CompareResult::Equal, TargetUnion::Lease(0)),
                compare("opt/zz", CompareTarget::Version, CompareResult::Equal, TargetUnion::Version(0)),
            ],
            success: vec![
                op_put("txn/1", "x"),
                pb::RequestOp { request: Some(Op::RequestRange(get("txn/1"))) },
                pb::RequestOp {
                    request: Some(Op::RequestTxn(pb::TxnRequest {
                        compare: vec![compare(
                            "txn/1",
                            CompareTarget::Version,
                            CompareResult::NotEqual,
                            TargetUnion::Version(0),
                        )],
                        success: vec![op_put("txn/nested", "n")],
                        failure: vec![],
                    })),
                },
            ],
            failure: vec![op_put("txn/failed", "f")],
        };
        let r = kv.txn(txn).await.unwrap().into_inner();
        assert!(r.succeeded, "{r:?}");
        let txn_rev = rev(&r.header);
        let written = kv.range(get("txn/1")).await.unwrap().into_inner().kvs[0].mod_revision;
        assert_eq!(written, txn_rev, "a txn's writes carry the txn's one revision");
        let Some(OpResponse::ResponseRange(read)) = &r.responses[1].response else { panic!("{r:?}") };
        assert_eq!(read.kvs[0].value, b"x", "a read in a txn sees the txn's earlier write");
        let Some(OpResponse::ResponseTxn(nested)) = &r.responses[2].response else { panic!("{r:?}") };
        // The nested compare is decided before the txn runs, when txn/1 did not exist yet.
        assert!(!nested.succeeded);
        assert!(kv.range(get("txn/nested")).await.unwrap().into_inner().kvs.is_empty());
        let missing_value = compare("opt/zz", CompareTarget::Value, CompareResult::Equal, TargetUnion::Value(vec![]));
        let r = kv
            .txn(pb::TxnRequest { compare: vec![missing_value], success: vec![], failure: vec![op_put("txn/f", "f")] })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.succeeded, "a value compare on a missing key is false");

        // Txn rules: duplicate keys, too many ops, bad lease in the chosen branch changes nothing.
        let dup = pb::TxnRequest { success: vec![op_put("d", "1"), op_put("d", "2")], ..Default::default() };
        assert_status(
            kv.txn(dup).await.unwrap_err(),
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        );
        let many = pb::TxnRequest {
            success: (0..129).map(|i| op_put(&format!("m/{i}"), "v")).collect(),
            ..Default::default()
        };
        assert_status(
            kv.txn(many).await.unwrap_err(),
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        );
        let bad_lease = pb::TxnRequest {
            success: vec![
                op_put("t/ok", "1"),
                pb::RequestOp { request: Some(Op::RequestPut(pb::PutRequest { lease: 99, ..put("t/l", "1") })) },
            ],
            ..Default::default()
        };
        assert_status(kv.txn(bad_lease).await.unwrap_err(), Code::NotFound, "etcdserver: requested lease not found");
        assert!(kv.range(get("t/ok")).await.unwrap().into_inner().kvs.is_empty(), "a failed txn writes nothing");

        // Request size limit (1.5 MiB), checked before anything is proposed.
        let big = vec![7u8; 1_600_000];
        assert_status(
            kv.put(put("big", big)).await.unwrap_err(),
            Code::InvalidArgument,
            "etcdserver: request is too large",
        );
        let now = rev(&kv.put(put("big", vec![7u8; 1_400_000])).await.unwrap().into_inner().header);

        // Compaction and revision bounds.
        let e = kv.range(pb::RangeRequest { revision: now + 1_000_000, ..get("opt/a") }).await.unwrap_err();
        assert_status(e, Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision");
        kv.compact(pb::CompactionRequest { revision: now - 1, physical: true }).await.unwrap();
        let e = kv.range(pb::RangeRequest { revision: rev_a1, ..get("opt/a") }).await.unwrap_err();
        assert_status(e, Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted");
        let e = kv.compact(pb::CompactionRequest { revision: now - 1, physical: false }).await.unwrap_err();
        assert_status(e, Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted");
        let e = kv.compact(pb::CompactionRequest { revision: now + 1_000_000, physical: false }).await.unwrap_err();
        assert_status(e, Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision");
        let r = kv.range(pb::RangeRequest { revision: now - 1, ..get("opt/a") }).await.unwrap().into_inner();
        assert_eq!(r.kvs[0].value, b"4", "the compaction revision itself stays readable");
    });

    // A client that vanishes mid-request does not wedge the server.
    let addr = url.trim_start_matches("http://").to_string();
    for _ in 0..5 {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04");
        drop(s);
    }
    runtime().block_on(async {
        let mut kv = connect(&url).await;
        for _ in 0..20 {
            let mut req = tonic::Request::new(put("cancelled/k", "v"));
            req.set_timeout(Duration::from_micros(1));
            let _ = kv.put(req).await;
        }
        kv.put(put("after/disconnects", "ok")).await.unwrap();
        // Everything acknowledged so far must survive a crash (acknowledged = fsynced).
    });
    let before = runtime().block_on(async {
        let mut kv = connect(&url).await;
        let all = pb::RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
        kv.range(all).await.unwrap().into_inner()
    });
    cluster.kill(0);
    cluster.restart(0);
    runtime().block_on(async {
        let mut kv = connect(&url).await;
        ready(&mut kv).await;
        let all =
            pb::RangeRequest { key: vec![0], range_end: vec![0], revision: rev(&before.header), ..Default::default() };
        let after = kv.range(all).await.unwrap().into_inner();
        assert_eq!(after.kvs, before.kvs, "every acknowledged write survives kill -9");
        let e = kv.range(pb::RangeRequest { revision: 2, ..get("opt/a") }).await.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "the compaction survives a restart too");
    });
}

#[test]
fn leader_failover_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let rt = runtime();
    let urls: Vec<String> = (0..3).map(|i| cluster.client_url(i)).collect();
    let leader = rt.block_on(async {
        for url in &urls {
            ready(&mut connect(url).await).await;
        }
        leader_index(&cluster, &[0, 1, 2]).await.expect("a leader")
    });
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    // Writers through every member (the leader's writers will see errors once it dies). Each
    // records only what the cluster acknowledged.
    let writers = rt.block_on(async {
        let mut handles = Vec::new();
        for (w, url) in urls.iter().enumerate() {
            let mut kv = connect(url).await;
            handles.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..10_000u32 {
                    let key = format!("fo/{w}/{n:05}");
                    let mut req = tonic::Request::new(put(key.clone(), format!("v{n}")));
                    req.set_timeout(Duration::from_secs(10));
                    match kv.put(req).await {
                        Ok(r) => acked.push((key, format!("v{n}"), rev(&r.into_inner().header))),
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                    if STOP.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                }
                acked
            }));
        }
        handles
    });
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    // Let some writes land, then crash the leader.
    let probe = urls[followers[0]].clone();
    rt.block_on(async {
        let mut kv = connect(&probe).await;
        let deadline = Instant::now() + OP_DEADLINE;
        while kv.range(prefix("fo/")).await.map(|r| r.into_inner().count).unwrap_or(0) < 100 {
            assert!(Instant::now() < deadline, "writes are not landing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    cluster.kill(leader);
    let killed_at = Instant::now();

    // A new leader serves writes within a few seconds.
    rt.block_on(async {
        let mut kv = connect(&probe).await;
        loop {
            let mut req = tonic::Request::new(put("fo/after-failover", "1"));
            req.set_timeout(Duration::from_secs(2));
            if kv.put(req).await.is_ok() {
                break;
            }
            assert!(killed_at.elapsed() < Duration::from_secs(20), "no new leader served a write after the kill");
        }
        let new_leader = leader_index(&cluster, &followers).await.expect("a new leader");
        assert_ne!(new_leader, leader);
    });
    eprintln!("new leader served a write {:?} after the kill", killed_at.elapsed());

    // Keep writing a little after the failover, then stop and check.
    rt.block_on(async {
        let mut kv = connect(&probe).await;
        let before = kv.range(prefix("fo/")).await.unwrap().into_inner().count;
        let deadline = Instant::now() + OP_DEADLINE;
        while kv.range(prefix("fo/")).await.unwrap().into_inner().count < before + 100 {
            assert!(Instant::now() < deadline, "writes stopped after the failover");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<(String, String, i64)> =
        rt.block_on(async { futures_all(writers).await }).into_iter().flatten().collect();
    assert!(acked.len() > 200, "only {} writes acknowledged", acked.len());

    let check = |url: String, serializable: bool| {
        let acked = acked.clone();
        async move {
            let mut kv = connect(&url).await;
            let all = kv.range(pb::RangeRequest { serializable, ..prefix("fo/") }).await.ok()?.into_inner();
            let stored: BTreeMap<Vec<u8>, Vec<u8>> = all.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
            acked
                .iter()
                .all(|(k, v, _)| stored.get(k.as_bytes()).map(|s| s.as_slice()) == Some(v.as_bytes()))
                .then_some(())
        }
    };
    for &f in &followers {
        rt.block_on(check(urls[f].clone(), false)).unwrap_or_else(|| panic!("member {f} lost an acknowledged write"));
    }

    // The crashed leader comes back from its data dir and catches up.
    cluster.restart(leader);
    let url = urls[leader].clone();
    poll_until(OP_DEADLINE, "the restarted member to hold every acknowledged write", || {
        rt.block_on(check(url.clone(), true))
    });
}

async fn futures_all<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("writer task"));
    }
    out
}

#[test]
fn stopped_member_catches_up_from_a_snapshot_after_log_purge() {
    let mut cluster =
        Cluster::start_with(3, &["--snapshot-count", "40", "--experimental-snapshot-catchup-entries", "5"]);
    let rt = runtime();
    let urls: Vec<String> = (0..3).map(|i| cluster.client_url(i)).collect();
    let leader = rt.block_on(async {
        for url in &urls {
            ready(&mut connect(url).await).await;
        }
        leader_index(&cluster, &[0, 1, 2]).await.expect("a leader")
    });
    let down = (leader + 1) % 3;
    assert!(cluster.stop(down).success(), "SIGTERM shuts a member down cleanly");

    // Far more entries than the snapshot interval plus the kept tail: the leader snapshots and
    // purges, so the stopped member can only catch up by receiving a snapshot.
    rt.block_on(async {
        let mut kv = connect(&urls[leader]).await;
        for n in 0..300 {
            kv.put(put(format!("snap/{n:03}"), format!("v{n}"))).await.unwrap();
        }
        kv.delete_range(pb::DeleteRangeRequest { key: b"snap/000".to_vec(), ..Default::default() }).await.unwrap();
        let r = kv.range(get("x")).await.unwrap().into_inner();
        kv.compact(pb::CompactionRequest { revision: rev(&r.header) - 50, physical: true }).await.unwrap();
        kv.put(put("snap/last", "done")).await.unwrap();
    });
    cluster.restart(down);
    let reference = rt.block_on(async {
        let mut kv = connect(&urls[leader]).await;
        kv.range(prefix("snap/")).await.unwrap().into_inner()
    });
    poll_until(OP_DEADLINE, "the restarted member to match the leader", || {
        rt.block_on(async {
            let mut kv = connect(&urls[down]).await;
            let r = kv.range(pb::RangeRequest { serializable: true, ..prefix("snap/") }).await.ok()?.into_inner();
            (r.kvs == reference.kvs).then_some(())
        })
    });
    let log = std::fs::read_to_string(cluster.dir().join(format!("m{down}.log"))).unwrap();
    assert!(log.contains("installing snapshot"), "the member should have caught up through a snapshot");
    rt.block_on(async {
        // History below the compaction point is gone on the caught-up member too.
        let mut kv = connect(&urls[down]).await;
        let e = kv.range(pb::RangeRequest { revision: 3, serializable: true, ..get("snap/001") }).await.unwrap_err();
        assert_eq!(e.message(), "etcdserver: mvcc: required revision has been compacted");
        // And it serves linearizable reads and writes as a full member.
        kv.put(put("snap/from-restarted", "1")).await.unwrap();
        assert_eq!(kv.range(get("snap/from-restarted")).await.unwrap().into_inner().count, 1);
    });

    // Values near etcd's request limit replicate too (one AppendEntries must carry them within
    // openraft's per-request deadline), written through a follower and read on every member.
    let big = vec![0x5au8; 1_400_000];
    rt.block_on(async {
        let mut kv = connect(&urls[down]).await;
        let mut req = tonic::Request::new(put("snap/big", big.clone()));
        req.set_timeout(Duration::from_secs(20));
        kv.put(req).await.expect("a 1.4 MB value is replicated");
        for url in &urls {
            let r = connect(url).await.range(get("snap/big")).await.unwrap().into_inner();
            assert_eq!(r.kvs[0].value.len(), big.len());
        }
    });
}
