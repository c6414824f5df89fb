//! Test harness for end-to-end tests: real `berth server` processes on loopback ports, driven
//! by real clients (`etcdctl`, `kubectl`, the `kube` crate).
//!
//! What it gives a test:
//! - [`Cluster`]: N members started from the freshly built binary, each with its own data dir
//!   and log file inside one [`TempDir`]; members can be killed (SIGKILL), stopped (SIGTERM) and
//!   restarted on the same ports and data dir. Dropping the cluster kills every member and
//!   removes the directory; if the test is panicking, the members' log tails are printed first,
//!   because a failing end-to-end test is undiagnosable without the server's side of the story.
//! - [`poll_until`]: the only way to wait. Tests never sleep for a fixed time: on a loaded 2-core
//!   CI machine any fixed sleep is either too short (flaky) or too long (slow).
//! - [`etcdctl`], [`run_etcdctl`], [`etcdctl_retry`], [`etcdctl_ready`]: find and run the real
//!   `etcdctl` with pinned timeouts and a clean environment.
//!
//! Each test binary includes this module with `mod common;` and uses a different subset of it.
#![allow(dead_code)] // Each test binary uses a different subset of the harness.

use std::env;
use std::fs::{self, File};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod grpc;

/// How long a cluster may take to come up (processes listening, then a leader elected and every
/// member serving linearizable reads). Generous because CI has 2 cores shared by several test
/// binaries and clusters running at once; a healthy cluster is ready in well under a second.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// How long a single client operation may be retried while the cluster settles (e.g. after a
/// member restarts and has to find the leader and catch up).
pub const OP_DEADLINE: Duration = Duration::from_secs(30);

/// How long a member may take to exit after SIGTERM. Clean shutdown flushes sled and stops the
/// Raft tasks; that is milliseconds, so this only bounds a hang.
pub const STOP_DEADLINE: Duration = Duration::from_secs(20);

/// Short, so that waiting adds little latency; the condition checks are cheap.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Lines of each member's log printed when a test fails: enough to see the last election and
/// the error, not so much that the test output becomes unreadable.
const LOG_TAIL_LINES: usize = 80;

/// Returns `n` distinct free loopback ports.
///
/// The ports come from below the kernel's ephemeral range (`ip_local_port_range`). A port the
/// kernel handed out for `127.0.0.1:0` is released before the server binds it, and in that gap
/// any outgoing connection on the machine (tests open thousands) may take it as its local port;
/// ports outside the ephemeral range are never chosen that way. Each test process starts at an
/// offset derived from its pid and walks forward, so parallel test binaries rarely probe the
/// same ports, and every candidate is checked by binding it. All listeners are held until every
/// port is chosen, so the `n` ports are distinct.
pub fn pick_ports(n: usize) -> Vec<u16> {
    const LOWEST: u32 = 10_000;
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
    let ceiling = ephemeral_range_start().max(LOWEST + 1_000);
    let span = ceiling - LOWEST;
    // First use in this process: start at a pid-derived offset.
    let _ = NEXT.compare_exchange(
        usize::MAX,
        (std::process::id() as usize * 7_919) % span as usize,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut listeners = Vec::with_capacity(n);
    let mut attempts = 0;
    while listeners.len() < n {
        attempts += 1;
        assert!(attempts <= span, "no free loopback port below {ceiling}");
        let port = LOWEST + (NEXT.fetch_add(1, Ordering::Relaxed) % span as usize) as u32;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            listeners.push(listener);
        }
    }
    listeners.iter().map(|l| l.local_addr().expect("local_addr of a bound listener").port()).collect()
}

/// The first port of the kernel's ephemeral range (32768 on Linux unless configured).
fn ephemeral_range_start() -> u32 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
        .min(u32::from(u16::MAX))
}

