//! The deterministic simulation: whole store members (Raft, MVCC, the etcd gRPC services) as
//! turmoil hosts, clients speaking gRPC over turmoil's TCP, a nemesis injecting faults, and the
//! checkers judging what the clients recorded.
//!
//! One run ([`run`]) is a pure function of its seed and scenario:
//! - turmoil's RNG (message latency, loss) is seeded with it;
//! - the nemesis schedule is [`nemesis::schedule`] of it;
//! - every client draws its choices from its own RNG derived from it;
//! - elections cannot depend on openraft's unseeded RNG (one-millisecond election windows, see
//!   [`cluster::timing`]), the simulated epoch is fixed, and time is the simulation's;
//! - tokio's own RNG (`select!` branch order) is seeded by turmoil, which needs tokio built with
//!   `--cfg tokio_unstable` (the workspace's `.cargo/config.toml`).
//!
//! A run replays exactly from a fresh process; a later run in the same process may differ
//! (state that outlives a run inside the process, not identified yet), which is why the
//! `berth-chaos` binary and CI run every seed in a process of its own.
//!
//! A run has four phases on the simulated clock: warm-up (the cluster forms), faults (the
//! workloads run while the nemesis acts), heal (every fault removed, crashed members restarted;
//! the cluster must converge and serve within a bound) and checking. The harness (this module)
//! drives the simulation step by step from outside: it applies the schedule's faults at their
//! ticks (crashing a host drops its engine's unsynced writes), samples every member's Raft
//! metrics into the invariant checker, and at the end runs the checkers.
//!
//! Module map: [`scenario`] (named scenarios, pure), [`nemesis`] (the schedule, pure),
//! [`cluster`] (members as hosts), [`net`] (tonic over turmoil), [`client`] (the clients' view
//! and wire conversions), [`workload`] (register, watch, lease), [`membership`] (the client
//! that changes the membership), [`roster`] (the committed membership as observed, pure),
//! [`heal`] (convergence and liveness), [`record`] (what a run records), [`report`] (verdicts).

pub mod client;
pub mod cluster;
pub mod heal;
pub mod membership;
pub mod nemesis;
pub mod net;
pub mod record;
pub mod report;
pub mod roster;
pub mod scenario;
pub mod workload;

pub use report::{Failure, RunReport};
pub use scenario::{Kind, Params, Scenario};

use crate::history::Tick;
use crate::invariants::MemberObservation;
use crate::lease_check::{check_leases, LeaseHistory, LeaseOptions};
use crate::linearizability::{check_linearizability, check_revisions, LinearizabilityOptions, Verdict};
use crate::watch_check::{check_watches, KeyRange, TrueHistory};
use berth_store::member::{ReadMode, MAX_BATCHES_IN_FLIGHT};
use client::{Cluster, Directory, SimClock};
use cluster::{MemberSlot, SnapshotKnobs};
use membership::MembershipClient;
use nemesis::{Fault, FaultAction, MembershipStep};
use rand::rngs::StdRng;
use rand::SeedableRng;
use record::Shared;
use roster::{Roster, RosterChange};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// How a run is set up besides its seed and scenario.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// `LocalStateForTesting` runs a deliberately broken store (stale "linearizable" reads), to
    /// show that the suite catches it.
    pub read_mode: ReadMode,
    /// Group-commit batches each member replicates at once.
    pub batches_in_flight: usize,
    /// Overrides the scenario's timeline and sizes.
    pub params: Option<Params>,
    pub linearizability: LinearizabilityOptions,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            read_mode: ReadMode::Linearizable,
            batches_in_flight: MAX_BATCHES_IN_FLIGHT,
            params: None,
            linearizability: LinearizabilityOptions::default(),
        }
    }
}

/// Normal link latency (turmoil draws from an exponential distribution between the two).
const LINK_LATENCY_MS: (u64, u64) = (1, 20);
/// Segments a host's TCP stack buffers; above it turmoil resets connections. Generous: a
/// released backlog after a long latency fault must fit.
const TCP_CAPACITY: usize = 1 << 16;
/// Members are sampled for the invariants this often (ticks).
const SAMPLE_EVERY: Tick = 5;
/// Slack after the convergence bound before the run is declared stuck.
const STUCK_SLACK_MS: Tick = 10_000;
/// The simulated wall clock starts here (lease ids are seeded from it), the same every run.
const EPOCH_SECS: u64 = 1_700_000_000;
/// Most spare hosts a run with membership changes gets (each added member is a fresh one).
/// Bounded because every member has an election window of its own, later ones longer.
const MAX_SPARES: usize = 4;

