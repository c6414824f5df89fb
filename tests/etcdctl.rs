//! End-to-end tests of the etcd v3 KV API with the real `etcdctl` (API v3) against a 3-member
//! cluster of the built `berth` binary.
//!
//! Starting a cluster costs seconds on a 2-core CI machine, so each test starts one and runs a
//! group of related checks against it. Assertions are on etcdctl's real output: `-w json`
//! where it carries the facts (keys and values base64-encoded, numbers as numbers; fields equal
//! to their zero value are omitted), the simple format where its exact shape is the point.
//!
//! `berth server` writes keys of its own (the control plane lives in the same store), so tests
//! never assume absolute revisions or that the keyspace is empty: revisions come from the
//! responses, and every key lives under a prefix the test owns.

mod common;

use std::process::Output;

use common::*;
use serde_json::Value;

/// Runs etcdctl once, asserts success and returns stdout.
fn ctl(endpoints: &str, args: &[&str]) -> String {
    ctl_stdin(endpoints, args, None)
}

fn ctl_stdin(endpoints: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = run_etcdctl(endpoints, args, stdin);
    assert!(out.status.success(), "etcdctl {args:?} against {endpoints} failed: {}", describe(&out));
    String::from_utf8(out.stdout).expect("etcdctl's simple output is UTF-8 here")
}

/// Runs etcdctl once with `-w json` and returns the parsed output.
fn ctl_json(endpoints: &str, args: &[&str]) -> Value {
    ctl_json_stdin(endpoints, args, None)
}

fn ctl_json_stdin(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Value {
    let mut all = vec!["-w", "json"];
    all.extend_from_slice(args);
    let text = ctl_stdin(endpoints, &all, stdin);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("etcdctl {args:?}: bad JSON {e}: {text}"))
}

/// Runs etcdctl once and asserts that it fails with `message` in its error output.
fn ctl_fails(endpoints: &str, args: &[&str], message: &str) {
    let out = run_etcdctl(endpoints, args, None);
    assert_fails_with(&out, message, args);
}

fn assert_fails_with(out: &Output, message: &str, what: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(message),
        "expected etcdctl {what:?} to fail with {message:?}, got: {}",
        describe(out)
    );
}

/// `header.revision` of a response: the store's current revision when it was answered (for a
/// write, the revision the write created).
fn revision(v: &Value) -> i64 {
    v["header"]["revision"].as_i64().unwrap_or_else(|| panic!("no header.revision in {v}"))
}

/// A key-value as etcdctl's JSON shows it, decoded.
#[derive(Debug, PartialEq)]
struct Kv {
    key: Vec<u8>,
    value: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
}

fn kvs(v: &Value) -> Vec<Kv> {
    kv_list(v, "kvs")
}

/// The key-values in list `field` of a response (`kvs`, `prev_kvs`).
fn kv_list(v: &Value, field: &str) -> Vec<Kv> {
    // Omitted when empty.
    let Some(list) = v.get(field) else {
        return Vec::new();
    };
    let int = |kv: &Value, field: &str| kv.get(field).map_or(0, |n| n.as_i64().expect("integer"));
    let bytes = |kv: &Value, field: &str| {
        kv.get(field).map_or_else(Vec::new, |s| base64_decode(s.as_str().expect("base64 string")))
    };
    list.as_array()
        .expect("kvs is an array")
        .iter()
        .map(|kv| Kv {
            key: bytes(kv, "key"),
            value: bytes(kv, "value"),
            create_revision: int(kv, "create_revision"),
            mod_revision: int(kv, "mod_revision"),
            version: int(kv, "version"),
        })
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    kvs(v).into_iter().map(|kv| String::from_utf8(kv.key).expect("UTF-8 key")).collect()
}

/// `count`, omitted by etcdctl when 0.
fn count(v: &Value) -> i64 {
    v.get("count").map_or(0, |n| n.as_i64().expect("count is an integer"))
}

/// The single key-value of a Range response.
fn single(v: &Value) -> Kv {
    let mut all = kvs(v);
    assert_eq!(all.len(), 1, "expected exactly one kv in {v}");
    all.remove(0)
}

/// Standard base64 with padding, as Go's encoding/json writes `[]byte`. Written out here so
/// the tests need no extra crate.
fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let d = ALPHABET.iter().position(|&a| a == c).unwrap_or_else(|| panic!("not base64: {s:?}")) as u32;
        acc = (acc << 6) | d;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Decodes one line of `etcdctl --hex` simple output: every byte written as `\xNN`.