/// Calls `f` every few milliseconds until it returns `Some`, and returns that value; panics
/// with `what` if `deadline` passes first.
pub fn poll_until<T>(deadline: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    match try_poll_until(deadline, f) {
        Some(value) => value,
        None => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// [`poll_until`] without the panic, for callers that want to build their own message (e.g.
/// including the last error seen).
pub fn try_poll_until<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if start.elapsed() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// One `berth server` process and everything needed to start it again identically.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Port of the Kubernetes API (`--listen-api-url`).
    api_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// `None` while the member is down (killed or stopped).
    child: Option<Child>,
    /// Started with `--initial-cluster-state existing`: a member added to a running cluster.
    joins: bool,
}

/// A cluster of `berth server` processes on loopback, living in one temporary directory.
pub struct Cluster {
    dir: TempDir,
    token: String,
    members: Vec<Member>,
    /// Flags added to every member's command line (e.g. a small `--snapshot-count`).
    extra_args: Vec<String>,
}

impl Cluster {
    /// Starts an `n`-member cluster and waits until every member accepts TCP connections on its
    /// client port. Leader election may still be under way: the first client request should go
    /// through a retrying helper such as [`etcdctl_ready`].
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Like [`start`](Self::start), passing `extra_args` to every member (also on restart).
    pub fn start_with(n: usize, extra_args: &[&str]) -> Cluster {
        assert!(n > 0, "a cluster needs at least one member");
        // A token unique per cluster, so that members of two clusters started by parallel tests
        // (or a stale process from an earlier run that reused a port) can never join each other.
        static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);
        let token = format!("berth-test-{}-{}", std::process::id(), NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed));
        let dir = tempfile::Builder::new()
            .prefix("berth-cluster-")
            .tempdir()
            .expect("create the cluster's temporary directory");
        let ports = pick_ports(2 * n);
        let members = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    data_dir: dir.path().join(&name),
                    log_path: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    api_port: pick_ports(1)[0],
                    child: None,
                    joins: false,
                }
            })
            .collect();
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let mut cluster = Cluster { dir, token, members, extra_args };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_ready(START_DEADLINE);
        cluster
    }

    /// Like [`start_with`](Self::start_with) but starts nothing: for tests that fill the data
    /// dirs first (e.g. `berth snapshot restore` into [`data_dir`](Self::data_dir)), then call
    /// [`start_all`](Self::start_all).
    pub fn unstarted(n: usize, extra_args: &[&str]) -> Cluster {
        static NEXT_UNSTARTED: AtomicUsize = AtomicUsize::new(0);
        let token = format!("berth-test-u{}-{}", std::process::id(), NEXT_UNSTARTED.fetch_add(1, Ordering::Relaxed));
        let dir = tempfile::Builder::new()
            .prefix("berth-cluster-")
            .tempdir()
            .expect("create the cluster's temporary directory");
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let mut cluster = Cluster { dir, token, members: Vec::new(), extra_args };
        for _ in 0..n {
            let i = cluster.reserve_member();
            cluster.members[i].joins = false;
        }
        cluster
    }

    /// Starts every member that is not running and waits until they all listen.
    pub fn start_all(&mut self) {
        for i in 0..self.len() {
            if self.members[i].child.is_none() {
                self.spawn(i);
            }
        }
        self.wait_ready(START_DEADLINE);
    }

    /// Reserves ports, a name and a data dir for one more member and returns its index, without
    /// starting it: a test first adds it to the cluster (MemberAdd with [`peer_url`]), then
    /// starts it with [`restart`](Self::restart), which runs it with
    /// `--initial-cluster-state existing` and an `--initial-cluster` of every member so far.
    ///
    /// [`peer_url`]: Self::peer_url
    pub fn reserve_member(&mut self) -> usize {
        let i = self.members.len();
        let ports = pick_ports(2);
        let name = format!("m{i}");
        self.members.push(Member {
            data_dir: self.dir.path().join(&name),
            log_path: self.dir.path().join(format!("{name}.log")),
            name,
            client_port: ports[0],
            peer_port: ports[1],
            api_port: pick_ports(1)[0],
            child: None,
            joins: true,
        });
        i
    }

    /// Waits until member `i` exits on its own (e.g. after being removed from the cluster) and
    /// returns its exit status; panics if it is still running after `deadline`.
    pub fn wait_exit(&mut self, i: usize, deadline: Duration) -> ExitStatus {
        let child = self.members[i].child.as_mut().unwrap_or_else(|| panic!("wait_exit: member {i} is not running"));
        let status = poll_until(deadline, &format!("member {i} to exit"), || child.try_wait().expect("try_wait"));
        self.members[i].child = None;
        status
    }

    /// Member `i`'s data dir (it may not exist before the member first starts).
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }

    /// Member `i`'s name (`m<i>`).
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// The cluster token every member is started with.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `--initial-cluster` as the members are started with it: every member, NAME=PEER_URL.
    pub fn initial_cluster(&self) -> String {
        (0..self.len()).map(|j| format!("{}={}", self.members[j].name, self.peer_url(j))).collect::<Vec<_>>().join(",")
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The directory holding every member's data dir and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:PORT` of member `i`'s etcd API.
    /// `http://127.0.0.1:PORT` of member `i`'s Kubernetes API.
    pub fn api_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].api_port)
    }

    /// The kubeconfig member `i` writes for its Kubernetes API.
    pub fn kubeconfig(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.kubeconfig", self.members[i].name))
    }

    pub fn client_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's client URL, comma-separated, as `etcdctl --endpoints` takes them. Includes
    /// members that are down: a client is expected to fail over.
    pub fn endpoints(&self) -> String {
        (0..self.len()).map(|i| self.client_url(i)).collect::<Vec<_>>().join(",")
    }

    /// `http://127.0.0.1:PORT` of member `i`'s peer (Raft) listener.
    pub fn peer_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].peer_port)
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Crashes member `i` (SIGKILL): no chance to flush or say goodbye.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.members[i].child.take().unwrap_or_else(|| panic!("kill: member {i} is not running"));
        // `kill` fails only if the process was already reaped, which `take` rules out; if it
        // had already exited on its own, `wait` reaps it either way.
        let _ = child.kill();
        child.wait().expect("reap a killed member");
    }

    /// Stops member `i` cleanly (SIGTERM) and returns its exit status. Panics if it has not
    /// exited within [`STOP_DEADLINE`]: a server that ignores SIGTERM is a bug the test should
    /// report, not wait out.
    pub fn stop(&mut self, i: usize) -> ExitStatus {
        let mut child = self.members[i].child.take().unwrap_or_else(|| panic!("stop: member {i} is not running"));
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits in pid_t");
        // SAFETY: plain syscall on a pid we own and have not reaped, so it cannot name another
        // process.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to member {i}: {}", std::io::Error::last_os_error());
        let status = try_poll_until(STOP_DEADLINE, || child.try_wait().expect("try_wait"));
        match status {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("member {i} did not exit within {STOP_DEADLINE:?} after SIGTERM");
            }
        }
    }

    /// Starts member `i` again after [`kill`](Self::kill) or [`stop`](Self::stop), with the same
    /// flags, ports and data dir as the first time (the server ignores `--initial-cluster*` when
    /// its data dir is not empty), and waits until it accepts TCP connections.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "restart: member {i} is still running");
        self.spawn(i);
        self.wait_ready(START_DEADLINE);
    }

    /// Waits until every running member accepts TCP connections on its client port. That only
    /// proves the process is up; whether it has a leader is for the first (retried) request to
    /// find out. Panics early, with the exit status, if a member exits while we wait.
    pub fn wait_ready(&mut self, deadline: Duration) {
        for i in 0..self.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], self.members[i].client_port));
            let name = self.members[i].name.clone();
            poll_until(deadline, &format!("member {name} to listen on {addr}"), || {
                let child = self.members[i].child.as_mut().expect("running member");
                if let Some(status) = child.try_wait().expect("try_wait") {
                    // Keep the exit visible in `dump_logs` and don't kill a reaped pid on Drop.
                    self.members[i].child = None;
                    panic!("member {name} exited while starting: {status}");
                }
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok().map(drop)
            });
        }
    }

    /// Everything member `i` has logged so far (across restarts), for tests that check that a
    /// server-side path they cannot observe through the API was really taken.
    pub fn log(&self, i: usize) -> String {
        fs::read(&self.members[i].log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Prints the tail of every member's log to stderr (which the test harness shows for a
    /// failed test).
    pub fn dump_logs(&self) {
        for m in &self.members {
            let text = fs::read(&m.log_path)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_else(|e| format!("<cannot read {}: {e}>", m.log_path.display()));
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "===== member {} (client {}, peer {}, {}) — last {} of {} log lines =====",
                m.name,
                m.client_port,
                m.peer_port,
                if m.child.is_some() { "running" } else { "down" },
                tail.len(),
                lines.len()
            );
            for line in tail {
                eprintln!("{line}");
            }
        }
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self.initial_cluster();
        let m = &self.members[i];
        // Append, so that a restarted member's log follows its previous life's.
        let log = File::options().create(true).append(true).open(&m.log_path).expect("open member log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("server")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(self.client_url(i))
            .arg("--advertise-client-urls")
            .arg(self.client_url(i))
            .arg("--listen-peer-urls")
            .arg(self.peer_url(i))
            .arg("--initial-advertise-peer-urls")
            .arg(self.peer_url(i))
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .arg("--initial-cluster-state")
            .arg(if m.joins { "existing" } else { "new" })
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--listen-api-url")
            .arg(self.api_url(i))
            .arg("--write-kubeconfig")
            .arg(self.kubeconfig(i))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        // The logs are read only when a test fails, so err on the side of detail; a developer's
        // own RUST_LOG wins.
        if env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // If the test process dies without running Drop (SIGKILL from a test runner's
            // timeout, Ctrl-C), the kernel kills the members too, instead of leaving servers
            // that hold ports and CPU on a 2-core CI machine. The signal follows the death of
            // the spawning *thread*; the cluster lives on its test's thread, so that is fine.
            // SAFETY: prctl is async-signal-safe and touches only the child's own state.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", env!("CARGO_BIN_EXE_berth")));
        self.members[i].child = Some(child);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("cluster directory: {}", self.dir.path().display());
            self.dump_logs();
        }
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // `self.dir` is removed when it is dropped, after the processes writing to it are gone.
    }
}

