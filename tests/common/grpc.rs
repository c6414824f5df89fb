//! Helpers for tests that drive members with the project's own generated etcd client: channels,
//! request builders, and finding the leader through `Maintenance.Status`.

use super::Cluster;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

/// A small runtime per test: the members are separate processes, the test only drives clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A lazily connected channel; a dead member fails its calls quickly instead of hanging them.
pub fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string()).unwrap().connect_timeout(Duration::from_secs(2)).connect_lazy()
}

pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> pb::PutRequest {
    pb::PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

pub fn get(key: impl Into<Vec<u8>>) -> pb::RangeRequest {
    pb::RangeRequest { key: key.into(), ..Default::default() }
}

/// Every key starting with `p` (which must not end in 0xff).
pub fn prefix(p: &str) -> pb::RangeRequest {
    let mut end = p.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    pb::RangeRequest { key: p.as_bytes().to_vec(), range_end: end, ..Default::default() }
}

pub fn keys(r: &pb::RangeResponse) -> Vec<String> {
    r.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

pub fn rev(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().expect("every response has a header").revision
}

/// Asserts the gRPC code and etcd's exact message text.
pub fn assert_status(e: tonic::Status, code: Code, message: &str) {
    assert_eq!((e.code(), e.message()), (code, message), "{e:?}");
}

/// Polls `f` until it yields a value, failing the test with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The index of the member that leads, as the `live` members report it through Status.
pub async fn leader_index(cluster: &Cluster, live: &[usize]) -> Option<usize> {
    let mut ids = BTreeMap::new();
    let mut leader = None;
    for &i in live {
        let mut m = MaintenanceClient::new(channel(&cluster.client_url(i)));
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        let s = m.status(req).await.ok()?.into_inner();
        ids.insert(s.header?.member_id, i);
        if s.leader != 0 {
            leader = Some(s.leader);
        }
    }
    leader.and_then(|id| ids.get(&id).copied())
}
