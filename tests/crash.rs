//! Crash safety with real processes on the real disk engine: a 3-member cluster takes
//! continuous writes from several clients while the leader, then a follower, are killed with
//! SIGKILL and restarted. Afterwards every acknowledged write is present on every member and
//! all members agree on HashKV at the same revision.

mod common;

use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::kv_client::KvClient;
use berth_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use common::grpc::{channel, leader_index};
use common::{poll_until, Cluster, OP_DEADLINE};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WRITERS: usize = 4;

/// Puts unique keys through every member in turn until told to stop; returns what was
/// acknowledged. A failed put (the member it used just died, or no leader yet) is not retried
/// with the same key: its outcome is unknown, so it is simply not counted as acknowledged.
async fn writer(w: usize, urls: Vec<String>, stop: Arc<AtomicBool>) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    let clients: Vec<_> = urls.iter().map(|u| KvClient::new(channel(u))).collect();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("crash/{w}/{n:06}");
        let value = format!("v{w}-{n}");
        let mut client = clients[(n as usize + w) % clients.len()].clone();
        let mut req = tonic::Request::new(pb::PutRequest {
            key: key.clone().into(),
            value: value.clone().into(),
            ..Default::default()
        });
        req.set_timeout(Duration::from_secs(5));
        match client.put(req).await {
            Ok(_) => acked.push((key, value)),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        n += 1;
    }
    acked
}

async fn acked_count_grows(url: &str, by: i64) {
    let mut kv = KvClient::new(channel(url));
    let count = |r: pb::RangeResponse| r.count;
    let range = || pb::RangeRequest {
        key: b"crash/".to_vec(),
        range_end: b"crash0".to_vec(),
        count_only: true,
        serializable: true,
        ..Default::default()
    };
    let start = kv.range(range()).await.map(|r| count(r.into_inner())).unwrap_or(0);
    let deadline = Instant::now() + OP_DEADLINE;
    loop {
        let now = kv.range(range()).await.map(|r| count(r.into_inner())).unwrap_or(0);
        if now >= start + by {
            return;
        }
        assert!(Instant::now() < deadline, "writes stalled at {now} (started at {start})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn kill_9_of_leader_then_follower_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let urls: Vec<String> = (0..3).map(|i| cluster.client_url(i)).collect();
    let first_leader = poll_until(OP_DEADLINE, "a leader", || rt.block_on(leader_index(&cluster, &[0, 1, 2])));

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS).map(|w| rt.spawn(writer(w, urls.clone(), stop.clone()))).collect();
    let survivor = (first_leader + 1) % 3;
    rt.block_on(acked_count_grows(&urls[survivor], 100));

    // Crash the leader mid-stream, let the others elect and take writes, bring it back.
    cluster.kill(first_leader);
    rt.block_on(acked_count_grows(&urls[survivor], 100));
    cluster.restart(first_leader);
    rt.block_on(acked_count_grows(&urls[first_leader], 100));

    // Now crash a follower of the current leader, and bring it back.
    let current =
        poll_until(OP_DEADLINE, "a leader after the restart", || rt.block_on(leader_index(&cluster, &[0, 1, 2])));
    let follower = (current + 1) % 3;
    cluster.kill(follower);
    rt.block_on(acked_count_grows(&urls[current], 100));
    cluster.restart(follower);
    rt.block_on(acked_count_grows(&urls[follower], 100));

    stop.store(true, Ordering::Relaxed);
    let acked: Vec<(String, String)> =
        rt.block_on(async { futures::future::join_all(writers).await }).into_iter().flat_map(|r| r.unwrap()).collect();
    assert!(acked.len() >= 250, "only {} writes were acknowledged", acked.len());

    // Every member converges on a state that holds every acknowledged write...
    let all = pb::RangeRequest {
        key: b"crash/".to_vec(),
        range_end: b"crash0".to_vec(),
        serializable: true,
        ..Default::default()
    };
    let revision = rt.block_on(async {
        let mut kv = KvClient::new(channel(&urls[current]));
        let r = kv.range(pb::RangeRequest { serializable: false, ..all.clone() }).await.unwrap().into_inner();
        r.header.unwrap().revision
    });
    for (i, url) in urls.iter().enumerate() {
        poll_until(OP_DEADLINE, &format!("member {i} to hold every acknowledged write"), || {
            rt.block_on(async {
                let mut kv = KvClient::new(channel(url));
                let r = kv.range(pb::RangeRequest { revision, ..all.clone() }).await.ok()?.into_inner();
                let stored: BTreeMap<Vec<u8>, Vec<u8>> = r.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
                acked
                    .iter()
                    .all(|(k, v)| stored.get(k.as_bytes()).map(Vec::as_slice) == Some(v.as_bytes()))
                    .then_some(())
            })
        });
    }

    // ...and they agree on the hash of the whole key space at that revision.
    let hashes: Vec<u32> = urls
        .iter()
        .map(|url| {
            rt.block_on(async {
                let mut m = MaintenanceClient::new(channel(url));
                m.hash_kv(pb::HashKvRequest { revision }).await.unwrap().into_inner().hash
            })
        })
        .collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "HashKV differs between members at {revision}: {hashes:?}");
    eprintln!("{} acknowledged writes survived; HashKV {:x} on all members at {revision}", acked.len(), hashes[0]);
}
