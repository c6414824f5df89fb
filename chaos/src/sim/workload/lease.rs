//! The lease workload: grant a lease, attach keys to it, keep it alive for a while, then either
//! revoke it or let it expire, and look at its keys throughout (linearizable reads). Recorded
//! for the lease checker: keys must exist while their lease is kept alive and be gone soon
//! after it ends.
//!
//! One loop per client, no background tasks: every step (a keep-alive, a read) has a deadline
//! shorter than the keep-alive interval's slack, so a slow step can delay the next keep-alive
//! but not stop the loop. A late keep-alive may legitimately find the lease expired; the
//! checker judges from the recorded times, not from the plan.

use crate::history::{Key, Tick};
use crate::lease_check::{KeepAlive, KeyObservation, LeaseKey, LeaseRecord, Revoke, Span};
use crate::sim::client::{key_value, revision, with_deadline, Cluster};
use crate::sim::record::Shared;
use berth_proto::etcdserverpb as pb;
use rand::rngs::StdRng;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Requested TTL (seconds). Above the store's minimum (1.5 election timeouts, 2 s here).
pub const TTL_SECONDS: i64 = 3;
const DEADLINE: Duration = Duration::from_secs(1);
/// Keep-alives are sent this often while the lease is held (etcd's client: TTL / 3).
const KEEPALIVE_EVERY_MS: Tick = 1_000;
/// A key is read about this often.
const OBSERVE_EVERY_MS: Tick = 400;
/// How long the lease is held before it is revoked or left to expire.
const HOLD_MS: (Tick, Tick) = (0, 6_000);
/// After release, keys are watched this long past the TTL (or until all are gone).
const AFTER_MS: Tick = 4_000;
const KEYS_PER_LEASE: usize = 2;

pub struct LeaseClient {
    pub id: u64,
    pub cluster: Cluster,
    pub rng: StdRng,
    /// No lease is granted at or after this tick.
    pub until: Tick,
}

/// A keep-alive stream to one member.
struct KeepAliveStream {
    member: usize,
    requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    responses: tonic::Streaming<pb::LeaseKeepAliveResponse>,
}