/// Finds `etcdctl` on `PATH`. If it is missing, panics when `CI` is set (CI must run every
/// test) and otherwise says on stderr that the test is skipped and returns `None`; the test
/// then returns early.
pub fn etcdctl() -> Option<PathBuf> {
    if let Some(path) = find_on_path("etcdctl") {
        return Some(path);
    }
    if env::var_os("CI").is_some() {
        panic!("etcdctl is required in CI: apt-get install etcd-client");
    }
    eprintln!("skipped: etcdctl not installed (apt-get install etcd-client)");
    None
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| {
        fs::metadata(candidate).map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

/// Runs `etcdctl --endpoints=<endpoints> <args>` (API v3) once and returns its output, feeding
/// `stdin` if given (e.g. a `txn` script).
///
/// The timeouts are pinned so a hung server fails the command instead of hanging the test;
/// 10 s of command timeout covers a leader election on a loaded machine.
pub fn run_etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    run_with_input(etcdctl_command(endpoints, args), stdin)
}

/// Runs `cmd` to completion, feeding it `stdin` (if given; else its stdin is closed), and
/// returns its output.
fn run_with_input(mut cmd: Command, stdin: Option<&str>) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        // Written from a thread so that a large input can never deadlock against the child
        // filling its stdout pipe; dropping the pipe closes the child's stdin.
        let input = input.to_owned();
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("wait for {program}: {e}"))
}

