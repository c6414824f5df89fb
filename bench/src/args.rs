//! The command line of `berth bench` and its validation into a [`Plan`].
//!
//! Validation is pure (no IO) so every rule is unit-tested; the bounds here are what keeps the
//! load generator itself bounded (tasks, connections, buffers).

use crate::keys::{max_distinct_keys, KeyOrder, STAMP_BYTES};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::time::Duration;

/// Most gRPC connections one run opens: each is a TCP connection plus an HTTP/2 task.
pub const MAX_CONNS: usize = 1_024;
/// Most concurrent clients (tasks with one request in flight each).
pub const MAX_CLIENTS: usize = 10_000;
/// Most requests one client keeps in flight; `--clients` × `--in-flight` is bounded by
/// [`MAX_CLIENTS`] too, since each request in flight is one task.
pub const MAX_IN_FLIGHT: usize = 1_024;
/// Most watchers (each is one gRPC stream and one task).
pub const MAX_WATCHERS: usize = 100_000;
/// etcd's default `--max-request-bytes` (1.5 MiB): a larger key or value cannot be written, so
/// it is refused here with a clear message instead of as a stream of identical server errors.
pub const MAX_REQUEST_BYTES: usize = 1_572_864;

/// Which operation the clients repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `Put` of one key.
    Put,
    /// `Range` of one key.
    Range,
    /// `Txn` with no compares and one put.
    TxnPut,
    /// Watchers on one prefix, writers putting under it: put→event latency and fan-out.
    Watch,
    /// One lease per client, then keep-alives on a `LeaseKeepAlive` stream.
    LeaseKeepalive,
}

/// Read consistency of `range`, named as etcd's benchmark names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Linearizable: goes through the leader's read index.
    #[value(name = "l", alias = "linearizable")]
    Linearizable,
    /// Serializable: answered from the local member's state.
    #[value(name = "s", alias = "serializable")]
    Serializable,
}

/// `berth bench WORKLOAD [flags]`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// What to run.
    #[arg(value_enum)]
    pub workload: Workload,
    /// etcd v3 API endpoints (http://HOST:PORT or HOST:PORT, comma-separated); connection i goes
    /// to endpoint i mod N.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Send every connection to the endpoint whose member is the leader (found by asking each
    /// endpoint's status), as etcd's benchmark does with the same flag: a write sent to a
    /// follower is forwarded, so without it a latency depends on which member won the election.
    #[arg(long)]
    pub target_leader: bool,
    /// gRPC connections (HTTP/2) the clients are spread over.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients, each with one request in flight (writers for `watch`).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Requests each client keeps in flight on its connection, each sent without waiting for the
    /// others' answers (for `watch`: puts of each writer, as etcd's benchmark sends every put of
    /// its one writer from a goroutine of its own). Not for `lease-keepalive`, whose stream
    /// carries one keep-alive at a time.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Operations in all (puts for `watch`, keep-alives for `lease-keepalive`).
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Key size in bytes (for `watch`: after the prefix).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Pick keys at random among this many; without it keys are sequential (0, 1, 2, …).
    #[arg(long)]
    pub key_space: Option<u64>,
    /// Consistency of `range`: `l` (linearizable) or `s` (serializable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Most operations per second, over all clients (token bucket); 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// `watch`: watchers on the prefix, spread over the connections.
    #[arg(long, default_value_t = 10)]
    pub watchers: usize,
    /// `watch`: the prefix watched and written under (a per-run id is appended, so runs never
    /// see each other's events).
    #[arg(long, default_value = "/berth-bench/watch/")]
    pub prefix: String,
    /// `lease-keepalive`: TTL of the granted leases, in seconds.
    #[arg(long, default_value_t = 60)]
    pub lease_ttl: i64,
    /// Seed of the random keys and values, so that two runs (against Berth and against etcd)
    /// send the same operations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Deadline of one request, in seconds; a request past it counts as an error.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A validated run: what the shell executes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub workload: Workload,
    /// Normalised to `http://HOST:PORT`.
    pub endpoints: Vec<String>,
    pub target_leader: bool,
    pub conns: usize,
    pub clients: usize,
    /// Requests in flight per client.
    pub in_flight: usize,
    pub total: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub order: KeyOrder,
    pub serializable: bool,
    /// Operations per second; `None` = unlimited.
    pub rate: Option<u64>,
    pub watchers: usize,
    pub prefix: Vec<u8>,
    pub lease_ttl: i64,
    pub seed: u64,
    pub timeout: Duration,
    pub json: bool,
}

