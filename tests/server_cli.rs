//! `berth server` refuses bad start-up input with a clear message and a failing exit code,
//! never a panic and never by touching data: a data dir of another member or cluster, a data dir
//! already in use, a corrupt data dir, malformed flags, a port that is taken.

mod common;

use common::{pick_ports, poll_until, OP_DEADLINE};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// Arguments for a one-member server on fresh loopback ports.
fn args(data_dir: &Path, name: &str, token: &str) -> Vec<String> {
    let ports = pick_ports(3);
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    vec![
        "server".into(),
        "--name".into(),
        name.into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen-client-urls".into(),
        format!("http://127.0.0.1:{}", ports[0]),
        "--listen-peer-urls".into(),
        peer.clone(),
        "--initial-cluster".into(),
        format!("{name}={peer}"),
        "--initial-cluster-token".into(),
        token.into(),
        // Keep the Kubernetes API and its kubeconfig out of shared places (port 6443, the
        // working directory) so parallel tests never collide.
        "--listen-api-url".into(),
        format!("http://127.0.0.1:{}", ports[2]),
        "--write-kubeconfig".into(),
        data_dir.with_extension("kubeconfig").display().to_string(),
    ]
}

fn run(args: &[String]) -> Output {
    let mut child = spawn(args);
    // Every case here must exit on its own; a hang is a failure, not something to wait out.
    let status = common::try_poll_until(OP_DEADLINE, || child.try_wait().unwrap());
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(status.is_some(), "berth server did not exit: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn assert_refused(out: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success: {stderr}");
    assert!(stderr.contains(message), "expected {message:?} in:\n{stderr}");
    assert!(!stderr.contains("panicked"), "a refusal must not be a panic:\n{stderr}");
}

/// Starts a member on `dir`, waits until it serves, and stops it cleanly.
fn create_member(dir: &Path, name: &str, token: &str) {
    let args = args(dir, name, token);
    let client = args[6].trim_start_matches("http://").to_string();
    let mut child = spawn(&args);
    poll_until(OP_DEADLINE, "the member to listen", || TcpStream::connect(&client).ok());
    // SAFETY: plain syscall on a pid we own and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = poll_until(OP_DEADLINE, "the member to stop", || child.try_wait().unwrap());
    assert!(status.success(), "clean shutdown exits 0");
}

#[test]
fn a_data_dir_of_another_member_or_cluster_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    create_member(&dir, "alpha", "token-1");
    let before = dir_listing(&dir);

    assert_refused(&run(&args(&dir, "beta", "token-1")), "belongs to member 'alpha'");
    assert_refused(
        &run(&args(&dir, "alpha", "token-2")),
        "belongs to the cluster created with --initial-cluster-token 'token-1'",
    );
    assert_eq!(dir_listing(&dir), before, "a refused start leaves the data dir alone");

    // The right member still starts from it.
    create_member(&dir, "alpha", "token-1");
}

#[test]
fn a_data_dir_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let first_args = args(&dir, "solo", "t");
    let client = first_args[6].trim_start_matches("http://").to_string();
    let mut first = spawn(&first_args);
    poll_until(OP_DEADLINE, "the first member to listen", || TcpStream::connect(&client).ok());
    let out = run(&args(&dir, "solo", "t"));
    let _ = first.kill();
    let _ = first.wait();
    assert_refused(&out, "is another berth process using this data dir?");
}

#[test]
fn a_corrupt_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    create_member(&dir, "solo", "t");
    // Overwrite every database file with garbage, as a broken disk might.
    for entry in walk(&dir.join("member")) {
        if entry.is_file() {
            let len = std::fs::metadata(&entry).unwrap().len().max(64) as usize;
            std::fs::write(&entry, vec![0xA5; len]).unwrap();
        }
    }
    assert_refused(&run(&args(&dir, "solo", "t")), "data dir");
}

#[test]
fn malformed_flags_and_taken_ports_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut a = args(&dir, "x", "t");
    a[10] = "x-without-url".into();
    assert_refused(&run(&a), "is not NAME=URL");
    let mut a = args(&dir, "x", "t");
    a[6] = "https://127.0.0.1:1".into();
    assert_refused(&run(&a), "TLS is not supported");
    let mut a = args(&dir, "x", "t");
    a[10] = "y=http://127.0.0.1:1".into();
    assert_refused(&run(&a), "--initial-cluster has no entry x=");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut a = args(&dir, "x", "t");
    a[6] = format!("http://{}", taken.local_addr().unwrap());
    assert_refused(&run(&a), "cannot listen on");
    let out = Command::new(env!("CARGO_BIN_EXE_berth")).args(["server", "--snapshot-count", "many"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Each file with its length and a hash of its content (the content itself is too big to show).
fn dir_listing(dir: &Path) -> Vec<(std::path::PathBuf, usize, u64)> {
    use std::hash::{Hash, Hasher};
    let mut files: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            (p, bytes.len(), h.finish())
        })
        .collect();
    files.sort();
    files
}