/// Runs one simulation and checks it. Deterministic: the same seed, scenario and options give
/// the same report (wall-clock time aside), when run first in a fresh process (see above).
pub fn run(seed: u64, scenario: Scenario, options: &RunOptions) -> RunReport {
    let started = std::time::Instant::now();
    let params = options.params.unwrap_or_else(|| scenario.params());
    let faults = nemesis::schedule(seed, &scenario, &params);
    let heal_at = params.warmup_ms + params.fault_ms;
    let converge_by = heal_at + params.converge_ms;

    let clock = SimClock::default();
    let shared = Shared::new(clock.clone());
    let knobs =
        SnapshotKnobs { snapshot_count: params.snapshot_count, catchup_entries: params.snapshot_catchup_entries };
    let spares = nemesis::max_additions(&faults).min(MAX_SPARES);
    let slots: Vec<Arc<MemberSlot>> = cluster::cluster_specs(scenario.members, spares, knobs)
        .into_iter()
        .map(|spec| {
            let initial = spec.index < scenario.members;
            MemberSlot::new(spec, options, initial)
        })
        .collect();
    let hosts: Vec<String> = slots.iter().map(|s| s.spec.host.clone()).collect();
    let directory = Directory::new((0..scenario.members).collect());

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .simulation_duration(Duration::from_millis(converge_by + 2 * STUCK_SLACK_MS))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(LINK_LATENCY_MS.0))
        .max_message_latency(Duration::from_millis(LINK_LATENCY_MS.1))
        .tcp_capacity(TCP_CAPACITY)
        .build();
    for slot in &slots {
        let slot = slot.clone();
        sim.host(slot.spec.host.clone(), move || cluster::run_member(slot.clone()));
    }
    let pending = Arc::new(AtomicUsize::new(0));
    let mut client_hosts =
        spawn_clients(&mut sim, seed, &params, &hosts, &directory, &shared, &pending, heal_at, converge_by);
    // Only runs with membership changes have the client that makes them (and spare hosts), so
    // the other scenarios' simulations are what they were without it.
    let requests = (spares > 0).then(|| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = MembershipClient {
            cluster: Cluster::new(hosts.clone(), directory.clone()),
            requests: rx,
            pending: pending.clone(),
        };
        let s = shared.clone();
        sim.client("membership", async move {
            client.run(s).await;
            Ok(())
        });
        client_hosts.push("membership".to_string());
        tx
    });

    let mut nemesis = Nemesis::new(&faults, hosts.clone(), client_hosts);
    nemesis.membership = requests.map(|requests| MembershipHands {
        requests: Some(requests),
        initial: scenario.members,
        pending: pending.clone(),
        spares: (scenario.members..slots.len()).collect(),
        directory: directory.clone(),
    });
    let ids = slots.iter().map(|s| s.spec.identity.member_id).collect();
    let mut sampler = Sampler::new(ids, scenario.members, params.warmup_ms, heal_at);
    let mut sim_error = None;
    let limit = converge_by + STUCK_SLACK_MS;
    loop {
        let now = clock.now();
        nemesis.apply_due(now, &mut sim, &slots, &sampler);
        if now == heal_at {
            nemesis.heal_all(now, &mut sim, &slots, &sampler.roster);
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                sim_error = Some(format!("the simulation failed at tick {now}: {e}"));
                break;
            }
        }
        clock.advance();
        if now % SAMPLE_EVERY == 0 {
            let changes = sampler.sample(now, &slots, &shared);
            nemesis.membership_changed(now, &changes, &slots, &sampler.roster);
        }
        if now >= limit {
            sim_error = Some(format!("the clients did not finish by tick {limit}"));
            break;
        }
    }
    let sim_ms = clock.now();

    // The true history for the watch checker, from the member that applied the most.
    let truth = slots
        .iter()
        .filter_map(|s| s.member())
        .map(|m| {
            let state = m.kv().read();
            (state.mvcc.revision().0, state.mvcc.stored_events())
        })
        .max_by_key(|(revision, _)| *revision);
    // Removed members that never learned of it (cut off when it happened) keep running.
    let unaware: Vec<usize> =
        (0..slots.len()).filter(|&i| sampler.roster.has_left(i) && slots[i].member().is_some()).collect();
    // Nothing outside the hosts may hold a member when the simulation (and with it every
    // member's runtime) is dropped.
    slots.iter().for_each(|s| s.clear());
    drop(sim);

    let mut recording = std::mem::take(&mut *shared.lock());
    recording.watchers.sort_by_key(|w| w.id);
    recording.leases.sort_by_key(|l| l.id);
    let mut report = RunReport::new(seed, scenario, options, sim_ms);
    // The nemesis's log and its membership client's, in time order (the nemesis first at a tie).
    let mut log = nemesis.log;
    log.extend(recording.membership_log.iter().map(|(at, line)| stamped(*at, line)));
    log.sort_by_key(|(at, _)| *at);
    report.faults = log.into_iter().map(|(_, line)| line).collect();
    if spares > 0 {
        let names = |slots_: &[usize]| slots_.iter().map(|&i| hosts[i].as_str()).collect::<Vec<_>>().join(",");
        let current = sampler.roster.current();
        let left: Vec<usize> = (0..slots.len()).filter(|&i| sampler.roster.has_left(i)).collect();
        let joined: Vec<usize> = (scenario.members..slots.len()).filter(|&i| slots[i].is_admitted()).collect();
        report.membership_changes = joined.len() + left.len();
        report.notes.push(format!(
            "membership: {} at the end; joined {}; left {}",
            names(&current),
            if joined.is_empty() { "none".to_string() } else { names(&joined) },
            if left.is_empty() { "none".to_string() } else { names(&left) },
        ));
        if !unaware.is_empty() {
            report.notes.push(format!("removed but still running at the end: {}", names(&unaware)));
        }
    }
    if !single_term_leaders() {
        report.notes.push(
            "openraft runs with its default leader ids (several leaders per term possible): the \
             one-leader-per-term invariant is checked per leader id"
                .to_string(),
        );
    }
    report.heal = recording.heal.clone();
    report.history_hash = report::history_hash(&recording, &report.faults);
    if let Some(e) = sim_error {
        report.failures.push(Failure::new("simulation", e, Vec::new()));
    }

    // Register workload: linearizability per key, and the global revision rules.
    report.register_ops = recording.register.ops.len();
    match check_linearizability(&recording.register, &options.linearizability) {
        Ok(lin) => {
            report.ops_checked = lin.ops;
            report.inconclusive_keys = lin.inconclusive.len();
            if let Verdict::NotLinearizable(counterexample) = &lin.verdict {
                let mut details = vec![counterexample.to_string()];
                if !lin.other_failing_keys.is_empty() {
                    let others: Vec<String> = lin.other_failing_keys.iter().map(|k| k.to_string()).collect();
                    details.push(format!("other failing keys: {}", others.join(", ")));
                }
                report.failures.push(Failure::new(
                    "linearizability",
                    format!("key {} is not linearizable", counterexample.key),
                    details,
                ));
            }
        }
        Err(e) => report.failures.push(Failure::new("history", format!("malformed register history: {e}"), Vec::new())),
    }
    let revisions = check_revisions(&recording.register);
    if !revisions.is_empty() {
        let details = revisions.iter().map(|v| {
            let (a, b) = (&recording.register.ops[v.earlier], &recording.register.ops[v.later]);
            format!("{}\n    #{} {a}\n    #{} {b}", v.detail, v.earlier, v.later)
        });
        report.failures.push(Failure::new(
            "revisions",
            format!("{} revision violations", revisions.len()),
            details.collect(),
        ));
    }

    // Watch workload, against the final store.
    match truth {
        Some((last, events)) => {
            let mut by_revision: BTreeMap<i64, Vec<crate::history::Event>> = BTreeMap::new();
            for e in &events {
                by_revision.entry(e.event.kv.mod_revision.0).or_default().push(client::store_event(&e.event));
            }
            match TrueHistory::new(1, last, by_revision) {
                Ok(truth) => {
                    let watch = check_watches(&truth, &recording.watchers);
                    report.watch_events = watch.events_checked;
                    if !watch.is_ok() {
                        report.failures.push(Failure::new(
                            "watch",
                            format!("{} watch violations ({:?})", watch.violations.len(), watch.broken()),
                            watch.violations.iter().map(|v| v.to_string()).collect(),
                        ));
                    }
                }
                Err(e) => report.failures.push(Failure::new("watch", format!("bad true history: {e}"), Vec::new())),
            }
        }
        None => report.failures.push(Failure::new("watch", "no member was running at the end".to_string(), Vec::new())),
    }

    // Lease workload.
    // How far a lease clock moved forward (leases expire early) or back (late) between two of
    // its readings: skews add up (−a, then +b, is a jump of a + b).
    let (clock_forward, clock_back) = nemesis::lease_clock_jumps(&faults);
    // Any member may lead, spares included.
    let election = cluster::max_election_ms(slots.len());
    // The longest time the cluster could not commit the revoke or elect a leader. One fault's
    // length is not a bound on its own: a connection a network fault stalled stays stalled
    // after the fault ends (turmoil's TCP never retransmits) until the peer transport's HTTP/2
    // keep-alive drops it, up to 10 s after its last frame; and membership changes (a member
    // removed while another is down, faults of other tracks meeting a cluster of fewer
    // members) leave a cluster without a quorum for longer than any fault. So the longest
    // stretch in which the cluster committed nothing, as observed, counts too.
    let faults_outage = nemesis::longest_outage(&faults);
    let stall = sampler.stalls.longest;
    let outage = faults_outage.max(stall);
    if spares > 0 || stall > faults_outage {
        report.notes.push(format!("longest commit stall during the faults: {stall} ms"));
    }
    let lease_options = LeaseOptions {
        failover_extension: election,
        early_tolerance: clock_forward,
        // The expiry scan (0.5 s), the revoke's commit, a clock set back, and the outage.
        late_tolerance: 1_500 + clock_back + outage + 2 * election,
    };
    let leases = LeaseHistory { leases: recording.leases.clone(), leader_changes: recording.leader_changes.clone() };
    let lease = check_leases(&leases, &lease_options);
    report.lease_keys = lease.keys;
    report.lease_observations = lease.observations;
    if !lease.is_ok() {
        report.failures.push(Failure::new(
            "lease",
            format!("{} lease violations", lease.violations.len()),
            lease.violations.iter().map(|v| v.to_string()).collect(),
        ));
    }

    // Invariants sampled during the run.
    report.invariant_observations = recording.invariants.observations();
    if !recording.invariants.is_ok() {
        let v = recording.invariants.violations();
        report.failures.push(Failure::new(
            "invariants",
            format!("{} invariant violations", v.len()),
            v.iter().map(|v| v.to_string()).collect(),
        ));
    }

    // Heal: convergence and liveness within the bound.
    if report.heal.converged_at.is_none() {
        report.failures.push(Failure::new(
            "convergence",
            format!("no convergence within {} ms of the heal", params.converge_ms),
            vec![report.heal.detail.clone()],
        ));
    } else if report.heal.live_at.is_none() {
        report.failures.push(Failure::new(
            "liveness",
            "no fresh write after the heal".to_string(),
            vec![report.heal.detail.clone()],
        ));
    }
    report.wall_ms = started.elapsed().as_millis() as u64;
    report
}

