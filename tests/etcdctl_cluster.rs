//! End to end with the real `etcdctl` (3.4 in Debian) against real `berth server` processes:
//! membership (`member list/add/remove/promote`, `move-leader`), the endpoint commands
//! (`endpoint status -w table`, `endpoint health`, `endpoint hashkv`), backups (`snapshot save`,
//! then `berth snapshot restore` and a cluster started from the restored data dirs), and the
//! client-side concurrency recipes `lock` and `elect` (Txn on create revision, sorted prefix
//! Range with `max_create_revision`, Watch from a revision, leases).
//!
//! etcdctl 3.4 dials `endpoint status/hashkv` and `move-leader` through a connection whose HTTP/2
//! `:authority` is the endpoint string itself; with a scheme (`http://host:port`) that is not a
//! valid authority, which etcd's Go server tolerates and every HTTP/2 server built on the `h2`
//! crate rejects (RST_STREAM PROTOCOL_ERROR). Those commands are therefore given `host:port`
//! endpoints, which etcdctl accepts everywhere.

mod common;

use common::{
    describe, etcdctl, etcdctl_command, etcdctl_ready, etcdctl_retry, lines_of, run_etcdctl, Cluster, OP_DEADLINE,
};
use serde_json::Value;
use std::process::{Child, Command};
use std::sync::mpsc;

