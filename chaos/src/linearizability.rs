//! A Porcupine-style linearizability checker for the register workload.
//!
//! # Model
//! Every key is an independent register (`absent` or a value) with put / get / compare-and-set /
//! delete. Linearizability is *compositional* (P-compositionality, Herlihy & Wing): a history is
//! linearizable iff its restriction to each key is. So the history is partitioned per key and
//! each partition is searched on its own — the search is exponential in the concurrency, so
//! small partitions are what make thousands of operations tractable. Every key starts absent
//! (the workload uses fresh keys).
//!
//! # Search
//! Wing & Gong's algorithm with Lowe's memoization, as in Porcupine: the calls and returns of a
//! partition are laid out in time order in a doubly linked list; the search repeatedly picks a
//! call that appears before the first remaining return, applies it to the model, and unlinks it
//! (it is now linearized); when it reaches a return whose call was not linearized yet, it
//! backtracks. A (set of linearized operations, model state) pair that was seen before cannot
//! lead anywhere new, so it is cached and skipped.
//!
//! Outcomes, as in Porcupine:
//! - `Ok`: the operation took effect between its invoke and its complete, with that result.
//! - `Failed`: certainly did not happen; dropped.
//! - `Unknown`: completion time is infinity and the result is unconstrained, so it may be
//!   linearized at any point after its invoke, or at the very end (which is the same as never).
//!   An unknown read therefore says nothing and is dropped.
//!
//! Unknown operations are what makes the search explode (each one stays a candidate forever),
//! so the search treats them with care, none of which changes its answer:
//! - they are tried only after every known candidate, so one is used only where the known
//!   operations cannot explain the history without it;
//! - values nobody ever observes (no get returned them, no compare-and-set expected them) are
//!   indistinguishable to the model and merged into one state, and unknown operations with the
//!   same model operation are interchangeable, so only the earliest unused one is ever tried;
//! - an unknown operation that would leave the state unchanged is never linearized early (the
//!   end is always at least as good), nor one whose effect the very next operation overwrites
//!   without reading it, nor one whose effect is overwritten later when the same configuration
//!   without it was already explored (it dominates: same state, one more operation available).
//!
//! The search is bounded by a step budget; running out never gives a false verdict.
//!
//! # Windows
//! When the whole partition exhausts its budget, the checker still looks for violations in
//! sliding *windows* of the history. The window `(S, T]` is the history as known at the cut `T`
//! (operations completed by `T` keep their results, those still in flight become unknown, later
//! ones are dropped), minus the operations completed before `S`, started from *any* register
//! state. Dropping the early operations is sound because every known operation invoked before
//! the last dropped one completed ("spanning" the start) is turned into an unknown one: in any
//! linearization of the full history, everything after the last dropped operation sees exactly
//! the state the window starts from, and whatever was linearized before it is moved to the end.
//! So a failing window proves the full history is not linearizable. A local anomaly (a stale
//! read, a lost write) is caught by a window around it even when the full search is too big; if
//! no window fails either, the verdict is "inconclusive".
//!
//! # Memoization and its one approximation
//! The linearized set is identified by a 95-bit Zobrist fingerprint (XOR of a fixed pseudo-random
//! word per operation, updated in O(1)) rather than a bitset, so a cache entry is 16 bytes
//! whatever the partition size. Two different sets colliding would prune a branch that was not
//! explored; with `n` cache entries the chance is about `n² / 2^96` (≈ 10⁻¹⁴ at the default
//! budget). A collision can only turn "linearizable" into "not linearizable", never hide a bug.
//!
//! # Counterexamples
//! A failing partition (or window) is shrunk cheaply to a *failing sub-history*: operations
//! that are already not linearizable on their own, and whose non-linearizability implies the
//! full history's. "Shortest" means, in order:
//! 1. the earliest cut `T` (a completion time) at which the history as known at `T` fails.
//!    Truncation preserves linearizability, so this is monotone and found by binary search;
//! 2. then the latest window start `S` at which the window `(S, T]` still fails (binary search
//!    too; every window it reports has been verified to fail);
//! 3. then, for windows of at most `max_greedy_ops` operations, each read-only operation (a get,
//!    a failed compare-and-set, a delete of nothing) is dropped if the rest still fails —
//!    removing a read never turns a linearizable history into a failing one, so the result stays
//!    a valid proof.
//!
//! It is not a globally minimal failing subset (that is NP-hard to find), but it is usually a
//! handful of operations around the anomaly.
//!
//! [`check_revisions`] adds cheap checks on response revisions that cross keys (etcd has one
//! global revision counter), which the per-key model cannot see.

use crate::history::{Call, History, HistoryError, Key, Operation, Outcome, Return, Revision, Tick, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// Knobs of the search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearizabilityOptions {
    /// Upper bound on search steps for one partition, and for each shrinking search. A step is
    /// one look at one candidate (~30 ns in a release build); each step adds at most one
    /// 16-byte cache entry, in practice one in ten or fewer.
    pub max_steps_per_search: u64,
    /// Operations (completions) per window when the full search runs out of budget; windows
    /// overlap by half. An anomaly spread over more operations than this is not found by a
    /// window (the verdict is then "inconclusive").
    pub window_ops: usize,
    /// Step budget of each window search.
    pub max_steps_per_window: u64,
    /// Shrink a failing partition into a short counterexample.
    pub shrink: bool,
    /// Drop read-only operations one by one only from windows up to this size (each drop costs
    /// one search).
    pub max_greedy_ops: usize,
}

impl Default for LinearizabilityOptions {
    fn default() -> Self {
        // 2·10⁷ steps take under a second (release) and well under 100 MB of cache; a correct
        // history of 5,000 operations on one key with ten clients and 3% timeouts needs ~6·10⁶.
        Self {
            max_steps_per_search: 20_000_000,
            window_ops: 64,
            max_steps_per_window: 1_000_000,
            shrink: true,
            max_greedy_ops: 200,
        }
    }
}

/// The verdict on a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every partition is linearizable.
    Linearizable,
    /// The first (in key order) partition that is not linearizable, shrunk.
    NotLinearizable(Box<Counterexample>),
    /// No partition failed, but the search ran out of budget on some (listed in the report).
    Inconclusive,
}

/// What [`check_linearizability`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearizabilityReport {
    /// Partitions (keys) checked.
    pub keys: usize,
    /// Operations that entered the search (failed operations and unknown reads are dropped).
    pub ops: usize,
    /// Search steps spent, windows and shrinking included.
    pub steps: u64,
    pub verdict: Verdict,
    /// Keys whose search ran out of budget and where no window failed.
    pub inconclusive: Vec<Key>,
    /// Other keys that also failed (only the first one is shrunk).
    pub other_failing_keys: Vec<Key>,
}

impl LinearizabilityReport {
    pub fn is_linearizable(&self) -> bool {
        self.verdict == Verdict::Linearizable
    }
}

/// An operation of a counterexample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterexampleOp {
    /// Index in [`History::ops`].
    pub index: usize,
    pub op: Operation,
    /// The operation had a result, but it is ignored (treated as unknown): it was still in
    /// flight at the cut, or it spans the window start.
    pub as_unknown: bool,
}

/// A failing sub-history of one key; see the module documentation for how it is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    pub key: Key,
    /// The history as known at this tick is already not linearizable.
    pub cut: Tick,
    /// `Some(S)`: operations completed before `S` were dropped and the register may start in any
    /// state. `None`: the register starts absent.
    pub window_start: Option<Tick>,
    /// The failing operations, by invoke time.
    pub ops: Vec<CounterexampleOp>,
    /// How many operations of this key the full history has.
    pub key_ops: usize,
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {} is not linearizable: these {} of its {} operations cannot be ordered (history as known at tick {}, {})",
            self.key,
            self.ops.len(),
            self.key_ops,
            self.cut,
            match self.window_start {
                Some(s) => format!("from any state, dropping operations completed before tick {s}"),
                None => "starting absent".to_string(),
            }
        )?;
        // Unknown operations from before the window cannot be left out (they may take effect at
        // any time), but they are rarely the point: list them compactly.
        let old = |op: &&CounterexampleOp| {
            op.op.outcome == Outcome::Unknown && self.window_start.is_some_and(|s| op.op.invoke < s)
        };
        let old_ops: Vec<&CounterexampleOp> = self.ops.iter().filter(old).collect();
        if !old_ops.is_empty() {
            writeln!(
                f,
                "  {} unknown operations invoked before the window (each may take effect at any time):",
                old_ops.len()
            )?;
            let list: Vec<String> = old_ops.iter().map(|o| format!("#{}", o.index)).collect();
            for chunk in list.chunks(12) {
                writeln!(f, "    {}", chunk.join(" "))?;
            }
        }
        for op in self.ops.iter().filter(|op| !old(op)) {
            let note = if op.as_unknown { "   (result ignored: treated as unknown)" } else { "" };
            writeln!(f, "  #{:<6} {}{}", op.index, op.op, note)?;
        }
        Ok(())
    }
}

