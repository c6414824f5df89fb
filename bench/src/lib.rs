//! `berth bench`: a load generator for any etcd v3 API endpoint, in the spirit of etcd's
//! `benchmark` tool, so that Berth and etcd can be measured with the same operations.
//!
//! Workloads: `put`, `range`, `txn-put`, `watch` (watchers on one prefix and writers under it:
//! delivered events/s and put→event latency) and `lease-keepalive`. The report gives
//! throughput, latency percentiles from an HDR histogram, and errors (count and messages), as a
//! table or, with `--json`, as one JSON object.
//!
//! Code map: [`args`] (command line → validated [`Plan`]), [`keys`] (which key and value an
//! operation uses), [`rate`] (the `--rate` token bucket), [`report`] (tallies, percentiles,
//! output) are pure and unit-tested; [`run`] is the async shell that does the IO.

pub mod args;
pub mod keys;
pub mod rate;
pub mod report;
pub mod run;

pub use args::{BenchArgs, InvalidArgs, Plan};
pub use report::Report;

use std::io::Write;

/// Why a run could not produce a report. Failed operations are not errors of the run: they are
/// counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Args(#[from] InvalidArgs),
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("no endpoint of {0:?} answered as the leader")]
    NoLeader(Vec<String>),
    #[error("cannot write the report")]
    Output(#[source] std::io::Error),
}

/// Runs `berth bench` as the command line asks and prints the report on stdout.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let plan = Plan::from_args(&args)?;
    let report = run::execute(&plan).await?;
    let text = if plan.json { report.to_json() + "\n" } else { report.to_table() };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(BenchError::Output)
}
