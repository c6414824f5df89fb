//! Model test: the MVCC store against a naive reference that keeps a full copy of the key space
//! for every revision. Random operation sequences include txns, leases, compaction and
//! snapshot/restore; after every step both must answer every read identically.

use super::*;
use crate::error::StoreError;
use crate::ids::{LeaseId, Revision};
use proptest::prelude::*;
use std::collections::BTreeMap;

type State = BTreeMap<Vec<u8>, KeyValue>;

/// The reference: `states[r - 1]` is the key space at revision `r`.
struct Model {
    states: Vec<State>,
    compacted: i64,
    leases: BTreeMap<i64, ()>,
}

impl Model {
    fn current(&self) -> &State {
        self.states.last().unwrap()
    }
    fn revision(&self) -> i64 {
        self.states.len() as i64
    }
    fn read(&self, range: &KeyRange, rev: Option<i64>) -> Result<Vec<KeyValue>, StoreError> {
        let rev = rev.unwrap_or(self.revision());
        if rev > self.revision() {
            return Err(StoreError::FutureRevision);
        }
        if rev < self.compacted {
            return Err(StoreError::Compacted);
        }
        Ok(self.states[rev as usize - 1].values().filter(|kv| range.contains(&kv.key)).cloned().collect())
    }
    fn commit(&mut self, next: State) {
        self.states.push(next);
    }
    fn put(&mut self, key: &[u8], value: &[u8], lease: Option<i64>) -> Result<(), StoreError> {
        if let Some(l) = lease {
            if !self.leases.contains_key(&l) {
                return Err(StoreError::LeaseNotFound);
            }
        }
        let rev = self.revision() + 1;
        let mut next = self.current().clone();
        let prev = next.get(key).cloned();
        next.insert(
            key.to_vec(),
            KeyValue {
                key: key.to_vec(),
                value: value.to_vec(),
                create_revision: Revision(prev.as_ref().map_or(rev, |p| p.create_revision.0)),
                mod_revision: Revision(rev),
                version: prev.map_or(1, |p| p.version + 1),
                lease: lease.map(LeaseId),
            },
        );
        self.commit(next);
        Ok(())
    }
    fn delete_where(&mut self, doomed: impl Fn(&KeyValue) -> bool) -> i64 {
        let mut next = self.current().clone();
        let before = next.len();
        next.retain(|_, kv| !doomed(kv));
        let deleted = (before - next.len()) as i64;
        if deleted > 0 {
            self.commit(next);
        }
        deleted
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(usize, Vec<u8>, Option<i64>),
    Delete(usize, bool),
    /// If key's version equals n, put, else delete the key.
    Txn(usize, i64, Vec<u8>),
    Compact(i64),
    Grant(i64),
    Revoke(i64),
    Read(usize, bool, Option<i64>),
    SnapshotRestore,
}

const KEYS: &[&[u8]] = &[b"a", b"ab", b"b", b"b\0", b"\0", b"c\xff"];

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let value = proptest::collection::vec(any::<u8>(), 0..4);
    prop_oneof![
        4 => (key.clone(), value.clone(), proptest::option::of(1..4i64)).prop_map(|(k, v, l)| Op::Put(k, v, l)),
        2 => (key.clone(), any::<bool>()).prop_map(|(k, p)| Op::Delete(k, p)),
        2 => (key.clone(), 0..3i64, value).prop_map(|(k, n, v)| Op::Txn(k, n, v)),
        1 => (0..40i64).prop_map(Op::Compact),
        1 => (1..4i64).prop_map(Op::Grant),
        1 => (1..4i64).prop_map(Op::Revoke),
        3 => (key, any::<bool>(), proptest::option::of(0..40i64)).prop_map(|(k, p, r)| Op::Read(k, p, r)),
        1 => Just(Op::SnapshotRestore),
    ]
}

fn range_of(k: usize, prefix: bool) -> KeyRange {
    if prefix {
        KeyRange::prefix(KEYS[k])
    } else {
        KeyRange::single(KEYS[k])
    }
}

fn restore(m: &mut Mvcc) -> Mvcc {
    m.take_journal();
    let leases = m.leases().iter().map(|(id, l)| (*id, l.ttl));
    Mvcc::restore(m.stored_events(), leases, m.revision(), m.compacted())
}

