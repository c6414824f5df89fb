//! Checks recorded watch streams against the true MVCC history.
//!
//! The harness records, per watcher, every response of every *incarnation* (a watch created,
//! then re-created after an error from its last revision + 1), and builds the *true history* —
//! the events of every revision — from the final store (historical reads) or from the write
//! log. The checker then verifies etcd's watch guarantees (etcd `api_guarantees`, and the
//! validators of etcd's robustness tests), each precisely defined here:
//!
//! - **Ordered**: within an incarnation, event revisions never decrease; events of one revision
//!   come in the order of the history (the order of the requests inside the txn); a response's
//!   header revision is at least the revision of each of its events.
//! - **Unique**: within an incarnation, no (revision, key) is delivered twice.
//! - **Atomic**: all events of one revision come in one response. Fragmented responses
//!   (`fragment: true` on all but the last piece) are joined first, so fragments are not split
//!   revisions; a trailing fragment group that never completed is ignored.
//! - **Reliable**: an incarnation is *complete through* `C`, the highest of the revisions it
//!   delivered an event of and of its progress notifications (bookmarks). Between its effective
//!   start and `C`, it delivered exactly the history's events in its range — none missing (a
//!   gap), none extra (a phantom, or an event of another range), each equal (kind and key-value)
//!   to the history's.
//! - **Resumable**: an incarnation delivers nothing below its start revision, and a watcher that
//!   resumes at a start revision `S > 0` after an incarnation complete through `C` needs
//!   `S ≤ C + 1` — unless that incarnation was cancelled for compaction. Together with
//!   "reliable" per incarnation this makes the concatenation of the incarnations gap-free. A
//!   cancel for compaction must concern a start revision that really is below the compaction.
//! - **PrevKv**: when the watcher asked for it, an event's `prev_kv` is the key's state at
//!   `mod_revision − 1` according to the history (absent: `None`); when it did not, there is
//!   none. Checked where the history knows that state (always when it starts at revision 1).
//! - **Bookmarkable**: after a progress notification at revision `R`, every event of the same
//!   incarnation has a revision `> R`.
//! - **Same sequence**: watchers of the same range deliver identical events for every revision
//!   that both cover (complete through and at or after their start). This holds even where the
//!   history is unknown.
//!
//! The effective start of an incarnation is its start revision, or — for start revision 0
//! ("from now") — the header revision of its `created` response + 1.

use crate::history::{Event, EventKind, Key, KeyValue, Revision};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// etcd's key range: `range_end` empty = the one key; `"\0"` = every key ≥ `key`; otherwise
/// `[key, range_end)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    pub key: Key,
    pub range_end: Key,
}

impl KeyRange {
    pub fn single(key: impl Into<Key>) -> Self {
        KeyRange { key: key.into(), range_end: Key(Vec::new()) }
    }

    /// Every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
    pub fn prefix(prefix: impl Into<Key>) -> Self {
        let key: Key = prefix.into();
        let mut end = key.0.clone();
        while let Some(&last) = end.last() {
            if last < 0xff {
                *end.last_mut().expect("not empty") += 1;
                return KeyRange { key, range_end: Key(end) };
            }
            end.pop();
        }
        KeyRange { key, range_end: Key(vec![0]) }
    }

    pub fn contains(&self, k: &Key) -> bool {
        match self.range_end.0.as_slice() {
            [] => *k == self.key,
            [0] => *k >= self.key,
            end => self.key <= *k && k.0.as_slice() < end,
        }
    }
}

/// One `WatchResponse` as the client received it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    pub header_revision: Revision,
    pub created: bool,
    pub canceled: bool,
    pub compact_revision: Revision,
    /// More pieces of this response follow.
    pub fragment: bool,
    pub events: Vec<Event>,
}

impl WatchResponse {
    /// A progress notification (bookmark), as etcd's Go client defines it.
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty()
            && !self.created
            && !self.canceled
            && self.compact_revision == 0
            && self.header_revision != 0
    }
}

/// One `Watch` create request and what it received until it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchIncarnation {
    /// The requested start revision (0: from now).
    pub start_revision: Revision,
    pub responses: Vec<WatchResponse>,
}

/// One logical watcher: a range, and its incarnations in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherRecord {
    pub id: u64,
    pub range: KeyRange,
    /// Whether it asked for `prev_kv`.
    pub prev_kv: bool,
    pub incarnations: Vec<WatchIncarnation>,
}

/// What the history knows about a key's state just before an event.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Prev {
    /// The history starts after revision 1 and had no earlier event of the key.
    Unknown,
    Known(Option<KeyValue>),
}

/// The true MVCC history between two revisions: every event of every revision in
/// `[first, last]` (a revision with no entry had no events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrueHistory {
    first: Revision,
    last: Revision,
    /// Events of each revision, in order, with the state of their key just before.
    revisions: BTreeMap<Revision, Vec<(Event, Prev)>>,
}