fn hex_escaped_decode(line: &str) -> Vec<u8> {
    let digits = line.replace("\\x", "");
    assert_eq!(digits.len(), line.len() / 2, "not \\xNN-escaped: {line:?}");
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digits")).collect()
}

/// Starts a 3-member cluster and waits until each member serves linearizable reads; `None`
/// when etcdctl is missing outside CI (the test is then skipped).
fn cluster() -> Option<Cluster> {
    etcdctl()?;
    let cluster = Cluster::start(3);
    etcdctl_ready(&cluster, START_DEADLINE);
    Some(cluster)
}

/// put/get, ranges and their options, deletes, client-visible errors, any member serving any
/// request, and a member catching up after a clean stop and restart.
#[test]
fn put_get_range_delete() {
    let Some(mut c) = cluster() else { return };
    let all = c.endpoints();

    // Simple put and get.
    assert_eq!(ctl(&all, &["put", "kv/greeting", "hello"]), "OK\n");
    assert_eq!(ctl(&all, &["get", "kv/greeting"]), "kv/greeting\nhello\n");
    assert_eq!(ctl(&all, &["get", "kv/absent"]), "");
    assert_eq!(ctl(&all, &["get", "kv/greeting", "--print-value-only"]), "hello\n");

    // Revisions and versions in JSON; one revision per put; historical reads.
    let r1 = revision(&ctl_json(&all, &["put", "kv/counter", "one"]));
    let r2 = revision(&ctl_json(&all, &["put", "kv/counter", "two"]));
    assert!(r2 > r1, "a put must create a new revision: {r1} then {r2}");
    let now = ctl_json(&all, &["get", "kv/counter"]);
    assert!(revision(&now) >= r2, "header carries the current revision");
    assert_eq!(count(&now), 1);
    assert!(now.get("more").is_none(), "more is false: {now}");
    assert_eq!(
        single(&now),
        Kv { key: b"kv/counter".to_vec(), value: b"two".to_vec(), create_revision: r1, mod_revision: r2, version: 2 }
    );
    let then = ctl_json(&all, &["get", "kv/counter", &format!("--rev={r1}")]);
    assert_eq!(
        single(&then),
        Kv { key: b"kv/counter".to_vec(), value: b"one".to_vec(), create_revision: r1, mod_revision: r1, version: 1 }
    );
    assert!(revision(&then) >= r2, "a historical read's header carries the current revision, not the one read: {then}");
    let missing = ctl_json(&all, &["get", "kv/absent"]);
    assert!(kvs(&missing).is_empty() && count(&missing) == 0, "{missing}");

    // Prefix ranges, limits and sorting. Written in the order c, a, b so that key order and
    // modification order differ; the neighbours outside the prefix must never show up.
    for (k, v) in [("range/c", "vc"), ("range/a", "va"), ("range/b", "vb"), ("range0", "outside"), ("rang", "outside")]
    {
        ctl(&all, &["put", k, v]);
    }
    assert_eq!(ctl(&all, &["get", "--prefix", "range/"]), "range/a\nva\nrange/b\nvb\nrange/c\nvc\n");
    let limited = ctl_json(&all, &["get", "--prefix", "range/", "--limit=2"]);
    assert_eq!(keys(&limited), ["range/a", "range/b"]);
    assert_eq!(limited["more"], true, "{limited}");
    assert_eq!(count(&limited), 3, "count is the total before the limit");
    let sorted = |args: &[&str]| {
        let mut all_args = vec!["get", "--prefix", "range/"];
        all_args.extend_from_slice(args);
        keys(&ctl_json(&all, &all_args))
    };
    assert_eq!(sorted(&["--sort-by=KEY", "--order=DESCEND"]), ["range/c", "range/b", "range/a"]);
    assert_eq!(sorted(&["--sort-by=MODIFY", "--order=DESCEND"]), ["range/b", "range/a", "range/c"]);
    // A sort target other than KEY without an order sorts ascending.
    assert_eq!(sorted(&["--sort-by=MODIFY"]), ["range/c", "range/a", "range/b"]);
    assert_eq!(sorted(&["--sort-by=CREATE", "--order=ASCEND"]), ["range/c", "range/a", "range/b"]);
    // The limit applies after sorting.
    assert_eq!(sorted(&["--sort-by=MODIFY", "--order=DESCEND", "--limit=1"]), ["range/b"]);
    assert_eq!(ctl(&all, &["get", "--prefix", "range/", "--keys-only"]), "range/a\n\nrange/b\n\nrange/c\n\n");
    // `--count-only` arrived in etcdctl 3.5; Debian's 3.4 lacks it (the count itself was
    // checked through `--limit` above).
    let help = run_etcdctl(&all, &["get", "--help"], None);
    if describe(&help).contains("--count-only") {
        let counted = ctl_json(&all, &["get", "--prefix", "range/", "--count-only"]);
        assert_eq!(count(&counted), 3, "{counted}");
        assert!(kvs(&counted).is_empty(), "{counted}");
    }

    // Deletes.
    assert_eq!(ctl(&all, &["del", "--prev-kv", "range/a"]), "1\nrange/a\nva\n");
    assert_eq!(ctl(&all, &["del", "range/a"]), "0\n");
    let deleted = ctl_json(&all, &["del", "--prefix", "range/", "--prev-kv"]);
    assert_eq!(deleted["deleted"], 2, "{deleted}");
    assert_eq!(
        kv_list(&deleted, "prev_kvs").into_iter().map(|kv| (kv.key, kv.value)).collect::<Vec<_>>(),
        [(b"range/b".to_vec(), b"vb".to_vec()), (b"range/c".to_vec(), b"vc".to_vec())]
    );
    assert_eq!(ctl(&all, &["get", "--prefix", "range/"]), "");
    assert_eq!(ctl(&all, &["put", "range/z", "vz"]), "OK\n");
    assert_eq!(ctl(&all, &["del", "--prefix", "range/"]), "1\n");
    assert_eq!(
        ctl(&all, &["get", "--prefix", "rang"]),
        "rang\noutside\nrange0\noutside\n",
        "deleting a prefix must leave its neighbours alone"
    );

    // Errors that clients recognise by their exact text.
    ctl_fails(&all, &["put", "", "v"], "etcdserver: key is not provided");
    ctl_fails(&all, &["get", ""], "etcdserver: key is not provided");
    ctl_fails(&all, &["put", "--lease=1234abcd", "kv/leased", "v"], "etcdserver: requested lease not found");
    assert_eq!(ctl(&all, &["get", "kv/leased"]), "", "a rejected put writes nothing");

    // Any member accepts writes, and every member's (linearizable) reads see them at once.
    for writer in 0..c.len() {
        let key = format!("members/written-via-{writer}");
        let value = format!("value-{writer}");
        assert_eq!(ctl(&c.client_url(writer), &["put", &key, &value]), "OK\n");
        for reader in 0..c.len() {
            assert_eq!(
                ctl(&c.client_url(reader), &["get", &key]),
                format!("{key}\n{value}\n"),
                "written via member {writer}, read via member {reader}"
            );
        }
    }

    // A cleanly stopped member exits with success; the other two keep serving; once back it
    // catches up on what it missed.
    let status = c.stop(2);
    assert!(status.success(), "SIGTERM must shut down cleanly: {status}");
    let live = format!("{},{}", c.client_url(0), c.client_url(1));
    // Retried: if the stopped member was the leader, an election is under way. Repeating this
    // put is harmless (same key and value; only the final state is checked).
    etcdctl_retry(&live, &["put", "members/while-down", "missed"], None, OP_DEADLINE);
    c.restart(2);
    // Retried only until the member answers at all: a linearizable read that succeeds must
    // already see the write.
    let out = etcdctl_retry(&c.client_url(2), &["get", "members/while-down"], None, OP_DEADLINE);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "members/while-down\nmissed\n");
    assert_eq!(
        ctl(&c.client_url(2), &["get", "members/written-via-0"]),
        "members/written-via-0\nvalue-0\n",
        "data from before the restart survives it"
    );
}