/// Registers the client hosts; returns their names (the lossy-links nemesis degrades their
/// links too).
#[allow(clippy::too_many_arguments)]
fn spawn_clients(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    params: &Params,
    hosts: &[String],
    directory: &Arc<Directory>,
    shared: &Arc<Shared>,
    pending: &Arc<AtomicUsize>,
    heal_at: Tick,
    converge_by: Tick,
) -> Vec<String> {
    let cluster = || Cluster::new(hosts.to_vec(), directory.clone());
    let rng = |stream: u64| StdRng::seed_from_u64(nemesis::derive_seed(seed, 1_000 + stream));
    // The workloads start once the first election is surely over, and stop at the heal.
    let start = Duration::from_millis(params.warmup_ms / 2);

    let registers: Vec<workload::register::RegisterClient> = (0..params.register_clients)
        .map(|i| workload::register::RegisterClient {
            id: i as u64 + 1,
            cluster: cluster(),
            rng: rng(i as u64),
            keys: params.register_keys,
            until: heal_at,
        })
        .collect();
    let s = shared.clone();
    sim.client("register", async move {
        tokio::time::sleep(start).await;
        futures::future::join_all(registers.into_iter().map(|c| c.run(s.clone()))).await;
        Ok(())
    });

    let ranges = [(KeyRange::prefix("r/"), true), (KeyRange::prefix("r/"), false), (KeyRange::prefix("l/"), true)];
    let watchers: Vec<workload::watch::Watcher> = ranges
        .into_iter()
        .enumerate()
        .map(|(i, (range, prev_kv))| workload::watch::Watcher {
            id: i as u64 + 1,
            range,
            prev_kv,
            cluster: cluster(),
            rng: rng(100 + i as u64),
            workload_end: heal_at,
        })
        .collect();
    let s = shared.clone();
    sim.client("watch", async move {
        tokio::time::sleep(start).await;
        futures::future::join_all(watchers.into_iter().map(|w| w.run(s.clone()))).await;
        Ok(())
    });

    let leases: Vec<workload::lease::LeaseClient> = (0..params.lease_clients)
        .map(|i| workload::lease::LeaseClient {
            id: i as u64 + 1,
            cluster: cluster(),
            rng: rng(200 + i as u64),
            until: heal_at,
        })
        .collect();
    let s = shared.clone();
    sim.client("lease", async move {
        tokio::time::sleep(start).await;
        futures::future::join_all(leases.into_iter().map(|c| c.run(s.clone()))).await;
        Ok(())
    });

    let healer =
        heal::HealClient { cluster: cluster(), heal_at, deadline: converge_by, membership_pending: pending.clone() };
    let s = shared.clone();
    sim.client("heal", async move {
        healer.run(s).await;
        Ok(())
    });
    ["register", "watch", "lease", "heal"].iter().map(|s| s.to_string()).collect()
}

