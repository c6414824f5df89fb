//! The leader's lease deadline table: pure bookkeeping of when each lease expires, with no IO,
//! clock or task. Every operation takes `now` from its caller.
//!
//! The replicated state (which leases exist, their TTLs, their keys) lives in the MVCC store;
//! this table only adds what is *not* replicated: a deadline per lease, kept by the leader.
//! Callers pass the replicated TTL of a lease (`granted`) with each lookup, so a lease that was
//! revoked (or revoked and granted again under the same id) is noticed even between two
//! [`DeadlineTable::sync`]s.

use crate::ids::LeaseId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// The answer to a keep-alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The deadline moved to now + TTL; the TTL (seconds) is returned.
    Renewed { ttl: i64 },
    /// No such lease.
    NotFound,
    /// The deadline has passed: the lease is being (or about to be) revoked and may not come
    /// back to life, or two members could disagree about whether its keys exist.
    Expired,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    ttl: i64,
    /// `None` when now + TTL is beyond what the clock can represent: the lease never expires.
    deadline: Option<Instant>,
    /// Handed out by [`DeadlineTable::expired`] and not yet settled: not handed out again, and
    /// not renewable.
    revoking: bool,
}

/// Deadlines of the leases, ordered for cheap expiry scans.
#[derive(Clone, Debug, Default)]
pub struct DeadlineTable {
    entries: BTreeMap<LeaseId, Entry>,
    /// `(deadline, id)` of every entry with a finite deadline that is not being revoked.
    /// Invariant: exactly those entries, with their current deadline.
    queue: BTreeSet<(Instant, LeaseId)>,
}

/// `now + ttl` seconds, or `None` if the clock cannot represent it. A TTL below 1 s counts as
/// 0: it cannot happen for a granted lease (the minimum TTL is raised before proposing).
fn deadline_after(now: Instant, extra: Duration, ttl: i64) -> Option<Instant> {
    let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
    now.checked_add(extra)?.checked_add(ttl)
}