impl TrueHistory {
    /// Builds the history; `revisions` are `(revision, events)` in any order. Events' `prev_kv`
    /// is ignored: the expected one is derived by replaying the history.
    pub fn new(
        first: Revision,
        last: Revision,
        revisions: impl IntoIterator<Item = (Revision, Vec<Event>)>,
    ) -> Result<Self, String> {
        if first < 1 || last < first - 1 {
            return Err(format!("bad revision bounds [{first}, {last}]"));
        }
        let mut sorted: BTreeMap<Revision, Vec<Event>> = BTreeMap::new();
        for (rev, events) in revisions {
            if rev < first || rev > last {
                return Err(format!("revision {rev} outside [{first}, {last}]"));
            }
            if events.is_empty() {
                continue;
            }
            let mut keys = BTreeSet::new();
            for e in &events {
                if e.revision() != rev {
                    return Err(format!(
                        "event of {} at mod_revision {} listed under revision {rev}",
                        e.kv.key,
                        e.revision()
                    ));
                }
                if !keys.insert(&e.kv.key) {
                    return Err(format!("key {} changes twice in revision {rev}", e.kv.key));
                }
            }
            if sorted.insert(rev, events).is_some() {
                return Err(format!("revision {rev} listed twice"));
            }
        }
        // Replay: the state of every key seen so far (or, from revision 1, of every key).
        let mut state: BTreeMap<Key, Option<KeyValue>> = BTreeMap::new();
        let mut revisions = BTreeMap::new();
        for (rev, events) in sorted {
            let mut annotated = Vec::with_capacity(events.len());
            for mut e in events {
                e.prev_kv = None;
                let prev = match state.get(&e.kv.key) {
                    Some(s) => Prev::Known(s.clone()),
                    None if first == 1 => Prev::Known(None),
                    None => Prev::Unknown,
                };
                let after = match e.kind {
                    EventKind::Put => Some(e.kv.clone()),
                    EventKind::Delete => None,
                };
                state.insert(e.kv.key.clone(), after);
                annotated.push((e, prev));
            }
            revisions.insert(rev, annotated);
        }
        Ok(TrueHistory { first, last, revisions })
    }

    pub fn first(&self) -> Revision {
        self.first
    }

    pub fn last(&self) -> Revision {
        self.last
    }
}

/// A watch guarantee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WatchGuarantee {
    Ordered,
    Unique,
    Atomic,
    Reliable,
    Resumable,
    PrevKv,
    Bookmarkable,
    SameSequence,
}

/// One broken guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchViolation {
    pub guarantee: WatchGuarantee,
    pub watcher: u64,
    /// Index of the incarnation (for `SameSequence`: of the first watcher, 0).
    pub incarnation: usize,
    pub revision: Revision,
    pub detail: String,
}

impl fmt::Display for WatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: watcher {} incarnation {} at revision {}: {}",
            self.guarantee, self.watcher, self.incarnation, self.revision, self.detail
        )
    }
}

/// What [`check_watches`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchReport {
    pub watchers: usize,
    /// Events delivered (all incarnations).
    pub events_checked: usize,
    pub violations: Vec<WatchViolation>,
    /// More violations were found than are kept.
    pub truncated: bool,
}

impl WatchReport {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The kinds of guarantees broken, for a summary.
    pub fn broken(&self) -> BTreeSet<WatchGuarantee> {
        self.violations.iter().map(|v| v.guarantee).collect()
    }

    fn push(&mut self, v: WatchViolation) {
        if self.violations.len() < MAX_WATCH_VIOLATIONS {
            self.violations.push(v);
        } else {
            self.truncated = true;
        }
    }
}

/// At most this many violations are kept (the first ones say what went wrong).
const MAX_WATCH_VIOLATIONS: usize = 1000;

/// An incarnation after joining fragments, with what the checks need.
struct Incarnation<'a> {
    /// Joined responses (complete ones only).
    responses: Vec<Joined<'a>>,
    /// `None` if it never knew where it started (start 0 and no `created`, no event).
    start: Option<Revision>,
    /// Complete through this revision.
    through: Option<Revision>,
    compacted: bool,
}

struct Joined<'a> {
    header_revision: Revision,
    progress: bool,
    events: Vec<&'a Event>,
}

fn join_fragments(inc: &WatchIncarnation) -> Vec<Joined<'_>> {
    let mut out = Vec::new();
    let mut pending: Vec<&Event> = Vec::new();
    for r in &inc.responses {
        pending.extend(r.events.iter());
        if r.fragment {
            continue;
        }
        let events = std::mem::take(&mut pending);
        out.push(Joined { header_revision: r.header_revision, progress: r.is_progress_notify(), events });
        if r.canceled {
            break;
        }
    }
    out
}

