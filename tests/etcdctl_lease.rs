//! End-to-end test of leases with the real `etcdctl` (API v3) against a 3-member cluster of the
//! built `berth` binary: `lease grant`, `put --lease`, `lease timetolive --keys`, `lease list`,
//! `lease keep-alive` (run as a child whose output is read while it runs), `lease revoke`, and
//! etcd's errors for unknown leases. Assertions are on etcdctl's simple output format, which
//! prints lease ids as 16 hex digits.
//!
//! One cluster serves every check: starting one costs seconds on a 2-core CI machine.

mod common;

use common::*;
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

/// Runs etcdctl once against `endpoints`, asserts success and returns stdout.
fn ctl(endpoints: &str, args: &[&str]) -> String {
    let out = run_etcdctl(endpoints, args, None);
    assert!(out.status.success(), "etcdctl {args:?} against {endpoints} failed: {}", describe(&out));
    String::from_utf8(out.stdout).expect("etcdctl's simple output is UTF-8 here")
}

/// Runs etcdctl once and asserts that it fails with `message` in its error output.
fn ctl_fails(endpoints: &str, args: &[&str], message: &str) {
    let out = run_etcdctl(endpoints, args, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(message),
        "expected etcdctl {args:?} to fail with {message:?}, got: {}",
        describe(&out)
    );
}

/// The hex lease id out of `lease 694d77aa9e3a6a15 granted with TTL(60s)`, and the TTL.
fn parse_grant(out: &str) -> (String, i64) {
    let words: Vec<&str> = out.split_whitespace().collect();
    assert!(
        words.len() == 5 && words[0] == "lease" && words[2..4] == ["granted", "with"],
        "unexpected grant output: {out:?}"
    );
    let id = words[1].to_string();
    assert_eq!(id.len(), 16, "etcdctl prints ids as 16 hex digits: {out:?}");
    let ttl = words[4].strip_prefix("TTL(").and_then(|t| t.strip_suffix("s)")).expect("TTL(<n>s)");
    (id, ttl.parse().expect("TTL is a number"))
}

/// A running etcdctl whose stdout lines arrive on a channel (read by a thread, so the test can
/// wait for a line with a deadline). Killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn spawn(endpoints: &str, args: &[&str]) -> Running {
        let mut child = etcdctl_command(endpoints, args).spawn().expect("spawn etcdctl");
        let lines = lines_of(child.stdout.take().expect("piped stdout"));
        Running { child, lines }
    }

    /// The next line of output; panics if none arrives within `deadline`.
    fn line(&mut self, deadline: Duration) -> String {
        match self.lines.recv_timeout(deadline) {
            Ok(line) => line,
            Err(e) => panic!("no output line from etcdctl within {deadline:?} ({e}); {}", self.kill_and_describe()),
        }
    }

    /// Waits for the process to exit on its own.
    fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        poll_until(deadline, "etcdctl to exit", || self.child.try_wait().expect("try_wait"))
    }

    /// Kills and reaps the process and describes how it ended, for a panic message.
    fn kill_and_describe(&mut self) -> String {
        use std::io::Read;
        let _ = self.child.kill();
        let status = self.child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        format!("etcdctl ended with {status}, stderr: {stderr}")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn lease_commands() {
    if etcdctl().is_none() {
        return;
    }
    let cluster = Cluster::start(3);
    etcdctl_ready(&cluster, START_DEADLINE);
    let all = cluster.endpoints();
    let m0 = cluster.client_url(0);
    let m1 = cluster.client_url(1);
    let m2 = cluster.client_url(2);

    // grant, then attach keys with put --lease through another member.
    let (id, ttl) = parse_grant(&ctl(&m0, &["lease", "grant", "60"]));
    assert_eq!(ttl, 60);
    assert_eq!(ctl(&m1, &["put", "--lease", &id, "etcdctl-lease/a", "1"]), "OK\n");
    assert_eq!(ctl(&m2, &["put", &format!("--lease={id}"), "etcdctl-lease/b", "2"]), "OK\n");

    // timetolive --keys from every member (followers ask the leader).
    for endpoint in [&m0, &m1, &m2] {
        let out = ctl(endpoint, &["lease", "timetolive", &id, "--keys"]);
        let prefix = format!("lease {id} granted with TTL(60s), remaining(");
        assert!(out.starts_with(&prefix), "{out:?}");
        assert!(out.ends_with("s), attached keys([etcdctl-lease/a etcdctl-lease/b])\n"), "{out:?}");
    }
    let out = ctl(&m1, &["lease", "timetolive", &id]);
    assert!(
        out.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")) && !out.contains("attached"),
        "{out:?}"
    );

    // list shows it.
    let out = ctl(&all, &["lease", "list"]);
    let mut lines = out.lines();
    assert!(lines.next().is_some_and(|l| l.starts_with("found ") && l.ends_with(" leases")), "{out:?}");
    assert!(lines.any(|l| l == id), "{id} not listed: {out:?}");

    // keep-alive runs until killed, printing each renewal. etcdctl renews every TTL/3, so a
    // short lease keeps this quick.
    let (short, ttl) = parse_grant(&ctl(&m0, &["lease", "grant", "3"]));
    assert_eq!(ttl, 3);
    let mut keep_alive = Running::spawn(&m2, &["lease", "keep-alive", &short]);
    for _ in 0..2 {
        assert_eq!(keep_alive.line(OP_DEADLINE), format!("lease {short} keepalived with TTL(3)"));
    }
    drop(keep_alive);
    assert_eq!(ctl(&m0, &["lease", "revoke", &short]), format!("lease {short} revoked\n"));

    // revoke deletes both keys; the lease is then unknown everywhere.
    assert_eq!(ctl(&m1, &["lease", "revoke", &id]), format!("lease {id} revoked\n"));
    for endpoint in [&m0, &m1, &m2] {
        assert_eq!(ctl(endpoint, &["get", "--prefix", "etcdctl-lease/"]), "");
    }
    assert_eq!(ctl(&m0, &["lease", "timetolive", &id]), format!("lease {id} already expired\n"));
    ctl_fails(&m2, &["lease", "revoke", &id], "etcdserver: requested lease not found");
    ctl_fails(&m0, &["put", "--lease", &id, "etcdctl-lease/c", "3"], "etcdserver: requested lease not found");
    assert!(!ctl(&all, &["lease", "list"]).lines().any(|l| l == id));

    // keep-alive of an unknown lease: the server answers TTL 0, etcdctl says so and exits.
    let mut keep_alive = Running::spawn(&m0, &["lease", "keep-alive", &id]);
    assert_eq!(keep_alive.line(OP_DEADLINE), format!("lease {id} expired or revoked."));
    assert!(keep_alive.wait_exit(OP_DEADLINE).success());

    // The minimum TTL: a shorter one is raised to 2 s (1.5 election timeouts, rounded up).
    let (shortest, ttl) = parse_grant(&ctl(&m1, &["lease", "grant", "1"]));
    assert_eq!(ttl, 2);
    ctl(&m1, &["lease", "revoke", &shortest]);
    ctl_fails(&m1, &["lease", "grant", "9000000001"], "etcdserver: too large lease TTL");
}
