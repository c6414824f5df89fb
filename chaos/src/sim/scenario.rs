//! Named scenarios: which faults a run injects, into how many members, for how long, with which
//! workloads. Pure data; [`super::nemesis`] turns a scenario and a seed into a fault schedule.

use crate::history::Tick;
use std::fmt;
use std::str::FromStr;

/// The kinds of fault a nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The members split into two random halves (either may hold the majority).
    RandomHalves,
    /// The current leader is cut off from every other member.
    IsolateLeader,
    /// Every member sees a majority, no two the same one (Jepsen's "majorities ring"; with three
    /// members, one link is cut so that the middle member bridges the two others).
    MajoritiesRing,
    /// Messages from a random group of members to the rest are dropped, not the other way.
    OneWay,
    /// A member crashes (losing its unsynced writes) and restarts a little later.
    CrashRestart,
    /// A minority crashes and stays down long enough that the leader compacts its log past
    /// them: they must catch up from a snapshot.
    KillForSnapshot,
    /// Every link between members gets a fixed, long latency.
    Latency,
    /// Links (between members, and between clients and members) drop messages at random.
    Loss,
    /// A member's lease clock jumps forward or back.
    ClockSkew,
    /// A member is removed through the etcd Cluster API and a fresh one (new member id, empty
    /// data dir) is added, or the other way round.
    MembershipChange,
}

impl FaultKind {
    /// Faults of one track never overlap; faults of different tracks may.
    pub fn track(self) -> Track {
        match self {
            FaultKind::RandomHalves
            | FaultKind::IsolateLeader
            | FaultKind::MajoritiesRing
            | FaultKind::OneWay
            | FaultKind::Latency
            | FaultKind::Loss => Track::Network,
            FaultKind::CrashRestart | FaultKind::KillForSnapshot => Track::Process,
            FaultKind::ClockSkew => Track::Clock,
            FaultKind::MembershipChange => Track::Membership,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Track {
    Network,
    Process,
    Clock,
    /// Last: each track draws from a seed derived from its position, so adding one leaves the
    /// schedules of the others as they were.
    Membership,
}

/// A family of scenarios (the member count is the other half of a [`Scenario`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Partitions,
    LeaderIsolation,
    CrashRestart,
    SnapshotCatchup,
    LossyLinks,
    ClockSkew,
    Membership,
    Mixed,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Partitions,
        Kind::LeaderIsolation,
        Kind::CrashRestart,
        Kind::SnapshotCatchup,
        Kind::LossyLinks,
        Kind::ClockSkew,
        Kind::Membership,
        Kind::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Partitions => "partitions",
            Kind::LeaderIsolation => "leader-isolation",
            Kind::CrashRestart => "crash-restart",
            Kind::SnapshotCatchup => "snapshot-catchup",
            Kind::LossyLinks => "lossy-links",
            Kind::ClockSkew => "clock-skew",
            Kind::Membership => "membership",
            Kind::Mixed => "mixed",
        }
    }

    /// What this family injects, in the order the schedule draws from.
    pub fn faults(self) -> &'static [FaultKind] {
        use FaultKind::*;
        match self {
            Kind::Partitions => &[RandomHalves, MajoritiesRing, OneWay],
            Kind::LeaderIsolation => &[IsolateLeader],
            Kind::CrashRestart => &[CrashRestart],
            Kind::SnapshotCatchup => &[KillForSnapshot],
            Kind::LossyLinks => &[Latency, Loss],
            // Skew alone changes nothing while one leader keeps its deadlines; leader changes make
            // the skewed clocks of new leaders count.
            Kind::ClockSkew => &[ClockSkew, IsolateLeader],
            // Membership changes while members crash (a crashed member may be the one replaced,
            // as an operator replaces a dead one) and while the leader is cut off (it may be the
            // one removed, or the one that has to commit the change).
            Kind::Membership => &[MembershipChange, CrashRestart, IsolateLeader],
            Kind::Mixed => &[
                RandomHalves,
                IsolateLeader,
                MajoritiesRing,
                OneWay,
                Latency,
                Loss,
                CrashRestart,
                KillForSnapshot,
                ClockSkew,
                MembershipChange,
            ],
        }
    }
}

/// A named scenario: a family and a member count, written `partitions-3`, `mixed-5`, ...
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scenario {
    pub kind: Kind,
    pub members: usize,
}

/// Member counts the scenarios come in.
pub const MEMBER_COUNTS: [usize; 2] = [3, 5];

impl Scenario {
    /// Every named scenario: each family with 3 and with 5 members.
    pub fn all() -> Vec<Scenario> {
        Kind::ALL
            .iter()
            .flat_map(|&kind| MEMBER_COUNTS.iter().map(move |&members| Scenario { kind, members }))
            .collect()
    }

    pub fn name(&self) -> String {
        self.to_string()
    }

    /// The timeline and sizes of a run of this scenario.
    pub fn params(&self) -> Params {
        let mut p = Params::default();
        if self.kind == Kind::SnapshotCatchup {
            // Long enough for two kills of several seconds each.
            p.fault_ms = 14_000;
        }
        p
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.kind.name(), self.members)
    }
}

impl FromStr for Scenario {
    type Err = String;

    /// `NAME-N` or just `NAME` (3 members).
    fn from_str(s: &str) -> Result<Scenario, String> {
        let (name, members) = match s.rsplit_once('-') {
            Some((name, n)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
                (name, n.parse::<usize>().map_err(|e| e.to_string())?)
            }
            _ => (s, 3),
        };
        let kind = Kind::ALL.iter().copied().find(|k| k.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown scenario {name:?}; known: {} (optionally suffixed -3 or -5)", names.join(", "))
        })?;
        if !MEMBER_COUNTS.contains(&members) {
            return Err(format!("{members} members: scenarios come with 3 or 5"));
        }
        Ok(Scenario { kind, members })
    }
}

/// The timeline (in ticks, i.e. simulated milliseconds) and the sizes of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Faults start after this (the cluster elects its first leader meanwhile).
    pub warmup_ms: Tick,
    /// Length of the fault phase; the workload runs through it, then everything is healed.
    pub fault_ms: Tick,
    /// After the heal, the cluster must converge and serve within this bound.
    pub converge_ms: Tick,
    /// Register-workload clients.
    pub register_clients: usize,
    /// Keys per key generation of the register workload.
    pub register_keys: usize,
    /// Lease-workload clients.
    pub lease_clients: usize,
    /// Applied entries between snapshots, and entries kept after one: small, so that a member
    /// down for a few seconds needs a snapshot.
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            warmup_ms: 2_000,
            fault_ms: 10_000,
            // Generous: after a partition, peer connections that lost segments stay stalled
            // until their HTTP/2 keep-alive gives up (10 s with the production settings).
            converge_ms: 30_000,
            register_clients: 4,
            register_keys: 3,
            lease_clients: 2,
            snapshot_count: 32,
            snapshot_catchup_entries: 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Scenario::all() {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
        }
        assert_eq!("mixed".parse::<Scenario>(), Ok(Scenario { kind: Kind::Mixed, members: 3 }));
        assert!("mixed-4".parse::<Scenario>().is_err());
        assert!("nope".parse::<Scenario>().is_err());
    }
}