impl LeaseClient {
    pub async fn run(mut self, shared: Arc<Shared>) {
        let mut member = self.cluster.first(self.id);
        let mut n = 0;
        while shared.now() < self.until {
            n += 1;
            let record = self.one_lease(&mut member, n, &shared).await;
            if let Some(record) = record {
                shared.lock().leases.push(record);
            } else {
                self.cluster.reset(member);
                member = self.cluster.after(member);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    fn move_on(&mut self, member: &mut usize) {
        self.cluster.reset(*member);
        *member = self.cluster.other(*member, &mut self.rng);
    }

    /// One lease from grant to gone; `None` if it could not even be granted.
    async fn one_lease(&mut self, member: &mut usize, n: u64, shared: &Shared) -> Option<LeaseRecord> {
        let invoke = shared.now();
        let grant = pb::LeaseGrantRequest { ttl: TTL_SECONDS, id: 0 };
        let granted = with_deadline(DEADLINE * 2, self.cluster.lease(*member).lease_grant(grant)).await;
        let complete = shared.now();
        let granted = match granted {
            Ok(g) if g.error.is_empty() && g.id != 0 => g,
            // An unknown grant may have created a lease nobody keeps alive: it expires alone.
            _ => return None,
        };
        let ttl = granted.ttl;
        tracing::debug!(lease = %format!("{:x}", granted.id), member = *member, invoke, complete, ttl, "granted");
        let mut record = LeaseRecord {
            id: granted.id,
            ttl: granted.ttl.max(0) as Tick * 1_000,
            grant: Span { invoke, complete },
            keep_alives: Vec::new(),
            revoke: None,
            keys: Vec::new(),
        };
        for k in 0..KEYS_PER_LEASE {
            let key = Key::from(format!("l/{}/{n}/{k}", self.id));
            let put = pb::PutRequest {
                key: key.0.clone(),
                value: b"leased".to_vec(),
                lease: granted.id,
                ..Default::default()
            };
            let invoke = shared.now();
            let done = with_deadline(DEADLINE, self.cluster.kv(*member).put(put)).await;
            let complete = shared.now();
            match done {
                Ok(_) => record.keys.push(LeaseKey { key, put: Span { invoke, complete }, observations: Vec::new() }),
                // Not acknowledged: the key may exist, but the checker only judges keys whose
                // attachment it knows about.
                Err(_) => self.move_on(member),
            }
        }

        let hold_until = shared.now() + self.rng.gen_range(HOLD_MS.0..=HOLD_MS.1);
        let mut stream: Option<KeepAliveStream> = None;
        let mut next_keepalive = shared.now() + KEEPALIVE_EVERY_MS;
        let mut alive = true;
        while alive && shared.now() < hold_until {
            if shared.now() >= next_keepalive {
                next_keepalive = shared.now() + KEEPALIVE_EVERY_MS;
                let answer = self.keep_alive(&mut stream, member, record.id, shared).await;
                tracing::debug!(lease = %format!("{:x}", record.id), member = *member, ?answer, "keep-alive answered");
                match answer {
                    Some(k) => {
                        alive = k.renewed;
                        record.keep_alives.push(k);
                    }
                    None => {
                        stream = None;
                        self.move_on(member);
                    }
                }
            }
            self.observe(&mut record, member, shared).await;
            tokio::time::sleep(Duration::from_millis(OBSERVE_EVERY_MS)).await;
        }
        drop(stream);

        if alive && self.rng.gen_bool(0.3) {
            let invoke = shared.now();
            let revoked = with_deadline(
                DEADLINE * 2,
                self.cluster.lease(*member).lease_revoke(pb::LeaseRevokeRequest { id: record.id }),
            )
            .await;
            let acked = revoked.is_ok().then(|| shared.now());
            if acked.is_none() {
                self.move_on(member);
            }
            tracing::debug!(lease = %format!("{:x}", record.id), member = *member, invoke, ?acked, "revoked");
            record.revoke = Some(Revoke { invoke, acked });
        }

        // Watch the keys go (or, for a bug, stay).
        let stop = shared.now() + record.ttl + AFTER_MS;
        while shared.now() < stop {
            let all_gone = self.observe(&mut record, member, shared).await;
            if all_gone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(OBSERVE_EVERY_MS)).await;
        }
        Some(record)
    }

    /// Sends one keep-alive on the (re)opened stream; `None` if no answer came.
    async fn keep_alive(
        &mut self,
        stream: &mut Option<KeepAliveStream>,
        member: &mut usize,
        id: i64,
        shared: &Shared,
    ) -> Option<KeepAlive> {
        if stream.as_ref().is_none_or(|s| s.member != *member) {
            let (requests, rx) = mpsc::channel(4);
            let opened =
                with_deadline(DEADLINE, self.cluster.lease(*member).lease_keep_alive(ReceiverStream::new(rx))).await;
            *stream = Some(KeepAliveStream { member: *member, requests, responses: opened.ok()? });
        }
        let s = stream.as_mut()?;
        let sent = shared.now();
        s.requests.send(pb::LeaseKeepAliveRequest { id }).await.ok()?;
        let answer = tokio::time::timeout(DEADLINE, s.responses.message()).await.ok()?.ok()??;
        Some(KeepAlive { sent, acked: shared.now(), renewed: answer.ttl > 0 })
    }

    /// Reads every key of the lease once; whether all were absent.
    async fn observe(&mut self, record: &mut LeaseRecord, member: &mut usize, shared: &Shared) -> bool {
        let mut all_gone = true;
        for i in 0..record.keys.len() {
            let req = pb::RangeRequest { key: record.keys[i].key.0.clone(), ..Default::default() };
            let invoke = shared.now();
            let read = with_deadline(DEADLINE, self.cluster.kv(*member).range(req)).await;
            let complete = shared.now();
            match read {
                Ok(resp) => {
                    let kvs: Vec<_> = resp.kvs.iter().map(key_value).collect();
                    shared.observed(&kvs);
                    let present = !kvs.is_empty();
                    all_gone &= !present;
                    tracing::debug!(
                        lease = %format!("{:x}", record.id),
                        key = %record.keys[i].key,
                        member = *member,
                        invoke,
                        complete,
                        present,
                        revision = revision(&resp.header),
                        "observed"
                    );
                    record.keys[i].observations.push(KeyObservation { invoke, complete, present });
                }
                Err(_) => {
                    all_gone = false;
                    self.move_on(member);
                }
            }
        }
        all_gone
    }
}
