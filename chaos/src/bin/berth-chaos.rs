//! `berth-chaos`: runs Berth's deterministic chaos simulations.
//!
//! - `berth-chaos --seed N --scenario NAME` replays one run and prints its verdict; a failing
//!   run prints the seed, the scenario, what the nemesis did and the shortest failing history.
//!   `--check-replay` runs it twice and fails unless both give the same history.
//! - `berth-chaos --seeds 1000` soaks: that many seeds of every scenario (or of `--scenario`),
//!   `--jobs` at a time, with a progress bar and a summary table (scenario × seeds run ×
//!   operations checked × failures).
//!
//! Every run happens in a process of its own (the soak and `--check-replay` start this binary
//! again with `--seed`): a run replays exactly only from a fresh process, because some state
//! that outlives a run inside a process changes later runs. So any failure a soak prints
//! replays with the command it prints.
//!
//! `--json` prints machine-readable reports (one line per run) on stdout; the human report of a
//! failing run still goes to stderr. The exit status is 1 if any run failed. `RUST_LOG` (e.g.
//! `berth_store=info,turmoil=info`) prints the members' logs, stamped with simulated time.

use anyhow::{bail, Context, Result};
use berth_chaos::sim::{self, RunOptions, Scenario};
use berth_store::member::{ReadMode, MAX_BATCHES_IN_FLIGHT};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};

#[derive(Parser, Debug)]
#[command(name = "berth-chaos", about = "Deterministic chaos simulations of a Berth store cluster")]
struct Args {
    /// Replay this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Soak: run this many seeds per scenario (seeds FIRST..FIRST+N).
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of a soak.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Scenario name, e.g. `partitions-3`, `mixed-5` (`NAME` alone means 3 members). Required
    /// with --seed; a soak runs every scenario unless given one.
    #[arg(long)]
    scenario: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// Print JSON reports (one per line) instead of text.
    #[arg(long)]
    json: bool,
    /// With --seed: run it twice, each in a fresh process, and fail unless both give the same
    /// history hash.
    #[arg(long)]
    check_replay: bool,
    /// Runs of a soak at a time (default: the number of CPUs).
    #[arg(long)]
    jobs: Option<usize>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The store's logs, on request: turmoil's spans name the host, the timer is simulated time.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_timer(SimTime)
            .with_writer(std::io::stderr)
            .init();
    }
    if args.list {
        for s in Scenario::all() {
            println!("{s:<22} {:?}", s.kind.faults());
        }
        return Ok(());
    }
    let scenario: Option<Scenario> =
        args.scenario.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?;
    match (args.seed, args.seeds) {
        (Some(seed), _) => {
            let Some(scenario) = scenario else { bail!("--seed needs --scenario") };
            if args.check_replay {
                return check_replay(seed, scenario, args.store);
            }
            let report = sim::run(seed, scenario, &args.store.options());
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
                if !report.passed() {
                    eprint!("{report}");
                }
            } else {
                print!("{report}");
            }
            if !report.passed() {
                std::process::exit(1);
            }
        }
        (None, Some(n)) => {
            let scenarios = scenario.map_or_else(Scenario::all, |s| vec![s]);
            let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            if !soak(&scenarios, args.first_seed, n, jobs.max(1), args.store, args.json)? {
                std::process::exit(1);
            }
        }
        (None, None) => {
            bail!("give --seed N --scenario NAME to replay a run, or --seeds N to soak (--list shows the scenarios)")
        }
    }
    Ok(())
}

/// How the store under test is built; a child run gets the same flags again.
#[derive(clap::Args, Debug, Clone, Copy)]
struct StoreArgs {
    /// Run the deliberately broken store that serves "linearizable" reads from local state
    /// (shows that the suite catches stale reads).
    #[arg(long)]
    broken_reads: bool,
    /// Group-commit batches each member replicates at once.
    #[arg(long, default_value_t = MAX_BATCHES_IN_FLIGHT, value_parser = at_least_one)]
    batches_in_flight: usize,
}

impl StoreArgs {
    fn options(&self) -> RunOptions {
        RunOptions {
            read_mode: if self.broken_reads { ReadMode::LocalStateForTesting } else { ReadMode::Linearizable },
            batches_in_flight: self.batches_in_flight,
            ..RunOptions::default()
        }
    }

    fn child_args(&self) -> Vec<String> {
        let mut args = vec!["--batches-in-flight".to_string(), self.batches_in_flight.to_string()];
        if self.broken_reads {
            args.push("--broken-reads".into());
        }
        args
    }
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got {s:?}")),
    }
}

