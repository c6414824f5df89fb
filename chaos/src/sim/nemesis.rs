//! The nemesis schedule: a pure function of the seed and the scenario.
//!
//! Each [`Track`] (network, processes, clocks, membership) gets its own sequence of
//! non-overlapping faults over the fault phase; faults of different tracks overlap freely (so
//! `mixed` can crash a member while the network is partitioned and a member is being replaced).
//! The process track never has more than a minority of the initial members down.
//!
//! Nothing here touches the simulation: the harness applies [`Fault`]s, resolving what a
//! schedule cannot know in advance from the state of the run when the fault starts — who leads
//! when "isolate the leader" starts ([`isolate`]), which members a membership change left in
//! the cluster ([`resolve`]: the schedule names members by their position in the current
//! membership), and what a membership change does at each of its two moments
//! ([`membership_step`]). Those resolutions are pure functions of what the harness observed, so
//! a run stays a function of its seed.

use super::scenario::{FaultKind, Params, Scenario, Track};
use crate::history::Tick;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A concrete fault, on members named by their index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Cut every link between `side` and the other members.
    Partition { side: Vec<usize> },
    /// Cut the leader off (resolved when the fault starts).
    IsolateLeader,
    /// Cut exactly these member pairs.
    CutLinks { pairs: Vec<(usize, usize)> },
    /// Drop messages from every member of `from` to every member of `to`.
    OneWay { from: Vec<usize>, to: Vec<usize> },
    /// Crash these members (unsynced writes lost) and restart them when the fault ends.
    Crash { members: Vec<usize> },
    /// Every link between members takes exactly this long.
    Latency { ms: u64 },
    /// Every link (members and clients) drops a message with this probability (per mille).
    Loss { per_mille: u32 },
    /// Member's lease clock runs `ms` ahead (negative: behind) until the fault ends.
    Skew { member: usize, ms: i64 },
    /// Change the membership through the Cluster API, once when the fault starts and once when
    /// it ends, each time by [`membership_step`]: at the initial size the start takes `first`
    /// (remove then add: a member is replaced; add then remove: the cluster grows by one for a
    /// while). A removed member is the current member at position `victim` (modulo their
    /// number, so it may be the leader, a crashed member, or the one just added); an added one
    /// is a fresh host with a new member id and an empty data dir.
    Membership { first: MembershipStep, victim: usize },
}

/// One change of the membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipStep {
    /// `MemberRemove` of a current member (it stops once it learns of its removal).
    Remove,
    /// `MemberAdd` of a fresh member, then its host starts with `initial-cluster-state existing`
    /// semantics (it joins; it never bootstraps) on an empty engine.
    Add,
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |ms: &[usize]| ms.iter().map(|m| format!("m{}", m + 1)).collect::<Vec<_>>().join(",");
        match self {
            FaultAction::Partition { side } => write!(f, "partition {{{}}} from the rest", names(side)),
            FaultAction::IsolateLeader => write!(f, "isolate the leader"),
            FaultAction::CutLinks { pairs } => {
                let list: Vec<String> = pairs.iter().map(|(a, b)| format!("m{}-m{}", a + 1, b + 1)).collect();
                write!(f, "cut links {}", list.join(" "))
            }
            FaultAction::OneWay { from, to } => write!(f, "drop {{{}}} -> {{{}}}", names(from), names(to)),
            FaultAction::Crash { members } => write!(f, "crash {{{}}}", names(members)),
            FaultAction::Latency { ms } => write!(f, "latency {ms} ms"),
            FaultAction::Loss { per_mille } => write!(f, "loss {per_mille}‰"),
            FaultAction::Skew { member, ms } => write!(f, "skew m{} lease clock {ms:+} ms", member + 1),
            FaultAction::Membership { first: MembershipStep::Remove, victim } => {
                write!(f, "membership change: remove member #{victim}, then add a fresh one")
            }
            FaultAction::Membership { first: MembershipStep::Add, victim } => {
                write!(f, "membership change: add a fresh member, then remove member #{victim}")
            }
        }
    }
}