fn prepare(inc: &WatchIncarnation) -> Incarnation<'_> {
    let responses = join_fragments(inc);
    let compacted = inc.responses.iter().any(|r| r.canceled && r.compact_revision > 0);
    let created = inc.responses.iter().find(|r| r.created).map(|r| r.header_revision);
    let first_event = responses.iter().flat_map(|r| r.events.iter()).map(|e| e.revision()).next();
    let start = if inc.start_revision > 0 { Some(inc.start_revision) } else { created.map(|h| h + 1).or(first_event) };
    let last_event = responses.iter().flat_map(|r| r.events.iter()).map(|e| e.revision()).max();
    let last_progress = responses.iter().filter(|r| r.progress).map(|r| r.header_revision).max();
    let through = match (start, last_event.max(last_progress)) {
        // Cancelled for compaction (possibly after delivering some events): complete through
        // what it delivered, nothing more.
        (_, t) if compacted => t,
        (Some(s), Some(t)) => Some(t.max(s - 1)),
        (Some(s), None) => Some(s - 1),
        (None, t) => t,
    };
    Incarnation { responses, start, through, compacted }
}

/// What one watcher delivered: the events of each revision (first delivery), and the revision
/// intervals its incarnations cover.
type Delivered<'a> = (BTreeMap<Revision, Vec<&'a Event>>, Vec<(Revision, Revision)>);

fn same_event(a: &Event, b: &Event) -> bool {
    a.kind == b.kind && a.kv == b.kv
}

/// Checks every watcher against the history and against the other watchers of its range.
pub fn check_watches(truth: &TrueHistory, watchers: &[WatcherRecord]) -> WatchReport {
    let mut report = WatchReport { watchers: watchers.len(), ..Default::default() };
    // Per watcher: the first delivery of each revision's events, and the covered intervals.
    let mut delivered: Vec<Delivered<'_>> = Vec::new();
    for w in watchers {
        let mut by_revision: BTreeMap<Revision, Vec<&Event>> = BTreeMap::new();
        let mut covered = Vec::new();
        let mut previous: Option<Incarnation<'_>> = None;
        for (i, raw) in w.incarnations.iter().enumerate() {
            let inc = prepare(raw);
            check_incarnation(truth, w, i, raw, &inc, &mut report);
            check_resumption(w, i, raw, previous.as_ref(), &mut report);
            if let (Some(s), Some(t)) = (inc.start, inc.through) {
                if s <= t {
                    covered.push((s, t));
                }
                let mut seen_here: BTreeSet<Revision> = BTreeSet::new();
                for e in inc.responses.iter().flat_map(|r| r.events.iter()) {
                    let r = e.revision();
                    if r < s || r > t {
                        continue;
                    }
                    // Keep each revision from the first incarnation that delivered it.
                    if seen_here.contains(&r) || !by_revision.contains_key(&r) {
                        seen_here.insert(r);
                        by_revision.entry(r).or_default().push(e);
                    }
                }
            }
            report.events_checked += inc.responses.iter().map(|r| r.events.len()).sum::<usize>();
            previous = Some(inc);
        }
        delivered.push((by_revision, covered));
    }
    check_same_sequences(watchers, &delivered, &mut report);
    report
}