/// Samples the members for the invariants, the lease checker's leader changes, the committed
/// membership, and notes what the run exercised.
struct Sampler {
    /// Leaderships seen: (term, leader, boot of the leader).
    leaderships: BTreeSet<(u64, u64, u64)>,
    /// Per member index: its last sampled log index.
    last_log: BTreeMap<usize, u64>,
    /// Every member id the run may have, spares included, sorted: the ranks [`epoch`] uses.
    ranked_ids: Vec<u64>,
    /// The newest committed membership any member applied.
    roster: Roster,
    /// Commit progress, for the longest stretch in which the cluster committed nothing.
    stalls: CommitStalls,
}

/// The longest time no member applied anything new, among the stretches that began by `until`
/// (the workloads write all along until then, so such a stall is an outage: nothing could
/// commit). A stall still going on at `until` counts until the next commit, however late: the
/// heal removes the faults, but a connection a network fault stalled stays stalled until the
/// peer transport's HTTP/2 keep-alive drops it (turmoil's TCP never retransmits: seed 2019 of
/// `partitions-3` committed nothing for 10.5 s after a one-way drop of 2.3 s), and the writes
/// in flight commit only then. Pure: fed the sampled applied indexes.
#[derive(Clone, Copy, Debug)]
struct CommitStalls {
    /// When the highest applied log index of any member last grew, and to what.
    progress: (Tick, u64),
    longest: Tick,
    until: Tick,
}