/// One fault and when it holds: from `start` until `end` (exclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub start: Tick,
    pub end: Tick,
    pub kind: FaultKind,
    pub action: FaultAction,
}

/// Durations (ms) a fault of a kind lasts, and the pause before the next one on its track.
fn duration_range(kind: FaultKind) -> (Tick, Tick) {
    match kind {
        FaultKind::RandomHalves | FaultKind::IsolateLeader | FaultKind::MajoritiesRing | FaultKind::OneWay => {
            (1_000, 3_500)
        }
        FaultKind::Latency => (1_000, 3_000),
        FaultKind::Loss => (500, 2_000),
        FaultKind::CrashRestart => (300, 2_500),
        // Long enough for the register workload to write well past the snapshot knobs.
        FaultKind::KillForSnapshot => (4_000, 6_000),
        FaultKind::ClockSkew => (1_000, 4_000),
        // Long enough for the first change (two membership entries, joint then final) to commit
        // and for an added member to catch up from a snapshot before the second.
        FaultKind::MembershipChange => (1_000, 4_000),
    }
}
const GAP_MS: (Tick, Tick) = (300, 1_500);
/// The largest lease-clock skew injected, either way.
pub const MAX_SKEW_MS: i64 = 1_500;

/// SplitMix64: derives independent seeds (per track, per client) from the run's seed.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random non-empty proper subset of the members.
fn random_side(rng: &mut StdRng, members: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..members).collect();
    all.shuffle(rng);
    let size = rng.gen_range(1..members);
    let mut side = all[..size].to_vec();
    side.sort_unstable();
    side
}

fn action(kind: FaultKind, members: usize, rng: &mut StdRng) -> FaultAction {
    let minority = (members - 1) / 2;
    match kind {
        FaultKind::RandomHalves => {
            let mut all: Vec<usize> = (0..members).collect();
            all.shuffle(rng);
            let mut side = all[..members / 2].to_vec();
            side.sort_unstable();
            FaultAction::Partition { side }
        }
        FaultKind::IsolateLeader => FaultAction::IsolateLeader,
        FaultKind::MajoritiesRing => {
            let mut ring: Vec<usize> = (0..members).collect();
            ring.shuffle(rng);
            FaultAction::CutLinks { pairs: ring_cuts(&ring) }
        }
        FaultKind::OneWay => {
            let from = random_side(rng, members);
            let to = (0..members).filter(|m| !from.contains(m)).collect();
            FaultAction::OneWay { from, to }
        }
        FaultKind::Latency => FaultAction::Latency { ms: rng.gen_range(10..=60) },
        FaultKind::Loss => FaultAction::Loss { per_mille: rng.gen_range(5..=50) },
        FaultKind::CrashRestart => FaultAction::Crash { members: vec![rng.gen_range(0..members)] },
        FaultKind::KillForSnapshot => {
            let mut all: Vec<usize> = (0..members).collect();
            all.shuffle(rng);
            let mut down = all[..minority.max(1)].to_vec();
            down.sort_unstable();
            FaultAction::Crash { members: down }
        }
        FaultKind::ClockSkew => {
            let ms = rng.gen_range(200..=MAX_SKEW_MS) * if rng.gen_bool(0.5) { 1 } else { -1 };
            FaultAction::Skew { member: rng.gen_range(0..members), ms }
        }
        FaultKind::MembershipChange => {
            let first = if rng.gen_bool(0.5) { MembershipStep::Remove } else { MembershipStep::Add };
            // Positions in the membership at the time of the change, which may have one more.
            FaultAction::Membership { first, victim: rng.gen_range(0..=members) }
        }
    }
}