fn check_reads(m: &Mvcc, model: &Model) {
    let all = KeyRange::from_wire(vec![0], vec![0]);
    for rev in 0..=model.revision() + 1 {
        let rev = (rev > 0).then_some(rev);
        let mut req = RangeRequest::new(all.clone());
        req.revision = rev.map(Revision);
        let got = m.range(&req).map(|r| r.kvs);
        assert_eq!(got, model.read(&all, rev), "full read at {rev:?}");
    }
}

fn run(ops: Vec<Op>) {
    let mut m = Mvcc::default();
    let mut model = Model { states: vec![State::new()], compacted: 0, leases: BTreeMap::new() };
    for op in ops {
        match op {
            Op::Put(k, v, lease) => {
                let mut req = PutRequest::new(KEYS[k], v.clone());
                req.lease = lease.map(LeaseId);
                let got = m.apply(&Command::Put(req)).map(|a| a.revision.0);
                let want = model.put(KEYS[k], &v, lease).map(|_| model.revision());
                assert_eq!(got, want);
            }
            Op::Delete(k, prefix) => {
                let range = range_of(k, prefix);
                let req = DeleteRangeRequest { range: range.clone(), prev_kv: true };
                let got = m.apply(&Command::DeleteRange(req)).unwrap();
                let deleted = model.delete_where(|kv| range.contains(&kv.key));
                assert_eq!(got.revision.0, model.revision());
                let Output::DeleteRange(out) = got.output else { panic!("wrong output") };
                assert_eq!(out.deleted, deleted);
                assert_eq!(out.prev_kvs.len() as i64, deleted);
            }
            Op::Txn(k, n, v) => {
                let txn = TxnRequest {
                    compare: vec![Compare {
                        range: KeyRange::single(KEYS[k]),
                        result: CompareResult::Equal,
                        target: CompareTarget::Version(n),
                    }],
                    success: vec![RequestOp::Put(PutRequest::new(KEYS[k], v.clone()))],
                    failure: vec![
                        RequestOp::DeleteRange(DeleteRangeRequest { range: KeyRange::single(KEYS[k]), prev_kv: false }),
                        RequestOp::Range(RangeRequest::new(KeyRange::single(KEYS[k]))),
                    ],
                };
                let got = m.apply(&Command::Txn(txn)).unwrap();
                let version = model.current().get(KEYS[k]).map_or(0, |kv| kv.version);
                let Output::Txn(out) = got.output else { panic!("wrong output") };
                assert_eq!(out.succeeded, version == n);
                if version == n {
                    model.put(KEYS[k], &v, None).unwrap();
                } else {
                    model.delete_where(|kv| kv.key == KEYS[k]);
                    // The read after the delete inside the same txn sees the delete.
                    let ResponseOp::Range(r) = &out.responses[1] else { panic!("wrong op") };
                    assert!(r.kvs.is_empty());
                }
                assert_eq!(got.revision.0, model.revision());
            }
            Op::Compact(rev) => {
                let got = m.apply(&Command::Compact { revision: Revision(rev) }).map(|_| ());
                let want = if rev <= model.compacted {
                    Err(StoreError::Compacted)
                } else if rev > model.revision() {
                    Err(StoreError::FutureRevision)
                } else {
                    model.compacted = rev;
                    Ok(())
                };
                assert_eq!(got, want);
            }
            Op::Grant(id) => {
                let got = m.apply(&Command::LeaseGrant { id: LeaseId(id), ttl: 5 }).map(|_| ());
                let want = match model.leases.insert(id, ()) {
                    Some(()) => Err(StoreError::LeaseExists),
                    None => Ok(()),
                };
                assert_eq!(got, want);
            }
            Op::Revoke(id) => {
                let got = m.apply(&Command::LeaseRevoke { id: LeaseId(id) }).map(|a| a.revision.0);
                let want = match model.leases.remove(&id) {
                    None => Err(StoreError::LeaseNotFound),
                    Some(()) => {
                        model.delete_where(|kv| kv.lease == Some(LeaseId(id)));
                        Ok(model.revision())
                    }
                };
                assert_eq!(got, want);
            }
            Op::Read(k, prefix, rev) => {
                let range = range_of(k, prefix);
                let mut req = RangeRequest::new(range.clone());
                req.revision = rev.filter(|r| *r > 0).map(Revision);
                assert_eq!(m.range(&req).map(|r| r.kvs), model.read(&range, rev.filter(|r| *r > 0)));
            }
            Op::SnapshotRestore => {
                let restored = restore(&mut m);
                assert_eq!(restored, m, "restore(stored_events) must rebuild the same store");
                m = restored;
            }
        }
        m.take_journal();
        check_reads(&m, &model);
        check_catch_up_steps(&m);
    }
}

