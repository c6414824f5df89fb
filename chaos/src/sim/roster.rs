//! The harness's view of the cluster's membership: which simulated members (slots) are in the
//! newest committed membership any member has applied, and which left it.
//!
//! Membership changes are requested through the Cluster API by a simulated client, and their
//! outcome may be unknown to it (a timed-out `MemberRemove` may still commit), so the harness
//! does not track what it asked for but what the members applied. An applied membership is
//! committed, and committed memberships are ordered by their log index, so the newest one seen
//! on any member is the cluster's current membership (or one a member is about to learn). Pure
//! bookkeeping: the harness feeds it every member's applied membership when it samples them.

use std::collections::BTreeSet;

/// What one newer membership changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RosterChange {
    /// Slots that joined: a fresh member's host starts then.
    pub joined: Vec<usize>,
    /// Slots that left: they are never restarted again.
    pub left: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct Roster {
    /// The member id of every slot, by slot index.
    ids: Vec<u64>,
    /// The log index of the newest membership seen (`None`: the initial one, before any member
    /// applied it), and its members.
    index: Option<u64>,
    current: BTreeSet<usize>,
    left: BTreeSet<usize>,
}

impl Roster {
    /// The initial membership: the first `initial` slots.
    pub fn new(ids: Vec<u64>, initial: usize) -> Roster {
        Roster { ids, index: None, current: (0..initial).collect(), left: BTreeSet::new() }
    }

    /// Feeds a membership applied at log index `index` with nodes `ids` (voters and learners,
    /// both halves of a joint one). Returns what changed if it is newer than the newest seen.
    pub fn observe(&mut self, index: u64, ids: impl IntoIterator<Item = u64>) -> Option<RosterChange> {
        if self.index.is_some_and(|seen| seen >= index) {
            return None;
        }
        self.index = Some(index);
        let members: BTreeSet<usize> =
            ids.into_iter().filter_map(|id| self.ids.iter().position(|known| *known == id)).collect();
        let change = RosterChange {
            joined: members.difference(&self.current).copied().collect(),
            left: self.current.difference(&members).copied().collect(),
        };
        self.left.extend(change.left.iter().copied());
        self.current = members;
        (change != RosterChange::default()).then_some(change)
    }

    /// The current members' slots, in order.
    pub fn current(&self) -> Vec<usize> {
        self.current.iter().copied().collect()
    }

    /// Whether `slot` was a member and left (a slot may not come back: a re-added member is a
    /// fresh slot with a new member id).
    pub fn has_left(&self, slot: usize) -> bool {
        self.left.contains(&slot)
    }

    /// The member id of `slot`.
    pub fn id(&self, slot: usize) -> u64 {
        self.ids[slot]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_membership_wins_and_changes_are_reported_once() {
        let mut r = Roster::new(vec![10, 20, 30, 40], 3);
        assert_eq!(r.current(), [0, 1, 2]);
        // Every member applies the initial membership: nothing changes.
        assert_eq!(r.observe(0, [10, 20, 30]), None);
        // Joint config while removing 20 and adding 40: 40 joins, nobody left yet.
        assert_eq!(r.observe(7, [10, 20, 30, 40]), Some(RosterChange { joined: vec![3], left: vec![] }));
        assert_eq!(r.observe(8, [10, 30, 40]), Some(RosterChange { joined: vec![], left: vec![1] }));
        // A member lagging behind reports an older membership: ignored.
        assert_eq!(r.observe(7, [10, 20, 30, 40]), None);
        assert_eq!(r.observe(0, [10, 20, 30]), None);
        assert_eq!(r.current(), [0, 2, 3]);
        assert!(r.has_left(1) && !r.has_left(3));
        assert_eq!(r.id(3), 40);
        // Unknown ids (never a simulated member) are not members.
        assert_eq!(r.observe(9, [10, 30, 40, 99]), None);
    }
}