/// A command line that cannot be run, with the reason.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidArgs(pub String);

fn bound(name: &str, value: usize, min: usize, max: usize) -> Result<(), InvalidArgs> {
    if value < min || value > max {
        return Err(InvalidArgs(format!("--{name} must be between {min} and {max}, not {value}")));
    }
    Ok(())
}

/// `HOST:PORT` or `http://HOST:PORT[/]` → `http://HOST:PORT`.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, InvalidArgs> {
    let endpoint = endpoint.trim();
    if endpoint.starts_with("https://") {
        return Err(InvalidArgs(format!("endpoint {endpoint:?}: TLS is not supported; use http://")));
    }
    let host_port = endpoint.strip_prefix("http://").unwrap_or(endpoint).trim_end_matches('/');
    let valid = match host_port.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok(),
        None => false,
    };
    if !valid {
        return Err(InvalidArgs(format!("endpoint {endpoint:?} is not http://HOST:PORT")));
    }
    Ok(format!("http://{host_port}"))
}

impl Plan {
    pub fn from_args(args: &BenchArgs) -> Result<Plan, InvalidArgs> {
        let endpoints = args
            .endpoints
            .iter()
            .filter(|e| !e.trim().is_empty())
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(InvalidArgs("--endpoints names no endpoint".into()));
        }
        bound("conns", args.conns, 1, MAX_CONNS)?;
        bound("clients", args.clients, 1, MAX_CLIENTS)?;
        bound("in-flight", args.in_flight, 1, MAX_IN_FLIGHT)?;
        if args.clients * args.in_flight > MAX_CLIENTS {
            return Err(InvalidArgs(format!(
                "--clients {} × --in-flight {} is more than {MAX_CLIENTS} requests in flight",
                args.clients, args.in_flight
            )));
        }
        if args.workload == Workload::LeaseKeepalive && args.in_flight > 1 {
            return Err(InvalidArgs(
                "lease-keepalive sends one keep-alive at a time on each stream: use --clients, not --in-flight".into(),
            ));
        }
        if args.total == 0 {
            return Err(InvalidArgs("--total must be at least 1".into()));
        }
        bound("key-size", args.key_size, 1, MAX_REQUEST_BYTES)?;
        bound("val-size", args.val_size, 0, MAX_REQUEST_BYTES)?;
        let order = match args.key_space {
            None => KeyOrder::Sequential,
            Some(0) => return Err(InvalidArgs("--key-space must be at least 1".into())),
            Some(space) => {
                if let Some(max) = max_distinct_keys(args.key_size) {
                    if space > max {
                        return Err(InvalidArgs(format!(
                            "--key-space {space} does not fit in --key-size {}: it holds {max} distinct keys",
                            args.key_size
                        )));
                    }
                }
                KeyOrder::Random { space }
            }
        };
        if args.workload == Workload::Watch {
            bound("watchers", args.watchers, 1, MAX_WATCHERS)?;
            // The writer's send time travels in the value (see `keys::stamp_value`).
            if args.val_size < STAMP_BYTES {
                return Err(InvalidArgs(format!(
                    "watch needs --val-size of at least {STAMP_BYTES}: the value carries the send time"
                )));
            }
            if args.prefix.is_empty() {
                return Err(InvalidArgs("--prefix must not be empty".into()));
            }
        }
        if args.workload == Workload::LeaseKeepalive && args.lease_ttl < 1 {
            return Err(InvalidArgs("--lease-ttl must be at least 1 second".into()));
        }
        if args.timeout == 0 {
            return Err(InvalidArgs("--timeout must be at least 1 second".into()));
        }
        Ok(Plan {
            workload: args.workload,
            endpoints,
            target_leader: args.target_leader,
            conns: args.conns,
            clients: args.clients,
            in_flight: args.in_flight,
            total: args.total,
            key_size: args.key_size,
            val_size: args.val_size,
            order,
            serializable: args.consistency == Consistency::Serializable,
            rate: (args.rate > 0).then_some(args.rate),
            watchers: args.watchers,
            prefix: args.prefix.clone().into_bytes(),
            lease_ttl: args.lease_ttl,
            seed: args.seed,
            timeout: Duration::from_secs(args.timeout),
            json: args.json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(line: &str) -> BenchArgs {
        Cli::try_parse_from(std::iter::once("bench").chain(line.split_whitespace())).unwrap().args
    }

    fn plan(line: &str) -> Result<Plan, InvalidArgs> {
        Plan::from_args(&parse(line))
    }

    #[test]
    fn defaults_are_etcds() {
        let p = plan("put").unwrap();
        assert_eq!(p.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!((p.conns, p.clients, p.total, p.key_size, p.val_size), (1, 1, 10_000, 8, 8));
        assert_eq!(p.in_flight, 1);
        assert_eq!(p.order, KeyOrder::Sequential);
        assert!(!p.serializable);
        assert_eq!(p.rate, None);
    }

    #[test]
    fn every_flag_parses() {
        let p = plan(
            "range --endpoints 127.0.0.1:1,http://h:2/ --conns 8 --clients 64 --total 5 --key-size 4 \
             --val-size 256 --key-space 1000 --consistency s --rate 100 --json",
        )
        .unwrap();
        assert_eq!(p.workload, Workload::Range);
        assert_eq!(p.endpoints, ["http://127.0.0.1:1", "http://h:2"]);
        assert_eq!((p.conns, p.clients, p.total, p.key_size, p.val_size), (8, 64, 5, 4, 256));
        assert_eq!(p.order, KeyOrder::Random { space: 1000 });
        assert!(p.serializable && p.json);
        assert_eq!(p.rate, Some(100));
        assert_eq!(parse("txn-put").workload, Workload::TxnPut);
        assert_eq!(parse("lease-keepalive").workload, Workload::LeaseKeepalive);
        assert_eq!(parse("range --consistency linearizable").consistency, Consistency::Linearizable);
    }

    #[test]
    fn bad_endpoints_are_refused() {
        assert!(normalize_endpoint("https://h:1").unwrap_err().0.contains("TLS"));
        assert!(normalize_endpoint("h").is_err());
        assert!(normalize_endpoint("http://h:port").is_err());
        assert!(normalize_endpoint(":1").is_err());
        assert!(normalize_endpoint("http://h:1/path:2").is_err());
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(plan("put --conns 0").is_err());
        assert!(plan("put --clients 10001").is_err());
        assert!(plan("put --total 0").is_err());
        assert!(plan("put --key-size 0").is_err());
        assert!(plan("put --key-space 0").is_err());
        assert!(plan("put --timeout 0").is_err());
        assert!(plan("put --in-flight 0").unwrap_err().0.contains("--in-flight"));
        assert!(plan("put --in-flight 1025").is_err());
        assert_eq!(plan("watch --clients 1 --in-flight 64").unwrap().in_flight, 64);
        // Each request in flight is a task: the product is bounded like --clients.
        assert!(plan("put --clients 10000 --in-flight 1").is_ok());
        assert!(plan("put --clients 5001 --in-flight 2").unwrap_err().0.contains("in flight"));
        assert!(plan("lease-keepalive --in-flight 2").unwrap_err().0.contains("one keep-alive at a time"));
        // Two bytes hold 65,536 keys, not more.
        assert!(plan("put --key-size 2 --key-space 65536").is_ok());
        assert!(plan("put --key-size 2 --key-space 65537").unwrap_err().0.contains("65536"));
        // Sequential keys wrap instead (documented in `keys`), so any total is fine.
        assert!(plan("put --key-size 1 --total 1000").is_ok());
    }

    #[test]
    fn watch_needs_room_for_the_send_time() {
        assert!(plan("watch --val-size 7").unwrap_err().0.contains("send time"));
        assert!(plan("watch --val-size 8").is_ok());
        assert!(plan("watch --val-size 8 --watchers 0").is_err());
        // Other workloads don't stamp values.
        assert!(plan("put --val-size 0").is_ok());
    }

    #[test]
    fn lease_ttl_must_be_positive() {
        assert!(plan("lease-keepalive --lease-ttl 0").is_err());
        // Only checked for the workload that grants leases.
        assert!(plan("put --lease-ttl 0").is_ok());
    }
}