/// Checks the register history for linearizability, key by key.
pub fn check_linearizability(
    history: &History,
    options: &LinearizabilityOptions,
) -> Result<LinearizabilityReport, HistoryError> {
    history.validate()?;
    let mut by_key: BTreeMap<&Key, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        by_key.entry(op.call.key()).or_default().push(i);
    }
    let mut report = LinearizabilityReport {
        keys: by_key.len(),
        ops: 0,
        steps: 0,
        verdict: Verdict::Linearizable,
        inconclusive: Vec::new(),
        other_failing_keys: Vec::new(),
    };
    for (key, indices) in by_key {
        let partition = Partition::new(history, &indices);
        let mut steps = 0;
        let full = partition.view(&Window::FULL);
        report.ops += full.len();
        let outcome = match partition.run(&full, ABSENT, options.max_steps_per_search, &mut steps) {
            SearchResult::Linearizable => KeyOutcome::Linearizable,
            SearchResult::NotLinearizable => KeyOutcome::Fails(Window::FULL),
            SearchResult::Exhausted => match partition.failing_window(options, &mut steps) {
                Some(window) => KeyOutcome::Fails(window),
                None => KeyOutcome::Inconclusive,
            },
        };
        match outcome {
            KeyOutcome::Linearizable => {}
            KeyOutcome::Inconclusive => report.inconclusive.push(key.clone()),
            KeyOutcome::Fails(_) if matches!(report.verdict, Verdict::NotLinearizable(_)) => {
                report.other_failing_keys.push(key.clone());
            }
            KeyOutcome::Fails(window) => {
                let window = if options.shrink { partition.shrink(window, options, &mut steps) } else { window };
                report.verdict = Verdict::NotLinearizable(Box::new(partition.counterexample(history, key, &window)));
            }
        }
        report.steps += steps;
    }
    if report.verdict == Verdict::Linearizable && !report.inconclusive.is_empty() {
        report.verdict = Verdict::Inconclusive;
    }
    Ok(report)
}

enum KeyOutcome {
    Linearizable,
    Fails(Window),
    Inconclusive,
}

// ---------------------------------------------------------------------------------------------
// The model: a register over interned values.

/// Model states. Values are interned per partition; see [`Partition::new`].
type State = u32;
const ABSENT: State = 0;
/// Every value that nobody observes: the model cannot tell them apart.
const OPAQUE: State = 1;
const FIRST_VALUE: State = 2;
/// Window search only: the state before the window is unknown...
const INIT_ANY: State = u32::MAX;
/// ...except that it is known to be present (some value).
const INIT_PRESENT: State = u32::MAX - 1;

/// An operation as the model sees it; a `None` result means "unknown: unconstrained".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MOp {
    Put(State),
    Get(State),
    Cas { expected: State, new: State, succeeded: Option<bool> },
    Delete { deleted: Option<bool> },
}

/// Applies `op` to `s`: the next state, or `None` if the recorded result is impossible in `s`.
/// Symbolic initial states (`INIT_*`) are refined by what the operation reveals; a refinement
/// that would have to remember "not equal to v" is dropped, which only makes the window search
/// more permissive (a window that still fails is still a valid counterexample).
fn step(s: State, op: MOp) -> Option<State> {
    let symbolic = s == INIT_ANY || s == INIT_PRESENT;
    match op {
        MOp::Put(v) => Some(v),
        MOp::Get(r) => match s {
            INIT_ANY => Some(r),
            INIT_PRESENT => (r != ABSENT).then_some(r),
            _ => (s == r).then_some(s),
        },
        MOp::Cas { expected, new, succeeded } => {
            let can_hold = match s {
                INIT_ANY => true,
                INIT_PRESENT => expected != ABSENT,
                _ => s == expected,
            };
            let can_fail = symbolic || s != expected;
            match succeeded {
                Some(true) => can_hold.then_some(new),
                Some(false) if !can_fail => None,
                Some(false) if s == INIT_ANY && expected == ABSENT => Some(INIT_PRESENT),
                Some(false) => Some(s),
                // Unknown: if it can succeed, that is the interesting choice; failing leaves
                // the state unchanged, which the search covers by not linearizing it here.
                None => Some(if can_hold { new } else { s }),
            }
        }
        MOp::Delete { deleted } => {
            let may_be_present = symbolic || s != ABSENT;
            let may_be_absent = s == INIT_ANY || s == ABSENT;
            match deleted {
                Some(true) => may_be_present.then_some(ABSENT),
                Some(false) => may_be_absent.then_some(ABSENT),
                None => Some(ABSENT),
            }
        }
    }
}

/// Whether an operation with this result never changes the register (a read in disguise).
fn is_read_only(op: MOp) -> bool {
    matches!(op, MOp::Get(_) | MOp::Cas { succeeded: Some(false), .. } | MOp::Delete { deleted: Some(false) })
}

// ---------------------------------------------------------------------------------------------
// One partition, and windows of it.

#[derive(Clone, Copy, Debug)]
struct KeyOp {
    /// Index in the history.
    index: usize,
    invoke: Tick,
    /// `Some(complete)` iff the outcome is `Ok`.
    ok_complete: Option<Tick>,
    /// The model operation with its observed result (for `Ok` outcomes).
    known: Option<MOp>,
    /// The model operation with an unconstrained result; `None` for reads (an unknown read
    /// says nothing).
    unknown: Option<MOp>,
}

/// An operation entering a search.
#[derive(Clone, Copy, Debug)]
struct SearchOp {
    /// Position in [`Partition::ops`].
    pos: usize,
    invoke: Tick,
    /// `None`: unknown (completion at infinity).
    complete: Option<Tick>,
    op: MOp,
}

/// Which part of a partition a search looks at (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Window {
    /// Drop operations completed before this tick and start from any state (`None`: keep
    /// everything, start absent).
    start: Option<Tick>,
    /// The history as known at this tick (`None`: at the end).
    cut: Option<Tick>,
    /// Positions of read-only operations dropped while shrinking.
    removed: Vec<usize>,
}

impl Window {
    const FULL: Window = Window { start: None, cut: None, removed: Vec::new() };

    fn init(&self) -> State {
        if self.start.is_some() {
            INIT_ANY
        } else {
            ABSENT
        }
    }
}

struct Partition {
    /// The key's operations that can matter (failed ones are gone), by (invoke, index).
    ops: Vec<KeyOp>,
    /// Distinct completion times of the operations with a result, ascending.
    completions: Vec<Tick>,
    total: usize,
}

impl Partition {
    fn new(history: &History, indices: &[usize]) -> Self {
        // Interning: a value gets its own state only if someone observes it (a get returned it
        // or a compare-and-set expected it); every other value is OPAQUE. BTreeMap keeps ids
        // deterministic.
        let mut observed: BTreeMap<&Value, State> = BTreeMap::new();
        for &i in indices {
            let op = &history.ops[i];
            let seen = match (&op.call, &op.outcome) {
                (_, Outcome::Failed) => None,
                (Call::Get { .. }, Outcome::Ok(Return::Get { value: Some(v), .. })) => Some(v),
                (Call::Cas { expected: Some(e), .. }, _) => Some(e),
                _ => None,
            };
            if let Some(v) = seen {
                let next = FIRST_VALUE + observed.len() as State;
                observed.entry(v).or_insert(next);
            }
        }
        let id = |v: &Value| observed.get(v).copied().unwrap_or(OPAQUE);
        let opt_id = |v: &Option<Value>| v.as_ref().map_or(ABSENT, id);

        let mut ops = Vec::new();
        for &index in indices {
            let op = &history.ops[index];
            let (known, unknown) = match (&op.call, &op.outcome) {
                (_, Outcome::Failed) => continue,
                (Call::Put { value, .. }, outcome) => {
                    let m = MOp::Put(id(value));
                    (matches!(outcome, Outcome::Ok(_)).then_some(m), Some(m))
                }
                (Call::Get { .. }, Outcome::Ok(Return::Get { value, .. })) => (Some(MOp::Get(opt_id(value))), None),
                (Call::Get { .. }, _) => continue,
                (Call::Cas { expected, new, .. }, outcome) => {
                    let (expected, new) = (opt_id(expected), id(new));
                    let known = match outcome {
                        Outcome::Ok(Return::Cas { succeeded, .. }) => {
                            Some(MOp::Cas { expected, new, succeeded: Some(*succeeded) })
                        }
                        _ => None,
                    };
                    (known, Some(MOp::Cas { expected, new, succeeded: None }))
                }
                (Call::Delete { .. }, outcome) => {
                    let known = match outcome {
                        Outcome::Ok(Return::Delete { deleted, .. }) => Some(MOp::Delete { deleted: Some(*deleted) }),
                        _ => None,
                    };
                    (known, Some(MOp::Delete { deleted: None }))
                }
            };
            let ok_complete = known.map(|_| op.complete);
            ops.push(KeyOp { index, invoke: op.invoke, ok_complete, known, unknown });
        }
        ops.sort_by_key(|o| (o.invoke, o.index));
        let mut completions: Vec<Tick> = ops.iter().filter_map(|o| o.ok_complete).collect();
        completions.sort_unstable();
        completions.dedup();
        Partition { ops, completions, total: indices.len() }
    }

