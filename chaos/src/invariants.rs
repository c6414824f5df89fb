//! Invariants checked continually while a simulation runs, from periodic observations.
//!
//! The harness samples every member's Raft metrics (term, who it believes leads that term, its
//! applied revision, and a boot counter that increases when it restarts) and reports every
//! key-value it reads (any read: linearizable, serializable, historical, watch events). It feeds
//! them to an [`InvariantChecker`] as they happen, so a run can stop at the first violation.
//!
//! - **At most one leader per term** (Raft's Election Safety): every claim "member X leads term
//!   T" — a leader's own, or a follower's belief — names the same X for a given T. Term and
//!   leader must come from one metrics snapshot.
//! - **Terms never go backwards on a member**, not even across a restart: the vote (and its
//!   term) is durable before it is acted on.
//! - **The applied revision never goes backwards on a member** while it runs. Across a restart
//!   it may (the applied state is persisted without waiting for fsync and is re-applied from the
//!   durable log after a crash) unless [`InvariantOptions::strict_applied_across_restarts`].
//! - **Committed data never changes**: a `(key, mod_revision)` once observed always comes with
//!   the same value, create revision, version and lease, from every member, forever.

use crate::history::{Key, KeyValue, Revision, Tick, Value};
use std::collections::BTreeMap;
use std::fmt;

/// A member's identity (Raft node id).
pub type MemberId = u64;

/// One sample of one member's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberObservation {
    pub at: Tick,
    pub member: MemberId,
    /// Increases each time the member restarts.
    pub boot: u64,
    pub term: u64,
    /// Who the member believes leads `term` (itself if it is the leader).
    pub leader: Option<MemberId>,
    pub applied_revision: Revision,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InvariantOptions {
    /// Treat an applied revision that went back after a restart as a violation too.
    pub strict_applied_across_restarts: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    OneLeaderPerTerm,
    TermMonotonic,
    AppliedMonotonic,
    CommittedDataImmutable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvariantViolation {
    pub invariant: Invariant,
    pub at: Tick,
    pub detail: String,
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at tick {}: {}", self.invariant, self.at, self.detail)
    }
}

/// What a `(key, mod_revision)` was first seen as.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Committed {
    value: Value,
    create_revision: Revision,
    version: i64,
    lease: i64,
    first_seen: Tick,
}

/// Accumulates observations and the violations they reveal.
#[derive(Clone, Debug, Default)]
pub struct InvariantChecker {
    options: InvariantOptions,
    /// term → (leader, first claim at, by member).
    leaders: BTreeMap<u64, (MemberId, Tick, MemberId)>,
    /// member → last (boot, term, applied revision, at).
    members: BTreeMap<MemberId, (u64, u64, Revision, Tick)>,
    committed: BTreeMap<(Key, Revision), Committed>,
    observations: u64,
    violations: Vec<InvariantViolation>,
}

/// At most this many violations are kept.
const MAX_INVARIANT_VIOLATIONS: usize = 1000;

impl InvariantChecker {
    pub fn new(options: InvariantOptions) -> Self {
        Self { options, ..Default::default() }
    }

    /// Every violation found so far.
    pub fn violations(&self) -> &[InvariantViolation] {
        &self.violations
    }

    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Observations fed so far.
    pub fn observations(&self) -> u64 {
        self.observations
    }

    fn push(&mut self, invariant: Invariant, at: Tick, detail: String) {
        if self.violations.len() < MAX_INVARIANT_VIOLATIONS {
            self.violations.push(InvariantViolation { invariant, at, detail });
        }
    }

    /// Feeds one member sample; returns the violations it revealed.
    pub fn observe_member(&mut self, o: &MemberObservation) -> &[InvariantViolation] {
        let before = self.violations.len();
        self.observations += 1;
        if let Some(leader) = o.leader {
            match self.leaders.get(&o.term) {
                None => {
                    self.leaders.insert(o.term, (leader, o.at, o.member));
                }
                Some(&(first, at, by)) if first != leader => self.push(
                    Invariant::OneLeaderPerTerm,
                    o.at,
                    format!(
                        "term {}: member {} says {leader} leads, member {by} said {first} did (at tick {at})",
                        o.term, o.member
                    ),
                ),
                Some(_) => {}
            }
        }
        if let Some(&(boot, term, applied, at)) = self.members.get(&o.member) {
            if o.term < term {
                self.push(
                    Invariant::TermMonotonic,
                    o.at,
                    format!("member {}: term {} after {term} (at tick {at})", o.member, o.term),
                );
            }
            let same_run = o.boot == boot;
            if o.applied_revision < applied && (same_run || self.options.strict_applied_across_restarts) {
                self.push(
                    Invariant::AppliedMonotonic,
                    o.at,
                    format!(
                        "member {}: applied revision {} after {applied} (at tick {at}{})",
                        o.member,
                        o.applied_revision,
                        if same_run { "" } else { ", before a restart" }
                    ),
                );
            }
        }
        self.members.insert(o.member, (o.boot, o.term, o.applied_revision, o.at));
        &self.violations[before..]
    }