/// What a membership fault does when it starts (`at_start`) or ends, given how many members the
/// cluster has then and had initially: bring the count back to the initial size if it is off
/// (a change of an earlier fault that did not happen, or happened late), else at the start
/// take the fault's `first` step and at the end nothing. So the member count stays within one
/// of the initial size however the changes turn out, and a replace ends where it began.
pub fn membership_step(
    members: usize,
    initial: usize,
    first: MembershipStep,
    at_start: bool,
) -> Option<MembershipStep> {
    use std::cmp::Ordering::*;
    match members.cmp(&initial) {
        Less => Some(MembershipStep::Add),
        Greater => Some(MembershipStep::Remove),
        Equal if at_start => Some(first),
        Equal => None,
    }
}

/// The member at position `position` of the current membership `current` (slot indexes in
/// order): how a fault's member positions, drawn for the initial membership, name members once
/// the membership has changed. With the initial membership, the identity.
pub fn resolve(current: &[usize], position: usize) -> usize {
    match current.len() {
        0 => position,
        n => current[position % n],
    }
}

/// `action` with its member positions resolved against `current` (see [`resolve`]); members
/// named twice after resolution are named once, and a link between a member and itself is
/// dropped.
pub fn resolve_action(action: &FaultAction, current: &[usize]) -> FaultAction {
    let set = |ms: &[usize]| {
        let mut out: Vec<usize> = ms.iter().map(|&m| resolve(current, m)).collect();
        out.sort_unstable();
        out.dedup();
        out
    };
    match action {
        FaultAction::Partition { side } => FaultAction::Partition { side: set(side) },
        FaultAction::CutLinks { pairs } => {
            let mut pairs: Vec<(usize, usize)> = pairs
                .iter()
                .map(|&(a, b)| (resolve(current, a), resolve(current, b)))
                .filter(|(a, b)| a != b)
                .map(|(a, b)| (a.min(b), a.max(b)))
                .collect();
            pairs.sort_unstable();
            pairs.dedup();
            FaultAction::CutLinks { pairs }
        }
        FaultAction::OneWay { from, to } => {
            let from = set(from);
            let to = set(to).into_iter().filter(|m| !from.contains(m)).collect();
            FaultAction::OneWay { from, to }
        }
        FaultAction::Crash { members } => FaultAction::Crash { members: set(members) },
        FaultAction::Skew { member, ms } => FaultAction::Skew { member: resolve(current, *member), ms: *ms },
        FaultAction::IsolateLeader
        | FaultAction::Latency { .. }
        | FaultAction::Loss { .. }
        | FaultAction::Membership { .. } => action.clone(),
    }
}

/// The members of `wanted` that may crash now: each only if a majority of the current members
/// (`current`) keeps running, counting those already `down`. The schedule keeps crashes to a
/// minority of the initial members; this keeps it so once the membership changed (a cluster
/// shrunk to two members cannot lose one), while a crashed member may still be removed and
/// replaced, as an operator replaces a dead one. With the initial membership and nothing down,
/// every scheduled crash is allowed.
pub fn crashable(current: &[usize], down: &BTreeSet<usize>, wanted: &[usize]) -> Vec<usize> {
    let mut running: Vec<usize> = current.iter().copied().filter(|m| !down.contains(m)).collect();
    let mut allowed = Vec::new();
    for &m in wanted {
        if running.contains(&m) && running.len() - 1 > current.len() / 2 {
            running.retain(|r| *r != m);
            allowed.push(m);
        }
    }
    allowed
}

/// How many fresh members the membership faults of `faults` may add: at most one per step.
pub fn max_additions(faults: &[Fault]) -> usize {
    faults.iter().filter(|f| matches!(f.action, FaultAction::Membership { .. })).count() * 2
}

/// The links to cut so that, on the ring `ring`, every member sees a majority and no two see
/// the same one: each member keeps its two ring neighbours. Three members cannot all see
/// different majorities over symmetric links; there one link is cut, so the member between its
/// ends sees everyone and each end sees only that member.
pub fn ring_cuts(ring: &[usize]) -> Vec<(usize, usize)> {
    let n = ring.len();
    let mut cuts = Vec::new();
    if n == 3 {
        cuts.push((ring[0].min(ring[2]), ring[0].max(ring[2])));
        return cuts;
    }
    for i in 0..n {
        for j in i + 1..n {
            let d = (j - i).min(n - (j - i));
            if d >= 2 {
                cuts.push((ring[i].min(ring[j]), ring[i].max(ring[j])));
            }
        }
    }
    cuts.sort_unstable();
    cuts
}

