//! The MVCC key space as a pure in-memory structure: every key keeps its versions (including
//! tombstones) until compaction, so reads at any retained revision are exact. Applying a command
//! returns its result and records what changed in a [`Journal`]; the state machine turns the
//! journal into durable writes and watch notifications. No IO, clocks or randomness here.

use super::types::*;
use crate::error::{StoreError, StoreResult};
use crate::ids::{Leadership, LeaseId, Revision};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A command that changes the store; one Raft proposal carries a batch of them.
///
/// `LeaseExpire` is the revoke of a lease whose deadline passed, as the lessor of the leader
/// `decided_by` decided. Unlike a client's `LeaseRevoke` it holds only in an entry that same
/// leader appended (a later leader may have renewed the lease since): the state machine admits
/// it through [`crate::lease::fence::apply`], which knows the entry's leader. It comes last, so
/// that the encoding of the other commands, persisted in logs, does not change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact { revision: Revision },
    LeaseGrant { id: LeaseId, ttl: i64 },
    LeaseRevoke { id: LeaseId },
    LeaseExpire { id: LeaseId, decided_by: Leadership },
}

/// What an applied command answers, next to the store revision its response header carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact,
    LeaseGrant { id: LeaseId, ttl: i64 },
    LeaseRevoke,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub revision: Revision,
    pub output: Output,
}

/// One event as it is stored: its position inside its revision is `sub`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub sub: u32,
    pub event: Event,
}

/// What applying commands changed, drained by the state machine after each batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    /// New versions, in (revision, sub) order.
    pub events: Vec<StoredEvent>,
    /// Stored versions dropped by compaction: (revision, sub).
    pub forgotten: Vec<(Revision, u32)>,
    pub leases_granted: Vec<(LeaseId, i64)>,
    pub leases_revoked: Vec<LeaseId>,
}

impl Journal {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.forgotten.is_empty()
            && self.leases_granted.is_empty()
            && self.leases_revoked.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    revision: Revision,
    sub: u32,
    /// `None` for a tombstone.
    live: Option<Live>,
}

/// A live version, packed because a store holds one per retained version: the lease in the
/// wire convention (0 = none) and the value boxed take 16 bytes less than an `Option<LeaseId>`
/// and a `Vec`, and a version fits 56 bytes instead of 72.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Live {
    create_revision: Revision,
    version: i64,
    lease: i64,
    value: Box<[u8]>,
}

// What the packing is for: a store with a million retained versions holds a million of these.
const _: () = assert!(std::mem::size_of::<Version>() == 56);

impl Live {
    fn new(create_revision: Revision, version: i64, lease: Option<LeaseId>, value: Vec<u8>) -> Live {
        Live { create_revision, version, lease: lease.map_or(0, |l| l.0), value: value.into_boxed_slice() }
    }

    fn lease(&self) -> Option<LeaseId> {
        LeaseId::from_wire(self.lease)
    }
}

/// A lease as the replicated state knows it. Expiry deadlines are not replicated: the leader
/// keeps them and proposes a revoke when one passes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    pub ttl: i64,
    pub keys: BTreeSet<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mvcc {
    /// Boxed keys: a store holds one per key, and a box takes 8 bytes less than a `Vec`.
    keys: BTreeMap<Box<[u8]>, Vec<Version>>,
    leases: BTreeMap<LeaseId, Lease>,
    revision: Revision,
    /// Reads below this revision fail; 0 when nothing was compacted.
    compacted: Revision,
    journal: Journal,
}

impl Default for Mvcc {
    fn default() -> Self {
        Mvcc {
            keys: BTreeMap::new(),
            leases: BTreeMap::new(),
            revision: Revision::INITIAL,
            compacted: Revision(0),
            journal: Journal::default(),
        }
    }
}

impl Mvcc {
    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn compacted(&self) -> Revision {
        self.compacted
    }

    pub fn leases(&self) -> &BTreeMap<LeaseId, Lease> {
        &self.leases
    }

    pub fn take_journal(&mut self) -> Journal {
        std::mem::take(&mut self.journal)
    }