    /// Feeds one key-value read at `at`; returns the violations it revealed.
    pub fn observe_kv(&mut self, at: Tick, kv: &KeyValue) -> &[InvariantViolation] {
        let before = self.violations.len();
        self.observations += 1;
        let seen = Committed {
            value: kv.value.clone(),
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
            first_seen: at,
        };
        match self.committed.get(&(kv.key.clone(), kv.mod_revision)) {
            None => {
                self.committed.insert((kv.key.clone(), kv.mod_revision), seen);
            }
            Some(first) if Committed { first_seen: first.first_seen, ..seen.clone() } != *first => {
                let detail = format!(
                    "{} @{} is now {} (create {}, version {}, lease {}) but was {} (create {}, version {}, lease {}) at tick {}",
                    kv.key,
                    kv.mod_revision,
                    seen.value,
                    seen.create_revision,
                    seen.version,
                    seen.lease,
                    first.value,
                    first.create_revision,
                    first.version,
                    first.lease,
                    first.first_seen
                );
                self.push(Invariant::CommittedDataImmutable, at, detail);
            }
            Some(_) => {}
        }
        &self.violations[before..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(
        at: Tick,
        member: MemberId,
        boot: u64,
        term: u64,
        leader: Option<MemberId>,
        applied: Revision,
    ) -> MemberObservation {
        MemberObservation { at, member, boot, term, leader, applied_revision: applied }
    }
    fn kv(key: &str, value: &str, mod_revision: Revision) -> KeyValue {
        KeyValue { key: key.into(), value: value.into(), create_revision: 2, mod_revision, version: 1, lease: 0 }
    }

    #[test]
    fn a_healthy_cluster_passes() {
        let mut c = InvariantChecker::new(InvariantOptions::default());
        for (at, obs) in [
            (1, m(1, 1, 0, 1, Some(1), 3)),
            (1, m(1, 2, 0, 1, Some(1), 3)),
            (2, m(2, 3, 0, 1, None, 2)),
            (3, m(3, 2, 0, 2, Some(2), 5)),
            (4, m(4, 1, 0, 2, Some(2), 5)),
            // Member 3 restarted and lost un-synced applied state: allowed by default.
            (5, m(5, 3, 1, 2, Some(2), 1)),
            (6, m(6, 3, 1, 2, Some(2), 6)),
        ] {
            assert!(c.observe_member(&obs).is_empty(), "at {at}");
        }
        assert!(c.observe_kv(1, &kv("a", "x", 3)).is_empty());
        assert!(c.observe_kv(2, &kv("a", "x", 3)).is_empty());
        assert!(c.observe_kv(2, &kv("a", "y", 4)).is_empty());
        assert!(c.is_ok());
        assert_eq!(c.observations(), 10);
    }

    #[test]
    fn split_brain_is_rejected() {
        let mut c = InvariantChecker::new(InvariantOptions::default());
        c.observe_member(&m(1, 1, 0, 5, Some(1), 3));
        c.observe_member(&m(1, 3, 0, 5, Some(1), 3));
        let v = c.observe_member(&m(2, 2, 0, 5, Some(2), 3)).to_vec();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].invariant, Invariant::OneLeaderPerTerm);
    }

    #[test]
    fn a_revision_going_backwards_is_rejected() {
        let mut c = InvariantChecker::new(InvariantOptions::default());
        c.observe_member(&m(1, 1, 0, 1, Some(1), 7));
        let v = c.observe_member(&m(2, 1, 0, 1, Some(1), 6)).to_vec();
        assert_eq!(v.iter().map(|v| v.invariant).collect::<Vec<_>>(), vec![Invariant::AppliedMonotonic]);
        // Across a restart only when strict.
        let mut strict = InvariantChecker::new(InvariantOptions { strict_applied_across_restarts: true });
        strict.observe_member(&m(1, 1, 0, 1, Some(1), 7));
        assert_eq!(strict.observe_member(&m(2, 1, 1, 1, None, 6)).len(), 1);
    }

    #[test]
    fn a_term_going_backwards_is_rejected_even_across_restarts() {
        let mut c = InvariantChecker::new(InvariantOptions::default());
        c.observe_member(&m(1, 1, 0, 4, None, 7));
        let v = c.observe_member(&m(2, 1, 1, 3, None, 7)).to_vec();
        assert_eq!(v.iter().map(|v| v.invariant).collect::<Vec<_>>(), vec![Invariant::TermMonotonic]);
    }

    #[test]
    fn changed_committed_data_is_rejected() {
        let mut c = InvariantChecker::new(InvariantOptions::default());
        c.observe_kv(1, &kv("a", "x", 3));
        let v = c.observe_kv(5, &kv("a", "other", 3)).to_vec();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].invariant, Invariant::CommittedDataImmutable);
        assert!(v[0].detail.contains("\"other\""), "{}", v[0]);
        // Metadata counts too.
        let mut changed = kv("a", "x", 3);
        changed.version = 2;
        assert_eq!(c.observe_kv(6, &changed).len(), 1);
        assert_eq!(c.violations().len(), 2);
    }
}
