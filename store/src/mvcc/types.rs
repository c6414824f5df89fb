//! Domain types of the MVCC key space: key ranges, stored key-values, events, and the requests
//! and responses of the KV API as the state machine sees them (validated, typed, serde-able so
//! they can travel inside Raft entries).

use crate::ids::{LeaseId, Revision};
use serde::{Deserialize, Serialize};

/// A set of keys, with etcd's `range_end` conventions already decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    #[serde(with = "serde_bytes")]
    pub start: Vec<u8>,
    pub end: RangeEnd,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeEnd {
    /// Exactly the key `start` (etcd: empty `range_end`).
    Single,
    /// Keys in `[start, end)`.
    Before(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Every key `>= start` (etcd: `range_end == "\0"`).
    Unbounded,
}

impl KeyRange {
    pub fn single(key: impl Into<Vec<u8>>) -> Self {
        KeyRange { start: key.into(), end: RangeEnd::Single }
    }

    /// Decodes etcd's wire convention for `key` + `range_end`.
    pub fn from_wire(key: Vec<u8>, range_end: Vec<u8>) -> Self {
        let end = match range_end.as_slice() {
            [] => RangeEnd::Single,
            [0] => RangeEnd::Unbounded,
            _ => RangeEnd::Before(range_end),
        };
        KeyRange { start: key, end }
    }

    /// The prefix range of `prefix`, as `etcdctl --prefix` computes it.
    pub fn prefix(prefix: &[u8]) -> Self {
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return KeyRange { start: prefix.to_vec(), end: RangeEnd::Before(end) };
            }
        }
        // An all-0xff (or empty) prefix has no upper bound.
        KeyRange { start: prefix.to_vec(), end: RangeEnd::Unbounded }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            RangeEnd::Single => key == self.start.as_slice(),
            RangeEnd::Before(end) => key >= self.start.as_slice() && key < end.as_slice(),
            RangeEnd::Unbounded => key >= self.start.as_slice(),
        }
    }

    /// Whether two ranges share a key (used by the txn duplicate-key rule).
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        fn upper(r: &KeyRange) -> Option<Vec<u8>> {
            match &r.end {
                RangeEnd::Single => {
                    let mut k = r.start.clone();
                    k.push(0);
                    Some(k)
                }
                RangeEnd::Before(end) => Some(end.clone()),
                RangeEnd::Unbounded => None,
            }
        }
        let (a_hi, b_hi) = (upper(self), upper(other));
        let a_before_b_ends = b_hi.as_ref().is_none_or(|hi| self.start < *hi);
        let b_before_a_ends = a_hi.as_ref().is_none_or(|hi| other.start < *hi);
        a_before_b_ends && b_before_a_ends && !self.is_empty() && !other.is_empty()
    }

    /// A range whose end is not after its start holds no key.
    pub fn is_empty(&self) -> bool {
        matches!(&self.end, RangeEnd::Before(end) if end.as_slice() <= self.start.as_slice())
    }
}

/// A key-value as stored and as returned to clients (mvccpb.KeyValue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// Number of modifications since creation; 1 for a fresh key.
    pub version: i64,
    pub lease: Option<LeaseId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change of one key at one revision (mvccpb.Event). For a delete, `kv` holds only the key
/// and `mod_revision` (as etcd's tombstones do).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub range: KeyRange,
    /// 0 = no limit.
    pub limit: i64,
    /// `None` = the current revision.
    pub revision: Option<Revision>,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    /// 0 = no bound, for each of the four filters.
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

impl RangeRequest {
    pub fn new(range: KeyRange) -> Self {
        RangeRequest {
            range,
            limit: 0,
            revision: None,
            sort_order: SortOrder::None,
            sort_target: SortTarget::Key,
            keys_only: false,
            count_only: false,
            min_mod_revision: 0,
            max_mod_revision: 0,
            min_create_revision: 0,
            max_create_revision: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub lease: Option<LeaseId>,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

impl PutRequest {
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        PutRequest {
            key: key.into(),
            value: value.into(),
            lease: None,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    pub range: KeyRange,
    pub prev_kv: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Lease(i64),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub range: KeyRange,
    pub result: CompareResult,
    pub target: CompareTarget,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_range_conventions() {
        assert_eq!(KeyRange::from_wire(b"a".to_vec(), vec![]).end, RangeEnd::Single);
        assert_eq!(KeyRange::from_wire(b"a".to_vec(), vec![0]).end, RangeEnd::Unbounded);
        let r = KeyRange::from_wire(b"a".to_vec(), b"c".to_vec());
        assert!(r.contains(b"a") && r.contains(b"b\xff") && !r.contains(b"c"));
    }

    #[test]
    fn prefix_end_carries_over_0xff() {
        assert_eq!(KeyRange::prefix(b"a\xff").end, RangeEnd::Before(b"b".to_vec()));
        assert_eq!(KeyRange::prefix(b"\xff\xff").end, RangeEnd::Unbounded);
        assert!(KeyRange::prefix(b"ab").contains(b"ab\x00"));
        assert!(!KeyRange::prefix(b"ab").contains(b"ac"));
    }

    #[test]
    fn overlap_rule() {
        let single = |k: &[u8]| KeyRange::single(k.to_vec());
        assert!(single(b"a").overlaps(&single(b"a")));
        assert!(!single(b"a").overlaps(&single(b"b")));
        assert!(KeyRange::prefix(b"a").overlaps(&single(b"ab")));
        assert!(!KeyRange::prefix(b"a").overlaps(&single(b"b")));
        let all = KeyRange::from_wire(vec![0], vec![0]);
        assert!(all.overlaps(&single(b"zzz")));
        // "a\0" is the first key after "a": a single key does not overlap a range starting there.
        assert!(!single(b"a").overlaps(&KeyRange::from_wire(b"a\0".to_vec(), b"b".to_vec())));
    }
}