fn check_incarnation(
    truth: &TrueHistory,
    w: &WatcherRecord,
    i: usize,
    raw: &WatchIncarnation,
    inc: &Incarnation<'_>,
    report: &mut WatchReport,
) {
    let mut violation = |guarantee, revision, detail: String| {
        report.push(WatchViolation { guarantee, watcher: w.id, incarnation: i, revision, detail })
    };
    // A cancel for compaction must be about a start that really is compacted.
    if let Some(r) = raw.responses.iter().find(|r| r.canceled && r.compact_revision > 0) {
        if raw.start_revision >= r.compact_revision {
            violation(
                WatchGuarantee::Resumable,
                raw.start_revision,
                format!(
                    "cancelled as compacted at {} although it starts at {}",
                    r.compact_revision, raw.start_revision
                ),
            );
        }
    }

    // Ordered, unique, atomic, bookmarkable, start, prev_kv: one pass over the responses.
    let mut last: Option<(Revision, usize)> = None; // (revision, response index)
    let mut last_progress: Option<Revision> = None;
    let mut seen: BTreeSet<(Revision, &Key)> = BTreeSet::new();
    // Position of the last delivered event of the current revision in the history's order.
    let mut last_position: Option<(Revision, usize)> = None;
    for (ri, r) in inc.responses.iter().enumerate() {
        if r.progress {
            last_progress = Some(last_progress.map_or(r.header_revision, |p| p.max(r.header_revision)));
            continue;
        }
        for e in &r.events {
            let rev = e.revision();
            let key = &e.kv.key;
            if let Some((l, lri)) = last {
                if rev < l {
                    violation(WatchGuarantee::Ordered, rev, format!("event of {key} at {rev} after one at {l}"));
                } else if rev == l && lri != ri {
                    violation(WatchGuarantee::Atomic, rev, format!("revision {rev} split over two responses"));
                }
            }
            last = Some((rev, ri));
            if r.header_revision < rev {
                violation(
                    WatchGuarantee::Ordered,
                    rev,
                    format!("response header revision {} below its event at {rev}", r.header_revision),
                );
            }
            if let Some(p) = last_progress {
                if rev <= p {
                    violation(
                        WatchGuarantee::Bookmarkable,
                        rev,
                        format!("event at {rev} after a progress notification at {p}"),
                    );
                }
            }
            if inc.start.is_some_and(|s| rev < s) {
                violation(
                    WatchGuarantee::Resumable,
                    rev,
                    format!("event of {key} at {rev} before the start revision {}", inc.start.unwrap_or(0)),
                );
            }
            if !seen.insert((rev, key)) {
                violation(WatchGuarantee::Unique, rev, format!("event of {key} at {rev} delivered twice"));
            }
            if !w.range.contains(key) {
                violation(WatchGuarantee::Reliable, rev, format!("event of {key}, outside the watched range"));
            }
            // Order inside a revision and prev_kv need the history.
            let in_truth = truth.revisions.get(&rev).and_then(|evs| evs.iter().position(|(t, _)| t.kv.key == *key));
            if let Some(pos) = in_truth {
                if let Some((lr, lp)) = last_position {
                    if lr == rev && pos < lp {
                        violation(
                            WatchGuarantee::Ordered,
                            rev,
                            format!("events of revision {rev} not in the order of the history ({key} came late)"),
                        );
                    }
                }
                last_position = Some((rev, pos));
                let (_, prev) = &truth.revisions[&rev][pos];
                match (w.prev_kv, prev, &e.prev_kv) {
                    (false, _, Some(p)) => violation(
                        WatchGuarantee::PrevKv,
                        rev,
                        format!("prev_kv {} @{} delivered though not requested", p.value, p.mod_revision),
                    ),
                    (true, Prev::Known(expected), got) if expected != got => violation(
                        WatchGuarantee::PrevKv,
                        rev,
                        format!("prev_kv of {key} at {rev} is {}, the history has {}", show_kv(got), show_kv(expected)),
                    ),
                    _ => {}
                }
            }
        }
    }

    // Reliable: exactly the history's events in range between the start and `through`.
    let (Some(start), Some(through)) = (inc.start, inc.through) else { return };
    let lo = start.max(truth.first);
    let hi = through.min(truth.last);
    if lo > hi {
        return;
    }
    let mut got: BTreeMap<(Revision, &Key), &Event> = BTreeMap::new();
    for e in inc.responses.iter().flat_map(|r| r.events.iter()) {
        if (lo..=hi).contains(&e.revision()) && w.range.contains(&e.kv.key) {
            got.entry((e.revision(), &e.kv.key)).or_insert(e);
        }
    }
    let mut expected: BTreeMap<(Revision, &Key), &Event> = BTreeMap::new();
    for (&rev, events) in truth.revisions.range(lo..=hi) {
        for (e, _) in events.iter().filter(|(e, _)| w.range.contains(&e.kv.key)) {
            expected.insert((rev, &e.kv.key), e);
        }
    }
    for (&(rev, key), want) in &expected {
        match got.get(&(rev, key)) {
            None => violation(
                WatchGuarantee::Reliable,
                rev,
                format!("missing {:?} of {key} at {rev} (complete through {through})", want.kind),
            ),
            Some(have) if !same_event(have, want) => violation(
                WatchGuarantee::Reliable,
                rev,
                format!("event differs from the history: got {}, history has {}", show_event(have), show_event(want)),
            ),
            Some(_) => {}
        }
    }
    for (&(rev, key), have) in &got {
        if !expected.contains_key(&(rev, key)) {
            violation(WatchGuarantee::Reliable, rev, format!("event not in the history: {}", show_event(have)));
        }
    }
}

/// A resumed watcher must not skip what the previous incarnation had not delivered.
fn check_resumption(
    w: &WatcherRecord,
    i: usize,
    raw: &WatchIncarnation,
    previous: Option<&Incarnation<'_>>,
    report: &mut WatchReport,
) {
    let Some(prev) = previous else { return };
    if prev.compacted || raw.start_revision <= 0 {
        return;
    }
    let through = prev.through.or(prev.start.map(|s| s - 1)).unwrap_or(0);
    if raw.start_revision > through + 1 {
        report.push(WatchViolation {
            guarantee: WatchGuarantee::Resumable,
            watcher: w.id,
            incarnation: i,
            revision: raw.start_revision,
            detail: format!(
                "resumed at {} but the previous incarnation was complete only through {through}: revisions in between were never delivered",
                raw.start_revision
            ),
        });
    }
}

