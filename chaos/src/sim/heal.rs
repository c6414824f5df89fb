//! The heal phase's client: once every fault is removed, the cluster must converge within a
//! bound — every member answering, all naming the same leader and term, exactly one of them
//! that leader, all at the same revision with the same `HashKV` — and then serve a fresh write
//! that every member reads back (liveness).

use crate::history::Tick;
use crate::sim::client::{with_deadline, Cluster};
use crate::sim::record::Shared;
use berth_proto::etcdserverpb as pb;
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(250);

/// What one member says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MemberView {
    member_id: u64,
    leader: u64,
    term: u64,
    revision: i64,
    hash: u32,
}

pub struct HealClient {
    pub cluster: Cluster,
    /// Faults are removed at this tick.
    pub heal_at: Tick,
    /// Convergence and liveness must both be shown by this tick.
    pub deadline: Tick,
}

impl HealClient {
    pub async fn run(mut self, shared: Arc<Shared>) {
        while shared.now() < self.heal_at {
            tokio::time::sleep(POLL).await;
        }
        let mut detail = String::from("no member answered yet");
        let mut converged_at = None;
        while converged_at.is_none() && shared.now() < self.deadline {
            match self.views().await {
                Ok(views) => match disagreement(&views) {
                    None => converged_at = Some(shared.now()),
                    Some(why) => detail = why,
                },
                Err(why) => detail = why,
            }
            if converged_at.is_none() {
                tokio::time::sleep(POLL).await;
            }
        }
        let mut live_at = None;
        if converged_at.is_some() {
            match self.liveness(&shared).await {
                Ok(()) => {
                    live_at = Some(shared.now());
                    detail.clear();
                }
                Err(why) => detail = why,
            }
        }
        shared.lock().heal = crate::sim::record::HealOutcome { converged_at, live_at, detail };
        shared.set_healed();
    }

    async fn views(&mut self) -> Result<Vec<MemberView>, String> {
        let mut views = Vec::new();
        for m in 0..self.cluster.len() {
            let host = self.cluster.host(m).to_string();
            let status = with_deadline(DEADLINE, self.cluster.maintenance(m).status(pb::StatusRequest {})).await;
            let hash =
                with_deadline(DEADLINE, self.cluster.maintenance(m).hash_kv(pb::HashKvRequest { revision: 0 })).await;
            match (status, hash) {
                (Ok(s), Ok(h)) => {
                    let header = s.header.unwrap_or_default();
                    views.push(MemberView {
                        member_id: header.member_id,
                        leader: s.leader,
                        term: s.raft_term,
                        revision: h.header.map_or(0, |h| h.revision),
                        hash: h.hash,
                    })
                }
                (s, h) => {
                    self.cluster.reset(m);
                    return Err(format!("{host} did not answer: status {:?}, hash {:?}", s.err(), h.err()));
                }
            }
        }
        Ok(views)
    }

    /// A fresh write through any member that takes it, then read back through every member.
    async fn liveness(&mut self, shared: &Shared) -> Result<(), String> {
        let key = b"z/heal".to_vec();
        let value = format!("healed@{}", shared.now()).into_bytes();
        let mut last = String::new();
        let mut written = false;
        'write: while shared.now() < self.deadline {
            for m in 0..self.cluster.len() {
                let put = pb::PutRequest { key: key.clone(), value: value.clone(), ..Default::default() };
                match with_deadline(DEADLINE * 2, self.cluster.kv(m).put(put)).await {
                    Ok(_) => {
                        written = true;
                        break 'write;
                    }
                    Err(e) => last = format!("put via {}: {e:?}", self.cluster.host(m)),
                }
            }
            tokio::time::sleep(POLL).await;
        }
        if !written {
            return Err(format!("no write succeeded after the heal: {last}"));
        }
        for m in 0..self.cluster.len() {
            loop {
                let get = pb::RangeRequest { key: key.clone(), ..Default::default() };
                match with_deadline(DEADLINE * 2, self.cluster.kv(m).range(get)).await {
                    Ok(r) if r.kvs.first().is_some_and(|kv| kv.value == value) => break,
                    Ok(r) => last = format!("{} read {:?}", self.cluster.host(m), r.kvs.first().map(|kv| &kv.value)),
                    Err(e) => last = format!("read via {}: {e:?}", self.cluster.host(m)),
                }
                if shared.now() >= self.deadline {
                    return Err(format!("the fresh write was not read back everywhere: {last}"));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }
}

/// Why the views do not show a converged cluster, if they do not.
fn disagreement(views: &[MemberView]) -> Option<String> {
    let first = views.first()?;
    if first.leader == 0 {
        return Some(format!("member {:x} knows no leader", first.member_id));
    }
    for v in views {
        if (v.leader, v.term) != (first.leader, first.term) {
            return Some(format!(
                "member {:x} says {:x} leads term {}, member {:x} says {:x} leads term {}",
                first.member_id, first.leader, first.term, v.member_id, v.leader, v.term
            ));
        }
        if (v.revision, v.hash) != (first.revision, first.hash) {
            return Some(format!(
                "member {:x} is at revision {} hash {:08x}, member {:x} at revision {} hash {:08x}",
                first.member_id, first.revision, first.hash, v.member_id, v.revision, v.hash
            ));
        }
    }
    let leaders = views.iter().filter(|v| v.member_id == first.leader).count();
    (leaders != 1).then(|| format!("the leader {:x} is not among the members that answered", first.leader))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(member_id: u64, leader: u64, revision: i64, hash: u32) -> MemberView {
        MemberView { member_id, leader, term: 3, revision, hash }
    }

    #[test]
    fn convergence_needs_one_leader_and_equal_hashes() {
        assert_eq!(disagreement(&[view(1, 2, 9, 7), view(2, 2, 9, 7), view(3, 2, 9, 7)]), None);
        assert!(disagreement(&[view(1, 2, 9, 7), view(2, 2, 9, 8)]).is_some());
        assert!(disagreement(&[view(1, 2, 9, 7), view(2, 1, 9, 7)]).is_some());
        assert!(disagreement(&[view(1, 0, 9, 7), view(2, 0, 9, 7)]).is_some());
        assert!(disagreement(&[view(1, 4, 9, 7), view(2, 4, 9, 7)]).is_some());
    }
}