/// Log lines carry the simulated time, which is what a replay reproduces.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        // The harness's tick (what the checkers' reports quote), not turmoil's per-host timer.
        match turmoil::sim_elapsed() {
            Some(_) => write!(w, "{:>7}", berth_chaos::sim::client::log_tick()),
            None => write!(w, "{:>7}", "-"),
        }
    }
}

/// What a run in a child process reported: its JSON report, and its human report if it failed.
struct ChildRun {
    report: Value,
    text: String,
}

/// Runs one seed in a fresh process of this binary.
fn run_child(seed: u64, scenario: Scenario, store: StoreArgs) -> Result<ChildRun> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["--seed", &seed.to_string(), "--scenario", &scenario.name(), "--json"]);
    cmd.args(store.child_args());
    let out = cmd.env_remove("RUST_LOG").output().context("cannot start a run")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(line).with_context(|| {
        format!("{scenario} seed {seed}: the run crashed:\n{}", String::from_utf8_lossy(&out.stderr))
    })?;
    Ok(ChildRun { report, text: String::from_utf8_lossy(&out.stderr).into_owned() })
}

fn check_replay(seed: u64, scenario: Scenario, store: StoreArgs) -> Result<()> {
    let first = run_child(seed, scenario, store)?;
    let second = run_child(seed, scenario, store)?;
    let (a, b) = (&first.report["history_hash"], &second.report["history_hash"]);
    if a != b {
        bail!("{scenario} seed {seed} did not replay: history hashes {a} and {b} differ");
    }
    println!("{scenario} seed {seed} replayed: history hash {a} twice");
    Ok(())
}

#[derive(Default)]
struct Row {
    runs: u64,
    ops: u64,
    watch_events: u64,
    failures: u64,
    inconclusive: u64,
    failed_seeds: Vec<u64>,
}

/// Runs `n` seeds of every scenario, `jobs` child processes at a time; prints each failure as
/// it comes and a table at the end. Whether every run passed.
fn soak(scenarios: &[Scenario], first: u64, n: u64, jobs: usize, store: StoreArgs, json: bool) -> Result<bool> {
    let queue: VecDeque<(u64, Scenario)> =
        (first..first + n).flat_map(|seed| scenarios.iter().map(move |&s| (seed, s))).collect();
    let total = queue.len() as u64;
    let queue = Arc::new(Mutex::new(queue));
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (queue, tx) = (queue.clone(), tx.clone());
            std::thread::spawn(move || loop {
                let next = queue.lock().expect("queue lock").pop_front();
                let Some((seed, scenario)) = next else { break };
                if tx.send((seed, scenario, run_child(seed, scenario, store))).is_err() {
                    break;
                }
            })
        })
        .collect();
    drop(tx);

    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs, eta {eta} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut all_passed = true;
    for (seed, scenario, result) in rx {
        let row = rows.entry(scenario.name()).or_default();
        row.runs += 1;
        match result {
            Ok(run) => {
                let count = |field: &str| run.report[field].as_u64().unwrap_or(0);
                row.ops += count("ops_checked");
                row.watch_events += count("watch_events");
                row.inconclusive += u64::from(count("inconclusive_keys") > 0);
                let passed = run.report["failures"].as_array().is_some_and(|f| f.is_empty());
                if !passed {
                    row.failures += 1;
                    row.failed_seeds.push(seed);
                    all_passed = false;
                }
                bar.suspend(|| {
                    if json {
                        println!("{}", run.report);
                    }
                    if !passed {
                        eprint!("{}", run.text);
                    }
                });
            }
            Err(e) => {
                row.failures += 1;
                row.failed_seeds.push(seed);
                all_passed = false;
                bar.suspend(|| eprintln!("{e:#}"));
            }
        }
        bar.set_message(format!("last: {scenario} seed {seed}"));
        bar.inc(1);
    }
    for w in workers {
        let _ = w.join();
    }
    bar.finish_and_clear();
    if !json {
        print_table(&rows);
    }
    Ok(all_passed)
}

fn print_table(rows: &BTreeMap<String, Row>) {
    println!(
        "{:<22} {:>10} {:>14} {:>14} {:>13} {:>9}  failing seeds",
        "scenario", "seeds run", "ops checked", "watch events", "inconclusive", "failures"
    );
    for (name, r) in rows {
        let mut failed = r.failed_seeds.clone();
        failed.sort_unstable();
        let mut seeds: Vec<String> = failed.iter().take(10).map(u64::to_string).collect();
        if r.failed_seeds.len() > 10 {
            seeds.push("...".to_string());
        }
        println!(
            "{name:<22} {:>10} {:>14} {:>14} {:>13} {:>9}  {}",
            r.runs,
            r.ops,
            r.watch_events,
            r.inconclusive,
            r.failures,
            seeds.join(" ")
        );
    }
}