impl CommitStalls {
    fn new(from: Tick, until: Tick) -> CommitStalls {
        CommitStalls { progress: (from, 0), longest: 0, until }
    }

    /// A member sampled at `at` has applied up to log index `applied`.
    fn applied(&mut self, at: Tick, applied: u64) {
        if applied > self.progress.1 {
            if self.progress.0 <= self.until {
                self.longest = self.longest.max(at.saturating_sub(self.progress.0));
            }
            self.progress = (at, applied);
        }
    }

    /// Every member was sampled at `at`: a stall in progress during the workloads counts so far.
    fn sampled(&mut self, at: Tick) {
        if at <= self.until {
            self.longest = self.longest.max(at.saturating_sub(self.progress.0));
        }
    }
}

/// Whether openraft runs with Raft's standard leader ids (feature `single-term-leader`: at most
/// one leader per term, a committed leader id is just the term) rather than its default ones
/// (term, node), under which a candidate with a larger node id may win a term that already has
/// a leader and supersede it. Told apart by the size of a committed leader id.
fn single_term_leaders() -> bool {
    std::mem::size_of::<openraft::CommittedLeaderId<u64>>() == std::mem::size_of::<u64>()
}

/// The election epoch a member's vote belongs to, as the invariant checker's "term". With
/// standard leader ids it is the term, and the checker verifies Raft's election safety. With
/// openraft's default leader ids a term may legitimately have several leaders one after the
/// other, so the epoch is the whole leader id (term, then node rank, as openraft orders votes):
/// "one leader per epoch" then holds by construction and what remains checked is that no
/// member's vote ever goes backwards, restarts included. `member_ids` are every member the run
/// may have (spares included, so that a member added later does not change the others' ranks),
/// sorted.
fn epoch(term: u64, voted_for: Option<u64>, member_ids: &[u64]) -> u64 {
    if single_term_leaders() {
        return term;
    }
    let rank = voted_for.and_then(|id| member_ids.iter().position(|m| *m == id)).map_or(0, |r| r as u64 + 1);
    term * (member_ids.len() as u64 + 1) + rank
}

impl Sampler {
    /// `ids`: the member id of every slot; the first `initial` slots are the initial members.
    fn new(ids: Vec<u64>, initial: usize, stall_from: Tick, stall_until: Tick) -> Sampler {
        let mut ranked_ids = ids.clone();
        // openraft orders votes of one term by node id.
        ranked_ids.sort_unstable();
        Sampler {
            leaderships: BTreeSet::new(),
            last_log: BTreeMap::new(),
            ranked_ids,
            roster: Roster::new(ids, initial),
            stalls: CommitStalls::new(stall_from, stall_until),
        }
    }

    /// Samples every running member; returns the membership changes it saw.
    fn sample(&mut self, at: Tick, slots: &[Arc<MemberSlot>], shared: &Shared) -> Vec<RosterChange> {
        let mut changes = Vec::new();
        let mut recording = shared.lock();
        for (i, slot) in slots.iter().enumerate() {
            let Some(member) = slot.member() else { continue };
            let applied_revision = {
                let state = member.kv().read();
                if let Some(log_id) = state.membership.log_id() {
                    let nodes = state.membership.membership().nodes().map(|(id, _)| *id);
                    changes.extend(self.roster.observe(log_id.index, nodes));
                }
                state.mvcc.revision().0
            };
            let metrics = member.raft().metrics().borrow().clone();
            let vote = metrics.vote.leader_id();
            let boot = slot.boots.load(Ordering::Relaxed);
            let observation = MemberObservation {
                at,
                member: metrics.id,
                boot,
                term: epoch(vote.get_term(), vote.voted_for(), &self.ranked_ids),
                leader: metrics.current_leader,
                applied_revision,
            };
            recording.invariants.observe_member(&observation);
            // A new leadership promotes that member's lessor (every lease gets its full TTL
            // again): the lease checker's "leader changes". So does a leader restarted before
            // anyone else was elected (openraft restores its leadership; the new lessor knows
            // no deadlines), hence the boot.
            if metrics.state == openraft::ServerState::Leader
                && self.leaderships.insert((metrics.current_term, metrics.id, boot))
            {
                tracing::debug!(at, member = %slot.spec.host, term = metrics.current_term, boot, "leader change");
                recording.leader_changes.push(at);
            }
            self.last_log.insert(i, metrics.last_log_index.unwrap_or(0));
            // Commit progress: the highest log index any member applied.
            self.stalls.applied(at, metrics.last_applied.map_or(0, |l| l.index));
        }
        self.stalls.sampled(at);
        changes
    }