    /// The operations of a window, ready to search.
    fn view(&self, w: &Window) -> Vec<SearchOp> {
        let known_at_cut = |o: &KeyOp| o.ok_complete.filter(|&c| w.cut.is_none_or(|t| c <= t));
        // The last completion among the dropped operations: known operations invoked no later
        // than it may have been linearized before a dropped one, so they lose their results.
        let last_dropped =
            w.start.and_then(|s| self.ops.iter().filter_map(|o| known_at_cut(o).filter(|&c| c < s)).max());
        let mut out = Vec::with_capacity(self.ops.len());
        for (pos, o) in self.ops.iter().enumerate() {
            if w.cut.is_some_and(|t| o.invoke > t) || w.removed.contains(&pos) {
                continue;
            }
            match known_at_cut(o) {
                Some(c) if w.start.is_some_and(|s| c < s) => {}
                Some(c) if last_dropped.is_none_or(|d| o.invoke > d) => {
                    out.push(SearchOp { pos, invoke: o.invoke, complete: Some(c), op: o.known.expect("known") });
                }
                _ => {
                    if let Some(op) = o.unknown {
                        out.push(SearchOp { pos, invoke: o.invoke, complete: None, op });
                    }
                }
            }
        }
        // A value that no operation of this view observes is as good as OPAQUE here (a window
        // often drops the reads of values that old unknown writes wrote), which makes those
        // writes interchangeable.
        let mut observed = BTreeSet::new();
        for so in &out {
            match so.op {
                MOp::Get(v) | MOp::Cas { expected: v, .. } => {
                    observed.insert(v);
                }
                MOp::Put(_) | MOp::Delete { .. } => {}
            }
        }
        let blur = |v: State| if v >= FIRST_VALUE && !observed.contains(&v) { OPAQUE } else { v };
        for so in &mut out {
            so.op = match so.op {
                MOp::Put(v) => MOp::Put(blur(v)),
                MOp::Cas { expected, new, succeeded } => MOp::Cas { expected, new: blur(new), succeeded },
                op => op,
            };
        }
        out
    }

    fn run(&self, view: &[SearchOp], init: State, budget: u64, steps: &mut u64) -> SearchResult {
        let (result, spent) = search(view, init, budget);
        *steps += spent;
        result
    }

    fn fails(&self, w: &Window, budget: u64, steps: &mut u64) -> bool {
        self.run(&self.view(w), w.init(), budget, steps) == SearchResult::NotLinearizable
    }

    /// Slides windows of `window_ops` completions, overlapping by half, over the partition;
    /// returns the first that fails.
    fn failing_window(&self, options: &LinearizabilityOptions, steps: &mut u64) -> Option<Window> {
        let c = &self.completions;
        let width = options.window_ops.max(2);
        let mut first = 0;
        while first < c.len() {
            let last = (first + width - 1).min(c.len() - 1);
            let w = Window { start: Some(c[first]), cut: Some(c[last]), removed: Vec::new() };
            if self.fails(&w, options.max_steps_per_window, steps) {
                return Some(w);
            }
            if last + 1 == c.len() {
                break;
            }
            first += width / 2;
        }
        None
    }

    /// Shrinks a failing window; see the module documentation.
    fn shrink(&self, failing: Window, options: &LinearizabilityOptions, steps: &mut u64) -> Window {
        let budget = options.max_steps_per_search;
        let c = &self.completions;
        if c.is_empty() {
            return failing;
        }
        // 1. The earliest failing cut (the window's own cut fails).
        let hi = failing.cut.map_or(c.len() - 1, |t| c.partition_point(|&x| x <= t) - 1);
        let lo = failing.start.map_or(0, |s| c.partition_point(|&x| x < s));
        let mut w = failing.clone();
        if lo <= hi {
            let i = lo
                + first_true(hi - lo, |i| {
                    self.fails(&Window { cut: Some(c[lo + i]), ..failing.clone() }, budget, steps)
                });
            w.cut = Some(c[i]);
        }
        // 2. The latest failing start, among completion times not after the cut.
        let cut = w.cut.expect("set above");
        let first = failing.start.map_or(0, |s| c.partition_point(|&x| x < s));
        let last = c.partition_point(|&x| x <= cut);
        let starts = &c[first.min(last)..last];
        let fails_from =
            |i: usize, steps: &mut u64| self.fails(&Window { start: Some(starts[i]), ..w.clone() }, budget, steps);
        if !starts.is_empty() && (failing.start == Some(starts[0]) || fails_from(0, steps)) {
            let n = starts.len();
            let k = first_true(n - 1, |i| !fails_from(i + 1, steps));
            w.start = Some(starts[k]);
        }
        // 3. Drop read-only operations one at a time, latest first.
        let view = self.view(&w);
        if view.len() <= options.max_greedy_ops {
            for so in view.iter().rev() {
                if so.complete.is_some() && is_read_only(so.op) {
                    w.removed.push(so.pos);
                    if !self.fails(&w, budget, steps) {
                        w.removed.pop();
                    }
                }
            }
        }
        w
    }

    fn counterexample(&self, history: &History, key: &Key, w: &Window) -> Counterexample {
        let ops = self
            .view(w)
            .iter()
            .map(|so| {
                let k = &self.ops[so.pos];
                CounterexampleOp {
                    index: k.index,
                    op: history.ops[k.index].clone(),
                    as_unknown: k.ok_complete.is_some() && so.complete.is_none(),
                }
            })
            .collect();
        let cut = w.cut.unwrap_or_else(|| self.completions.last().copied().unwrap_or(0));
        Counterexample { key: key.clone(), cut, window_start: w.start, ops, key_ops: self.total }
    }
}

/// The smallest `i` in `0..=last` with `pred(i)`, given that `pred` is monotone (false…true) and
/// `pred(last)` holds (it is not evaluated).
fn first_true(last: usize, mut pred: impl FnMut(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, last);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

// ---------------------------------------------------------------------------------------------
// The search.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SearchResult {
    Linearizable,
    NotLinearizable,
    /// The step budget ran out.
    Exhausted,
}

/// A multiplicative hasher for cache keys, which are already uniformly distributed fingerprints:
/// SipHash would only cost time.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(26) ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// SplitMix64: fixed pseudo-random words for Zobrist fingerprints (deterministic, no RNG).
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const NIL: u32 = u32::MAX;
/// [`Scan::Unknown`]: the first slot of the group.
const START: u32 = u32::MAX - 1;

/// Doubly linked list over nodes `0..len` with a head sentinel at `len`, supporting
/// unlink/relink in LIFO order (dancing links).
struct Links {
    next: Vec<u32>,
    prev: Vec<u32>,
}

