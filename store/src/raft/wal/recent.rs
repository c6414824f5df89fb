//! The newest entries of the log, kept decoded in memory. Pure: it mirrors the records the log
//! writes and never touches the disk.
//!
//! Every entry is read back soon after it is written: by the state machine to apply it and, on
//! the leader, by each follower's replication stream. Served from here, those reads skip the read
//! call, the checksum and the decode (a leader of three did each three times per entry). A
//! command list is shared, not copied (see [`crate::raft::Proposal`]), so a cached entry costs
//! one reference count per reader.
//!
//! What it holds is always a suffix of the log with no gaps: every entry from [`Recent::first`]
//! to the log's last one. A reader takes entries before that from the disk, so a follower that
//! lags by more than the budget still gets everything, only slower.

use crate::raft::types::Entry;
use crate::raft::wal::record::Record;
use std::collections::VecDeque;

/// Bytes of encoded entries kept: a few seconds of writes at full rate on a small machine, which
/// covers applying and replicating to healthy followers, at a small fixed cost in memory.
pub const RECENT_BYTES: usize = 8 * 1024 * 1024;

pub struct Recent {
    /// Entries in index order with what each costs, starting at index `first`.
    entries: VecDeque<(Entry, usize)>,
    first: u64,
    bytes: usize,
    budget: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new(RECENT_BYTES)
    }
}

impl Recent {
    pub fn new(budget: usize) -> Self {
        Recent { entries: VecDeque::new(), first: 0, bytes: 0, budget }
    }

    /// The lowest index held, if any: from it on, this holds every entry the log does.
    pub fn first(&self) -> Option<u64> {
        (!self.entries.is_empty()).then_some(self.first)
    }

    /// Entries with `start <= index < end` that are held, in order.
    pub fn range(&self, start: u64, end: u64) -> Vec<Entry> {
        let skip = start.saturating_sub(self.first).min(self.entries.len() as u64) as usize;
        let take = end.saturating_sub(self.first.max(start)) as usize;
        self.entries.iter().skip(skip).take(take).map(|(entry, _)| entry.clone()).collect()
    }

    /// Follows one record the log has just written; `cost` is its encoded size.
    pub fn mirror(&mut self, record: &Record<&Entry>, cost: usize) {
        match record {
            Record::Entry(entry) => self.push((*entry).clone(), cost),
            Record::Truncate(from) => self.truncate(*from),
            Record::Purge(log_id) => self.purge(log_id.index),
            Record::Vote(_) | Record::Committed(_) => {}
        }
    }

    /// An entry at index `i` replaces the log's entries from `i` on, as it does on disk.
    fn push(&mut self, entry: Entry, cost: usize) {
        let index = entry.log_id.index;
        self.truncate(index);
        if self.first().is_some_and(|first| first + self.entries.len() as u64 != index) {
            // Cannot happen in a log without gaps; dropping everything keeps the suffix whole.
            self.truncate(0);
        }
        if self.entries.is_empty() {
            self.first = index;
        }
        self.entries.push_back((entry, cost));
        self.bytes += cost;
        while self.bytes > self.budget {
            self.pop_front();
        }
    }

    /// Drops entries from index `from` on.
    fn truncate(&mut self, from: u64) {
        let keep = from.saturating_sub(self.first) as usize;
        while self.entries.len() > keep {
            let (_, cost) = self.entries.pop_back().expect("not empty");
            self.bytes -= cost;
        }
    }

    /// Drops entries up to and including index `upto`.
    fn purge(&mut self, upto: u64) {
        while self.first().is_some_and(|first| first <= upto) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, cost)) = self.entries.pop_front() {
            self.bytes -= cost;
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::LogId;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload: EntryPayload::Blank }
    }

    fn held(recent: &Recent) -> Vec<(u64, u64)> {
        recent.range(0, u64::MAX).iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect()
    }

    fn write(recent: &mut Recent, term: u64, indexes: std::ops::Range<u64>, cost: usize) {
        for i in indexes {
            recent.mirror(&Record::Entry(&entry(term, i)), cost);
        }
    }

    #[test]
    fn ranges_return_what_is_held_in_order() {
        let mut recent = Recent::new(1000);
        assert_eq!((recent.first(), recent.range(0, 10)), (None, vec![]));
        write(&mut recent, 1, 5..10, 10);
        assert_eq!(recent.first(), Some(5));
        let indexes = |start, end| recent.range(start, end).iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        assert_eq!(indexes(0, 7), vec![5, 6]);
        assert_eq!(indexes(7, 9), vec![7, 8]);
        assert_eq!(indexes(8, u64::MAX), vec![8, 9]);
        assert_eq!(indexes(10, 20), Vec::<u64>::new());
        assert_eq!(indexes(7, 7), Vec::<u64>::new());
    }

    #[test]
    fn the_budget_drops_the_oldest_entries() {
        let mut recent = Recent::new(35);
        write(&mut recent, 1, 0..5, 10);
        assert_eq!(held(&recent), vec![(1, 2), (1, 3), (1, 4)]);
        // An entry larger than the whole budget is not kept, and neither is anything before it.
        recent.mirror(&Record::Entry(&entry(1, 5)), 50);
        assert_eq!(recent.first(), None);
        write(&mut recent, 1, 6..7, 10);
        assert_eq!(held(&recent), vec![(1, 6)]);
    }

    #[test]
    fn overwrites_truncation_and_purges_follow_the_log() {
        let mut recent = Recent::new(1000);
        write(&mut recent, 1, 0..10, 10);
        // A new leader's entry at 6 replaces 6 and everything after it.
        write(&mut recent, 2, 6..7, 10);
        assert_eq!(held(&recent).last(), Some(&(2, 6)));
        assert_eq!(held(&recent).len(), 7);
        recent.mirror(&Record::Truncate(4), 0);
        assert_eq!(held(&recent), (0..4).map(|i| (1, i)).collect::<Vec<_>>());
        recent.mirror(&Record::Purge(entry(1, 1).log_id), 0);
        assert_eq!(held(&recent), vec![(1, 2), (1, 3)]);
        assert_eq!(recent.first(), Some(2));
        // A snapshot past everything held, then the log goes on after it.
        recent.mirror(&Record::Purge(entry(3, 20).log_id), 0);
        assert_eq!(recent.first(), None);
        write(&mut recent, 3, 21..23, 10);
        assert_eq!(held(&recent), vec![(3, 21), (3, 22)]);
        assert_eq!(recent.bytes, 20);
    }

    #[test]
    fn an_entry_after_a_gap_starts_over_from_it() {
        let mut recent = Recent::new(1000);
        write(&mut recent, 1, 0..3, 10);
        write(&mut recent, 1, 7..8, 10);
        assert_eq!(held(&recent), vec![(1, 7)]);
        assert_eq!(recent.bytes, 10);
    }
}