/// Watchers of one range agree on every revision they both cover.
fn check_same_sequences(watchers: &[WatcherRecord], delivered: &[Delivered<'_>], report: &mut WatchReport) {
    let mut groups: BTreeMap<&KeyRange, Vec<usize>> = BTreeMap::new();
    for (i, w) in watchers.iter().enumerate() {
        groups.entry(&w.range).or_default().push(i);
    }
    let covers = |intervals: &[(Revision, Revision)], r: Revision| intervals.iter().any(|&(s, t)| s <= r && r <= t);
    for members in groups.values() {
        for (x, &a) in members.iter().enumerate() {
            for &b in &members[x + 1..] {
                let (da, ca) = &delivered[a];
                let (db, cb) = &delivered[b];
                let with_prev = watchers[a].prev_kv && watchers[b].prev_kv;
                let revisions: BTreeSet<Revision> = da.keys().chain(db.keys()).copied().collect();
                let differs = revisions.into_iter().filter(|&r| covers(ca, r) && covers(cb, r)).find(|r| {
                    let (ea, eb) = (da.get(r).map_or(&[][..], Vec::as_slice), db.get(r).map_or(&[][..], Vec::as_slice));
                    ea.len() != eb.len()
                        || ea.iter().zip(eb).any(|(x, y)| !same_event(x, y) || (with_prev && x.prev_kv != y.prev_kv))
                });
                if let Some(r) = differs {
                    let show = |d: &BTreeMap<Revision, Vec<&Event>>| {
                        d.get(&r).map_or("nothing".to_string(), |es| {
                            es.iter().map(|e| show_event(e)).collect::<Vec<_>>().join(", ")
                        })
                    };
                    report.push(WatchViolation {
                        guarantee: WatchGuarantee::SameSequence,
                        watcher: watchers[a].id,
                        incarnation: 0,
                        revision: r,
                        detail: format!(
                            "watcher {} saw {} but watcher {} saw {} at revision {r}",
                            watchers[a].id,
                            show(da),
                            watchers[b].id,
                            show(db)
                        ),
                    });
                }
            }
        }
    }
}

fn show_kv(kv: &Option<KeyValue>) -> String {
    match kv {
        None => "absent".to_string(),
        Some(kv) => format!("{}={} @{}", kv.key, kv.value, kv.mod_revision),
    }
}

fn show_event(e: &Event) -> String {
    match e.kind {
        EventKind::Put => format!(
            "PUT {}={} @{} (create {}, version {})",
            e.kv.key, e.kv.value, e.kv.mod_revision, e.kv.create_revision, e.kv.version
        ),
        EventKind::Delete => format!("DELETE {} @{}", e.kv.key, e.kv.mod_revision),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Value;

    /// A small MVCC store that produces the true history and the events a correct watch sends.
    #[derive(Default)]
    struct Store {
        rev: Revision,
        live: BTreeMap<Key, KeyValue>,
        history: Vec<(Revision, Vec<Event>)>,
    }

    impl Store {
        /// One revision changing `changes` (key, Some(value) = put, None = delete).
        fn txn(&mut self, changes: &[(&str, Option<&str>)]) -> Revision {
            self.rev += 1;
            let rev = self.rev;
            let mut events = Vec::new();
            for &(k, v) in changes {
                let key = Key::from(k);
                let prev = self.live.get(&key).cloned();
                let event = match v {
                    Some(v) => {
                        let kv = KeyValue {
                            key: key.clone(),
                            value: Value::from(v),
                            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                            mod_revision: rev,
                            version: prev.as_ref().map_or(1, |p| p.version + 1),
                            lease: 0,
                        };
                        self.live.insert(key, kv.clone());
                        Event { kind: EventKind::Put, kv, prev_kv: prev }
                    }
                    None => {
                        self.live.remove(&key);
                        let kv = KeyValue {
                            key,
                            value: Value(Vec::new()),
                            create_revision: 0,
                            mod_revision: rev,
                            version: 0,
                            lease: 0,
                        };
                        Event { kind: EventKind::Delete, kv, prev_kv: prev }
                    }
                };
                events.push(event);
            }
            self.history.push((rev, events));
            rev
        }

        fn truth(&self) -> TrueHistory {
            TrueHistory::new(1, self.rev, self.history.clone()).unwrap()
        }

        /// Events of `range` in `[from, to]`, one response per revision, with prev_kv or not.
        fn responses(&self, range: &KeyRange, from: Revision, to: Revision, prev_kv: bool) -> Vec<WatchResponse> {
            self.history
                .iter()
                .filter(|(r, _)| (from..=to).contains(r))
                .filter_map(|(r, evs)| {
                    let events: Vec<Event> = evs
                        .iter()
                        .filter(|e| range.contains(&e.kv.key))
                        .map(|e| Event { prev_kv: if prev_kv { e.prev_kv.clone() } else { None }, ..e.clone() })
                        .collect();
                    (!events.is_empty()).then(|| WatchResponse { header_revision: *r, events, ..Default::default() })
                })
                .collect()
        }
    }

    fn created(rev: Revision) -> WatchResponse {
        WatchResponse { header_revision: rev, created: true, ..Default::default() }
    }
    fn progress(rev: Revision) -> WatchResponse {
        WatchResponse { header_revision: rev, ..Default::default() }
    }

    /// A store with a few revisions on keys a/1, a/2 (txn), b, and a watcher on prefix "a/".
    fn scenario() -> (Store, KeyRange) {
        let mut s = Store::default();
        s.txn(&[("a/1", Some("x1"))]); // 1
        s.txn(&[("b", Some("y1"))]); // 2
        s.txn(&[("a/1", Some("x2")), ("a/2", Some("z1"))]); // 3
        s.txn(&[("a/1", None)]); // 4
        s.txn(&[("a/2", Some("z2"))]); // 5
        s.txn(&[("b", Some("y2"))]); // 6
        s.txn(&[("a/1", Some("x3"))]); // 7
        (s, KeyRange::prefix("a/"))
    }

    fn watcher(id: u64, range: &KeyRange, prev_kv: bool, incarnations: Vec<WatchIncarnation>) -> WatcherRecord {
        WatcherRecord { id, range: range.clone(), prev_kv, incarnations }
    }

    fn one(start: Revision, responses: Vec<WatchResponse>) -> WatchIncarnation {
        WatchIncarnation { start_revision: start, responses }
    }

    fn broken(report: &WatchReport) -> Vec<WatchGuarantee> {
        report.broken().into_iter().collect()
    }

    #[test]
    fn key_ranges_follow_etcd_conventions() {
        assert!(KeyRange::single("a").contains(&"a".into()));
        assert!(!KeyRange::single("a").contains(&"ab".into()));
        let p = KeyRange::prefix("a/");
        assert_eq!(p.range_end, Key::from("a0"));
        assert!(p.contains(&"a/x".into()) && !p.contains(&"a0".into()) && !p.contains(&"a".into()));
        assert_eq!(KeyRange::prefix(vec![0x61, 0xff]).range_end, Key(vec![0x62]));
        assert_eq!(KeyRange::prefix(vec![0xff]).range_end, Key(vec![0]));
        let all = KeyRange { key: Key(vec![0]), range_end: Key(vec![0]) };
        assert!(all.contains(&"anything".into()));
    }

    #[test]
    fn correct_streams_pass() {
        let (s, range) = scenario();
        let truth = s.truth();
        // Watcher 1: from revision 1 with prev_kv, broken after revision 4, resumed at 5;
        // a progress notification; the txn revision arrives fragmented.
        let mut first = vec![created(0)];
        let mut rs = s.responses(&range, 1, 4, true);
        let txn = rs.remove(1); // revision 3, two events
        let (e1, e2) = (txn.events[0].clone(), txn.events[1].clone());
        rs.insert(1, WatchResponse { header_revision: 3, fragment: true, events: vec![e1], ..Default::default() });
        rs.insert(2, WatchResponse { header_revision: 3, events: vec![e2], ..Default::default() });
        first.extend(rs);
        first.push(progress(4));
        let mut second = vec![created(6)];
        second.extend(s.responses(&range, 5, 7, true));
        let w1 = watcher(1, &range, true, vec![one(1, first), one(5, second)]);
        // Watcher 2: "from now" at revision 2, no prev_kv, several revisions in one response.
        let evs: Vec<Event> = s.responses(&range, 3, 7, false).into_iter().flat_map(|r| r.events).collect();
        let w2 = watcher(
            2,
            &range,
            false,
            vec![one(0, vec![created(2), WatchResponse { header_revision: 7, events: evs, ..Default::default() }])],
        );
        // Watcher 3: one key, resumed after a progress notification, at its revision + 1.
        let single = KeyRange::single("b");
        let w3 = watcher(
            3,
            &single,
            false,
            vec![
                one(1, [vec![created(1)], s.responses(&single, 1, 3, false), vec![progress(4)]].concat()),
                one(5, s.responses(&single, 5, 7, false)),
            ],
        );
        // Watcher 4: cancelled for compaction, restarted later: the gap is allowed. Then
        // cancelled for compaction again after delivering 6 and 7 (checked as delivered).
        let compacted = WatchResponse {
            header_revision: 7,
            created: true,
            canceled: true,
            compact_revision: 4,
            ..Default::default()
        };
        let late = WatchResponse { header_revision: 9, canceled: true, compact_revision: 8, ..Default::default() };
        let resumed = [s.responses(&range, 6, 7, false), vec![late]].concat();
        let w4 = watcher(4, &range, false, vec![one(2, vec![compacted]), one(6, resumed)]);
        let report = check_watches(&truth, &[w1, w2, w3, w4]);
        assert!(report.is_ok(), "{:#?}", report.violations);
        assert_eq!(report.watchers, 4);
        assert!(report.events_checked > 10);
    }

    #[test]
    fn a_duplicate_event_is_rejected() {
        let (s, range) = scenario();
        let mut rs = s.responses(&range, 1, 7, false);
        let again = rs[3].clone(); // revision 5
        rs.insert(4, again);
        let r = check_watches(&s.truth(), &[watcher(1, &range, false, vec![one(1, rs)])]);
        assert!(broken(&r).contains(&WatchGuarantee::Unique), "{:#?}", r.violations);
    }

    #[test]
    fn a_gap_is_rejected() {
        let (s, range) = scenario();
        let mut rs = s.responses(&range, 1, 7, false);
        rs.remove(2); // revision 4: the delete of a/1
        let r = check_watches(&s.truth(), &[watcher(1, &range, false, vec![one(1, rs)])]);
        assert_eq!(broken(&r), vec![WatchGuarantee::Reliable], "{:#?}", r.violations);
        assert_eq!(r.violations[0].revision, 4);
        assert!(r.violations[0].detail.contains("missing Delete"), "{}", r.violations[0]);
    }

    #[test]
    fn a_gap_across_a_resumption_is_rejected() {
        let (s, range) = scenario();
        // Complete through 3, resumed at 5: revision 4 is never delivered.
        let w = watcher(
            1,
            &range,
            false,
            vec![one(1, s.responses(&range, 1, 3, false)), one(5, s.responses(&range, 5, 7, false))],
        );
        let r = check_watches(&s.truth(), &[w]);
        assert_eq!(broken(&r), vec![WatchGuarantee::Resumable], "{:#?}", r.violations);
        // A resumed watch that sends an event from before its start.
        let w = watcher(
            1,
            &range,
            false,
            vec![one(1, s.responses(&range, 1, 4, false)), one(5, s.responses(&range, 4, 7, false))],
        );
        let r = check_watches(&s.truth(), &[w]);
        assert_eq!(broken(&r), vec![WatchGuarantee::Resumable], "{:#?}", r.violations);
    }

    #[test]
    fn out_of_order_events_are_rejected() {
        let (s, range) = scenario();
        let mut rs = s.responses(&range, 1, 7, false);
        rs.swap(2, 3); // revision 5 before 4
        let r = check_watches(&s.truth(), &[watcher(1, &range, false, vec![one(1, rs)])]);
        assert!(broken(&r).contains(&WatchGuarantee::Ordered), "{:#?}", r.violations);
        // Events of one txn in the wrong order.
        let mut rs = s.responses(&range, 1, 7, false);
        rs[1].events.swap(0, 1);
        let r = check_watches(&s.truth(), &[watcher(1, &range, false, vec![one(1, rs)])]);
        assert_eq!(broken(&r), vec![WatchGuarantee::Ordered], "{:#?}", r.violations);
    }

    #[test]
    fn a_split_revision_is_rejected() {
        let (s, range) = scenario();
        let mut rs = s.responses(&range, 1, 7, false);
        let txn = rs.remove(1);
        rs.insert(1, WatchResponse { header_revision: 3, events: vec![txn.events[0].clone()], ..Default::default() });
        rs.insert(2, WatchResponse { header_revision: 3, events: vec![txn.events[1].clone()], ..Default::default() });
        let r = check_watches(&s.truth(), &[watcher(1, &range, false, vec![one(1, rs)])]);
        assert_eq!(broken(&r), vec![WatchGuarantee::Atomic], "{:#?}", r.violations);
    }

    #[test]
    fn a_wrong_prev_kv_is_rejected() {
        let (s, range) = scenario();
        let mut rs = s.responses(&range, 1, 7, true);
        // Revision 7 re-creates a/1: its prev_kv must be absent (deleted at 4), not x2.
        let stale = rs[2].events[0].prev_kv.clone(); // the delete at 4 carries a/1=x2
        assert!(stale.is_some());
        rs.last_mut().unwrap().events[0].prev_kv = stale;
        let r = check_watches(&s.truth(), &[watcher(1, &range, true, vec![one(1, rs)])]);
        assert_eq!(broken(&r), vec![WatchGuarantee::PrevKv], "{:#?}", r.violations);
        // prev_kv sent to a watcher that did not ask for it.
        let rs = s.responses(&range, 1, 7, true);
        let r = check_watches(&s.truth(), &[watcher(1, &range, false, vec![one(1, rs)])]);
        assert_eq!(broken(&r), vec![WatchGuarantee::PrevKv]);
    }

    #[test]
    fn an_event_below_a_bookmark_is_rejected() {
        let (s, range) = scenario();
        let mut rs = s.responses(&range, 1, 7, false);
        rs.insert(2, progress(5)); // claims all through 5, but 4 and 5 come after
        let r = check_watches(&s.truth(), &[watcher(1, &range, false, vec![one(1, rs)])]);
        assert_eq!(broken(&r), vec![WatchGuarantee::Bookmarkable], "{:#?}", r.violations);
    }

    #[test]
    fn a_bookmark_over_a_gap_is_rejected() {
        let (s, range) = scenario();
        // Delivered through 3, then a progress notification at 7: 4, 5 and 7 were skipped.
        let mut rs = s.responses(&range, 1, 3, false);
        rs.push(progress(7));
        let r = check_watches(&s.truth(), &[watcher(1, &range, false, vec![one(1, rs)])]);
        assert_eq!(broken(&r), vec![WatchGuarantee::Reliable]);
        assert_eq!(r.violations.len(), 3);
    }

    #[test]
    fn phantom_and_altered_events_are_rejected() {
        let (s, range) = scenario();
        let mut rs = s.responses(&range, 1, 7, false);
        rs[3].events[0].kv.value = Value::from("lost"); // revision 5 with another value
        let r = check_watches(&s.truth(), &[watcher(1, &range, false, vec![one(1, rs)])]);
        assert_eq!(broken(&r), vec![WatchGuarantee::Reliable]);
        assert!(r.violations[0].detail.contains("differs"));
        // An event of a key outside the range (revision 6 touches b).
        let mut rs = s.responses(&range, 1, 7, false);
        let b = s.responses(&KeyRange::single("b"), 6, 6, false).remove(0);
        rs.insert(4, b);
        let r = check_watches(&s.truth(), &[watcher(1, &range, false, vec![one(1, rs)])]);
        assert_eq!(broken(&r), vec![WatchGuarantee::Reliable]);
        // A bogus compaction cancel.
        let bogus = WatchResponse {
            header_revision: 7,
            created: true,
            canceled: true,
            compact_revision: 3,
            ..Default::default()
        };
        let r = check_watches(&s.truth(), &[watcher(1, &range, false, vec![one(5, vec![bogus])])]);
        assert_eq!(broken(&r), vec![WatchGuarantee::Resumable]);
    }

    #[test]
    fn watchers_of_one_range_must_agree_even_beyond_the_known_history() {
        let (s, range) = scenario();
        // The history is only known through 5; both watchers go on to 7 and disagree at 7.
        let truth = TrueHistory::new(1, 5, s.history.iter().filter(|(r, _)| *r <= 5).cloned()).unwrap();
        let good = s.responses(&range, 1, 7, false);
        let mut bad = good.clone();
        bad.last_mut().unwrap().events[0].kv.value = Value::from("other");
        let r = check_watches(
            &truth,
            &[watcher(1, &range, false, vec![one(1, good)]), watcher(2, &range, false, vec![one(1, bad)])],
        );
        assert_eq!(broken(&r), vec![WatchGuarantee::SameSequence], "{:#?}", r.violations);
        assert_eq!(r.violations[0].revision, 7);
    }

    #[test]
    fn a_history_not_starting_at_one_checks_prev_kv_only_where_known() {
        let (s, range) = scenario();
        let truth = TrueHistory::new(3, 7, s.history.iter().filter(|(r, _)| *r >= 3).cloned()).unwrap();
        // prev_kv of a/1 at 3 (x1) is unknown to this history; at 4 it is known (x2).
        let rs = s.responses(&range, 3, 7, true);
        let r = check_watches(&truth, &[watcher(1, &range, true, vec![one(3, rs.clone())])]);
        assert!(r.is_ok(), "{:#?}", r.violations);
        let mut wrong = rs;
        wrong[1].events[0].prev_kv = None; // the delete at 4
        let r = check_watches(&truth, &[watcher(1, &range, true, vec![one(3, wrong)])]);
        assert_eq!(broken(&r), vec![WatchGuarantee::PrevKv]);
    }

    #[test]
    fn malformed_histories_are_refused() {
        let (s, _) = scenario();
        assert!(TrueHistory::new(1, 3, s.history.clone()).is_err());
        let mut twice = s.history.clone();
        twice.push(twice[0].clone());
        assert!(TrueHistory::new(1, 7, twice).is_err());
        assert!(TrueHistory::new(0, 7, s.history.clone()).is_err());
    }
}
