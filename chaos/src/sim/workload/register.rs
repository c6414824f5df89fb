//! The register workload: clients doing put / linearizable get / compare-and-set (a Txn) /
//! delete on a few keys, every written value unique, recorded for the linearizability checker.
//!
//! Keys come in generations (`r/<generation>/<k>`, a new generation every few seconds): each key
//! starts absent, as the checker assumes, and no key's history grows so long that the per-key
//! search becomes expensive. A client sticks to one member and moves to another after an error
//! or, now and then, at random: sticking is what lets a client keep reading from a member that
//! a partition cut off, which is where a stale read would show.

use crate::history::{Call, Key, Operation, Outcome, Return, Value};
use crate::sim::client::{key_value, revision, with_deadline, CallError, Cluster};
use crate::sim::record::Shared;
use berth_proto::etcdserverpb as pb;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Deadline of one request: above an election, below the store's own 7 s request timeout, so a
/// client usually learns the outcome and only a stuck request becomes "unknown".
const DEADLINE: Duration = Duration::from_secs(3);
/// A new key generation this often (simulated milliseconds).
const GENERATION_MS: u64 = 4_000;
/// Pause between two requests of one client (bounds the request rate), and after an error.
const THINK_MS: (u64, u64) = (0, 30);
const BACKOFF_MS: u64 = 100;

pub struct RegisterClient {
    pub id: u64,
    pub cluster: Cluster,
    pub rng: StdRng,
    pub keys: usize,
    /// No request starts at or after this tick.
    pub until: u64,
}

impl RegisterClient {
    pub async fn run(mut self, shared: Arc<Shared>) {
        let mut home = self.cluster.first(self.id);
        let mut written = 0u64;
        // What this client last saw each key hold: the expected value of its next CAS.
        let mut last: BTreeMap<Key, Option<Value>> = BTreeMap::new();
        while shared.now() < self.until {
            if self.rng.gen_bool(0.05) {
                home = self.cluster.any(&mut self.rng);
            }
            let generation = shared.now() / GENERATION_MS;
            let key = Key::from(format!("r/{generation}/{}", self.rng.gen_range(0..self.keys)));
            let mut fresh = || {
                written += 1;
                Value::from(format!("c{}-{written}", self.id))
            };
            let call = match self.rng.gen_range(0..100) {
                0..30 => Call::Put { key: key.clone(), value: fresh() },
                30..70 => Call::Get { key: key.clone() },
                70..90 => {
                    let expected = last.get(&key).cloned().flatten();
                    Call::Cas { key: key.clone(), expected, new: fresh() }
                }
                _ => Call::Delete { key: key.clone() },
            };
            let invoke = shared.now();
            let result = perform(&mut self.cluster, home, &call, &shared).await;
            let complete = shared.now();
            let outcome = match result {
                Ok(ret) => {
                    match (&call, &ret) {
                        (Call::Put { value, .. }, _) => {
                            last.insert(key.clone(), Some(value.clone()));
                        }
                        (Call::Get { .. }, Return::Get { value, .. }) => {
                            last.insert(key.clone(), value.clone());
                        }
                        (Call::Cas { new, .. }, Return::Cas { succeeded: true, .. }) => {
                            last.insert(key.clone(), Some(new.clone()));
                        }
                        (Call::Delete { .. }, _) => {
                            last.insert(key.clone(), None);
                        }
                        _ => {}
                    }
                    Outcome::Ok(ret)
                }
                Err(e) => {
                    // The connection may be stalled, and the member cut off: try elsewhere.
                    self.cluster.reset(home);
                    home = self.cluster.other(home, &mut self.rng);
                    tokio::time::sleep(Duration::from_millis(BACKOFF_MS)).await;
                    match e {
                        CallError::Failed(_) => Outcome::Failed,
                        CallError::Unknown(_) => Outcome::Unknown,
                    }
                }
            };
            shared.push_op(Operation { client: self.id, invoke, complete, call, outcome });
            tokio::time::sleep(Duration::from_millis(self.rng.gen_range(THINK_MS.0..=THINK_MS.1))).await;
        }
    }
}

/// Sends `call` to `member` and converts the answer.
async fn perform(cluster: &mut Cluster, member: usize, call: &Call, shared: &Shared) -> Result<Return, CallError> {
    let mut kv = cluster.kv(member);
    match call {
        Call::Put { key, value } => {
            let req = pb::PutRequest { key: key.0.clone(), value: value.0.clone(), ..Default::default() };
            let resp = with_deadline(DEADLINE, kv.put(req)).await?;
            Ok(Return::Put { revision: revision(&resp.header) })
        }
        Call::Get { key } => {
            let req = pb::RangeRequest { key: key.0.clone(), ..Default::default() };
            let resp = with_deadline(DEADLINE, kv.range(req)).await?;
            let kvs: Vec<_> = resp.kvs.iter().map(key_value).collect();
            shared.observed(&kvs);
            let value = kvs.into_iter().find(|kv| kv.key == *key).map(|kv| kv.value);
            Ok(Return::Get { value, revision: revision(&resp.header) })
        }
        Call::Cas { key, expected, new } => {
            let compare = match expected {
                Some(v) => pb::Compare {
                    result: pb::compare::CompareResult::Equal as i32,
                    target: pb::compare::CompareTarget::Value as i32,
                    key: key.0.clone(),
                    target_union: Some(pb::compare::TargetUnion::Value(v.0.clone())),
                    ..Default::default()
                },
                // Absent: etcd's idiom, create revision 0.
                None => pb::Compare {
                    result: pb::compare::CompareResult::Equal as i32,
                    target: pb::compare::CompareTarget::Create as i32,
                    key: key.0.clone(),
                    target_union: Some(pb::compare::TargetUnion::CreateRevision(0)),
                    ..Default::default()
                },
            };
            let put = pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: key.0.clone(),
                    value: new.0.clone(),
                    ..Default::default()
                })),
            };
            let req = pb::TxnRequest { compare: vec![compare], success: vec![put], failure: Vec::new() };
            let resp = with_deadline(DEADLINE, kv.txn(req)).await?;
            Ok(Return::Cas { succeeded: resp.succeeded, revision: revision(&resp.header) })
        }
        Call::Delete { key } => {
            let req = pb::DeleteRangeRequest { key: key.0.clone(), ..Default::default() };
            let resp = with_deadline(DEADLINE, kv.delete_range(req)).await?;
            Ok(Return::Delete { deleted: resp.deleted > 0, revision: revision(&resp.header) })
        }
    }
}