/// The lines a child writes to `stdout`, as they come, on a channel: a thread reads them, so a
/// test can wait for the next line with a deadline (`recv_timeout`). The channel disconnects
/// when the child closes its stdout (normally: when it exits).
pub fn lines_of(stdout: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Runs an etcdctl command until it succeeds (exit status 0), for at most `deadline`, and
/// returns the successful output; panics with the last failure otherwise.
///
/// For moments when failures are expected and transient: right after start (no leader yet) or
/// after a member restarts. Retry only commands that are safe to repeat — a write whose reply
/// was lost may have been applied, so a retried `put` can add a revision and a retried `txn`
/// can see its own earlier effect.
pub fn etcdctl_retry(endpoints: &str, args: &[&str], stdin: Option<&str>, deadline: Duration) -> Output {
    let mut last = None;
    let ok = try_poll_until(deadline, || {
        let out = run_etcdctl(endpoints, args, stdin);
        if out.status.success() {
            Some(out)
        } else {
            last = Some(out);
            None
        }
    });
    match ok {
        Some(out) => out,
        None => panic!(
            "etcdctl {args:?} against {endpoints} did not succeed within {deadline:?}; last \
             attempt: {}",
            last.as_ref().map_or_else(|| "none".to_owned(), describe)
        ),
    }
}

/// Waits until every running member serves a linearizable read through `etcdctl`, i.e. it knows
/// the leader and has caught up. After this, tests can expect single attempts to succeed.
pub fn etcdctl_ready(cluster: &Cluster, deadline: Duration) {
    for i in 0..cluster.len() {
        if cluster.is_running(i) {
            etcdctl_retry(&cluster.client_url(i), &["get", "berth-test-readiness-probe"], None, deadline);
        }
    }
}

/// Exit status, stdout and stderr of a finished command, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An `etcdctl --endpoints=<endpoints> <args>` command (API v3, clean environment, the same
/// pinned timeouts as [`run_etcdctl`]) for a test to spawn itself: for long-running commands
/// such as `lease keep-alive` or `watch`, whose output the test reads while they run. Stdin is
/// null; stdout and stderr are piped.
pub fn etcdctl_command(endpoints: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("etcdctl");
    // etcdctl reads every flag from an ETCDCTL_* variable too and refuses a flag that is also
    // set in the environment, so a developer's own settings must not leak in.
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--dial-timeout=3s")
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Finds `kubectl` on `PATH`. If it is missing, panics when `CI` is set and otherwise says on
/// stderr that the test is skipped and returns `None`.
pub fn kubectl() -> Option<PathBuf> {
    if let Some(path) = find_on_path("kubectl") {
        return Some(path);
    }
    if env::var_os("CI").is_some() {
        panic!("kubectl is required in CI (it comes preinstalled on these machines; see .ci/run)");
    }
    eprintln!("skipped: kubectl not installed");
    None
}

/// Runs `kubectl --kubeconfig <kubeconfig> <args>` once with a private HOME and discovery
/// cache under `home`, so no test sees another's (or the developer's) kubectl state, feeding
/// `stdin` if given; `envs` adds variables (e.g. `KUBE_EDITOR`).
pub fn run_kubectl(
    home: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
    envs: &[(&str, &str)],
) -> Output {
    run_with_input(kubectl_command(home, kubeconfig, args, envs), stdin)
}

/// The `kubectl` command [`run_kubectl`] runs, not started: for a test that needs the process
/// itself (a watch it reads while it runs). Output is piped, stdin is closed.
pub fn kubectl_command(home: &Path, kubeconfig: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("kubectl");
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("KUBE") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home)
        .env("KUBECONFIG", kubeconfig)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(home.join("kube-cache"))
        .arg("--request-timeout=20s")
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits until member `i`'s Kubernetes API serves the bootstrap namespace `default` (it has
/// a leader, a quorum, and the bootstrap ran).
pub fn api_ready(cluster: &Cluster, i: usize, deadline: Duration) {
    let url = format!("{}/api/v1/namespaces/default", cluster.api_url(i));
    let addr = url.trim_start_matches("http://").split('/').next().expect("host:port").to_string();
    poll_until(deadline, &format!("the Kubernetes API of member {i}"), || {
        let mut stream = TcpStream::connect(&addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let request = format!("GET /api/v1/namespaces/default HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).ok()?;
        response.starts_with("HTTP/1.1 200").then_some(())
    });
}
