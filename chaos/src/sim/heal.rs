//! The heal phase's client: once every fault is removed, the cluster must converge within a
//! bound — every member the cluster lists answering, all naming the same leader and term,
//! exactly one of them that leader, all at the same revision with the same `HashKV` — and then
//! serve a fresh write that every member reads back (liveness).
//!
//! Which members: those of the final membership, as the cluster itself lists them (a
//! linearizable `MemberList`), once no membership change is in progress. A member it lists must
//! have started and answer as the member it is listed as; a member that was removed is not
//! asked.

use crate::history::Tick;
use crate::sim::client::{with_deadline, Cluster};
use crate::sim::record::Shared;
use berth_proto::etcdserverpb as pb;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Membership changes queued or in progress (the final membership is known once none is).
    pub membership_pending: Arc<AtomicUsize>,
}

impl HealClient {
    pub async fn run(mut self, shared: Arc<Shared>) {
        while shared.now() < self.heal_at {
            tokio::time::sleep(POLL).await;
        }
        let mut detail = String::from("no member answered yet");
        let mut converged = None;
        while converged.is_none() && shared.now() < self.deadline {
            match self.converged().await {
                Ok(members) => converged = Some((shared.now(), members)),
                Err(why) => {
                    detail = why;
                    tokio::time::sleep(POLL).await;
                }
            }
        }
        let mut live_at = None;
        if let Some((_, members)) = &converged {
            match self.liveness(members, &shared).await {
                Ok(()) => {
                    live_at = Some(shared.now());
                    detail.clear();
                }
                Err(why) => detail = why,
            }
        }
        let converged_at = converged.map(|(at, _)| at);
        shared.lock().heal = crate::sim::record::HealOutcome { converged_at, live_at, detail };
        shared.set_healed();
    }

    /// The final members (host indexes) if they have converged, or why not.
    async fn converged(&mut self) -> Result<Vec<usize>, String> {
        let listed = self.members().await?;
        let views = self.views(&listed).await?;
        for ((id, host), view) in listed.iter().zip(&views) {
            if view.member_id != *id {
                let host = self.cluster.host(*host);
                return Err(format!("{host} answers as member {:x}, the cluster lists it as {id:x}", view.member_id));
            }
        }
        match disagreement(&views) {
            None => Ok(listed.into_iter().map(|(_, host)| host).collect()),
            Some(why) => Err(why),
        }
    }

    /// The members the cluster lists, as (member id, host index), asked through any current
    /// member.
    async fn members(&mut self) -> Result<Vec<(u64, usize)>, String> {
        if self.membership_pending.load(Ordering::Relaxed) > 0 {
            return Err("a membership change is still in progress".to_string());
        }
        let mut last = String::from("no current member");
        for m in self.cluster.members() {
            let list = pb::MemberListRequest { linearizable: true };
            match with_deadline(DEADLINE, self.cluster.cluster(m).member_list(list)).await {
                Ok(resp) => return listed(&resp.members, |host| self.cluster.index_of(host)),
                Err(e) => {
                    self.cluster.reset(m);
                    last = format!("member list via {}: {e:?}", self.cluster.host(m));
                }
            }
        }
        Err(last)
    }

    async fn views(&mut self, members: &[(u64, usize)]) -> Result<Vec<MemberView>, String> {
        let mut views = Vec::new();
        for &(_, m) in members {
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

    /// A fresh write through any of `members` that takes it, then read back through each.
    async fn liveness(&mut self, members: &[usize], shared: &Shared) -> Result<(), String> {
        let key = b"z/heal".to_vec();
        let value = format!("healed@{}", shared.now()).into_bytes();
        let mut last = String::new();
        let mut written = false;
        'write: while shared.now() < self.deadline {
            for &m in members {
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
        for &m in members {
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

/// The members of a `MemberList` answer as (member id, host index), the host found by
/// `index_of` from the member's client URL (`http://HOST:PORT`); an error if one has not
/// started (no client URL published yet) or is no known host.
fn listed(members: &[pb::Member], index_of: impl Fn(&str) -> Option<usize>) -> Result<Vec<(u64, usize)>, String> {
    let mut out = Vec::new();
    for m in members {
        let Some(url) = m.client_ur_ls.first() else {
            return Err(format!("member {:x} has not started (no client URL published)", m.id));
        };
        let host = url.strip_prefix("http://").and_then(|rest| rest.split(':').next()).unwrap_or_default();
        let index = index_of(host).ok_or_else(|| format!("member {:x} serves at {url}, no simulated host", m.id))?;
        out.push((m.id, index));
    }
    if out.is_empty() {
        return Err("the cluster lists no member".to_string());
    }
    // In host order, as the members are asked.
    out.sort_by_key(|(_, index)| *index);
    Ok(out)
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

    #[test]
    fn the_listed_members_must_have_started_on_known_hosts() {
        let member = |id: u64, url: &str| pb::Member {
            id,
            client_ur_ls: if url.is_empty() { vec![] } else { vec![url.to_string()] },
            ..Default::default()
        };
        let hosts = ["m1", "m2", "m4"];
        let index_of = |h: &str| hosts.iter().position(|x| *x == h);
        let members = [member(40, "http://m4:2379"), member(10, "http://m1:2379")];
        assert_eq!(listed(&members, index_of), Ok(vec![(10, 0), (40, 2)]));
        assert!(listed(&[member(10, "http://m1:2379"), member(50, "")], index_of).is_err(), "unstarted");
        assert!(listed(&[member(60, "http://m9:2379")], index_of).is_err(), "unknown host");
        assert!(listed(&[], index_of).is_err());
    }
}
