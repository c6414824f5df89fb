//! The verdict of one run, how it prints, and the fingerprint that shows a replay is exact.

use super::record::{HealOutcome, Recording};
use super::scenario::Scenario;
use super::RunOptions;
use berth_store::member::{ReadMode, MAX_BATCHES_IN_FLIGHT};
use serde::Serialize;
use std::fmt;

/// One thing a run found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Which check: `linearizability`, `revisions`, `watch`, `lease`, `invariants`,
    /// `convergence`, `liveness`, `history` (a harness bug), `simulation`.
    pub check: &'static str,
    pub summary: String,
    /// The evidence: for linearizability the shortest failing history the checker found; for
    /// the others the violations, first ones first.
    pub details: Vec<String>,
}

impl Failure {
    pub fn new(check: &'static str, summary: String, details: Vec<String>) -> Failure {
        Failure { check, summary, details }
    }
}

/// Violations printed per failure (the report keeps them all).
const PRINTED_DETAILS: usize = 10;

/// Everything a run reports.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub seed: u64,
    pub scenario: String,
    pub read_mode: String,
    pub batches_in_flight: usize,
    /// Simulated milliseconds the run took.
    pub sim_ms: u64,
    /// Real milliseconds the run (simulation and checks) took.
    pub wall_ms: u64,
    /// Register operations recorded, and how many entered the linearizability search (failed
    /// operations and unknown reads say nothing and are left out).
    pub register_ops: usize,
    pub ops_checked: usize,
    /// Keys whose linearizability search ran out of budget without finding a violation.
    pub inconclusive_keys: usize,
    pub watch_events: usize,
    pub lease_keys: usize,
    pub lease_observations: usize,
    pub invariant_observations: u64,
    /// Members that joined or left the cluster (as the members applied it).
    pub membership_changes: usize,
    /// What the nemesis did, with simulated times.
    pub faults: Vec<String>,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
    pub heal: HealOutcome,
    /// Fingerprint of everything the clients observed and the nemesis did: equal for two runs
    /// of the same seed and scenario, or the simulation is not deterministic.
    pub history_hash: u64,
    pub failures: Vec<Failure>,
}

impl RunReport {
    pub fn new(seed: u64, scenario: Scenario, options: &RunOptions, sim_ms: u64) -> RunReport {
        RunReport {
            seed,
            scenario: scenario.name(),
            read_mode: format!("{:?}", options.read_mode),
            batches_in_flight: options.batches_in_flight,
            sim_ms,
            wall_ms: 0,
            register_ops: 0,
            ops_checked: 0,
            inconclusive_keys: 0,
            watch_events: 0,
            lease_keys: 0,
            lease_observations: 0,
            invariant_observations: 0,
            membership_changes: 0,
            faults: Vec::new(),
            notes: Vec::new(),
            heal: HealOutcome::default(),
            history_hash: 0,
            failures: Vec::new(),
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Whether the given check failed.
    pub fn failed(&self, check: &str) -> bool {
        self.failures.iter().any(|f| f.check == check)
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut command = format!("berth-chaos --seed {} --scenario {}", self.seed, self.scenario);
        if self.read_mode == format!("{:?}", ReadMode::LocalStateForTesting) {
            command.push_str(" --broken-reads");
        }
        if self.batches_in_flight != MAX_BATCHES_IN_FLIGHT {
            command.push_str(&format!(" --batches-in-flight {}", self.batches_in_flight));
        }
        command
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        writeln!(f, "{verdict}: scenario {} seed {} ({} reads)", self.scenario, self.seed, self.read_mode)?;
        writeln!(
            f,
            "  {} simulated ms in {} ms; {} register ops ({} checked, {} inconclusive keys), {} watch events, {} lease keys ({} observations), {} invariant samples",
            self.sim_ms,
            self.wall_ms,
            self.register_ops,
            self.ops_checked,
            self.inconclusive_keys,
            self.watch_events,
            self.lease_keys,
            self.lease_observations,
            self.invariant_observations
        )?;
        match (self.heal.converged_at, self.heal.live_at) {
            (Some(c), Some(l)) => writeln!(f, "  healed: converged at tick {c}, live at tick {l}")?,
            _ => writeln!(f, "  heal: {}", self.heal.detail)?,
        }
        writeln!(f, "  history hash {:016x}", self.history_hash)?;
        if !self.passed() {
            writeln!(f, "  faults:")?;
            for line in &self.faults {
                writeln!(f, "    {line}")?;
            }
            for note in &self.notes {
                writeln!(f, "  note: {note}")?;
            }
            for failure in &self.failures {
                writeln!(f, "  {} failed: {}", failure.check, failure.summary)?;
                for d in failure.details.iter().take(PRINTED_DETAILS) {
                    for line in d.lines() {
                        writeln!(f, "    {line}")?;
                    }
                }
                if failure.details.len() > PRINTED_DETAILS {
                    writeln!(f, "    ... and {} more", failure.details.len() - PRINTED_DETAILS)?;
                }
            }
            writeln!(f, "  replay: {}", self.replay_command())?;
        }
        Ok(())
    }
}

/// 64-bit FNV-1a, fed with the JSON of what was recorded: stable across runs and platforms
/// (std's hasher is not).
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
}

/// The fingerprint of a run: every register operation, watch response and lease observation,
/// the leader changes, the heal outcome and the nemesis log.
pub fn history_hash(recording: &Recording, faults: &[String]) -> u64 {
    fn json(value: &impl Serialize) -> String {
        serde_json::to_string(value).expect("recorded histories serialize")
    }
    let parts = [
        json(&recording.register),
        json(&recording.watchers),
        json(&recording.leases),
        json(&recording.leader_changes),
        json(&recording.heal),
        json(&faults),
    ];
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for part in &parts {
        fnv(&mut hash, part.as_bytes());
    }
    hash
}