    /// Rebuilds a store from its persisted parts: the stored events (each key's in (revision,
    /// sub) order; keys in any order), the leases, the current and the compacted revision.
    /// Start-up and snapshot install share it.
    pub fn restore(
        events: impl IntoIterator<Item = StoredEvent>,
        leases: impl IntoIterator<Item = (LeaseId, i64)>,
        revision: Revision,
        compacted: Revision,
    ) -> Mvcc {
        let mut mvcc = Mvcc {
            revision,
            compacted,
            leases: leases.into_iter().map(|(id, ttl)| (id, Lease { ttl, keys: BTreeSet::new() })).collect(),
            ..Mvcc::default()
        };
        for StoredEvent { sub, event } in events {
            let revision = event.kv.mod_revision;
            let live = match event.kind {
                EventKind::Put => {
                    Some(Live::new(event.kv.create_revision, event.kv.version, event.kv.lease, event.kv.value))
                }
                EventKind::Delete => None,
            };
            push_version(mvcc.keys.entry(event.kv.key.into()).or_default(), Version { revision, sub, live });
        }
        for (key, versions) in &mvcc.keys {
            if let Some(lease) = versions.last().and_then(|v| v.live.as_ref()).and_then(Live::lease) {
                if let Some(entry) = mvcc.leases.get_mut(&lease) {
                    entry.keys.insert(key.to_vec());
                }
            }
        }
        mvcc
    }

    /// Every retained version as an event, in (revision, sub) order: the inverse of [`Mvcc::restore`].
    pub fn stored_events(&self) -> Vec<StoredEvent> {
        let mut all: Vec<StoredEvent> = self.versions().collect();
        all.sort_by_key(|e| (e.event.kv.mod_revision, e.sub));
        all
    }