impl Links {
    fn new(len: usize) -> Self {
        let len = len as u32;
        let mut next: Vec<u32> = (1..=len).map(|i| if i == len { NIL } else { i }).collect();
        next.push(if len == 0 { NIL } else { 0 });
        let mut prev: Vec<u32> = (0..len).map(|i| if i == 0 { len } else { i - 1 }).collect();
        prev.push(NIL);
        Links { next, prev }
    }
    fn head(&self) -> u32 {
        (self.next.len() - 1) as u32
    }
    fn first(&self) -> u32 {
        self.next[self.head() as usize]
    }
    fn next(&self, x: u32) -> u32 {
        self.next[x as usize]
    }
    fn unlink(&mut self, x: u32) {
        let (p, n) = (self.prev[x as usize], self.next[x as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }
    fn relink(&mut self, x: u32) {
        let (p, n) = (self.prev[x as usize], self.next[x as usize]);
        self.next[p as usize] = x;
        if n != NIL {
            self.prev[n as usize] = x;
        }
    }
}

/// What undoing one choice restores.
struct Frame {
    op: u32,
    state: State,
    need: Option<State>,
    setter: u32,
    setter_pre: State,
    /// The scan bound when the operation was chosen (unknown operations only).
    bound: Tick,
}

/// The cache key of a configuration: the fingerprint of the linearized set, the state, and the
/// pending "need" restriction (mixed into the fingerprint when present).
fn cache_key(fp: (u64, u64), state: State, need: Option<State>) -> (u64, u64) {
    match need {
        None => (fp.0, fp.1 | u64::from(state)),
        Some(p) => (fp.0 ^ splitmix64(0x6e65_6564_0000_0000 | u64::from(p)), fp.1 | 1 << 32 | u64::from(state)),
    }
}

/// Where the scan for the next operation to linearize stands.
#[derive(Clone, Copy)]
enum Scan {
    /// Walking the calls of known operations (node in `entries`) up to the first return.
    Known(u32),
    /// Then walking the classes of unknown operations whose next unused member was invoked no
    /// later than `bound`, the time of that first return: group by group (`stage` indexes
    /// [`Search::group_at`]), `slot` in the group (`START`: its first).
    Unknown { stage: u32, slot: u32, bound: Tick },
}

/// The state of one Wing–Gong–Lowe search.
///
/// Known operations (with a result) live in a time-ordered list of call and return entries, as
/// in Porcupine. Unknown operations have no return, so they are kept apart and tried only after
/// every known candidate: an unknown operation is then used only where the known ones cannot
/// explain the history without it. Unknown operations with an identical model operation
/// (typically timed-out puts of values nobody read) are interchangeable, so only the
/// earliest-invoked unused one of each class is ever tried. Classes of compare-and-sets are
/// grouped by expected value: only the group matching the current state can change anything,
/// so the others are not even looked at (timed-out compare-and-sets pile up over a long run).
struct Search<'a> {
    ops: &'a [SearchOp],
    entries: Vec<(Tick, u8, u32)>,
    known: Links,
    call_node: Vec<u32>,
    ret_node: Vec<u32>,
    /// Classes of interchangeable unknown operations (same model operation), numbered in the
    /// order of their first member's invoke; members by invoke. Only the first `used[c]`
    /// members of a class are ever linearized, and only classes with members left are linked.
    members: Vec<Vec<u32>>,
    used: Vec<u32>,
    class: Vec<u32>,
    /// Group 0: puts and deletes; then one group per expected value of compare-and-sets. Each
    /// group links its classes that have members left, by first member's invoke.
    groups: Vec<Links>,
    group_classes: Vec<Vec<u32>>,
    /// Group and position in it of each class.
    group_of: Vec<u32>,
    slot_of: Vec<u32>,
    /// The compare-and-set group expecting each (concrete) state, or `NIL`.
    cas_group: Vec<u32>,
    zobrist: Vec<(u64, u64)>,
    remaining_known: usize,
    state: State,
    /// `Some(p)` when the last operation linearized is unknown and `p` is the state before it.
    /// The next operation must *need* it: one that would also be valid in `p` with the same
    /// outcome could go first, with the unknown one after it (read-only) or at the end
    /// (overwritten); the search reaches that ordering from the parent node, so this one is
    /// skipped. Part of the cache key, since it restricts the next move.
    need: Option<State>,
    /// The unknown operation that set the current state (`NIL` if a known one did), and the
    /// state before it.
    setter: u32,
    setter_pre: State,
    fingerprint: (u64, u64),
    stack: Vec<Frame>,
    cache: HashSet<(u64, u64), BuildHasherDefault<FingerprintHasher>>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [SearchOp], init: State) -> Self {
        let n = ops.len();
        assert!(n < (u32::MAX / 2) as usize, "partition too large");
        // At equal times calls sort before returns, so operations that touch at one tick are
        // concurrent.
        let mut entries: Vec<(Tick, u8, u32)> = Vec::with_capacity(2 * n);
        let mut unknowns: Vec<u32> = Vec::new(); // by (invoke, position)
        for (i, o) in ops.iter().enumerate() {
            match o.complete {
                Some(c) => {
                    entries.push((o.invoke, 0, i as u32));
                    entries.push((c, 1, i as u32));
                }
                None => unknowns.push(i as u32),
            }
        }
        entries.sort_unstable();
        unknowns.sort_unstable_by_key(|&i| (ops[i as usize].invoke, i));
        let mut members: Vec<Vec<u32>> = Vec::new();
        let mut call_node = vec![NIL; n];
        let mut ret_node = vec![NIL; n];
        for (pos, &(_, kind, op)) in entries.iter().enumerate() {
            if kind == 0 {
                call_node[op as usize] = pos as u32;
            } else {
                ret_node[op as usize] = pos as u32;
            }
        }
        let mut class = vec![NIL; n];
        let mut classes: BTreeMap<(u8, State, State, u8), u32> = BTreeMap::new();
        for &op in &unknowns {
            let key = match ops[op as usize].op {
                MOp::Put(v) => (0, v, 0, 0),
                MOp::Get(v) => (1, v, 0, 0),
                MOp::Cas { expected, new, succeeded } => (2, expected, new, succeeded.map_or(2, u8::from)),
                MOp::Delete { deleted } => (3, 0, 0, deleted.map_or(2, u8::from)),
            };
            let next = classes.len() as u32;
            let c = *classes.entry(key).or_insert(next);
            if c as usize == members.len() {
                members.push(Vec::new());
            }
            class[op as usize] = c;
            members[c as usize].push(op);
        }
        let mut group_classes: Vec<Vec<u32>> = vec![Vec::new()];
        let mut group_of = Vec::with_capacity(members.len());
        let mut slot_of = Vec::with_capacity(members.len());
        let mut cas_group: Vec<u32> = Vec::new();
        for m in &members {
            let g = match ops[m[0] as usize].op {
                MOp::Cas { expected, .. } if expected < INIT_PRESENT => {
                    let e = expected as usize;
                    if cas_group.len() <= e {
                        cas_group.resize(e + 1, NIL);
                    }
                    if cas_group[e] == NIL {
                        cas_group[e] = group_classes.len() as u32;
                        group_classes.push(Vec::new());
                    }
                    cas_group[e]
                }
                _ => 0,
            };
            group_of.push(g);
            slot_of.push(group_classes[g as usize].len() as u32);
            group_classes[g as usize].push((group_of.len() - 1) as u32);
        }
        Search {
            ops,
            known: Links::new(entries.len()),
            entries,
            call_node,
            ret_node,
            used: vec![0; members.len()],
            members,
            class,
            groups: group_classes.iter().map(|g| Links::new(g.len())).collect(),
            group_classes,
            group_of,
            slot_of,
            cas_group,
            zobrist: (0..n as u64)
                .map(|i| (splitmix64(2 * i), splitmix64(2 * i + 1) & 0xffff_fffe_0000_0000))
                .collect(),
            remaining_known: ops.iter().filter(|o| o.complete.is_some()).count(),
            state: init,
            need: None,
            setter: NIL,
            setter_pre: ABSENT,
            fingerprint: (0, 0),
            stack: Vec::new(),
            cache: HashSet::default(),
        }
    }

    /// Linearizes `op` next if the model allows it and the resulting configuration is new.
    fn try_linearize(&mut self, op: u32, bound: Tick) -> bool {
        let o = self.ops[op as usize];
        let unknown = o.complete.is_none();
        let Some(next) = step(self.state, o.op) else { return false };
        // An unknown operation that changes nothing is better left for the end.
        if unknown && next == self.state {
            return false;
        }
        if let Some(p) = self.need {
            // A known operation valid in `p` is either read-only or ends in the same state.
            match step(p, o.op) {
                Some(_) if !unknown => return false,
                Some(x) if x == next => return false,
                _ => {}
            }
        }
        let need = unknown.then_some(self.state);
        let z = self.zobrist[op as usize];
        let fp = (self.fingerprint.0 ^ z.0, self.fingerprint.1 ^ z.1);
        let key = cache_key(fp, next, need);
        // This operation overwrites the effect of an unknown operation `u`. If the same
        // configuration without `u` was reached before, it dominates this one (same state, one
        // more operation still available), so this one cannot succeed where it failed.
        // Unknown operations are tried last, so the configuration without `u` comes first.
        if next != self.state && self.setter != NIL {
            let zu = self.zobrist[self.setter as usize];
            let without = cache_key((fp.0 ^ zu.0, fp.1 ^ zu.1), next, unknown.then_some(self.setter_pre));
            if self.cache.contains(&without) {
                return false;
            }
        }
        if !self.cache.insert(key) {
            return false;
        }
        self.stack.push(Frame {
            op,
            state: self.state,
            need: self.need,
            setter: self.setter,
            setter_pre: self.setter_pre,
            bound,
        });
        if next != self.state {
            self.setter = if unknown { op } else { NIL };
            self.setter_pre = self.state;
        }
        self.state = next;
        self.need = need;
        self.fingerprint = fp;
        if unknown {
            let c = self.class[op as usize];
            self.used[c as usize] += 1;
            if self.used[c as usize] as usize == self.members[c as usize].len() {
                self.groups[self.group_of[c as usize] as usize].unlink(self.slot_of[c as usize]);
            }
        } else {
            self.known.unlink(self.call_node[op as usize]);
            self.known.unlink(self.ret_node[op as usize]);
            self.remaining_known -= 1;
        }
        true
    }

    fn symbolic(&self) -> bool {
        self.state == INIT_ANY || self.state == INIT_PRESENT
    }

    /// The groups of unknown classes worth trying in the current state, in order: puts and
    /// deletes, then the compare-and-sets expecting the current state (all of them while the
    /// state is symbolic).
    fn group_at(&self, stage: u32) -> Option<u32> {
        if self.symbolic() {
            return (stage < self.groups.len() as u32).then_some(stage);
        }
        match stage {
            0 => Some(0),
            1 => self.cas_group.get(self.state as usize).copied().filter(|&g| g != NIL),
            _ => None,
        }
    }

    /// Undoes the last choice; returns where the scan resumes, or `None` at the root.
    fn backtrack(&mut self) -> Option<Scan> {
        let Frame { op, state, need, setter, setter_pre, bound } = self.stack.pop()?;
        let z = self.zobrist[op as usize];
        self.fingerprint = (self.fingerprint.0 ^ z.0, self.fingerprint.1 ^ z.1);
        self.state = state;
        self.need = need;
        self.setter = setter;
        self.setter_pre = setter_pre;
        Some(if self.ops[op as usize].complete.is_none() {
            let c = self.class[op as usize];
            let (g, slot) = (self.group_of[c as usize], self.slot_of[c as usize]);
            if self.used[c as usize] as usize == self.members[c as usize].len() {
                self.groups[g as usize].relink(slot);
            }
            self.used[c as usize] -= 1;
            let stage = match g {
                0 => 0,
                g if self.symbolic() => g,
                _ => 1,
            };
            Scan::Unknown { stage, slot: self.groups[g as usize].next(slot), bound }
        } else {
            self.known.relink(self.ret_node[op as usize]);
            let node = self.call_node[op as usize];
            self.known.relink(node);
            self.remaining_known += 1;
            Scan::Known(self.known.next(node))
        })
    }