/// Transactions fed to `etcdctl txn` on stdin: every compare target, both branches, which
/// branch ran and what it did, atomicity (one revision), binary keys and values.
#[test]
fn txn_from_stdin() {
    let Some(c) = cluster() else { return };
    let all = c.endpoints();

    let created = revision(&ctl_json(&all, &["put", "txn/a", "1"]));
    let modified = revision(&ctl_json(&all, &["put", "txn/a", "2"]));

    // All compares true → success branch; its get sees the state inside the transaction.
    let script = format!(
        "value(\"txn/a\") = \"2\"\n\
         version(\"txn/a\") = \"2\"\n\
         create(\"txn/a\") = \"{created}\"\n\
         mod(\"txn/a\") = \"{modified}\"\n\
         \n\
         put txn/ok yes\n\
         put txn/also yes\n\
         get txn/a\n\
         \n\
         put txn/failed yes\n\
         \n"
    );
    let done = ctl_json_stdin(&all, &["txn"], Some(&script));
    assert_eq!(done["succeeded"], true, "{done}");
    let responses = done["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 3, "{done}");
    assert!(responses[0]["Response"].get("ResponsePut").is_some(), "{done}");
    assert!(responses[1]["Response"].get("ResponsePut").is_some(), "{done}");
    let range = &responses[2]["Response"]["ResponseRange"];
    assert_eq!(single(range).value, b"2", "{done}");
    let txn_rev = revision(&done);
    assert!(txn_rev > modified);
    // A transaction is one revision, however many writes it holds.
    for key in ["txn/ok", "txn/also"] {
        let kv = single(&ctl_json(&all, &["get", key]));
        assert_eq!((kv.value, kv.mod_revision), (b"yes".to_vec(), txn_rev));
    }
    assert_eq!(ctl(&all, &["get", "txn/failed"]), "");

    // One false compare (mod is not below itself) → failure branch, whose delete sees the key.
    let script = format!(
        "value(\"txn/a\") = \"2\"\n\
         mod(\"txn/a\") < \"{modified}\"\n\
         \n\
         put txn/not-taken yes\n\
         \n\
         put txn/failed yes\n\
         del txn/ok\n\
         \n"
    );
    let done = ctl_json_stdin(&all, &["txn"], Some(&script));
    // `succeeded` is omitted when false.
    assert_ne!(done.get("succeeded"), Some(&Value::Bool(true)), "{done}");
    let responses = done["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 2, "{done}");
    assert!(responses[0]["Response"].get("ResponsePut").is_some(), "{done}");
    assert_eq!(responses[1]["Response"]["ResponseDeleteRange"]["deleted"], 1, "{done}");
    assert_eq!(ctl(&all, &["get", "txn/failed"]), "txn/failed\nyes\n");
    assert_eq!(ctl(&all, &["get", "txn/ok"]), "");
    assert_eq!(ctl(&all, &["get", "txn/not-taken"]), "");

    // The simple output names the branch and prints each response.
    let out = ctl_stdin(&all, &["txn"], Some("version(\"txn/a\") > \"1\"\n\nget txn/a\n\nput txn/never x\n\n"));
    assert_eq!(out, "SUCCESS\n\ntxn/a\n2\n");

    // A missing key: a VALUE compare is false whatever the value; VERSION and CREATE compare
    // against zero.
    let done = ctl_json_stdin(&all, &["txn"], Some("value(\"txn/missing\") = \"\"\n\nput txn/x 1\n\nput txn/x 2\n\n"));
    assert_ne!(done.get("succeeded"), Some(&Value::Bool(true)), "{done}");
    assert_eq!(single(&ctl_json(&all, &["get", "txn/x"])).value, b"2");
    let done = ctl_json_stdin(
        &all,
        &["txn"],
        Some(
            "version(\"txn/missing\") = \"0\"\ncreate(\"txn/missing\") = \"0\"\n\n\
             put txn/x 3\n\nput txn/x 4\n\n",
        ),
    );
    assert_eq!(done["succeeded"], true, "{done}");
    assert_eq!(single(&ctl_json(&all, &["get", "txn/x"])).value, b"3");

    // The same key twice in one branch is rejected, and nothing is written.
    let before = single(&ctl_json(&all, &["get", "txn/x"]));
    let out = run_etcdctl(&all, &["txn"], Some("\nput txn/x 5\nput txn/x 6\n\n\n"));
    assert_fails_with(&out, "etcdserver: duplicate key given in txn request", &["txn"]);
    assert_eq!(single(&ctl_json(&all, &["get", "txn/x"])), before);

    // Binary keys and values: etcdctl's txn parser unquotes Go string literals, the one way to
    // send NUL bytes through etcdctl's arguments.
    let key: &[u8] = b"bin/k\x00ey\xff";
    let value: &[u8] = b"v\x00al\n";
    let done = ctl_json_stdin(&all, &["txn"], Some("\nput \"bin/k\\x00ey\\xff\" \"v\\x00al\\n\"\n\n\n"));
    assert_eq!(done["succeeded"], true, "{done}");
    let kv = single(&ctl_json(&all, &["get", "--prefix", "bin/"]));
    assert_eq!((kv.key.as_slice(), kv.value.as_slice()), (key, value));
    let hex = ctl(&all, &["--hex", "get", "--prefix", "bin/"]);
    let lines: Vec<&str> = hex.lines().collect();
    assert_eq!(lines.len(), 2, "{hex}");
    assert_eq!(hex_escaped_decode(lines[0]), key);
    assert_eq!(hex_escaped_decode(lines[1]), value);
    // Read back through each member, byte for byte.
    for i in 0..c.len() {
        let kv = single(&ctl_json(&c.client_url(i), &["get", "--prefix", "bin/"]));
        assert_eq!((kv.key.as_slice(), kv.value.as_slice()), (key, value), "member {i}");
    }
    // A compare and a delete on the binary key.
    let done = ctl_json_stdin(
        &all,
        &["txn"],
        Some("value(\"bin/k\\x00ey\\xff\") = \"v\\x00al\\n\"\n\ndel \"bin/k\\x00ey\\xff\"\n\n\n"),
    );
    assert_eq!(done["succeeded"], true, "{done}");
    assert_eq!(done["responses"][0]["Response"]["ResponseDeleteRange"]["deleted"], 1, "{done}");
    assert_eq!(ctl(&all, &["get", "--prefix", "bin/"]), "");
}

/// Revision bounds: future and compacted revisions are refused with etcd's errors, compaction
/// reaches every member, and survives a member's crash.
#[test]
fn compaction_and_revision_bounds() {
    let Some(mut c) = cluster() else { return };
    let all = c.endpoints();

    let r1 = revision(&ctl_json(&all, &["put", "comp/k", "v1"]));
    let r2 = revision(&ctl_json(&all, &["put", "comp/k", "v2"]));
    let r3 = revision(&ctl_json(&all, &["put", "comp/k", "v3"]));
    let value_at =
        |endpoints: &str, rev: i64| ctl(endpoints, &["get", "comp/k", "--print-value-only", &format!("--rev={rev}")]);
    assert_eq!(value_at(&all, r1), "v1\n");
    assert_eq!(value_at(&all, r2), "v2\n");

    // Far enough ahead that the server's own writes cannot reach it meanwhile.
    let future = format!("--rev={}", r3 + 1_000_000);
    ctl_fails(&all, &["get", "comp/k", &future], "etcdserver: mvcc: required revision is a future revision");

    assert_eq!(ctl(&all, &["compaction", &r2.to_string()]), format!("compacted revision {r2}\n"));
    // Every member applied the compaction before answering a linearizable read.
    for i in 0..c.len() {
        let member = c.client_url(i);
        ctl_fails(
            &member,
            &["get", "comp/k", &format!("--rev={r1}")],
            "etcdserver: mvcc: required revision has been compacted",
        );
        assert_eq!(value_at(&member, r2), "v2\n", "the compaction revision itself stays readable (member {i})");
        assert_eq!(ctl(&member, &["get", "comp/k", "--print-value-only"]), "v3\n");
    }
    ctl_fails(&all, &["compaction", &r1.to_string()], "etcdserver: mvcc: required revision has been compacted");
    ctl_fails(
        &all,
        &["compaction", &(r3 + 1_000_000).to_string()],
        "etcdserver: mvcc: required revision is a future revision",
    );

    // Crash a member, write without it, bring it back: it catches up and still refuses the
    // compacted revision.
    c.kill(0);
    let live = format!("{},{}", c.client_url(1), c.client_url(2));
    // Retried: if the crashed member was the leader, an election is under way. Repeating this
    // put is harmless (same key and value; only the final state is checked).
    etcdctl_retry(&live, &["put", "comp/k", "v4"], None, OP_DEADLINE);
    c.restart(0);
    let member0 = c.client_url(0);
    let out = etcdctl_retry(&member0, &["get", "comp/k", "--print-value-only"], None, OP_DEADLINE);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v4\n");
    ctl_fails(
        &member0,
        &["get", "comp/k", &format!("--rev={r1}")],
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_eq!(value_at(&member0, r3), "v3\n");
}