    /// The index of the member that leads the highest term, among those that say they lead.
    fn leader(slots: &[Arc<MemberSlot>]) -> Option<usize> {
        slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let m = s.member()?;
                let metrics = m.raft().metrics().borrow().clone();
                (metrics.state == openraft::ServerState::Leader).then_some((metrics.current_term, i))
            })
            .max()
            .map(|(_, i)| i)
    }

    /// The highest log index any running member has purged (compacted into a snapshot).
    fn purged(slots: &[Arc<MemberSlot>]) -> u64 {
        slots.iter().filter_map(|s| s.member()?.raft().metrics().borrow().purged.map(|p| p.index)).max().unwrap_or(0)
    }
}

/// What the nemesis needs to change the membership: the queue of its membership client, the
/// initial member count, how many requests that client has not finished, the spare hosts not
/// used yet, and the clients' directory of current members.
struct MembershipHands {
    /// `None` after the heal.
    requests: Option<tokio::sync::mpsc::UnboundedSender<membership::Request>>,
    initial: usize,
    pending: Arc<AtomicUsize>,
    spares: VecDeque<usize>,
    directory: Arc<Directory>,
}

/// Applies the schedule to the simulation and undoes each fault when it ends.
struct Nemesis {
    /// (tick, fault index, starts?) in time order; a fault ending at a tick is undone before one
    /// starting at the same tick is applied.
    events: Vec<(Tick, bool, usize)>,
    faults: Vec<Fault>,
    /// What each started fault did, once resolved (an isolated leader becomes a partition,
    /// member positions become members).
    applied: BTreeMap<usize, FaultAction>,
    next: usize,
    /// Every member host: the initial members, then the spares.
    members: Vec<String>,
    clients: Vec<String>,
    crashed: BTreeSet<usize>,
    /// `None` without membership faults.
    membership: Option<MembershipHands>,
    /// What happened (tick, line), for the report.
    log: Vec<(Tick, String)>,
}

impl Nemesis {
    fn new(faults: &[Fault], members: Vec<String>, clients: Vec<String>) -> Nemesis {
        let mut events: Vec<(Tick, bool, usize)> =
            faults.iter().enumerate().flat_map(|(i, f)| [(f.start, true, i), (f.end, false, i)]).collect();
        events.sort();
        Nemesis {
            events,
            faults: faults.to_vec(),
            applied: BTreeMap::new(),
            next: 0,
            members,
            clients,
            crashed: BTreeSet::new(),
            membership: None,
            log: Vec::new(),
        }
    }

    fn note(&mut self, now: Tick, line: impl fmt::Display) {
        self.log.push(stamped(now, line));
    }

    fn pairs(&self, a: &[usize], b: &[usize]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for &x in a {
            for &y in b {
                if x != y {
                    out.push((self.members[x].clone(), self.members[y].clone()));
                }
            }
        }
        out
    }

    /// Every member host, spares included (links to a host that runs nothing are harmless).
    fn all_members(&self) -> Vec<usize> {
        (0..self.members.len()).collect()
    }

    fn apply_due(&mut self, now: Tick, sim: &mut turmoil::Sim<'_>, slots: &[Arc<MemberSlot>], sampler: &Sampler) {
        while self.next < self.events.len() && self.events[self.next].0 <= now {
            let (_, starts, i) = self.events[self.next];
            self.next += 1;
            if let FaultAction::Membership { first, victim } = self.faults[i].action {
                if starts {
                    self.note(now, format!("start {}", self.faults[i].action));
                }
                self.change_membership(now, first, victim, starts, &sampler.roster);
                continue;
            }
            if starts {
                let current = sampler.roster.current();
                let mut action = nemesis::resolve_action(&self.faults[i].action, &current);
                if let FaultAction::Crash { members } = &action {
                    match self.crashable(now, &current, members) {
                        Some(allowed) => action = FaultAction::Crash { members: allowed },
                        None => continue,
                    }
                }
                if action == FaultAction::IsolateLeader {
                    match nemesis::isolate(Sampler::leader(slots)) {
                        Some(a) => action = a,
                        None => {
                            self.note(now, "isolate the leader: there is none, skipped");
                            continue;
                        }
                    }
                }
                self.note(now, format!("start {action}"));
                self.start(&action, sim, slots);
                self.applied.insert(i, action);
            } else if let Some(action) = self.applied.remove(&i) {
                self.note(now, format!("end   {action}"));
                self.stop(now, &action, sim, slots, sampler);
            }
        }
    }