    fn run(&mut self, budget: u64) -> (SearchResult, u64) {
        let mut scan = Scan::Known(self.known.first());
        let mut steps = 0u64;
        loop {
            // Only unknown operations left: put them at the end (or nowhere).
            if self.remaining_known == 0 {
                return (SearchResult::Linearizable, steps);
            }
            steps += 1;
            if steps > budget {
                return (SearchResult::Exhausted, steps);
            }
            scan = match scan {
                Scan::Known(node) => {
                    // A known operation is left, so its return is ahead: the walk cannot run off.
                    assert_ne!(node, NIL, "scan ran off the list with known operations left");
                    let (time, kind, op) = self.entries[node as usize];
                    if kind == 1 {
                        // The first return: known candidates are exhausted.
                        Scan::Unknown { stage: 0, slot: START, bound: time }
                    } else if self.try_linearize(op, 0) {
                        Scan::Known(self.known.first())
                    } else {
                        Scan::Known(self.known.next(node))
                    }
                }
                Scan::Unknown { stage, slot, bound } => match self.group_at(stage) {
                    Some(g) => {
                        let links = &self.groups[g as usize];
                        let slot = if slot == START { links.first() } else { slot };
                        // Classes are ordered by their first member's invoke: once that is past
                        // the bound, so are all later classes of the group.
                        let class = (slot != NIL).then(|| self.group_classes[g as usize][slot as usize]);
                        match class.filter(|&c| self.ops[self.members[c as usize][0] as usize].invoke <= bound) {
                            Some(c) => {
                                let op = self.members[c as usize][self.used[c as usize] as usize];
                                if self.ops[op as usize].invoke <= bound && self.try_linearize(op, bound) {
                                    Scan::Known(self.known.first())
                                } else {
                                    Scan::Unknown { stage, slot: self.groups[g as usize].next(slot), bound }
                                }
                            }
                            None => Scan::Unknown { stage: stage + 1, slot: START, bound },
                        }
                    }
                    // No candidate is left, yet the operation returning at `bound` is not
                    // linearized: undo the last choice.
                    None => match self.backtrack() {
                        Some(resume) => resume,
                        None => return (SearchResult::NotLinearizable, steps),
                    },
                },
            };
        }
    }
}

/// Wing–Gong–Lowe search over one view; returns the result and the steps spent.
fn search(ops: &[SearchOp], init: State, budget: u64) -> (SearchResult, u64) {
    Search::new(ops, init).run(budget)
}

// ---------------------------------------------------------------------------------------------
// Revisions.

/// A response revision that no correct etcd could have given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionViolation {
    /// Indices in [`History::ops`] of the two operations involved.
    pub earlier: usize,
    pub later: usize,
    pub detail: String,
}

/// At most this many revision violations are reported (the first ones are what matters).
const MAX_REVISION_VIOLATIONS: usize = 100;

