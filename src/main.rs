//! The `berth` command: parses the command line and hands off to the crate that does the work.
//! No logic lives here.

use anyhow::Context;
use berth_control::replica::{self, ReplicaConfig};
use berth_store::member::{ClusterState, MemberConfig};
use berth_store::server::ServerConfig;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// mimalloc instead of glibc's malloc: under load, allocation was a third of a member's
/// user-space CPU with glibc; mimalloc cut a 3-member cluster's CPU per put by 3-14% (two runs).
/// Built without transparent huge pages (see the workspace `Cargo.toml`): they made an idle
/// member 58 MiB resident instead of 15.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its index in `mimalloc.h`), which the Rust bindings do not
/// name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with mimalloc before it goes back to the system (whole arenas wait
/// ten times as long). At its default, 1 s, a member that had just taken a million puts held
/// 11–18 MiB it no longer used; at 100 ms it held 450 MiB against 461 MiB, and put throughput
/// did not suffer (it was higher, by 3.6% in that run and 6% over four cluster pairs).
const PURGE_DELAY_MS: std::ffi::c_long = 100;

fn tune_allocator() {
    // SAFETY: sets an integer option. mimalloc's option setters are not thread-safe, and this runs
    // first in `main`, before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A Kubernetes-style orchestrator with its own Raft-replicated, etcd-compatible store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a control-plane replica: a member of the replicated store serving the etcd v3 API, and
    /// the Kubernetes API on top of it.
    Server(ServerArgs),
    /// Back up and restore the store (`etcdctl snapshot save` makes the backup file).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Load-test any etcd v3 API endpoint (Berth or etcd) and report throughput and latency.
    Bench(berth_bench::BenchArgs),
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Create a new member data dir from a backup file, like `etcdutl snapshot restore`; run it
    /// once per member of the new cluster, then start each with `berth server` on its data dir.
    Restore(RestoreArgs),
}

/// Flags as `etcdutl snapshot restore`'s; they must match the `berth server` flags the member is
/// then started with.
#[derive(Parser)]
struct RestoreArgs {
    /// The backup file (written by `etcdctl snapshot save`).
    file: PathBuf,
    /// The new member's data dir; must not exist or be empty.
    #[arg(long, default_value = "berth-data")]
    data_dir: PathBuf,
    /// The new member's name.
    #[arg(long, default_value = "default")]
    name: String,
    /// The new cluster's members: NAME=PEER_URL,... (default: this member alone).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// The new cluster's token.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// The new member's peer URLs (comma-separated).
    #[arg(long, default_value = "http://127.0.0.1:2380", value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
}

impl RestoreArgs {
    fn into_config(self) -> anyhow::Result<berth_store::backup::RestoreConfig> {
        let initial_cluster = match &self.initial_cluster {
            Some(spec) => parse_initial_cluster(spec)?,
            None => self.initial_advertise_peer_urls.iter().map(|url| (self.name.clone(), url.clone())).collect(),
        };
        Ok(berth_store::backup::RestoreConfig {
            snapshot: self.file,
            data_dir: self.data_dir,
            name: self.name,
            initial_cluster,
            initial_cluster_token: self.initial_cluster_token,
            initial_advertise_peer_urls: self.initial_advertise_peer_urls,
        })
    }
}

fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let restored = berth_store::backup::restore(&config)?;
    println!(
        "restored revision {} into {} as member {} of cluster {:x} ({} members)",
        restored.revision,
        config.data_dir.display(),
        restored.member_id,
        restored.cluster_id,
        restored.members
    );
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum InitialClusterState {
    New,
    Existing,
}