fn ctl(endpoints: &str, args: &[&str]) -> String {
    let out = run_etcdctl(endpoints, args, None);
    assert!(out.status.success(), "etcdctl {args:?} against {endpoints} failed: {}", describe(&out));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn ctl_json(endpoints: &str, args: &[&str]) -> Value {
    let mut all = vec!["-w", "json"];
    all.extend_from_slice(args);
    let text = ctl(endpoints, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("etcdctl {args:?}: not JSON ({e}): {text}"))
}

fn ctl_fails(endpoints: &str, args: &[&str], message: &str) {
    let out = run_etcdctl(endpoints, args, None);
    assert!(!out.status.success(), "etcdctl {args:?} should fail: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(message), "expected {message:?}: {}", describe(&out));
}

/// `host:port` of every member in `indices` (see the module doc for why not URLs).
fn host_ports(c: &Cluster, indices: &[usize]) -> String {
    indices.iter().map(|i| c.client_url(*i).trim_start_matches("http://").to_string()).collect::<Vec<_>>().join(",")
}

/// etcdctl's simple `member list` lines: (hex id, status, name, peer URLs, client URLs, learner).
fn member_lines(endpoints: &str) -> Vec<Vec<String>> {
    ctl(endpoints, &["member", "list"])
        .lines()
        .map(|line| line.split(", ").map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// The hex id etcdctl prints for the member with `peer_url`.
fn id_of(endpoints: &str, peer_url: &str) -> String {
    let lines = member_lines(endpoints);
    let line = lines.iter().find(|l| l[3] == peer_url).unwrap_or_else(|| panic!("{peer_url} not in {lines:?}"));
    line[0].clone()
}

/// `endpoint status -w json`: (member id, leader id) per endpoint.
fn statuses(endpoints: &str) -> Vec<(u64, u64)> {
    let v = ctl_json(endpoints, &["endpoint", "status"]);
    v.as_array()
        .expect("an array of statuses")
        .iter()
        .map(|s| {
            let status = &s["Status"];
            (status["header"]["member_id"].as_u64().expect("member_id"), status["leader"].as_u64().expect("leader"))
        })
        .collect()
}

/// Waits until every listed endpoint reports the same `HashKV` at `revision`, and returns it.
fn agreed_hash(endpoints: &str, revision: i64) -> u64 {
    let rev = format!("--rev={revision}");
    common::poll_until(OP_DEADLINE, "HashKV to agree on every member", || {
        let out = run_etcdctl(endpoints, &["-w", "json", "endpoint", "hashkv", &rev], None);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let hashes: Vec<u64> = v.as_array()?.iter().filter_map(|h| h["HashKV"]["hash"].as_u64()).collect();
        let count = endpoints.split(',').count();
        (hashes.len() == count && hashes.windows(2).all(|w| w[0] == w[1])).then(|| hashes[0])
    })
}

fn revision_of_put(endpoints: &str, key: &str, value: &str) -> i64 {
    ctl_json(endpoints, &["put", key, value])["header"]["revision"].as_i64().expect("revision")
}

#[test]
fn members_endpoints_snapshot_and_restore() {
    if etcdctl().is_none() {
        return;
    }
    let mut c = Cluster::start(3);
    etcdctl_ready(&c, OP_DEADLINE);
    let all = c.endpoints();

    // member list: every member started, with its name and the client URL it published.
    common::poll_until(OP_DEADLINE, "every member to publish its client URLs", || {
        let lines = member_lines(&all);
        let published = (0..3).all(|i| {
            lines.iter().any(|l| l == &[&l[0], "started", c.name(i), &c.peer_url(i), &c.client_url(i), "false"])
        });
        (lines.len() == 3 && published).then_some(())
    });
    let listed = ctl_json(&all, &["member", "list"]);
    for m in listed["members"].as_array().expect("members") {
        let hex = format!("{:x}", m["ID"].as_u64().expect("numeric ID"));
        assert!(member_lines(&all).iter().any(|l| l[0] == hex), "ID {hex} is printed in hex");
    }

    // endpoint status / health / hashkv.
    let three = host_ports(&c, &[0, 1, 2]);
    let table = ctl(&three, &["endpoint", "status", "-w", "table"]);
    assert!(table.contains("IS LEADER") && table.contains("RAFT APPLIED INDEX"), "{table}");
    let st = statuses(&three);
    assert_eq!(st.len(), 3, "{}", describe(&run_etcdctl(&three, &["endpoint", "status"], None)));
    assert!(st.windows(2).all(|w| w[0].1 == w[1].1) && st.iter().filter(|(id, l)| id == l).count() == 1, "{st:?}");
    // etcdctl 3.4 prints the health lines on stderr.
    let health = run_etcdctl(&all, &["endpoint", "health"], None);
    assert!(health.status.success(), "{}", describe(&health));
    assert_eq!(describe(&health).matches("is healthy").count(), 3, "{}", describe(&health));
    for i in 0..20 {
        ctl(&all, &["put", &format!("backup/{i:02}"), &format!("v{i}")]);
    }
    let revision = revision_of_put(&all, "backup/last", "end");
    agreed_hash(&three, revision);

    // Errors by their etcd text.
    ctl_fails(&all, &["member", "remove", "1234"], "etcdserver: member not found");
    let voter = id_of(&all, &c.peer_url(0));
    ctl_fails(&all, &["member", "promote", &voter], "etcdserver: can only promote a learner member");
    ctl_fails(&all, &["member", "add", "dup", &format!("--peer-urls={}", c.peer_url(1))], "Peer URLs already exists");

    // member update (to its own URL again: a member only listens where it was started), and
    // the one-member-per-URL rule.
    let out = ctl(&all, &["member", "update", &voter, &format!("--peer-urls={}", c.peer_url(0))]);
    assert!(out.contains("updated in cluster"), "{out}");
    ctl_fails(
        &all,
        &["member", "update", &voter, &format!("--peer-urls={}", c.peer_url(1))],
        "Peer URLs already exists",
    );

    // Alarms: none; defragment: accepted.
    assert_eq!(ctl(&all, &["alarm", "list"]), "");
    let out = ctl(&three, &["defrag"]);
    assert_eq!(out.matches("Finished defragmenting").count(), 3, "{out}");

    // member add (voter), then start the member with what etcdctl printed.
    let m3 = c.reserve_member();
    let out = ctl(&all, &["member", "add", c.name(m3), &format!("--peer-urls={}", c.peer_url(m3))]);
    assert!(out.contains("added to cluster"), "{out}");
    assert!(out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), "{out}");
    assert!(out.contains(&format!("{}={}", c.name(m3), c.peer_url(m3))), "{out}");
    let m3_id = id_of(&all, &c.peer_url(m3));
    assert_eq!(member_lines(&all).iter().find(|l| l[0] == m3_id).expect("m3")[1], "unstarted");
    c.restart(m3);
    common::poll_until(OP_DEADLINE, "the added member to start", || {
        member_lines(&all).iter().any(|l| l[0] == m3_id && l[1] == "started" && l[4] == c.client_url(m3)).then_some(())
    });
    etcdctl_retry(&c.client_url(m3), &["get", "backup/last"], None, OP_DEADLINE);
    assert_eq!(ctl(&c.client_url(m3), &["get", "backup/last", "--print-value-only"]), "end\n");

    // member add --learner, promote (refused until it has caught up), then it is a voter.
    let m4 = c.reserve_member();
    let out = ctl(&all, &["member", "add", c.name(m4), "--learner", &format!("--peer-urls={}", c.peer_url(m4))]);
    assert!(out.contains("added to cluster"), "{out}");
    let m4_id = id_of(&all, &c.peer_url(m4));
    assert_eq!(member_lines(&all).iter().find(|l| l[0] == m4_id).expect("m4")[5], "true");
    ctl_fails(
        &all,
        &["member", "promote", &m4_id],
        "etcdserver: can only promote a learner member which is in sync with leader",
    );
    c.restart(m4);
    let promoted = etcdctl_retry(&all, &["member", "promote", &m4_id], None, OP_DEADLINE);
    assert!(String::from_utf8_lossy(&promoted.stdout).contains("promoted"), "{}", describe(&promoted));
    assert_eq!(member_lines(&all).iter().find(|l| l[0] == m4_id).expect("m4")[5], "false");

    // member remove: gone from the list, and the removed member stops by itself.
    let out = ctl(&all, &["member", "remove", &m3_id]);
    assert!(out.contains("removed from cluster"), "{out}");
    assert!(member_lines(&all).iter().all(|l| l[0] != m3_id));
    c.wait_exit(m3, OP_DEADLINE);

    // move-leader to a follower.
    let live = host_ports(&c, &[0, 1, 2, m4]);
    let st = statuses(&live);
    let leader = st[0].1;
    let target = st.iter().map(|(id, _)| *id).find(|id| *id != leader).expect("a follower");
    let out = ctl(&live, &["move-leader", &format!("{target:x}")]);
    assert!(out.contains(&format!("Leadership transferred from {leader:x} to {target:x}")), "{out}");
    // The old leader knows at once; the others as soon as the new leader's first entry arrives.
    common::poll_until(OP_DEADLINE, "every member to follow the new leader", || {
        statuses(&live).iter().all(|(_, l)| *l == target).then_some(())
    });

    // snapshot save from one member, restore into a new two-member cluster, start it.
    let snapshot = c.dir().join("backup.db");
    let snapshot_arg = snapshot.to_str().expect("UTF-8 path");
    let out = ctl(&c.client_url(1), &["snapshot", "save", snapshot_arg]);
    assert!(out.contains("Snapshot saved at"), "{out}");
    let size = std::fs::metadata(&snapshot).expect("snapshot file").len();
    assert_eq!(size % 512, 32, "a sha256 trailer after whole 512-byte blocks");

    let mut saved_revision = 0;
    let mut restored = Cluster::unstarted(2, &[]);
    for i in 0..2 {
        let args = [
            "snapshot".to_string(),
            "restore".into(),
            snapshot_arg.into(),
            "--data-dir".into(),
            restored.data_dir(i).display().to_string(),
            "--name".into(),
            restored.name(i).into(),
            "--initial-cluster".into(),
            restored.initial_cluster(),
            "--initial-cluster-token".into(),
            restored.token().into(),
            "--initial-advertise-peer-urls".into(),
            restored.peer_url(i),
        ];
        let out = Command::new(env!("CARGO_BIN_EXE_berth")).args(&args).output().expect("run berth snapshot restore");
        assert!(out.status.success(), "restore {i}: {}", describe(&out));
        // "restored revision N into ...": at least the revision of the last write before the save
        // (the control plane may have written since).
        let stdout = String::from_utf8_lossy(&out.stdout);
        let restored_revision: i64 = stdout
            .strip_prefix("restored revision ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected restore output: {stdout}"));
        assert!(restored_revision >= revision, "{stdout}");
        saved_revision = restored_revision;
        // A second restore into the same (now non-empty) data dir is refused.
        if i == 0 {
            let again = Command::new(env!("CARGO_BIN_EXE_berth")).args(&args).output().expect("run again");
            assert!(!again.status.success());
            assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"), "{}", describe(&again));
        }
    }
    restored.start_all();
    etcdctl_ready(&restored, OP_DEADLINE);
    let r_all = restored.endpoints();
    assert_eq!(ctl(&r_all, &["get", "backup/last", "--print-value-only"]), "end\n");
    assert_eq!(
        ctl(&r_all, &["get", "--prefix", "backup/", "--keys-only"]).lines().filter(|l| !l.is_empty()).count(),
        21
    );
    let members = member_lines(&r_all);
    assert_eq!(members.len(), 2, "the restored cluster's membership is the new initial cluster: {members:?}");
    let original_hash = agreed_hash(&live, saved_revision);
    assert_eq!(agreed_hash(&host_ports(&restored, &[0, 1]), saved_revision), original_hash);
    // And it takes writes.
    assert!(revision_of_put(&r_all, "after/restore", "ok") > saved_revision);
}

fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(OP_DEADLINE).unwrap_or_else(|e| panic!("no output line for {what}: {e}"))
}

/// SIGINT, which etcdctl handles by releasing its lock or resigning, then revoking its session.
fn interrupt(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits in pid_t");
    // SAFETY: plain syscall on a child we own and have not reaped.
    let rc = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(rc, 0, "SIGINT: {}", std::io::Error::last_os_error());
}

fn wait_with_deadline(child: &mut Child, what: &str) -> std::process::ExitStatus {
    common::poll_until(OP_DEADLINE, what, || child.try_wait().expect("try_wait"))
}

/// Kills and reaps spawned etcdctl processes however the test ends.
struct Reap(Vec<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `etcdctl lock` and `etcdctl elect`: mutual exclusion and hand-over on release, leadership and
/// its observation. Needs the Lease and Watch services.
#[test]
fn lock_and_elect() {
    if etcdctl().is_none() {
        return;
    }
    let c = Cluster::start(3);
    etcdctl_ready(&c, OP_DEADLINE);
    let all = c.endpoints();
    let mut reap = Reap(Vec::new());

    // lock: the holder prints its key; a second locker queues behind it (its key exists, it has
    // not run its command) and runs as soon as the holder lets go.
    let mut holder = etcdctl_command(&all, &["lock", "test-lock"]).spawn().expect("spawn etcdctl lock");
    let holder_lines = lines_of(holder.stdout.take().expect("piped stdout"));
    let key = next_line(&holder_lines, "the lock holder's key");
    assert!(key.starts_with("test-lock/"), "{key}");
    reap.0.push(holder);
    let mut waiter = etcdctl_command(&c.client_url(2), &["lock", "test-lock", "echo", "second-holder"])
        .spawn()
        .expect("spawn the second locker");
    let waiter_lines = lines_of(waiter.stdout.take().expect("piped stdout"));
    common::poll_until(OP_DEADLINE, "the second locker to queue", || {
        let keys = ctl(&all, &["get", "--prefix", "test-lock/", "--keys-only"]);
        (keys.lines().filter(|l| !l.is_empty()).count() == 2).then_some(())
    });
    assert!(waiter.try_wait().expect("try_wait").is_none(), "the second locker must wait for the first");
    assert!(waiter_lines.try_recv().is_err(), "the second locker ran while the lock was held");
    interrupt(&reap.0[0]);
    assert_eq!(next_line(&waiter_lines, "the second locker's command"), "second-holder");
    assert!(wait_with_deadline(&mut waiter, "the second locker to exit").success());
    wait_with_deadline(&mut reap.0[0], "the first holder to exit");
    common::poll_until(OP_DEADLINE, "every lock key to be released", || {
        ctl(&all, &["get", "--prefix", "test-lock/", "--keys-only"]).trim().is_empty().then_some(())
    });

    // elect: the first campaigner leads; an observer sees it; a second campaigner takes over
    // when the first resigns, and the observer sees that too.
    let mut first = etcdctl_command(&all, &["elect", "test-election", "p1"]).spawn().expect("spawn elect p1");
    let first_lines = lines_of(first.stdout.take().expect("piped stdout"));
    assert!(next_line(&first_lines, "p1's leader key").starts_with("test-election/"));
    assert_eq!(next_line(&first_lines, "p1's proposal"), "p1");
    reap.0.push(first);
    let mut observer = etcdctl_command(&c.client_url(1), &["elect", "-l", "test-election"]).spawn().expect("observe");
    let observed = lines_of(observer.stdout.take().expect("piped stdout"));
    reap.0.push(observer);
    assert!(next_line(&observed, "the observed leader key").starts_with("test-election/"));
    assert_eq!(next_line(&observed, "the observed proposal"), "p1");
    let mut second = etcdctl_command(&c.client_url(2), &["elect", "test-election", "p2"]).spawn().expect("elect p2");
    let second_lines = lines_of(second.stdout.take().expect("piped stdout"));
    reap.0.push(second);
    common::poll_until(OP_DEADLINE, "p2 to campaign", || {
        let keys = ctl(&all, &["get", "--prefix", "test-election/", "--keys-only"]);
        (keys.lines().filter(|l| !l.is_empty()).count() == 2).then_some(())
    });
    assert!(second_lines.try_recv().is_err(), "p2 must not lead while p1 does");
    interrupt(&reap.0[1]);
    assert!(next_line(&second_lines, "p2's leader key").starts_with("test-election/"));
    assert_eq!(next_line(&second_lines, "p2's proposal"), "p2");
    assert!(next_line(&observed, "the next observed leader key").starts_with("test-election/"));
    assert_eq!(next_line(&observed, "the next observed proposal"), "p2");
}