/// The partition that isolates `leader` (if there is one) from the other members.
pub fn isolate(leader: Option<usize>) -> Option<FaultAction> {
    leader.map(|l| FaultAction::Partition { side: vec![l] })
}

/// The fault schedule of a run: every fault starts within the fault phase and ends by its end
/// (the heal), sorted by start.
pub fn schedule(seed: u64, scenario: &Scenario, params: &Params) -> Vec<Fault> {
    schedule_of(seed, scenario.kind.faults(), scenario.members, params)
}

/// [`schedule`] for any set of fault kinds.
fn schedule_of(seed: u64, kinds: &[FaultKind], members: usize, params: &Params) -> Vec<Fault> {
    let begin = params.warmup_ms;
    let end = params.warmup_ms + params.fault_ms;
    let mut by_track: BTreeMap<Track, Vec<FaultKind>> = BTreeMap::new();
    for &kind in kinds {
        by_track.entry(kind.track()).or_default().push(kind);
    }
    let mut faults = Vec::new();
    for (track, kinds) in by_track {
        let mut rng = StdRng::seed_from_u64(derive_seed(seed, 1 + track as u64));
        let mut t = begin + rng.gen_range(0..=GAP_MS.1);
        loop {
            let kind = kinds[rng.gen_range(0..kinds.len())];
            let (lo, hi) = duration_range(kind);
            let length = rng.gen_range(lo..=hi);
            if t + lo > end {
                break;
            }
            let stop = (t + length).min(end);
            faults.push(Fault { start: t, end: stop, kind, action: action(kind, members, &mut rng) });
            t = stop + rng.gen_range(GAP_MS.0..=GAP_MS.1);
        }
    }
    faults.sort_by_key(|f| (f.start, f.end));
    faults
}

/// How far a lease clock can move against real time between two readings under `faults`:
/// `(forward, backward)`, the largest rise and the largest fall of its offset.
///
/// A leader sets a deadline by one reading of its lease clock (renewal at `t1`: deadline
/// `t1 + o(t1) + TTL` on its clock) and expires the lease when a later reading passes it, so the
/// lease ends `o(t2) − o(t1)` early when the offset `o` rose in between, and late by what it
/// fell. A skew is not a single jump from 0: one member skewed −a and later +b (two faults of the
/// clock track) moves its clock forward by a + b between a renewal during the first fault and an
/// expiry during the second. Skews start from and return to 0, never overlap (one track), and
/// are resolved to members only when they start (membership changes), so all of them are taken
/// as one offset timeline `0, s1, 0, s2, 0, …`: every member's own timeline is a subsequence of
/// it, so its rise and fall bound every member's.
pub fn lease_clock_jumps(faults: &[Fault]) -> (Tick, Tick) {
    let mut skews: Vec<(Tick, i64)> = faults
        .iter()
        .filter_map(|f| match f.action {
            FaultAction::Skew { ms, .. } => Some((f.start, ms)),
            _ => None,
        })
        .collect();
    skews.sort_unstable();
    offset_jumps(skews.into_iter().map(|(_, ms)| ms))
}

/// The largest rise and fall over the offsets `0, s1, 0, s2, 0, …` (in that order).
fn offset_jumps(skews: impl IntoIterator<Item = i64>) -> (Tick, Tick) {
    let (mut lowest, mut highest) = (0_i64, 0_i64);
    let (mut rise, mut fall) = (0_i64, 0_i64);
    for offset in skews.into_iter().flat_map(|s| [s, 0]) {
        rise = rise.max(offset - lowest);
        fall = fall.max(highest - offset);
        lowest = lowest.min(offset);
        highest = highest.max(offset);
    }
    (rise.unsigned_abs(), fall.unsigned_abs())
}