/// Reading watch history in small steps gives exactly the events of one unbounded read, each
/// step ending where a revision ends and saying through which revision it is complete.
fn check_catch_up_steps(m: &Mvcc) {
    let all = KeyRange::prefix(b"");
    let start = Revision(m.compacted().0.max(1));
    let (whole, through) = m.events_since(&all, start, usize::MAX).unwrap();
    assert_eq!(through, m.revision());
    let (mut stepped, mut from) = (Vec::new(), start);
    loop {
        let (events, through) = m.events_since(&all, from, 2).unwrap();
        assert!(through.0 >= from.0 - 1 && through <= m.revision());
        assert!(events.iter().all(|e| e.kv.mod_revision >= from && e.kv.mod_revision <= through));
        stepped.extend(events);
        if through == m.revision() {
            break;
        }
        from = Revision(through.0 + 1);
    }
    assert_eq!(stepped, whole);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn mvcc_matches_reference(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops);
    }
}

#[test]
fn range_options_follow_etcd() {
    let mut m = Mvcc::default();
    for (k, v) in [("a", "3"), ("b", "1"), ("c", "2")] {
        m.apply(&Command::Put(PutRequest::new(k, v))).unwrap();
    }
    m.apply(&Command::Put(PutRequest::new("a", "4"))).unwrap();
    let mut req = RangeRequest::new(KeyRange::prefix(b""));
    req.range = KeyRange::from_wire(vec![0], vec![0]);
    req.limit = 2;
    let r = m.range(&req).unwrap();
    assert_eq!((r.count, r.more, r.kvs.len()), (3, true, 2));
    // A non-key target with order NONE sorts ascending.
    req.limit = 0;
    req.sort_target = SortTarget::Value;
    let vals: Vec<_> = m.range(&req).unwrap().kvs.into_iter().map(|kv| kv.value).collect();
    assert_eq!(vals, vec![b"1".to_vec(), b"2".to_vec(), b"4".to_vec()]);
    req.sort_target = SortTarget::Mod;
    req.sort_order = SortOrder::Descend;
    let keys: Vec<_> = m.range(&req).unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec(), b"b".to_vec()]);
    req.sort_order = SortOrder::None;
    req.sort_target = SortTarget::Key;
    req.min_mod_revision = 4;
    req.keys_only = true;
    let r = m.range(&req).unwrap();
    assert_eq!(r.count, 3, "count ignores the revision filters, as in etcd");
    assert_eq!(
        r.kvs.iter().map(|kv| (kv.key.clone(), kv.value.len())).collect::<Vec<_>>(),
        vec![(b"a".to_vec(), 0), (b"c".to_vec(), 0)]
    );
    req.count_only = true;
    let r = m.range(&req).unwrap();
    assert_eq!((r.count, r.kvs.len()), (3, 0));
}

#[test]
fn watch_history_survives_compaction_at_its_start() {
    let mut m = Mvcc::default();
    m.apply(&Command::Put(PutRequest::new("k", "1"))).unwrap(); // rev 2
    m.apply(&Command::DeleteRange(DeleteRangeRequest { range: KeyRange::single("k"), prev_kv: false })).unwrap(); // 3
    m.apply(&Command::Put(PutRequest::new("k", "2"))).unwrap(); // rev 4
    m.apply(&Command::Compact { revision: Revision(3) }).unwrap();
    let all = KeyRange::prefix(b"k");
    assert_eq!(m.events_since(&all, Revision(2), usize::MAX), Err(StoreError::Compacted));
    let (events, _) = m.events_since(&all, Revision(3), usize::MAX).unwrap();
    assert_eq!(
        events.iter().map(|e| (e.kind, e.kv.mod_revision.0)).collect::<Vec<_>>(),
        vec![(EventKind::Delete, 3), (EventKind::Put, 4)]
    );
    assert_eq!(events[1].prev_kv, None, "the previous version was a tombstone");
}

#[test]
fn failed_txn_precheck_changes_nothing() {
    let mut m = Mvcc::default();
    let mut put = PutRequest::new("a", "1");
    put.lease = Some(LeaseId(9));
    let txn = TxnRequest {
        success: vec![RequestOp::Put(PutRequest::new("b", "1")), RequestOp::Put(put)],
        ..Default::default()
    };
    assert_eq!(m.apply(&Command::Txn(txn)), Err(StoreError::LeaseNotFound));
    assert_eq!(m.revision(), Revision(1));
    assert!(m.take_journal().is_empty());
}
