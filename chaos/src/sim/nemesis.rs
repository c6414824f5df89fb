//! The nemesis schedule: a pure function of the seed and the scenario.
//!
//! Each [`Track`] (network, processes, clocks) gets its own sequence of non-overlapping faults
//! over the fault phase; faults of different tracks overlap freely (so `mixed` can crash a member
//! while the network is partitioned). The process track never has more than a minority down.
//! Nothing here touches the simulation: the harness applies [`Fault`]s, resolving the one thing
//! a schedule cannot know in advance (who leads when "isolate the leader" starts) with
//! [`isolate`].

use super::scenario::{FaultKind, Params, Scenario, Track};
use crate::history::Tick;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
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
    }
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
    let begin = params.warmup_ms;
    let end = params.warmup_ms + params.fault_ms;
    let mut by_track: BTreeMap<Track, Vec<FaultKind>> = BTreeMap::new();
    for &kind in scenario.kind.faults() {
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
            faults.push(Fault { start: t, end: stop, kind, action: action(kind, scenario.members, &mut rng) });
            t = stop + rng.gen_range(GAP_MS.0..=GAP_MS.1);
        }
    }
    faults.sort_by_key(|f| (f.start, f.end));
    faults
}

/// The largest forward jump any member's lease clock makes under `faults` (skews start from
/// and return to 0, and never overlap on one track): leases may expire that much early.
pub fn max_forward_skew(faults: &[Fault]) -> Tick {
    faults
        .iter()
        .filter_map(|f| match f.action {
            FaultAction::Skew { ms, .. } => Some(ms.unsigned_abs()),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// The longest fault of the network or process tracks (a revoke may wait that long for a
/// quorum).
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
                for track in [Track::Network, Track::Process, Track::Clock] {
                    let mine: Vec<&Fault> = faults.iter().filter(|f| f.kind.track() == track).collect();
                    for w in mine.windows(2) {
                        assert!(w[0].end <= w[1].start, "{s} seed {seed}: overlapping faults on {track:?}");
                    }
                }
            }
        }
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
