//! End-to-end tests of watches with the real `etcdctl` (API v3) against a 3-member cluster of the
//! built `berth` binary: `watch` with `--prefix`, `--rev`, `--prev-kv`, a compacted `--rev`, and
//! interactive `watch -i` (with its `progress` command).
//!
//! `etcdctl watch` runs until killed, so each one is a child process whose stdout lines are read
//! by a thread and waited for with a deadline; it is killed when the test is done with it. The
//! expected output is what etcd 3.4 prints for the same events (checked against a real etcd).

mod common;

use common::*;
use std::io::Write;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long one expected line may take: covers a loaded CI machine.
const LINE_DEADLINE: Duration = Duration::from_secs(20);

/// A running `etcdctl watch`; killed (and reaped) on drop.
struct Watching {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    what: String,
}

impl Watching {
    fn start(endpoints: &str, args: &[&str]) -> Watching {
        let mut cmd = etcdctl_command(endpoints, args);
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn etcdctl {args:?}: {e}"));
        let lines = lines_of(child.stdout.take().expect("piped stdout"));
        let stdin = child.stdin.take();
        Watching { child, stdin, lines, what: format!("etcdctl {args:?}") }
    }

    /// The next line of output, or `None` if there is none within `wait`.
    fn line_within(&self, wait: Duration) -> Option<String> {
        match self.lines.recv_timeout(wait) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("{} exited early", self.what),
        }
    }

    fn line(&self) -> String {
        self.line_within(LINE_DEADLINE).unwrap_or_else(|| panic!("{} printed nothing for {LINE_DEADLINE:?}", self.what))
    }

    /// Asserts that the next lines are exactly `expected`.
    fn expect(&self, expected: &[&str]) {
        let got: Vec<String> = expected.iter().map(|_| self.line()).collect();
        assert_eq!(got, expected, "output of {}", self.what);
    }

    /// Sends a command line to `etcdctl watch -i`.
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").expect("write to etcdctl");
        stdin.flush().expect("flush etcdctl's stdin");
    }

    /// Waits until the watch is established: a watch starting "now" misses writes made before
    /// the server has it, so `key` is written (with a counter) until an event shows up, then
    /// the output is drained up to the last of those writes. Afterwards the output holds only
    /// what the test writes next.
    fn sync(&self, endpoints: &str, key: &str) {
        let deadline = Instant::now() + START_DEADLINE;
        let mut sent = 0;
        loop {
            sent += 1;
            run_ok(endpoints, &["put", key, &sent.to_string()]);
            if let Some(line) = self.line_within(Duration::from_millis(300)) {
                assert_eq!(line, "PUT", "{}", self.what);
                assert_eq!(self.line(), key);
                let mut last: usize = self.line().parse().expect("a counter value");
                // Events are in order: the rest of the writes (if any) follow.
                while last < sent {
                    self.expect(&["PUT", key]);
                    last = self.line().parse().expect("a counter value");
                }
                return;
            }
            assert!(Instant::now() < deadline, "{} never showed an event", self.what);
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs etcdctl once, asserts success and returns stdout.
fn run_ok(endpoints: &str, args: &[&str]) -> String {
    let out = run_etcdctl(endpoints, args, None);
    assert!(out.status.success(), "etcdctl {args:?} failed: {}", describe(&out));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The revision a write created, from `-w json` output.
fn put_rev(endpoints: &str, key: &str, value: &str) -> i64 {
    let out = run_ok(endpoints, &["-w", "json", "put", key, value]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    v["header"]["revision"].as_i64().expect("header.revision")
}

#[test]
fn watch_prefix_rev_prev_kv_compacted_and_interactive() {
    if etcdctl().is_none() {
        return;
    }
    let cluster = Cluster::start(3);
    etcdctl_ready(&cluster, START_DEADLINE);
    // One member per role, so that watches are served by followers as well as the leader.
    let writer = cluster.client_url(0);
    let watcher = cluster.client_url(1);

    // --prefix, live: puts, an overwrite, a delete; a key outside the prefix is not shown.
    let live = Watching::start(&watcher, &["watch", "--prefix", "live/"]);
    live.sync(&writer, "live/sync");
    let r1 = put_rev(&writer, "live/a", "1");
    put_rev(&writer, "live/a", "2");
    run_ok(&writer, &["del", "live/a"]);
    run_ok(&writer, &["put", "liveX", "outside"]);
    run_ok(&writer, &["put", "live/z", "end"]);
    live.expect(&["PUT", "live/a", "1", "PUT", "live/a", "2", "DELETE", "live/a", "", "PUT", "live/z", "end"]);
    drop(live);

    // --rev replays history, here on another member.
    let replay = Watching::start(&cluster.client_url(2), &["watch", "--prefix", "live/a", &format!("--rev={r1}")]);
    replay.expect(&["PUT", "live/a", "1", "PUT", "live/a", "2", "DELETE", "live/a", ""]);
    drop(replay);

    // --prev-kv: the previous value is printed before the new one (as etcd 3.4 prints it).
    let prev = Watching::start(&watcher, &["watch", "live/a", "--prev-kv", &format!("--rev={r1}")]);
    prev.expect(&[
        "PUT", "live/a", "1", // a create has no previous value
        "PUT", "live/a", "1", "live/a", "2", //
        "DELETE", "live/a", "2", "live/a", "",
    ]);
    drop(prev);

    // Interactive: watches are created from stdin; `progress` prints the progress revision.
    let mut inter = Watching::start(&watcher, &["watch", "-i"]);
    inter.send("watch --prefix inter/");
    inter.sync(&writer, "inter/sync");
    let last = put_rev(&writer, "inter/k", "v");
    inter.expect(&["PUT", "inter/k", "v"]);
    inter.send("progress");
    let line = inter.line();
    let progress: i64 = line
        .strip_prefix("progress notify: ")
        .unwrap_or_else(|| panic!("expected a progress notification, got {line:?}"))
        .parse()
        .expect("a revision");
    assert!(progress >= last, "progress {progress} is behind the last write {last}");
    // A second watch on the same stream, from history.
    inter.send(&format!("watch inter/k --rev={last}"));
    inter.expect(&["PUT", "inter/k", "v"]);
    drop(inter);

    // A compacted --rev: etcdctl reports the cancel and fails.
    let now = put_rev(&writer, "live/compact", "c");
    run_ok(&writer, &["compaction", &now.to_string()]);
    // Every member applies the compaction before answering a linearizable read.
    run_ok(&watcher, &["get", "live/compact"]);
    let out = run_etcdctl(&watcher, &["watch", "--prefix", "live/", &format!("--rev={r1}")], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("watch was canceled (etcdserver: mvcc: required revision has been compacted)"),
        "expected a compacted cancel: {}",
        describe(&out)
    );
}
