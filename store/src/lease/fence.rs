//! Fencing of lease expiry: a revoke that a leader's lessor decided takes effect only from a log
//! entry that the same leader appended.
//!
//! Deadlines are not replicated: each leader keeps its own ([`super::table`]) and renews them on
//! keep-alive, so an expiry is the judgement of one leader and holds only during its tenure. A
//! deposed leader's expiry can still reach the log: when the old leader steps down before
//! appending it, the proposal is retried at the new leader (`Replicator::submit`), and would
//! then delete the keys of a lease that the new leader has been keeping alive since its
//! promotion (etcd had the same bug: etcd-io/etcd#12528, #15247). So an expiry carries the [`Leadership`] that decided it, and the state machine
//! admits it only from an entry stamped with that same leadership (openraft stamps every entry
//! with the committed leader id of the leader that appended it).
//!
//! Why that is enough: an entry the deciding leader appended, even if it commits under the next
//! leader, precedes every entry of a later leadership in the log, and a new leader's lessor
//! serves keep-alives only once it has applied an entry of its own leadership
//! (`lessor::leading_term`). So no other lessor renewed the lease between the decision and the
//! revoke. A refused expiry changes nothing and answers `LeaderChanged`; if the lease really is
//! due, the current leader's lessor expires it by its own deadlines. A client's `LeaseRevoke` is
//! not fenced: the client decided it, not a leader.

use crate::error::{StoreError, StoreResult};
use crate::ids::Leadership;
use crate::mvcc::{Applied, Command, Mvcc};
use openraft::CommittedLeaderId;

/// Whether an expiry decided during `decided_by` may take effect from an entry appended by the
/// leader `appended_by`: only if that is the same leadership. (With openraft's default leader
/// ids a leadership is a term and a member; with `single-term-leader` the term alone, and
/// `CommittedLeaderId::new` drops the member accordingly.)
pub fn admits(decided_by: Leadership, appended_by: &CommittedLeaderId<u64>) -> bool {
    CommittedLeaderId::new(decided_by.term, decided_by.leader.0) == *appended_by
}

/// Applies one command of an entry appended by `appended_by`: as [`Mvcc::apply`], except that an
/// expiry is a revoke if [`admits`] says so and otherwise fails with `LeaderChanged`, changing
/// nothing.
pub fn apply(mvcc: &mut Mvcc, command: &Command, appended_by: &CommittedLeaderId<u64>) -> StoreResult<Applied> {
    match command {
        Command::LeaseExpire { id, decided_by } if admits(*decided_by, appended_by) => {
            mvcc.apply(&Command::LeaseRevoke { id: *id })
        }
        Command::LeaseExpire { .. } => Err(StoreError::LeaderChanged),
        other => mvcc.apply(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{LeaseId, MemberId, Revision};
    use crate::mvcc::{KeyRange, Output, PutRequest, RangeRequest};

    const LEASE: LeaseId = LeaseId(7);

    fn leadership(term: u64, leader: u64) -> Leadership {
        Leadership { term, leader: MemberId(leader) }
    }

    fn entry_of(term: u64, leader: u64) -> CommittedLeaderId<u64> {
        CommittedLeaderId::new(term, leader)
    }

    /// A store with lease 7 and two keys attached to it.
    fn leased() -> Mvcc {
        let mut m = Mvcc::default();
        m.apply(&Command::LeaseGrant { id: LEASE, ttl: 3 }).unwrap();
        for key in ["a", "b"] {
            m.apply(&Command::Put(PutRequest { lease: Some(LEASE), ..PutRequest::new(key, "v") })).unwrap();
        }
        m.take_journal();
        m
    }

    fn keys(m: &Mvcc) -> usize {
        m.range(&RangeRequest::new(KeyRange::prefix(b""))).unwrap().kvs.len()
    }

    #[test]
    fn an_expiry_holds_in_an_entry_of_the_leadership_that_decided_it() {
        let mut m = leased();
        let expire = Command::LeaseExpire { id: LEASE, decided_by: leadership(4, 2) };
        let applied = apply(&mut m, &expire, &entry_of(4, 2)).unwrap();
        assert_eq!(applied, Applied { revision: Revision(4), output: Output::LeaseRevoke });
        assert!(m.leases().is_empty());
        assert_eq!(keys(&m), 0, "the lease's keys are deleted with it");
        // Decided and appended by the same leader, committed under the next one: still its entry.
        assert_eq!(apply(&mut m, &expire, &entry_of(4, 2)), Err(StoreError::LeaseNotFound));
    }

    #[test]
    fn an_expiry_appended_by_a_later_leader_changes_nothing() {
        let mut m = leased();
        let before = m.clone();
        // Leader (4, m2) decided; its proposal was retried at the leader of term 5 (or at m2
        // itself, leading again in term 6): that leader may have renewed the lease since.
        let expire = Command::LeaseExpire { id: LEASE, decided_by: leadership(4, 2) };
        for appended_by in [entry_of(5, 3), entry_of(6, 2)] {
            assert_eq!(apply(&mut m, &expire, &appended_by), Err(StoreError::LeaderChanged));
        }
        assert!(m.take_journal().is_empty());
        assert_eq!(m, before, "no revision taken, lease and keys kept");
        assert_eq!(keys(&m), 2);
    }

    #[test]
    fn an_unadmitted_expiry_never_reaches_the_key_space() {
        let mut m = leased();
        let expire = Command::LeaseExpire { id: LEASE, decided_by: leadership(4, 2) };
        assert_eq!(m.apply(&expire), Err(StoreError::LeaderChanged));
        assert_eq!(keys(&m), 2);
    }

    #[test]
    fn a_clients_revoke_is_not_fenced() {
        let mut m = leased();
        let applied = apply(&mut m, &Command::LeaseRevoke { id: LEASE }, &entry_of(9, 1)).unwrap();
        assert_eq!(applied.output, Output::LeaseRevoke);
        assert_eq!(keys(&m), 0);
    }

    #[test]
    fn admission_compares_the_whole_leadership() {
        assert!(admits(leadership(3, 1), &entry_of(3, 1)));
        assert!(!admits(leadership(3, 1), &entry_of(4, 1)));
        assert!(!admits(leadership(4, 1), &entry_of(3, 1)));
        // Another member leading the same term (possible with openraft's default leader ids)
        // is another leadership, unless leader ids are terms alone.
        let distinct_members = entry_of(3, 1) != entry_of(3, 2);
        assert_eq!(admits(leadership(3, 1), &entry_of(3, 2)), !distinct_members);
    }
}