impl DeadlineTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, id: LeaseId) -> bool {
        self.entries.contains_key(&id)
    }

    fn set(&mut self, id: LeaseId, entry: Entry) {
        self.unqueue(id);
        if let (Some(deadline), false) = (entry.deadline, entry.revoking) {
            self.queue.insert((deadline, id));
        }
        self.entries.insert(id, entry);
    }

    fn unqueue(&mut self, id: LeaseId) {
        if let Some(Entry { deadline: Some(deadline), revoking: false, .. }) = self.entries.get(&id) {
            self.queue.remove(&(*deadline, id));
        }
    }

    /// Starts (or restarts) the clock of a lease: it expires `ttl` seconds from `now`.
    pub fn grant(&mut self, id: LeaseId, ttl: i64, now: Instant) {
        self.set(id, Entry { ttl, deadline: deadline_after(now, Duration::ZERO, ttl), revoking: false });
    }

    /// Makes sure a lease the replicated state has with `ttl` is tracked: its clock starts at
    /// `now` if it is new to the table, and keeps running otherwise.
    pub fn track(&mut self, id: LeaseId, ttl: i64, now: Instant) {
        self.reconcile(id, Some(ttl), now);
    }

    pub fn remove(&mut self, id: LeaseId) {
        self.unqueue(id);
        self.entries.remove(&id);
    }

    /// Brings the entry of `id` in line with the replicated state, where the lease has TTL
    /// `granted` (`None`: it does not exist). Returns whether the lease exists.
    ///
    /// Only a changed TTL reveals a re-grant: a lease revoked and granted again under the same
    /// id *and* TTL between two looks keeps the old deadline. That needs an explicit id reused
    /// within one lessor tick, through a member other than the leader (the leader's own revokes
    /// drop the entry at once).
    fn reconcile(&mut self, id: LeaseId, granted: Option<i64>, now: Instant) -> bool {
        match (granted, self.entries.get(&id)) {
            (None, _) => {
                self.remove(id);
                false
            }
            (Some(ttl), Some(entry)) if entry.ttl == ttl => true,
            // New since the last sync, or revoked and granted again with another TTL.
            (Some(ttl), _) => {
                self.grant(id, ttl, now);
                true
            }
        }
    }

    /// A keep-alive: moves the deadline of a live lease to `now` + its TTL.
    pub fn renew(&mut self, id: LeaseId, granted: Option<i64>, now: Instant) -> Renewal {
        if !self.reconcile(id, granted, now) {
            return Renewal::NotFound;
        }
        let entry = self.entries[&id];
        if entry.revoking || entry.deadline.is_some_and(|d| d <= now) {
            return Renewal::Expired;
        }
        self.grant(id, entry.ttl, now);
        Renewal::Renewed { ttl: entry.ttl }
    }

    /// Time left before the lease expires (zero once expired), or `None` if it does not exist.
    pub fn remaining(&mut self, id: LeaseId, granted: Option<i64>, now: Instant) -> Option<Duration> {
        if !self.reconcile(id, granted, now) {
            return None;
        }
        let entry = self.entries[&id];
        Some(match (entry.revoking, entry.deadline) {
            (true, _) => Duration::ZERO,
            (false, Some(deadline)) => deadline.saturating_duration_since(now),
            (false, None) => Duration::from_secs(u64::try_from(entry.ttl).unwrap_or(0)),
        })
    }

    /// Up to `limit` leases whose deadline is at or before `now`, earliest first. They are
    /// marked as being revoked, so they are not handed out again until the caller settles each
    /// with [`remove`](Self::remove) (revoked) or [`revoke_failed`](Self::revoke_failed).
    pub fn expired(&mut self, now: Instant, limit: usize) -> Vec<LeaseId> {
        let due: Vec<(Instant, LeaseId)> =
            self.queue.iter().take_while(|(d, _)| *d <= now).take(limit).copied().collect();
        for (deadline, id) in &due {
            self.queue.remove(&(*deadline, *id));
            if let Some(entry) = self.entries.get_mut(id) {
                entry.revoking = true;
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// A revoke handed out by [`expired`](Self::expired) did not commit (leadership lost, or
    /// it timed out): the lease is due again, so a later scan retries it.
    pub fn revoke_failed(&mut self, id: LeaseId) {
        if let Some(entry) = self.entries.get(&id).copied() {
            if entry.revoking {
                self.set(id, Entry { revoking: false, ..entry });
            }
        }
    }

    /// Makes the table match the replicated leases (sorted by id, as a `BTreeMap` yields them):
    /// leases new to the table start their clock at `now`, vanished ones are dropped, and a
    /// lease whose TTL changed (revoked and granted again) starts over.
    pub fn sync(&mut self, leases: impl IntoIterator<Item = (LeaseId, i64)>, now: Instant) {
        let mut stale: BTreeSet<LeaseId> = self.entries.keys().copied().collect();
        for (id, ttl) in leases {
            stale.remove(&id);
            self.reconcile(id, Some(ttl), now);
        }
        for id in stale {
            self.remove(id);
        }
    }

    /// This member just became the leader: it cannot know when the previous leader last saw a
    /// keep-alive, so every lease gets its full TTL again, counted from `now` plus `extend`
    /// (etcd's "extend on promotion", with the election timeout as `extend`). The table is
    /// rebuilt from the replicated leases; revokes in flight from an earlier term are forgotten.
    pub fn promote(&mut self, leases: impl IntoIterator<Item = (LeaseId, i64)>, now: Instant, extend: Duration) {
        self.entries.clear();
        self.queue.clear();
        for (id, ttl) in leases {
            self.set(id, Entry { ttl, deadline: deadline_after(now, extend, ttl), revoking: false });
        }
    }

    /// This member stopped leading: deadlines live only on the leader.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.queue.clear();
    }

    #[cfg(test)]
    fn check_invariant(&self) {
        let expected: BTreeSet<(Instant, LeaseId)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.revoking)
            .filter_map(|(id, e)| e.deadline.map(|d| (d, *id)))
            .collect();
        assert_eq!(self.queue, expected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    fn ids(v: &[i64]) -> Vec<LeaseId> {
        v.iter().map(|i| LeaseId(*i)).collect()
    }

    #[test]
    fn a_lease_expires_ttl_after_its_grant_and_renewal_pushes_it_back() {
        let t0 = Instant::now();
        let mut t = DeadlineTable::new();
        t.grant(LeaseId(1), 5, t0);
        assert!(t.expired(t0 + 4 * S, 10).is_empty());
        assert_eq!(t.renew(LeaseId(1), Some(5), t0 + 4 * S), Renewal::Renewed { ttl: 5 });
        assert!(t.expired(t0 + 8 * S, 10).is_empty());
        assert_eq!(t.remaining(LeaseId(1), Some(5), t0 + 8 * S), Some(S));
        assert_eq!(t.expired(t0 + 9 * S, 10), ids(&[1]));
        t.check_invariant();
    }

    #[test]
    fn an_expired_lease_cannot_be_renewed_and_is_handed_out_once() {
        let t0 = Instant::now();
        let mut t = DeadlineTable::new();
        t.grant(LeaseId(1), 2, t0);
        // Past its deadline but not yet scanned: still not renewable.
        assert_eq!(t.renew(LeaseId(1), Some(2), t0 + 3 * S), Renewal::Expired);
        assert_eq!(t.expired(t0 + 3 * S, 10), ids(&[1]));
        assert_eq!(t.expired(t0 + 4 * S, 10), Vec::<LeaseId>::new(), "no second concurrent revoke");
        assert_eq!(t.renew(LeaseId(1), Some(2), t0 + 4 * S), Renewal::Expired);
        assert_eq!(t.remaining(LeaseId(1), Some(2), t0 + 4 * S), Some(Duration::ZERO));
        // The revoke did not commit: due again.
        t.revoke_failed(LeaseId(1));
        assert_eq!(t.expired(t0 + 5 * S, 10), ids(&[1]));
        // It committed.
        t.remove(LeaseId(1));
        assert_eq!(t.renew(LeaseId(1), None, t0 + 5 * S), Renewal::NotFound);
        t.check_invariant();
    }

    #[test]
    fn expired_leases_come_out_earliest_first_in_bounded_batches() {
        let t0 = Instant::now();
        let mut t = DeadlineTable::new();
        for (id, ttl) in [(1, 5), (2, 3), (3, 4), (4, 100)] {
            t.grant(LeaseId(id), ttl, t0);
        }
        assert_eq!(t.expired(t0 + 10 * S, 2), ids(&[2, 3]));
        assert_eq!(t.expired(t0 + 10 * S, 2), ids(&[1]));
        t.check_invariant();
    }

    #[test]
    fn lookups_follow_the_replicated_state() {
        let t0 = Instant::now();
        let mut t = DeadlineTable::new();
        // Granted after the last sync: its clock starts at the first lookup.
        assert_eq!(t.renew(LeaseId(7), Some(10), t0), Renewal::Renewed { ttl: 10 });
        assert_eq!(t.remaining(LeaseId(7), Some(10), t0 + S), Some(9 * S));
        // Revoked and granted again with another TTL: a new lease.
        assert_eq!(t.remaining(LeaseId(7), Some(30), t0 + 2 * S), Some(30 * S));
        // Revoked.
        assert_eq!(t.remaining(LeaseId(7), None, t0 + 3 * S), None);
        assert!(!t.contains(LeaseId(7)));
        assert_eq!(t.renew(LeaseId(8), None, t0), Renewal::NotFound);
        t.check_invariant();
    }

    #[test]
    fn sync_adds_new_leases_drops_vanished_ones_and_keeps_deadlines() {
        let t0 = Instant::now();
        let mut t = DeadlineTable::new();
        t.grant(LeaseId(1), 5, t0);
        t.grant(LeaseId(2), 5, t0);
        t.sync([(LeaseId(2), 5), (LeaseId(3), 5)], t0 + 2 * S);
        assert!(!t.contains(LeaseId(1)));
        assert_eq!(t.remaining(LeaseId(2), Some(5), t0 + 2 * S), Some(3 * S), "deadline kept");
        assert_eq!(t.remaining(LeaseId(3), Some(5), t0 + 2 * S), Some(5 * S), "clock starts at sync");
        t.check_invariant();
    }

    #[test]
    fn promotion_gives_every_lease_its_full_ttl_plus_the_extension() {
        let t0 = Instant::now();
        let mut t = DeadlineTable::new();
        t.grant(LeaseId(1), 5, t0);
        t.grant(LeaseId(2), 5, t0);
        assert_eq!(t.expired(t0 + 6 * S, 10), ids(&[1, 2]));
        let later = t0 + 60 * S;
        t.promote([(LeaseId(1), 5), (LeaseId(3), 10)], later, 2 * S);
        assert!(!t.contains(LeaseId(2)));
        assert_eq!(t.remaining(LeaseId(1), Some(5), later), Some(7 * S));
        assert_eq!(t.remaining(LeaseId(3), Some(10), later), Some(12 * S));
        assert!(t.expired(later + 6 * S, 10).is_empty());
        assert_eq!(t.renew(LeaseId(1), Some(5), later + 6 * S), Renewal::Renewed { ttl: 5 }, "no longer revoking");
        assert_eq!(t.expired(later + 12 * S, 10), ids(&[1, 3]), "earliest deadline first");
        t.check_invariant();
        t.clear();
        assert!(t.is_empty());
        t.check_invariant();
    }

    #[test]
    fn a_ttl_beyond_the_clock_never_expires() {
        let t0 = Instant::now();
        let mut t = DeadlineTable::new();
        t.grant(LeaseId(1), i64::MAX, t0);
        assert!(t.expired(t0 + 1_000_000 * S, 10).is_empty());
        assert!(t.remaining(LeaseId(1), Some(i64::MAX), t0).is_some());
        t.check_invariant();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Grant(i64, i64),
        Renew(i64, bool),
        Remaining(i64, bool),
        Expired(usize),
        Failed(i64),
        Remove(i64),
        Sync(Vec<(i64, i64)>),
        Promote(Vec<(i64, i64)>),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let id = 1i64..6;
        let ttl = 1i64..5;
        prop_oneof![
            (id.clone(), ttl.clone()).prop_map(|(i, t)| Op::Grant(i, t)),
            (id.clone(), any::<bool>()).prop_map(|(i, e)| Op::Renew(i, e)),
            (id.clone(), any::<bool>()).prop_map(|(i, e)| Op::Remaining(i, e)),
            (0usize..4).prop_map(Op::Expired),
            id.clone().prop_map(Op::Failed),
            id.clone().prop_map(Op::Remove),
            proptest::collection::btree_map(id.clone(), ttl.clone(), 0..5)
                .prop_map(|m| Op::Sync(m.into_iter().collect())),
            proptest::collection::btree_map(id, ttl, 0..5).prop_map(|m| Op::Promote(m.into_iter().collect())),
            (0u64..3000).prop_map(Op::Advance),
        ]
    }

    /// The replicated TTL a lookup passes: the table's own when the lease exists in both (so
    /// the lookup does not restart it), 2 for a lease new to the table, none when revoked.
    fn granted_ttl(t: &DeadlineTable, i: i64, exists: bool, revoking: &mut BTreeSet<LeaseId>) -> Option<i64> {
        if !exists {
            revoking.remove(&LeaseId(i));
            return None;
        }
        Some(t.entries.get(&LeaseId(i)).map_or(2, |e| e.ttl))
    }

    proptest! {
        /// Whatever happens, the expiry queue matches the entries, a lease is never handed out
        /// for revoking twice without being settled, and nothing handed out was still live.
        #[test]
        fn queue_stays_consistent(ops in proptest::collection::vec(op(), 0..60)) {
            let mut now = Instant::now();
            let mut t = DeadlineTable::new();
            let mut revoking: BTreeSet<LeaseId> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Grant(i, ttl) => { t.grant(LeaseId(i), ttl, now); revoking.remove(&LeaseId(i)); }
                    Op::Renew(i, exists) => {
                        let granted = granted_ttl(&t, i, exists, &mut revoking);
                        let r = t.renew(LeaseId(i), granted, now);
                        if matches!(r, Renewal::Renewed { .. }) { prop_assert!(!revoking.contains(&LeaseId(i))); }
                        if revoking.contains(&LeaseId(i)) { prop_assert_eq!(r, Renewal::Expired); }
                    }
                    Op::Remaining(i, exists) => {
                        let granted = granted_ttl(&t, i, exists, &mut revoking);
                        let left = t.remaining(LeaseId(i), granted, now);
                        if revoking.contains(&LeaseId(i)) { prop_assert_eq!(left, Some(Duration::ZERO)); }
                    }
                    Op::Expired(limit) => {
                        let out = t.expired(now, limit);
                        prop_assert!(out.len() <= limit);
                        for id in out {
                            prop_assert!(revoking.insert(id), "{id:?} handed out twice");
                            prop_assert_eq!(t.remaining(id, Some(t.entries[&id].ttl), now), Some(Duration::ZERO));
                        }
                    }
                    Op::Failed(i) => { t.revoke_failed(LeaseId(i)); revoking.remove(&LeaseId(i)); }
                    Op::Remove(i) => { t.remove(LeaseId(i)); revoking.remove(&LeaseId(i)); }
                    Op::Sync(leases) => {
                        let keep: BTreeSet<LeaseId> = leases.iter().map(|(i, _)| LeaseId(*i)).collect();
                        // A lease whose TTL changed starts over, so it is no longer revoking.
                        for (i, ttl) in &leases {
                            if t.entries.get(&LeaseId(*i)).is_some_and(|e| e.ttl != *ttl) { revoking.remove(&LeaseId(*i)); }
                        }
                        t.sync(leases.into_iter().map(|(i, ttl)| (LeaseId(i), ttl)), now);
                        revoking.retain(|id| keep.contains(id));
                    }
                    Op::Promote(leases) => {
                        t.promote(leases.into_iter().map(|(i, ttl)| (LeaseId(i), ttl)), now, Duration::from_millis(500));
                        revoking.clear();
                    }
                    Op::Advance(ms) => now += Duration::from_millis(ms),
                }
                t.check_invariant();
            }
        }
    }
}