/// The longest fault of the network, process or membership tracks (a revoke may wait that long
/// for a quorum: a membership change may leave a cluster without one until a crashed member is
/// back).
pub fn longest_outage(faults: &[Fault]) -> Tick {
    faults.iter().filter(|f| f.kind.track() != Track::Clock).map(|f| f.end - f.start).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::Kind;

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        for s in Scenario::all() {
            let p = s.params();
            assert_eq!(schedule(7, &s, &p), schedule(7, &s, &p));
        }
        let s = Scenario { kind: Kind::Mixed, members: 5 };
        assert_ne!(schedule(1, &s, &s.params()), schedule(2, &s, &s.params()));
    }

    #[test]
    fn faults_stay_in_the_fault_phase_and_tracks_do_not_overlap() {
        for seed in 0..50 {
            for s in Scenario::all() {
                let p = s.params();
                let faults = schedule(seed, &s, &p);
                assert!(!faults.is_empty(), "{s} seed {seed}: no fault");
                for f in &faults {
                    assert!(f.start >= p.warmup_ms && f.end <= p.warmup_ms + p.fault_ms && f.start < f.end);
                    assert!(s.kind.faults().contains(&f.kind));
                    if let FaultAction::Crash { members } = &f.action {
                        assert!(members.len() <= (s.members - 1) / 2, "{s}: a majority crashed");
                    }
                }
                for track in [Track::Network, Track::Process, Track::Clock, Track::Membership] {
                    let mine: Vec<&Fault> = faults.iter().filter(|f| f.kind.track() == track).collect();
                    for w in mine.windows(2) {
                        assert!(w[0].end <= w[1].start, "{s} seed {seed}: overlapping faults on {track:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_new_track_leaves_the_schedules_of_the_others_as_they_were() {
        let mixed = Scenario { kind: Kind::Mixed, members: 5 };
        let without: Vec<FaultKind> =
            Kind::Mixed.faults().iter().copied().filter(|k| *k != FaultKind::MembershipChange).collect();
        for seed in 0..20 {
            let p = mixed.params();
            let mut faults = schedule(seed, &mixed, &p);
            assert!(faults.iter().any(|f| f.kind == FaultKind::MembershipChange), "seed {seed}");
            faults.retain(|f| f.kind != FaultKind::MembershipChange);
            assert_eq!(faults, schedule_of(seed, &without, 5, &p), "seed {seed}");
        }
    }

    #[test]
    fn membership_steps_keep_the_count_within_one_of_the_initial_size() {
        use MembershipStep::*;
        // A replace, and a grow-then-shrink, from the initial size.
        assert_eq!(membership_step(3, 3, Remove, true), Some(Remove));
        assert_eq!(membership_step(2, 3, Remove, false), Some(Add));
        assert_eq!(membership_step(3, 3, Add, true), Some(Add));
        assert_eq!(membership_step(4, 3, Add, false), Some(Remove));
        // The first step did not happen (yet): nothing more at the end.
        assert_eq!(membership_step(3, 3, Remove, false), None);
        // An earlier change happened late: the next fault first undoes the difference.
        assert_eq!(membership_step(2, 3, Remove, true), Some(Add));
        assert_eq!(membership_step(4, 3, Add, true), Some(Remove));
        // Whatever happens, every step moves the count toward the initial size or one away.
        for members in 1..8usize {
            for first in [Remove, Add] {
                for at_start in [true, false] {
                    let after = match membership_step(members, 4, first, at_start) {
                        Some(Remove) => members - 1,
                        Some(Add) => members + 1,
                        None => members,
                    };
                    assert!(after.abs_diff(4) <= members.abs_diff(4).max(1), "{members} {first:?} {at_start}");
                }
            }
        }
    }

    #[test]
    fn crashes_never_take_down_a_majority_of_the_current_members() {
        let none = BTreeSet::new();
        // The initial membership, nothing down: what the schedule asks (at most a minority).
        assert_eq!(crashable(&[0, 1, 2], &none, &[1]), vec![1]);
        assert_eq!(crashable(&[0, 1, 2, 3, 4], &none, &[0, 3]), vec![0, 3]);
        // Two members: neither may crash; four: one may, two may not.
        assert_eq!(crashable(&[0, 3], &none, &[0]), Vec::<usize>::new());
        assert_eq!(crashable(&[0, 1, 2, 3], &none, &[1, 2]), vec![1]);
        // One already down (and perhaps about to be replaced): no second one in three.
        assert_eq!(crashable(&[0, 1, 2], &BTreeSet::from([2]), &[0]), Vec::<usize>::new());
        // Not a member (any more): not crashed.
        assert_eq!(crashable(&[0, 1, 2], &none, &[5]), Vec::<usize>::new());
    }

    #[test]
    fn lease_clock_jumps_add_up_across_skews() {
        // One skew: a jump of its size each way (to it, and back to 0).
        assert_eq!(offset_jumps([300]), (300, 300));
        assert_eq!(offset_jumps([-300]), (300, 300));
        assert_eq!(offset_jumps(std::iter::empty()), (0, 0));
        // Seed 2023 of mixed-3: m1 at +1156, then −1447, then +339. A lease renewed during the
        // −1447 ms skew and expired during the +339 ms one ends 1786 ms early; one renewed at
        // +1156 and expired at −1447 ends 2603 ms late.
        assert_eq!(offset_jumps([1156, -1447, 339]), (1786, 2603));
        let skew = |start, ms| Fault {
            start,
            end: start + 100,
            kind: FaultKind::ClockSkew,
            action: FaultAction::Skew { member: 0, ms },
        };
        // In time order whatever the order given.
        assert_eq!(lease_clock_jumps(&[skew(10_271, 339), skew(2_415, 1156), skew(6_331, -1447)]), (1786, 2603));
    }

    #[test]
    fn positions_resolve_against_the_current_membership() {
        // The initial membership: the identity, so scenarios without membership changes are
        // unchanged by the resolution.
        let initial = [0, 1, 2];
        for action in [
            FaultAction::Partition { side: vec![0, 2] },
            FaultAction::CutLinks { pairs: vec![(0, 2)] },
            FaultAction::OneWay { from: vec![1], to: vec![0, 2] },
            FaultAction::Crash { members: vec![1] },
            FaultAction::Skew { member: 2, ms: 300 },
        ] {
            assert_eq!(resolve_action(&action, &initial), action);
        }
        // m2 was replaced by m4 (slot 3): position 1 is now m3, position 2 is m4.
        let current = [0, 2, 3];
        assert_eq!(
            resolve_action(&FaultAction::Crash { members: vec![2] }, &current),
            FaultAction::Crash { members: vec![3] }
        );
        // Two members only: positions wrap, and what collapses is named once.
        let current = [0, 3];
        assert_eq!(
            resolve_action(&FaultAction::Partition { side: vec![0, 2] }, &current),
            FaultAction::Partition { side: vec![0] }
        );
        assert_eq!(
            resolve_action(&FaultAction::CutLinks { pairs: vec![(0, 2), (1, 2)] }, &current),
            FaultAction::CutLinks { pairs: vec![(0, 3)] }
        );
        assert_eq!(
            resolve_action(&FaultAction::OneWay { from: vec![1], to: vec![0, 2] }, &current),
            FaultAction::OneWay { from: vec![3], to: vec![0] }
        );
    }

    #[test]
    fn majorities_ring_gives_every_member_a_different_majority() {
        let ring = [3, 0, 4, 1, 2];
        let cuts = ring_cuts(&ring);
        let mut seen = std::collections::BTreeSet::new();
        for m in 0..5 {
            let visible: Vec<usize> = (0..5).filter(|&o| o == m || !cuts.contains(&(m.min(o), m.max(o)))).collect();
            assert_eq!(visible.len(), 3, "member {m} sees {visible:?}");
            assert!(seen.insert(visible));
        }
        // Three members: one cut link, the member between its ends bridges them.
        assert_eq!(ring_cuts(&[2, 0, 1]), vec![(1, 2)]);
    }
}