    /// The members of a scheduled crash that may go down now (see [`nemesis::crashable`]), noting
    /// those that may not; `None` if none may.
    fn crashable(&mut self, now: Tick, current: &[usize], members: &[usize]) -> Option<Vec<usize>> {
        let allowed = nemesis::crashable(current, &self.crashed, members);
        if allowed.len() < members.len() {
            let skipped: Vec<&str> =
                members.iter().filter(|m| !allowed.contains(m)).map(|&m| self.members[m].as_str()).collect();
            let line = format!("crash of {} skipped: a majority of the members must keep running", skipped.join(","));
            self.note(now, line);
        }
        (!allowed.is_empty()).then_some(allowed)
    }

    /// One step of a membership fault (see [`nemesis::membership_step`]), queued for the
    /// membership client. No step while the previous one is unfinished: its outcome decides
    /// what the next one should be.
    fn change_membership(&mut self, now: Tick, first: MembershipStep, victim: usize, at_start: bool, roster: &Roster) {
        let Some(hands) = self.membership.as_mut() else { return };
        if hands.pending.load(Ordering::Relaxed) > 0 {
            self.note(now, "membership: the previous change is unfinished, skipped");
            return;
        }
        let current = roster.current();
        let request = match nemesis::membership_step(current.len(), hands.initial, first, at_start) {
            None => return,
            Some(MembershipStep::Remove) => {
                let slot = nemesis::resolve(&current, victim);
                membership::Request::Remove { host: self.members[slot].clone(), id: roster.id(slot) }
            }
            Some(MembershipStep::Add) => match hands.spares.pop_front() {
                Some(slot) => {
                    membership::Request::Add { host: self.members[slot].clone(), peer_url: cluster::peer_url(slot) }
                }
                None => {
                    self.note(now, "membership: no spare host left, no member added");
                    return;
                }
            },
        };
        // Faults end by the heal, which closes the queue after the steps due at its tick.
        let requests = hands.requests.as_ref().expect("membership steps come before the heal");
        requests.send(request.clone()).expect("the membership client runs until the heal");
        hands.pending.fetch_add(1, Ordering::Relaxed);
        self.note(now, format!("membership: {request}"));
    }

    /// Acts on the membership the members applied: a member that joined gets its host started
    /// (as an operator starts it after `member add`), one that left is never restarted, and the
    /// clients' directory follows.
    fn membership_changed(&mut self, now: Tick, changes: &[RosterChange], slots: &[Arc<MemberSlot>], roster: &Roster) {
        if changes.is_empty() {
            return;
        }
        for change in changes {
            for &slot in &change.joined {
                if slots[slot].admit() {
                    self.note(
                        now,
                        format!("{} joins: added to the cluster, starts on an empty engine", self.members[slot]),
                    );
                }
            }
            for &slot in &change.left {
                let down = if self.crashed.contains(&slot) { " (crashed: it stays down)" } else { "" };
                self.note(now, format!("{} left the cluster{down}", self.members[slot]));
            }
        }
        if let Some(hands) = &self.membership {
            hands.directory.set(roster.current());
        }
    }

    fn start(&mut self, action: &FaultAction, sim: &mut turmoil::Sim<'_>, slots: &[Arc<MemberSlot>]) {
        match action {
            FaultAction::Partition { side } => {
                let rest: Vec<usize> = self.all_members().into_iter().filter(|m| !side.contains(m)).collect();
                for (a, b) in self.pairs(side, &rest) {
                    sim.partition(a.as_str(), b.as_str());
                }
            }
            FaultAction::CutLinks { pairs } => {
                for &(a, b) in pairs {
                    sim.partition(self.members[a].as_str(), self.members[b].as_str());
                }
            }
            FaultAction::OneWay { from, to } => {
                for (a, b) in self.pairs(from, to) {
                    sim.partition_oneway(a.as_str(), b.as_str());
                }
            }
            FaultAction::Crash { members } => {
                for &m in members {
                    if self.crashed.insert(m) {
                        slots[m].clear();
                        sim.crash(self.members[m].as_str());
                        // After the host's tasks are gone: what was not synced is lost.
                        slots[m].engine.crash();
                    }
                }
            }
            FaultAction::Latency { ms } => {
                let all = self.all_members();
                for (a, b) in self.pairs(&all, &all) {
                    sim.set_link_latency(a.as_str(), b.as_str(), Duration::from_millis(*ms));
                }
            }
            FaultAction::Loss { per_mille } => {
                let rate = f64::from(*per_mille) / 1000.0;
                for (a, b) in self.every_link() {
                    sim.set_link_fail_rate(a.as_str(), b.as_str(), rate);
                }
            }
            FaultAction::Skew { member, ms } => slots[*member].skew_ms.store(*ms, Ordering::Relaxed),
            FaultAction::IsolateLeader | FaultAction::Membership { .. } => {
                unreachable!("resolved before it starts")
            }
        }
    }

    /// Every member-member and client-member link.
    fn every_link(&self) -> Vec<(String, String)> {
        let all = self.all_members();
        let mut links = self.pairs(&all, &all);
        for c in &self.clients {
            for m in &self.members {
                links.push((c.clone(), m.clone()));
            }
        }
        links
    }