/// Checks, over all keys, what the per-key model cannot see about the one global revision:
/// - **real-time order**: if `a` completed before `b` was invoked (both `Ok`), `b`'s header
///   revision is ≥ `a`'s, and > if `b` created a revision (a linearizable store serves `b` at
///   or after the state `a` saw or made; a write always takes a fresh revision);
/// - **one revision per mutating request**: two requests never create the same revision;
/// - **reads see their write**: a get that returned value `v` has a header revision ≥ the
///   revision that wrote `v` (the earliest one, if a value were written twice).
pub fn check_revisions(history: &History) -> Vec<RevisionViolation> {
    let mut out = Vec::new();
    let ok: Vec<(usize, &Operation, &Return)> = history
        .ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match &op.outcome {
            Outcome::Ok(r) => Some((i, op, r)),
            _ => None,
        })
        .collect();

    // Real-time order: sweep invocations in time order, folding in every operation that
    // completed strictly before (equal ticks are concurrent).
    let mut by_complete: Vec<&(usize, &Operation, &Return)> = ok.iter().collect();
    by_complete.sort_by_key(|(i, op, _)| (op.complete, *i));
    let mut by_invoke: Vec<&(usize, &Operation, &Return)> = ok.iter().collect();
    by_invoke.sort_by_key(|(i, op, _)| (op.invoke, *i));
    let mut done = 0;
    let mut max_seen: Option<(Revision, usize)> = None;
    for &&(b, op_b, ret_b) in &by_invoke {
        while done < by_complete.len() && by_complete[done].1.complete < op_b.invoke {
            let (a, _, ret_a) = *by_complete[done];
            if max_seen.is_none_or(|(r, _)| ret_a.revision() > r) {
                max_seen = Some((ret_a.revision(), a));
            }
            done += 1;
        }
        if let Some((r, a)) = max_seen {
            let rb = ret_b.revision();
            let bad = if ret_b.created_revision() { rb <= r } else { rb < r };
            if bad && out.len() < MAX_REVISION_VIOLATIONS {
                out.push(RevisionViolation {
                    earlier: a,
                    later: b,
                    detail: format!(
                        "#{b} started after #{a} completed with revision {r}, but answered revision {rb}{}",
                        if ret_b.created_revision() { " for a write" } else { "" }
                    ),
                });
            }
        }
    }

    // One revision per mutating request; and the earliest revision that wrote each value.
    let mut created: BTreeMap<Revision, usize> = BTreeMap::new();
    let mut written_at: BTreeMap<&Value, (Revision, usize)> = BTreeMap::new();
    for &(i, op, ret) in &ok {
        if !ret.created_revision() {
            continue;
        }
        if let Some(&first) = created.get(&ret.revision()) {
            if out.len() < MAX_REVISION_VIOLATIONS {
                out.push(RevisionViolation {
                    earlier: first,
                    later: i,
                    detail: format!("#{first} and #{i} both created revision {}", ret.revision()),
                });
            }
        } else {
            created.insert(ret.revision(), i);
        }
        let value = match &op.call {
            Call::Put { value, .. } => Some(value),
            Call::Cas { new, .. } => Some(new),
            _ => None,
        };
        if let Some(v) = value {
            let e = written_at.entry(v).or_insert((ret.revision(), i));
            if ret.revision() < e.0 {
                *e = (ret.revision(), i);
            }
        }
    }
    for &(i, _, ret) in &ok {
        if let Return::Get { value: Some(v), revision } = ret {
            if let Some(&(w, wi)) = written_at.get(v) {
                if *revision < w && out.len() < MAX_REVISION_VIOLATIONS {
                    out.push(RevisionViolation {
                        earlier: wi,
                        later: i,
                        detail: format!("#{i} read {v} at revision {revision}, but #{wi} wrote it at revision {w}"),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ClientId;
    use proptest::prelude::*;

    // --- Builders -----------------------------------------------------------------------------

    fn op(client: ClientId, invoke: Tick, complete: Tick, call: Call, outcome: Outcome) -> Operation {
        Operation { client, invoke, complete, call, outcome }
    }
    fn put(c: ClientId, i: Tick, e: Tick, k: &str, v: &str, rev: Revision) -> Operation {
        op(c, i, e, Call::Put { key: k.into(), value: v.into() }, Outcome::Ok(Return::Put { revision: rev }))
    }
    fn put_unknown(c: ClientId, i: Tick, e: Tick, k: &str, v: &str) -> Operation {
        op(c, i, e, Call::Put { key: k.into(), value: v.into() }, Outcome::Unknown)
    }
    fn put_failed(c: ClientId, i: Tick, e: Tick, k: &str, v: &str) -> Operation {
        op(c, i, e, Call::Put { key: k.into(), value: v.into() }, Outcome::Failed)
    }
    fn get(c: ClientId, i: Tick, e: Tick, k: &str, v: Option<&str>, rev: Revision) -> Operation {
        op(c, i, e, Call::Get { key: k.into() }, Outcome::Ok(Return::Get { value: v.map(Value::from), revision: rev }))
    }
    #[allow(clippy::too_many_arguments)] // mirrors the call and its result, in order
    fn cas(c: ClientId, i: Tick, e: Tick, k: &str, exp: Option<&str>, new: &str, ok: bool, rev: Revision) -> Operation {
        op(
            c,
            i,
            e,
            Call::Cas { key: k.into(), expected: exp.map(Value::from), new: new.into() },
            Outcome::Ok(Return::Cas { succeeded: ok, revision: rev }),
        )
    }
    fn cas_unknown(c: ClientId, i: Tick, e: Tick, k: &str, exp: Option<&str>, new: &str) -> Operation {
        op(c, i, e, Call::Cas { key: k.into(), expected: exp.map(Value::from), new: new.into() }, Outcome::Unknown)
    }
    fn del(c: ClientId, i: Tick, e: Tick, k: &str, deleted: bool, rev: Revision) -> Operation {
        op(c, i, e, Call::Delete { key: k.into() }, Outcome::Ok(Return::Delete { deleted, revision: rev }))
    }

    fn check(ops: Vec<Operation>) -> LinearizabilityReport {
        check_linearizability(&History::new(ops), &LinearizabilityOptions::default()).expect("well-formed")
    }
    fn assert_linearizable(ops: Vec<Operation>) {
        let r = check(ops);
        assert_eq!(r.verdict, Verdict::Linearizable, "{r:#?}");
    }
    fn counterexample(ops: Vec<Operation>) -> Counterexample {
        match check(ops).verdict {
            Verdict::NotLinearizable(cx) => *cx,
            v => panic!("expected a violation, got {v:?}"),
        }
    }

    // --- Histories that must pass -------------------------------------------------------------

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert_linearizable(vec![]);
        assert_linearizable(vec![
            get(1, 0, 1, "k", None, 1),
            put(1, 2, 3, "k", "a", 2),
            get(2, 4, 5, "k", Some("a"), 2),
            cas(1, 6, 7, "k", Some("a"), "b", true, 3),
            cas(2, 8, 9, "k", Some("a"), "c", false, 3),
            cas(2, 10, 11, "k", None, "d", false, 3),
            del(1, 12, 13, "k", true, 4),
            del(1, 14, 15, "k", false, 4),
            cas(2, 16, 17, "k", None, "e", true, 5),
            get(1, 18, 19, "k", Some("e"), 5),
        ]);
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // Two overlapping puts; readers overlapping both see either value; a later read sees the
        // one linearized last, and both orders are fine.
        for last in ["a", "b"] {
            assert_linearizable(vec![
                put(1, 0, 10, "k", "a", 2),
                put(2, 1, 9, "k", "b", 3),
                get(3, 2, 8, "k", Some(if last == "a" { "b" } else { "a" }), 3),
                get(4, 11, 12, "k", Some(last), 3),
            ]);
        }
        // A read overlapping a write may see the old or the new value.
        assert_linearizable(vec![
            put(1, 0, 1, "k", "a", 2),
            put(1, 2, 10, "k", "b", 3),
            get(2, 3, 4, "k", Some("b"), 3),
            get(3, 5, 6, "k", Some("b"), 3),
        ]);
        assert_linearizable(vec![
            put(1, 0, 1, "k", "a", 2),
            put(1, 2, 10, "k", "b", 3),
            get(2, 3, 4, "k", Some("a"), 2),
            get(3, 5, 6, "k", Some("b"), 3),
        ]);
        // Operations touching at one tick are concurrent.
        assert_linearizable(vec![put(1, 0, 5, "k", "a", 2), get(2, 5, 6, "k", None, 1)]);
    }

    #[test]
    fn unknown_operations_may_or_may_not_have_taken_effect() {
        // Took effect, long after the client gave up.
        assert_linearizable(vec![
            put_unknown(1, 0, 3, "k", "a"),
            get(2, 10, 11, "k", None, 1),
            get(2, 20, 21, "k", Some("a"), 2),
            get(2, 30, 31, "k", Some("a"), 2),
        ]);
        // Never took effect.
        assert_linearizable(vec![put_unknown(1, 0, 3, "k", "a"), get(2, 10, 11, "k", None, 1)]);
        // An unknown compare-and-set that succeeded, and one that did not.
        assert_linearizable(vec![
            put(1, 0, 1, "k", "a", 2),
            cas_unknown(2, 2, 4, "k", Some("a"), "b"),
            cas_unknown(3, 2, 4, "k", Some("zz"), "c"),
            get(1, 5, 6, "k", Some("b"), 3),
        ]);
        // A chain of unknown compare-and-sets, each needing the one before.
        assert_linearizable(vec![
            put(1, 0, 1, "k", "a", 2),
            cas_unknown(2, 2, 3, "k", Some("a"), "b"),
            cas_unknown(3, 2, 3, "k", Some("b"), "c"),
            get(1, 10, 11, "k", Some("c"), 4),
        ]);
        // An unknown put is the only explanation for a delete that found something.
        assert_linearizable(vec![put_unknown(1, 0, 3, "k", "a"), del(2, 10, 11, "k", true, 2)]);
        // Unknown reads say nothing.
        assert_linearizable(vec![
            put(1, 0, 1, "k", "a", 2),
            op(2, 2, 3, Call::Get { key: "k".into() }, Outcome::Unknown),
        ]);
    }

    #[test]
    fn keys_are_independent() {
        // Per key each order is fine (it would not be on a single register).
        assert_linearizable(vec![
            put(1, 0, 1, "x", "a", 2),
            put(1, 2, 3, "y", "b", 3),
            get(2, 4, 5, "x", Some("a"), 3),
            get(2, 6, 7, "y", Some("b"), 3),
        ]);
    }

    // --- Histories that must fail --------------------------------------------------------------

    #[test]
    fn a_stale_read_is_rejected() {
        let cx =
            counterexample(vec![put(1, 0, 1, "k", "a", 2), put(1, 2, 3, "k", "b", 3), get(2, 4, 5, "k", Some("a"), 2)]);
        assert_eq!(cx.key, Key::from("k"));
        assert!(cx.ops.iter().any(|o| o.index == 2), "{cx}");
    }

    #[test]
    fn a_lost_write_is_rejected() {
        // Acknowledged, then gone: later reads see the key as it was before.
        let cx = counterexample(vec![
            put(1, 0, 1, "k", "a", 2),
            get(2, 2, 3, "k", Some("a"), 2),
            put(1, 4, 5, "k", "b", 3),
            get(2, 6, 7, "k", Some("a"), 3),
        ]);
        assert!(cx.ops.iter().any(|o| o.index == 3), "{cx}");
        let cx = counterexample(vec![put(1, 0, 1, "k", "a", 2), get(2, 2, 3, "k", None, 2)]);
        assert_eq!(cx.ops.len(), 2, "{cx}");
    }

    #[test]
    fn a_failed_write_that_took_effect_is_rejected() {
        counterexample(vec![put_failed(1, 0, 1, "k", "a"), get(2, 2, 3, "k", Some("a"), 2)]);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_rejected() {
        counterexample(vec![put(1, 0, 1, "k", "a", 2), get(2, 0, 3, "k", Some("zz"), 2)]);
    }

    #[test]
    fn two_winners_of_one_compare_and_set_are_rejected() {
        counterexample(vec![
            put(1, 0, 1, "k", "a", 2),
            cas(2, 2, 10, "k", Some("a"), "b", true, 3),
            cas(3, 2, 10, "k", Some("a"), "c", true, 4),
        ]);
    }

    #[test]
    fn a_delete_of_a_key_never_written_is_rejected() {
        counterexample(vec![del(1, 0, 1, "k", true, 2)]);
    }

    #[test]
    fn a_non_monotonic_read_pair_is_rejected() {
        // A client sees b, then another client (strictly later) sees a again.
        counterexample(vec![
            put(1, 0, 1, "k", "a", 2),
            put(1, 2, 20, "k", "b", 3),
            get(2, 3, 4, "k", Some("b"), 3),
            get(3, 5, 6, "k", Some("a"), 3),
        ]);
    }

    #[test]
    fn the_counterexample_is_short_even_deep_in_a_long_history() {
        // 600 sequential operations on one key with a stale read in the middle; concurrent noise
        // on another key.
        let mut ops = Vec::new();
        let mut t = 0;
        let mut rev = 1;
        for i in 0..200 {
            rev += 1;
            ops.push(put(1, t, t + 1, "k", &format!("v{i}"), rev));
            ops.push(get(2, t + 2, t + 3, "k", Some(&format!("v{i}")), rev));
            let stale = if i == 120 { format!("v{}", i - 1) } else { format!("v{i}") };
            ops.push(get(3, t + 4, t + 5, "k", Some(&stale), rev));
            ops.push(put(4, t, t + 5, "other", &format!("o{i}"), rev));
            t += 6;
        }
        let cx = counterexample(ops.clone());
        assert_eq!(cx.key, Key::from("k"));
        assert!(cx.ops.len() <= 4, "{cx}");
        // The stale read (index 4·120 + 2) is in it, and the cut is at its completion.
        assert!(cx.ops.iter().any(|o| o.index == 482), "{cx}");
        assert_eq!(cx.cut, ops[482].complete);
        assert!(cx.window_start.is_some());
        let text = cx.to_string();
        assert!(text.contains("get(\"k\") -> \"v119\""), "{text}");
    }

    #[test]
    fn a_tiny_budget_gives_inconclusive_not_a_verdict() {
        let mut ops = Vec::new();
        for c in 0..8 {
            ops.push(put_unknown(c, c, 100, "k", &format!("u{c}")));
        }
        ops.push(get(9, 200, 201, "k", Some("nope"), 1));
        let options = LinearizabilityOptions { max_steps_per_search: 5, ..Default::default() };
        let r = check_linearizability(&History::new(ops), &options).unwrap();
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert_eq!(r.inconclusive, vec![Key::from("k")]);
    }

    #[test]
    fn malformed_histories_are_refused() {
        let r = check_linearizability(
            &History::new(vec![put(1, 0, 10, "k", "a", 2), put(1, 5, 12, "k", "b", 3)]),
            &LinearizabilityOptions::default(),
        );
        assert!(matches!(r, Err(HistoryError::ClientOverlap { .. })));
    }

    // --- The model on symbolic starting states --------------------------------------------------

    #[test]
    fn window_states_are_refined_soundly() {
        let a = FIRST_VALUE;
        assert_eq!(step(INIT_ANY, MOp::Get(a)), Some(a));
        assert_eq!(step(INIT_PRESENT, MOp::Get(ABSENT)), None);
        assert_eq!(step(INIT_ANY, MOp::Cas { expected: ABSENT, new: a, succeeded: Some(false) }), Some(INIT_PRESENT));
        assert_eq!(step(INIT_PRESENT, MOp::Cas { expected: ABSENT, new: a, succeeded: Some(true) }), None);
        assert_eq!(step(INIT_PRESENT, MOp::Delete { deleted: Some(false) }), None);
        assert_eq!(step(INIT_ANY, MOp::Delete { deleted: Some(true) }), Some(ABSENT));
        assert_eq!(step(OPAQUE, MOp::Cas { expected: a, new: a + 1, succeeded: Some(true) }), None);
    }

    // --- Revisions ------------------------------------------------------------------------------

    #[test]
    fn revisions_follow_real_time() {
        let good = History::new(vec![
            put(1, 0, 1, "x", "a", 2),
            get(2, 2, 3, "y", None, 2),
            put(1, 4, 5, "y", "b", 3),
            get(2, 6, 7, "x", Some("a"), 3),
        ]);
        assert_eq!(check_revisions(&good), vec![]);
        // A read on another key served from an older state (per key it is linearizable).
        let stale = History::new(vec![put(1, 0, 1, "x", "a", 2), get(2, 2, 3, "y", None, 1)]);
        let v = check_revisions(&stale);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!((v[0].earlier, v[0].later), (0, 1));
        // A write that does not take a fresh revision.
        let reused = History::new(vec![put(1, 0, 1, "x", "a", 2), put(2, 2, 3, "y", "b", 2)]);
        assert_eq!(check_revisions(&reused).len(), 2);
        // A read that saw a value at a revision before it was written.
        let early = History::new(vec![put(1, 0, 10, "x", "a", 5), get(2, 0, 10, "x", Some("a"), 4)]);
        assert_eq!(check_revisions(&early).len(), 1);
    }

    // --- Property tests ---------------------------------------------------------------------------

    /// A generated register operation: (kind, key, value selector, applied-if-unknown, outcome).
    fn arb_steps() -> impl Strategy<Value = Vec<(u8, u8, u8, bool, u8)>> {
        prop::collection::vec((0u8..4, 0u8..3, 0u8..8, any::<bool>(), 0u8..10), 1..80)
    }

    /// Runs `steps` sequentially (no overlap) against a real register per key and records the
    /// history. Outcome selector: 0 = failed (not applied), 1 = unknown (applied or not),
    /// otherwise ok. With `only_ok` every operation is ok.
    fn sequential_history(steps: &[(u8, u8, u8, bool, u8)], only_ok: bool) -> History {
        let mut state: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut ops = Vec::new();
        let mut rev: Revision = 1;
        for (i, &(kind, key, sel, applied, outcome)) in steps.iter().enumerate() {
            let key = format!("k{key}");
            let cur = state.entry(key.clone()).or_default().clone();
            let fresh = format!("v{i}");
            let (t0, t1) = (10 * i as Tick, 10 * i as Tick + 5);
            let outcome = if only_ok { 2 } else { outcome };
            let apply = match outcome {
                0 => false,
                1 => applied,
                _ => true,
            };
            let call = match kind {
                0 => Call::Put { key: key.as_str().into(), value: fresh.as_str().into() },
                1 => Call::Get { key: key.as_str().into() },
                2 => {
                    // Expect the current value half the time, something else otherwise.
                    let expected = if sel % 2 == 0 { cur.clone() } else { Some(format!("v{sel}x")) };
                    Call::Cas {
                        key: key.as_str().into(),
                        expected: expected.map(Value::from),
                        new: fresh.as_str().into(),
                    }
                }
                _ => Call::Delete { key: key.as_str().into() },
            };
            let ret = match &call {
                Call::Put { .. } => {
                    if apply {
                        rev += 1;
                        state.insert(key.clone(), Some(fresh.clone()));
                    }
                    Return::Put { revision: rev }
                }
                Call::Get { .. } => Return::Get { value: cur.clone().map(Value::from), revision: rev },
                Call::Cas { expected, .. } => {
                    let holds = expected.as_ref().map(|v| v.0.clone()) == cur.clone().map(String::into_bytes);
                    if apply && holds {
                        rev += 1;
                        state.insert(key.clone(), Some(fresh.clone()));
                    }
                    Return::Cas { succeeded: holds, revision: rev }
                }
                Call::Delete { .. } => {
                    let existed = cur.is_some();
                    if apply && existed {
                        rev += 1;
                        state.insert(key.clone(), None);
                    }
                    Return::Delete { deleted: existed, revision: rev }
                }
            };
            let outcome = match outcome {
                0 => Outcome::Failed,
                1 => Outcome::Unknown,
                _ => Outcome::Ok(ret),
            };
            ops.push(op(i as ClientId % 5, t0, t1, call, outcome));
        }
        History::new(ops)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn sequential_register_histories_pass(steps in arb_steps()) {
            let h = sequential_history(&steps, false);
            let r = check_linearizability(&h, &LinearizabilityOptions::default()).unwrap();
            prop_assert_eq!(r.verdict, Verdict::Linearizable);
        }

        #[test]
        fn a_corrupted_read_fails(steps in arb_steps(), pick in any::<prop::sample::Index>()) {
            let mut h = sequential_history(&steps, true);
            let reads: Vec<usize> = (0..h.ops.len()).filter(|&i| matches!(h.ops[i].call, Call::Get { .. })).collect();
            prop_assume!(!reads.is_empty());
            let i = reads[pick.index(reads.len())];
            let Outcome::Ok(Return::Get { value, .. }) = &mut h.ops[i].outcome else { unreachable!() };
            // Another value: absent ↔ present, or a value that was never the current one there.
            *value = match value.take() {
                None => Some(Value::from("corrupt")),
                Some(_) => None,
            };
            let r = check_linearizability(&h, &LinearizabilityOptions::default()).unwrap();
            let Verdict::NotLinearizable(cx) = r.verdict else {
                return Err(TestCaseError::fail(format!("corruption of #{i} not caught")));
            };
            prop_assert!(cx.ops.iter().any(|o| o.index == i), "{}", cx);
        }
    }

    // --- Against a brute-force oracle ------------------------------------------------------------

    /// Linearizability by exhaustive enumeration on real values: an operation may go next iff no
    /// remaining operation with a result completed strictly before it was invoked; unknown ones
    /// may also never happen; failed ones never do.
    fn brute_force(h: &History) -> bool {
        brute_force_from(h, &BTreeMap::new())
    }

    /// The same, with the keys of `init` starting in the given states (others absent).
    fn brute_force_from(h: &History, init: &BTreeMap<Key, Option<Value>>) -> bool {
        fn go(ops: &[&Operation], done: &mut Vec<bool>, state: &mut BTreeMap<Key, Option<Value>>) -> bool {
            let pending: Vec<usize> = (0..ops.len()).filter(|&i| !done[i]).collect();
            if pending.iter().all(|&i| ops[i].outcome == Outcome::Unknown) {
                return true;
            }
            for &i in &pending {
                let o = ops[i];
                let blocked = pending
                    .iter()
                    .any(|&j| j != i && matches!(ops[j].outcome, Outcome::Ok(_)) && ops[j].complete < o.invoke);
                if blocked {
                    continue;
                }
                let cur = state.get(o.call.key()).cloned().flatten();
                // (next state, consistent with the recorded result)
                let (next, ok) = match (&o.call, &o.outcome) {
                    (Call::Put { value, .. }, _) => (Some(value.clone()), true),
                    (Call::Get { .. }, Outcome::Ok(Return::Get { value, .. })) => (cur.clone(), *value == cur),
                    (Call::Get { .. }, _) => (cur.clone(), true),
                    (Call::Cas { expected, new, .. }, outcome) => {
                        let holds = *expected == cur;
                        let ok = match outcome {
                            Outcome::Ok(Return::Cas { succeeded, .. }) => *succeeded == holds,
                            _ => true,
                        };
                        (if holds { Some(new.clone()) } else { cur.clone() }, ok)
                    }
                    (Call::Delete { .. }, outcome) => {
                        let ok = match outcome {
                            Outcome::Ok(Return::Delete { deleted, .. }) => *deleted == cur.is_some(),
                            _ => true,
                        };
                        (None, ok)
                    }
                };
                if !ok {
                    continue;
                }
                done[i] = true;
                let saved = state.insert(o.call.key().clone(), next);
                let found = go(ops, done, state);
                match saved {
                    Some(v) => state.insert(o.call.key().clone(), v),
                    None => state.remove(o.call.key()),
                };
                done[i] = false;
                if found {
                    return true;
                }
            }
            // Unknown operations that never happen: drop one and retry.
            false
        }
        let ops: Vec<&Operation> = h.ops.iter().filter(|o| o.outcome != Outcome::Failed).collect();
        // Dropping unknown operations is covered by the "all pending are unknown" exit only if
        // they can always be deferred, which is true: they never block anything.
        go(&ops, &mut vec![false; ops.len()], &mut init.clone())
    }

    /// Small random histories over two keys: (invoke, length, kind, key, result selector,
    /// outcome selector) per operation.
    fn arb_small() -> impl Strategy<Value = Vec<(u8, u8, u8, u8, u8, u8)>> {
        prop::collection::vec((0u8..16, 0u8..8, 0u8..4, 0u8..3, 0u8..8, 0u8..10), 1..10)
    }

    fn small_history(spec: &[(u8, u8, u8, u8, u8, u8)]) -> History {
        let values: Vec<String> = (0..spec.len()).map(|i| format!("v{i}")).collect();
        let pick = |sel: u8| -> Option<Value> {
            let i = sel as usize % (values.len() + 1);
            (i < values.len()).then(|| Value::from(values[i].as_str()))
        };
        let ops = spec
            .iter()
            .enumerate()
            .map(|(i, &(invoke, len, kind, key, sel, outcome))| {
                let key = Key::from(if key < 2 { "x" } else { "y" });
                let value = Value::from(values[i].as_str());
                let (call, ret) = match kind {
                    0 => (Call::Put { key, value }, Return::Put { revision: 1 }),
                    1 => (Call::Get { key }, Return::Get { value: pick(sel), revision: 1 }),
                    2 => (
                        Call::Cas { key, expected: pick(sel / 2), new: value },
                        Return::Cas { succeeded: sel % 2 == 0, revision: 1 },
                    ),
                    _ => (Call::Delete { key }, Return::Delete { deleted: sel % 2 == 0, revision: 1 }),
                };
                let outcome = match outcome {
                    0 => Outcome::Failed,
                    1 | 2 => Outcome::Unknown,
                    _ => Outcome::Ok(ret),
                };
                op(i as ClientId, Tick::from(invoke), Tick::from(invoke) + Tick::from(len), call, outcome)
            })
            .collect();
        History::new(ops)
    }

    /// Every window of a partition: none may fail when the partition is linearizable.
    fn some_window_fails(h: &History) -> bool {
        let mut by_key: BTreeMap<&Key, Vec<usize>> = BTreeMap::new();
        for (i, o) in h.ops.iter().enumerate() {
            by_key.entry(o.call.key()).or_default().push(i);
        }
        by_key.values().any(|indices| {
            let p = Partition::new(h, indices);
            let c = &p.completions;
            let mut steps = 0;
            (0..c.len()).any(|a| {
                (a..c.len()).any(|b| {
                    let w = Window { start: Some(c[a]), cut: Some(c[b]), removed: Vec::new() };
                    p.fails(&w, u64::MAX, &mut steps)
                })
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn the_search_agrees_with_brute_force(spec in arb_small()) {
            let h = small_history(&spec);
            let expected = brute_force(&h);
            let r = check_linearizability(&h, &LinearizabilityOptions::default()).unwrap();
            prop_assert_eq!(r.is_linearizable(), expected, "{:#?}\n{:?}", h.ops, r.verdict);
            if let Verdict::NotLinearizable(cx) = &r.verdict {
                // The counterexample is itself a failing history.
                let sub = History::new(cx.ops.iter().map(|o| {
                    let mut op = o.op.clone();
                    if o.as_unknown { op.outcome = Outcome::Unknown; }
                    op
                }).collect());
                // From the empty register, or from any state if it is a window.
                let mut starts = vec![None];
                if cx.window_start.is_some() {
                    starts.extend(h.ops.iter().filter_map(|o| match &o.call {
                        Call::Put { value, .. } | Call::Cas { new: value, .. } => Some(Some(value.clone())),
                        _ => None,
                    }));
                    starts.push(Some(Value::from("other")));
                }
                for start in starts {
                    let init = BTreeMap::from([(cx.key.clone(), start.clone())]);
                    prop_assert!(!brute_force_from(&sub, &init), "counterexample passes from {:?}: {}", start, cx);
                }
            }
            if expected {
                prop_assert!(!some_window_fails(&h), "a window of a linearizable history fails");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// Small concurrent histories of a real register (many timeouts), with one result
        /// possibly corrupted: close to the boundary, where pruning mistakes would show.
        #[test]
        fn the_search_agrees_with_brute_force_near_the_boundary(
            seed in any::<u64>(),
            per_client in 1u64..4,
            corrupt in any::<Option<prop::sample::Index>>(),
        ) {
            let mut h = concurrent_history(seed, 3, per_client, 30);
            if let Some(i) = corrupt {
                let n = h.ops.len();
                match &mut h.ops[i.index(n)].outcome {
                    Outcome::Ok(Return::Get { value, .. }) => *value = if value.is_some() { None } else { Some("v0".into()) },
                    Outcome::Ok(Return::Cas { succeeded, .. }) => *succeeded = !*succeeded,
                    Outcome::Ok(Return::Delete { deleted, .. }) => *deleted = !*deleted,
                    outcome => *outcome = Outcome::Failed,
                }
            }
            let expected = brute_force(&h);
            let r = check_linearizability(&h, &LinearizabilityOptions::default()).unwrap();
            prop_assert_eq!(r.is_linearizable(), expected, "{:#?}\n{:?}", h.ops, r.verdict);
            if expected {
                prop_assert!(!some_window_fails(&h), "a window of a linearizable history fails");
            }
        }
    }

    #[test]
    fn the_random_small_histories_exercise_both_verdicts() {
        // Otherwise the comparison with brute force above would prove little.
        let mut rng = Rng(42);
        let mut linearizable = 0;
        let mut with_window_counterexample = 0;
        for _ in 0..400 {
            let n = 1 + rng.below(7) as usize;
            let spec: Vec<_> = (0..n)
                .map(|_| {
                    let mut b = |m| rng.below(m) as u8;
                    (b(16), b(8), b(4), b(3), b(8), b(10))
                })
                .collect();
            let h = small_history(&spec);
            if brute_force(&h) {
                linearizable += 1;
            } else if let Verdict::NotLinearizable(cx) = check(h.ops).verdict {
                with_window_counterexample += usize::from(cx.window_start.is_some());
            }
        }
        assert!((80..=320).contains(&linearizable), "{linearizable} of 400 linearizable");
        assert!(with_window_counterexample > 20, "{with_window_counterexample} window counterexamples");
    }

    // --- A large concurrent history -----------------------------------------------------------------

    /// A deterministic generator (tests only).
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = splitmix64(self.0);
            self.0 % n
        }
    }

    /// `clients` clients doing `ops_per_client` operations each on one key; each operation takes
    /// effect at a random point inside its interval, in the order of those points. A fraction
    /// times out (unknown) and of those half never take effect.
    pub(super) fn concurrent_history(seed: u64, clients: u64, ops_per_client: u64, unknown_percent: u64) -> History {
        let mut rng = Rng(seed);
        // (linearization point, client, invoke, complete, kind, unknown, applied)
        let mut planned = Vec::new();
        for c in 0..clients {
            let mut t = rng.below(10);
            for _ in 0..ops_per_client {
                let invoke = t;
                let len = 1 + rng.below(40);
                let point = invoke + rng.below(len + 1);
                let unknown = rng.below(100) < unknown_percent;
                let kind = rng.below(20);
                planned.push((point, c, invoke, invoke + len, kind, unknown, rng.below(2) == 0));
                t = invoke + len + rng.below(5);
            }
        }
        planned.sort();
        let mut state: Option<String> = None;
        let mut previous: Option<String> = None;
        let mut rev: Revision = 1;
        let mut ops = Vec::new();
        for (n, &(_, c, invoke, complete, kind, unknown, applied)) in planned.iter().enumerate() {
            let fresh = format!("v{n}");
            let takes_effect = !unknown || applied;
            if takes_effect && !matches!(kind, 8..=15) && state.is_some() {
                previous = state.clone();
            }
            let (call, ret) = match kind {
                0..=7 => {
                    if takes_effect {
                        rev += 1;
                        state = Some(fresh.clone());
                    }
                    (Call::Put { key: "k".into(), value: fresh.as_str().into() }, Return::Put { revision: rev })
                }
                8..=15 => (
                    Call::Get { key: "k".into() },
                    Return::Get { value: state.clone().map(Value::from), revision: rev },
                ),
                16..=18 => {
                    // Half of the compare-and-sets expect the current value, half an older one.
                    let expected = if kind == 16 { previous.clone() } else { state.clone() };
                    let holds = expected == state;
                    if takes_effect && holds {
                        rev += 1;
                        state = Some(fresh.clone());
                    }
                    (
                        Call::Cas { key: "k".into(), expected: expected.map(Value::from), new: fresh.as_str().into() },
                        Return::Cas { succeeded: holds, revision: rev },
                    )
                }
                _ => {
                    let existed = state.is_some();
                    if takes_effect && existed {
                        rev += 1;
                        state = None;
                    }
                    (Call::Delete { key: "k".into() }, Return::Delete { deleted: existed, revision: rev })
                }
            };
            let outcome = if unknown { Outcome::Unknown } else { Outcome::Ok(ret) };
            ops.push(op(c, invoke, complete, call, outcome));
        }
        History::new(ops)
    }

    #[test]
    fn a_large_concurrent_history_with_timeouts_passes_and_a_stale_read_in_it_fails() {
        // 10 clients × 300 = 3000 operations on one key, 3% timeouts.
        let h = concurrent_history(7, 10, 300, 3);
        let started = std::time::Instant::now();
        let r = check_linearizability(&h, &LinearizabilityOptions::default()).unwrap();
        eprintln!("3000 ops / 1 key / 10 clients: {:?} in {:?} ({} steps)", r.verdict, started.elapsed(), r.steps);
        assert_eq!(r.verdict, Verdict::Linearizable);

        // Make one late read return the value of a write that completed well before it was
        // invoked and was overwritten since.
        let mut bad = h.clone();
        let target = (0..bad.ops.len())
            .rev()
            .find(|&i| matches!(bad.ops[i].outcome, Outcome::Ok(Return::Get { value: Some(_), .. })))
            .unwrap();
        let invoke = bad.ops[target].invoke;
        let old = bad
            .ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Ok(Return::Put { .. })) && o.complete + 200 < invoke)
            .max_by_key(|o| o.complete)
            .unwrap()
            .clone();
        let Call::Put { value: old_value, .. } = old.call else { unreachable!() };
        let Outcome::Ok(Return::Get { value, .. }) = &mut bad.ops[target].outcome else { unreachable!() };
        *value = Some(old_value);
        // A small budget for the whole key (a debug build is slow), so the windows find it.
        let options = LinearizabilityOptions { max_steps_per_search: 2_000_000, ..Default::default() };
        let started = std::time::Instant::now();
        let r = check_linearizability(&bad, &options).unwrap();
        let Verdict::NotLinearizable(cx) = r.verdict else { panic!("stale read not caught: {:?}", r.verdict) };
        eprintln!(
            "with a stale read: caught in {:?}, counterexample of {} ops:\n{cx}",
            started.elapsed(),
            cx.ops.len()
        );
        assert!(cx.ops.iter().any(|o| o.index == target));
    }
}