    /// Every retained version as an event, key by key and each key's versions oldest first:
    /// what [`Mvcc::restore`] needs, made one event at a time (a snapshot of a big store streams
    /// them into its encoding instead of copying the history first).
    pub fn versions(&self) -> impl Iterator<Item = StoredEvent> + '_ {
        self.keys.iter().flat_map(|(key, versions)| {
            versions.iter().map(move |v| StoredEvent { sub: v.sub, event: event_of(key, v, None) })
        })
    }

    /// How many versions [`Mvcc::versions`] yields.
    pub fn version_count(&self) -> usize {
        self.keys.values().map(Vec::len).sum()
    }

    /// Events with revision `>= from` on keys in `range`, in (revision, sub) order, with
    /// `prev_kv` filled, for watchers catching up from history; and the revision the answer is
    /// complete through. At most about `limit` events are read: the answer stops where a
    /// revision ends once it holds `limit` (a revision is never split), and then it is complete
    /// through the revision before the first one left out; otherwise through the store's
    /// revision. Reading a step costs a look at each key in `range` plus `limit` steps of a
    /// merge across them, not the whole remaining history.
    pub fn events_since(&self, range: &KeyRange, from: Revision, limit: usize) -> StoreResult<(Vec<Event>, Revision)> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        if from < self.compacted {
            return Err(StoreError::Compacted);
        }
        let keys: Vec<(&[u8], &Vec<Version>)> = self.keys_in(range).collect();
        // The next version of each key to emit, smallest (revision, sub) first.
        let mut next: BinaryHeap<Reverse<(Revision, u32, usize, usize)>> = keys
            .iter()
            .enumerate()
            .filter_map(|(k, (_, versions))| {
                let i = versions.partition_point(|v| v.revision < from);
                versions.get(i).map(|v| Reverse((v.revision, v.sub, k, i)))
            })
            .collect();
        let mut events: Vec<Event> = Vec::new();
        while let Some(Reverse((revision, _, k, i))) = next.pop() {
            if events.len() >= limit.max(1) && events.last().is_some_and(|e| e.kv.mod_revision != revision) {
                return Ok((events, Revision(revision.0 - 1)));
            }
            let (key, versions) = keys[k];
            let prev = i.checked_sub(1).and_then(|p| kv_of(key, &versions[p]));
            events.push(event_of(key, &versions[i], prev));
            if let Some(v) = versions.get(i + 1) {
                next.push(Reverse((v.revision, v.sub, k, i + 1)));
            }
        }
        Ok((events, self.revision))
    }

    fn keys_in<'a>(&'a self, range: &KeyRange) -> Box<dyn Iterator<Item = (&'a [u8], &'a Vec<Version>)> + 'a> {
        use std::ops::Bound::*;
        if range.is_empty() {
            return Box::new(std::iter::empty());
        }
        match &range.end {
            RangeEnd::Single => {
                Box::new(self.keys.get_key_value(range.start.as_slice()).map(|(k, v)| (&**k, v)).into_iter())
            }
            RangeEnd::Before(end) => {
                let keys = self.keys.range::<[u8], _>((Included(range.start.as_slice()), Excluded(end.as_slice())));
                Box::new(keys.map(|(k, v)| (&**k, v)))
            }
            RangeEnd::Unbounded => {
                let keys = self.keys.range::<[u8], _>((Included(range.start.as_slice()), Unbounded));
                Box::new(keys.map(|(k, v)| (&**k, v)))
            }
        }
    }

    fn check_read_revision(&self, revision: Revision) -> StoreResult<()> {
        if revision > self.revision {
            Err(StoreError::FutureRevision)
        } else if revision < self.compacted {
            Err(StoreError::Compacted)
        } else {
            Ok(())
        }
    }

    /// A read at the requested revision (or the current one).
    pub fn range(&self, req: &RangeRequest) -> StoreResult<RangeResponse> {
        let at = req.revision.unwrap_or(self.revision);
        self.check_read_revision(at)?;
        Ok(self.range_at(req, at))
    }

    fn range_at(&self, req: &RangeRequest, at: Revision) -> RangeResponse {
        let mut count = 0i64;
        let mut kvs = Vec::new();
        for (key, versions) in self.keys_in(&req.range) {
            let Some(kv) = visible(versions, at).and_then(|v| kv_of(key, v)) else { continue };
            count += 1;
            if !req.count_only && passes_filters(req, &kv) {
                kvs.push(kv);
            }
        }
        let order = match (req.sort_order, req.sort_target) {
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (order, _) => order,
        };
        if order != SortOrder::None {
            // Stable sort: keys stay in key order among equal sort values.
            match req.sort_target {
                SortTarget::Key => {}
                SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
                SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
                SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
                SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
            }
            if order == SortOrder::Descend {
                kvs.reverse();
            }
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() as i64 > req.limit {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        RangeResponse { kvs, more, count }
    }

    /// Applies one command. Either it succeeds and the journal holds its changes, or it fails
    /// and nothing changed.
    pub fn apply(&mut self, command: &Command) -> StoreResult<Applied> {
        match command {
            Command::Put(req) => {
                self.check_put(req)?;
                let mut w = Writer::new(self.revision);
                let out = self.put(&mut w, req);
                Ok(self.finish(w, Output::Put(out)))
            }
            Command::DeleteRange(req) => {
                let mut w = Writer::new(self.revision);
                let out = self.delete(&mut w, &req.range, req.prev_kv);
                Ok(self.finish(w, Output::DeleteRange(out)))
            }
            Command::Txn(req) => {
                let path = self.txn_path(req);
                self.check_txn(req, &mut path.iter().copied())?;
                let mut w = Writer::new(self.revision);
                let out = self.txn(&mut w, req, &mut path.iter().copied());
                Ok(self.finish(w, Output::Txn(out)))
            }
            Command::Compact { revision } => {
                self.compact(*revision)?;
                Ok(Applied { revision: self.revision, output: Output::Compact })
            }
            Command::LeaseGrant { id, ttl } => {
                if self.leases.contains_key(id) {
                    return Err(StoreError::LeaseExists);
                }
                self.leases.insert(*id, Lease { ttl: *ttl, keys: BTreeSet::new() });
                self.journal.leases_granted.push((*id, *ttl));
                Ok(Applied { revision: self.revision, output: Output::LeaseGrant { id: *id, ttl: *ttl } })
            }
            Command::LeaseRevoke { id } => {
                let lease = self.leases.get(id).ok_or(StoreError::LeaseNotFound)?;
                let keys: Vec<Vec<u8>> = lease.keys.iter().cloned().collect();
                let mut w = Writer::new(self.revision);
                for key in keys {
                    self.delete(&mut w, &KeyRange::single(key), false);
                }
                self.leases.remove(id);
                self.journal.leases_revoked.push(*id);
                Ok(self.finish(w, Output::LeaseRevoke))
            }
            // Only the fence can admit an expiry (it knows which leader appended the entry);
            // one that reaches the key space unadmitted changes nothing.
            Command::LeaseExpire { .. } => Err(StoreError::LeaderChanged),
        }
    }

    fn finish(&mut self, w: Writer, output: Output) -> Applied {
        if w.changed() {
            self.revision = w.revision;
        }
        Applied { revision: self.revision, output }
    }

    fn latest(&self, key: &[u8]) -> Option<&Live> {
        self.keys.get(key).and_then(|vs| vs.last()).and_then(|v| v.live.as_ref())
    }

    fn check_put(&self, req: &PutRequest) -> StoreResult<()> {
        if (req.ignore_value || req.ignore_lease) && self.latest(&req.key).is_none() {
            return Err(StoreError::KeyNotFound);
        }
        if let Some(lease) = req.lease {
            if !req.ignore_lease && !self.leases.contains_key(&lease) {
                return Err(StoreError::LeaseNotFound);
            }
        }
        Ok(())
    }

    fn put(&mut self, w: &mut Writer, req: &PutRequest) -> PutResponse {
        if !self.keys.contains_key(req.key.as_slice()) {
            self.keys.insert(req.key.as_slice().into(), Vec::new());
        }
        let versions = self.keys.get_mut(req.key.as_slice()).expect("inserted above");
        let prev_kv = versions.last().and_then(|v| kv_of(&req.key, v));
        let value = match (&prev_kv, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev_kv, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let (create_revision, version) = match &prev_kv {
            Some(p) => (p.create_revision, p.version + 1),
            None => (w.revision, 1),
        };
        let sub = w.next_sub();
        let live = Live::new(create_revision, version, lease, value);
        let v = Version { revision: w.revision, sub, live: Some(live) };
        let event = event_of(&req.key, &v, prev_kv.clone());
        push_version(versions, v);
        self.reattach(&req.key, prev_kv.as_ref().and_then(|p| p.lease), lease);
        self.journal.events.push(StoredEvent { sub, event });
        PutResponse { prev_kv: if req.prev_kv { prev_kv } else { None } }
    }

    fn delete(&mut self, w: &mut Writer, range: &KeyRange, want_prev: bool) -> DeleteRangeResponse {
        let doomed: Vec<(Vec<u8>, KeyValue)> = self
            .keys_in(range)
            .filter_map(|(key, versions)| versions.last().and_then(|v| kv_of(key, v)).map(|kv| (key.to_vec(), kv)))
            .collect();
        let mut out = DeleteRangeResponse { deleted: doomed.len() as i64, prev_kvs: Vec::new() };
        for (key, prev) in doomed {
            let sub = w.next_sub();
            let v = Version { revision: w.revision, sub, live: None };
            let event = event_of(&key, &v, Some(prev.clone()));
            push_version(self.keys.get_mut(key.as_slice()).expect("key listed above"), v);
            self.reattach(&key, prev.lease, None);
            self.journal.events.push(StoredEvent { sub, event });
            if want_prev {
                out.prev_kvs.push(prev);
            }
        }
        out
    }

    fn reattach(&mut self, key: &[u8], from: Option<LeaseId>, to: Option<LeaseId>) {
        if from == to {
            return;
        }
        if let Some(lease) = from.and_then(|id| self.leases.get_mut(&id)) {
            lease.keys.remove(key);
        }
        if let Some(lease) = to.and_then(|id| self.leases.get_mut(&id)) {
            lease.keys.insert(key.to_vec());
        }
    }

    /// Decides every branch of a (nested) txn up front against the state before the txn, as
    /// etcd does: one boolean per txn in depth-first order.
    fn txn_path(&self, req: &TxnRequest) -> Vec<bool> {
        let mut path = Vec::new();
        self.collect_path(req, &mut path);
        path
    }

    fn collect_path(&self, req: &TxnRequest, path: &mut Vec<bool>) {
        let ok = req.compare.iter().all(|c| self.compare(c));
        path.push(ok);
        for op in if ok { &req.success } else { &req.failure } {
            if let RequestOp::Txn(inner) = op {
                self.collect_path(inner, path);
            }
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs: Vec<KeyValue> =
            self.keys_in(&c.range).filter_map(|(key, versions)| versions.last().and_then(|v| kv_of(key, v))).collect();
        if kvs.is_empty() {
            // A value compare on a missing key always fails: gRPC cannot tell a missing value
            // from an empty one. Other targets compare against zero values.
            if matches!(c.target, CompareTarget::Value(_)) {
                return false;
            }
            return compare_kv(
                c,
                &KeyValue {
                    key: c.range.start.clone(),
                    value: Vec::new(),
                    create_revision: Revision(0),
                    mod_revision: Revision(0),
                    version: 0,
                    lease: None,
                },
            );
        }
        kvs.iter().all(|kv| compare_kv(c, kv))
    }

    fn check_txn(&self, req: &TxnRequest, path: &mut impl Iterator<Item = bool>) -> StoreResult<()> {
        let ok = path.next().expect("one path entry per txn");
        for op in if ok { &req.success } else { &req.failure } {
            match op {
                RequestOp::Range(r) => {
                    if let Some(rev) = r.revision {
                        self.check_read_revision(rev)?;
                    }
                }
                RequestOp::Put(p) => self.check_put(p)?,
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(inner) => self.check_txn(inner, path)?,
            }
        }
        Ok(())
    }

    fn txn(&mut self, w: &mut Writer, req: &TxnRequest, path: &mut impl Iterator<Item = bool>) -> TxnResponse {
        let succeeded = path.next().expect("one path entry per txn");
        let ops = if succeeded { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => {
                    // Reads inside a txn see the txn's own earlier writes.
                    let at = r.revision.unwrap_or(if w.changed() { w.revision } else { self.revision });
                    ResponseOp::Range(self.range_at(r, at))
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(w, p)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(w, &d.range, d.prev_kv)),
                RequestOp::Txn(inner) => ResponseOp::Txn(self.txn(w, inner, path)),
            });
        }
        TxnResponse { succeeded, responses }
    }

    /// Drops every version that no read at or after `revision` can see.
    pub fn compact(&mut self, revision: Revision) -> StoreResult<()> {
        if revision <= self.compacted {
            return Err(StoreError::Compacted);
        }
        if revision > self.revision {
            return Err(StoreError::FutureRevision);
        }
        let forgotten = &mut self.journal.forgotten;
        self.keys.retain(|_, versions| {
            // Index of the version a read at `revision` sees; everything before it goes.
            let seen = versions.partition_point(|v| v.revision <= revision);
            let mut drop = seen.saturating_sub(1);
            // A tombstone older than the compaction point hides nothing anyone can still read.
            // One exactly at it stays, so a watch starting at `revision` still sees that delete.
            if seen > 0 && versions[seen - 1].live.is_none() && versions[seen - 1].revision < revision {
                drop = seen;
            }
            forgotten.extend(versions.drain(..drop).map(|v| (v.revision, v.sub)));
            !versions.is_empty()
        });
        self.compacted = revision;
        Ok(())
    }
}

/// Allocates the revision and sub-revisions of one write request.
struct Writer {
    revision: Revision,
    next_sub: u32,
}

impl Writer {
    fn new(current: Revision) -> Self {
        Writer { revision: current.next(), next_sub: 0 }
    }

    fn next_sub(&mut self) -> u32 {
        self.next_sub += 1;
        self.next_sub - 1
    }

    fn changed(&self) -> bool {
        self.next_sub > 0
    }
}

/// Below this many versions a key's list grows by exactly one version at a time.
const SHORT_HISTORY: usize = 4;

/// Appends a version to a key's list. Most keys hold one to three versions, and `Vec`'s own
/// growth makes room for four on the first push (at a million keys that alone was a third of a
/// member's memory), so a short list grows by exactly one version; a longer one doubles.
fn push_version(versions: &mut Vec<Version>, version: Version) {
    if versions.len() < SHORT_HISTORY {
        versions.reserve_exact(1);
    }
    versions.push(version);
}

fn visible(versions: &[Version], at: Revision) -> Option<&Version> {
    let n = versions.partition_point(|v| v.revision <= at);
    n.checked_sub(1).map(|i| &versions[i])
}

fn kv_of(key: &[u8], v: &Version) -> Option<KeyValue> {
    v.live.as_ref().map(|live| KeyValue {
        key: key.to_vec(),
        value: live.value.to_vec(),
        create_revision: live.create_revision,
        mod_revision: v.revision,
        version: live.version,
        lease: live.lease(),
    })
}

fn event_of(key: &[u8], v: &Version, prev_kv: Option<KeyValue>) -> Event {
    match kv_of(key, v) {
        Some(kv) => Event { kind: EventKind::Put, kv, prev_kv },
        None => Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_vec(),
                value: Vec::new(),
                create_revision: Revision(0),
                mod_revision: v.revision,
                version: 0,
                lease: None,
            },
            prev_kv,
        },
    }
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    let within = |value: i64, min: i64, max: i64| (min == 0 || value >= min) && (max == 0 || value <= max);
    within(kv.mod_revision.0, req.min_mod_revision, req.max_mod_revision)
        && within(kv.create_revision.0, req.min_create_revision, req.max_create_revision)
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.0.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.0.cmp(v),
        CompareTarget::Value(v) => kv.value.cmp(v),
        CompareTarget::Lease(v) => kv.lease.map_or(0, |l| l.0).cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_history_grows_one_version_at_a_time_and_a_long_one_doubles() {
        let mut versions = Vec::new();
        let capacities: Vec<usize> = (1..=9)
            .map(|i| {
                push_version(&mut versions, Version { revision: Revision(i), sub: 0, live: None });
                versions.capacity()
            })
            .collect();
        assert_eq!(capacities, [1, 2, 3, 4, 8, 8, 8, 8, 16]);
    }
}