    /// Restarts a crashed member, unless it left the cluster meanwhile (a removed member's data
    /// dir is not reused: a member added back is a fresh one).
    fn restart(&mut self, now: Tick, m: usize, sim: &mut turmoil::Sim<'_>, roster: &Roster) {
        if roster.has_left(m) {
            self.note(now, format!("{} stays down: it left the cluster", self.members[m]));
        } else {
            sim.bounce(self.members[m].as_str());
        }
    }

    fn stop(
        &mut self,
        now: Tick,
        action: &FaultAction,
        sim: &mut turmoil::Sim<'_>,
        slots: &[Arc<MemberSlot>],
        sampler: &Sampler,
    ) {
        match action {
            FaultAction::Partition { .. } | FaultAction::CutLinks { .. } | FaultAction::OneWay { .. } => {
                let all = self.all_members();
                for (a, b) in self.pairs(&all, &all) {
                    sim.repair(a.as_str(), b.as_str());
                }
            }
            FaultAction::Crash { members } => {
                for &m in members {
                    if self.crashed.remove(&m) {
                        let behind = sampler.last_log.get(&m).copied().unwrap_or(0);
                        let purged = Sampler::purged(slots);
                        if purged > behind && !sampler.roster.has_left(m) {
                            self.note(
                                now,
                                format_args!(
                                    "m{} restarts at log index {behind}, the others purged up to {purged}: it needs a snapshot",
                                    m + 1
                                ),
                            );
                        }
                        self.restart(now, m, sim, &sampler.roster);
                    }
                }
            }
            FaultAction::Latency { .. } => {
                let all = self.all_members();
                for (a, b) in self.pairs(&all, &all) {
                    restore_latency(sim, &a, &b);
                }
            }
            FaultAction::Loss { .. } => {
                for (a, b) in self.every_link() {
                    sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0);
                }
            }
            FaultAction::Skew { member, .. } => slots[*member].skew_ms.store(0, Ordering::Relaxed),
            FaultAction::IsolateLeader | FaultAction::Membership { .. } => {}
        }
    }

    /// Removes every fault at the heal: links repaired and restored, crashed members restarted
    /// (unless they left the cluster), clocks set right, and no membership change requested any
    /// more (one in progress finishes).
    fn heal_all(&mut self, now: Tick, sim: &mut turmoil::Sim<'_>, slots: &[Arc<MemberSlot>], roster: &Roster) {
        self.note(now, "heal: every fault removed");
        for (a, b) in self.every_link() {
            sim.repair(a.as_str(), b.as_str());
            sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0);
            restore_latency(sim, &a, &b);
        }
        for m in std::mem::take(&mut self.crashed) {
            self.restart(now, m, sim, roster);
        }
        for slot in slots {
            slot.skew_ms.store(0, Ordering::Relaxed);
        }
        self.applied.clear();
        // Closing the queue ends the membership client once it is done; the clients' directory
        // keeps following the membership.
        if let Some(hands) = &mut self.membership {
            hands.requests = None;
        }
    }
}

/// A line of the report's fault log, stamped with its tick.
fn stamped(at: Tick, line: impl fmt::Display) -> (Tick, String) {
    (at, format!("{at:>6} {line}"))
}

fn restore_latency(sim: &mut turmoil::Sim<'_>, a: &str, b: &str) {
    sim.set_link_latency(a, b, Duration::from_millis(LINK_LATENCY_MS.0));
    sim.set_link_max_message_latency(a, b, Duration::from_millis(LINK_LATENCY_MS.1));
}

#[cfg(test)]
mod tests {
    use super::CommitStalls;

    #[test]
    fn a_stall_that_began_during_the_workloads_counts_until_the_next_commit() {
        // Seed 2019 of partitions-3: commits until 8185, a one-way drop from 8187 to 10485, the
        // heal at 12000, the stalled peer connections dropped by their keep-alive and the next
        // commit at 18700.
        let mut s = CommitStalls::new(2_000, 12_000);
        for at in (2_005..=8_185).step_by(5) {
            s.applied(at, at);
            s.sampled(at);
        }
        for at in (8_190..18_700).step_by(5) {
            s.applied(at, 8_185);
            s.sampled(at);
        }
        assert_eq!(s.longest, 12_000 - 8_185, "during the workloads: as far as it went");
        s.applied(18_700, 8_186);
        assert_eq!(s.longest, 18_700 - 8_185);
    }

    #[test]
    fn a_pause_that_begins_after_the_workloads_is_no_stall() {
        let mut s = CommitStalls::new(2_000, 12_000);
        for at in (2_000..=12_100).step_by(100) {
            s.applied(at, at);
            s.sampled(at);
        }
        // Nothing written for a while after the workloads ended: not an outage.
        s.applied(20_000, 20_000);
        s.sampled(20_000);
        assert_eq!(s.longest, 100);
    }
}