/// Flags are named as etcd's, so etcd operators know them.
#[derive(Parser)]
struct ServerArgs {
    /// Human-readable name of this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Where this member keeps its data.
    #[arg(long, default_value = "berth-data")]
    data_dir: PathBuf,
    /// URLs to serve the etcd client API on (comma-separated).
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    listen_client_urls: Vec<String>,
    /// Client URLs to tell the rest of the cluster about (default: the listen URLs).
    #[arg(long, value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// URLs to serve peer (Raft) traffic on (comma-separated).
    #[arg(long, default_value = "http://127.0.0.1:2380", value_delimiter = ',')]
    listen_peer_urls: Vec<String>,
    /// This member's peer URLs as the rest of the cluster reaches them (default: the listen URLs).
    #[arg(long, value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
    /// The initial members: NAME=PEER_URL,... (default: this member alone).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// `new` to form a new cluster, `existing` to join one this member was added to.
    #[arg(long, value_enum, default_value = "new")]
    initial_cluster_state: InitialClusterState,
    /// A token that tells clusters apart; part of every member id.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// Applied entries between two snapshots (after which the log is truncated); etcd's default.
    /// The applied state is persisted on its own, so a snapshot only bounds the log.
    #[arg(long, default_value_t = 100_000)]
    snapshot_count: u64,
    /// Entries kept after a snapshot so that slow followers can catch up from the log.
    #[arg(long = "experimental-snapshot-catchup-entries", default_value_t = 5_000)]
    snapshot_catchup_entries: u64,
    /// URL to serve the Kubernetes API on [default: http://127.0.0.1:6443].
    #[arg(long)]
    listen_api_url: Option<String>,
    /// Where to write a kubeconfig for the Kubernetes API.
    #[arg(long, default_value = "berth.kubeconfig")]
    write_kubeconfig: PathBuf,
}

fn parse_initial_cluster(spec: &str) -> anyhow::Result<Vec<(String, String)>> {
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (name, url) =
                pair.split_once('=').with_context(|| format!("--initial-cluster entry {pair:?} is not NAME=URL"))?;
            Ok((name.to_string(), url.to_string()))
        })
        .collect()
}

impl ServerArgs {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let advertise_client_urls = if self.advertise_client_urls.is_empty() {
            self.listen_client_urls.clone()
        } else {
            self.advertise_client_urls
        };
        let peer_urls = if self.initial_advertise_peer_urls.is_empty() {
            self.listen_peer_urls.clone()
        } else {
            self.initial_advertise_peer_urls
        };
        let initial_cluster = match &self.initial_cluster {
            Some(spec) => parse_initial_cluster(spec)?,
            None => peer_urls.iter().map(|url| (self.name.clone(), url.clone())).collect(),
        };
        Ok(ServerConfig {
            member: MemberConfig {
                name: self.name,
                data_dir: self.data_dir,
                advertise_client_urls,
                initial_advertise_peer_urls: peer_urls,
                initial_cluster,
                initial_cluster_state: match self.initial_cluster_state {
                    InitialClusterState::New => ClusterState::New,
                    InitialClusterState::Existing => ClusterState::Existing,
                },
                initial_cluster_token: self.initial_cluster_token,
                snapshot_count: self.snapshot_count,
                snapshot_catchup_entries: self.snapshot_catchup_entries,
            },
            listen_client_urls: self.listen_client_urls,
            listen_peer_urls: self.listen_peer_urls,
        })
    }
}

/// Installs the SIGINT and SIGTERM handlers at once, so that a signal arriving while the server
/// starts up still means "shut down cleanly", and returns a future that resolves on the first one.
fn termination() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// The error and its causes on one line. Many of our error types already spell their source out
/// in their own message (so that they read well when logged alone); a cause whose text is
/// already part of the line is skipped instead of being repeated.
fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn,h2=warn,tower=warn,hyper=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // Without the LIFO slot a task woken by another runs after the tasks already queued, not
    // straight after its waker. When an entry commits, its requests' handlers all wake at once;
    // each wakes its connection's writer, which then runs after them and sends their responses
    // in one write instead of one write per response (measured at a 3-member leader under 64
    // clients: 37% fewer writev calls and 10-25% more put throughput).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .disable_lifo_slot()
        .build()
        .expect("starting the runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(mut args) => {
                let shutdown = termination()?;
                let listen_api_url = args.listen_api_url.take();
                let write_kubeconfig = Some(std::mem::take(&mut args.write_kubeconfig));
                let config = ReplicaConfig { server: args.into_config()?, listen_api_url, write_kubeconfig };
                replica::run(config, shutdown).await.map_err(anyhow::Error::from)
            }
            Command::Snapshot(SnapshotCommand::Restore(args)) => restore(args),
            Command::Bench(args) => berth_bench::run(args).await.map_err(anyhow::Error::from),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hard-coded index names the purge delay: before it is set, that option has the purge
    /// delay's default (1000 ms), which no option around it has.
    #[test]
    fn the_allocator_option_set_is_the_purge_delay() {
        // SAFETY: reads and sets integer options.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
            tune_allocator();
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), PURGE_DELAY_MS);
        }
    }
}
