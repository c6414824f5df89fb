//! The recorded history of a chaos run, as the checkers see it.
//!
//! These types are Berth's own, deliberately independent of `berth-store`'s domain types: the
//! checkers judge what clients *observed*, so they must not share code (or bugs) with the thing
//! they judge. The harness converts what its gRPC clients saw into these types.
//!
//! Time is the simulation's logical clock in [`Tick`]s. Two events at the same tick are treated
//! as concurrent: the checkers never order what the clock cannot order, so a coarse clock can
//! only make them more permissive, never raise a false alarm.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A point in simulated time (the harness's logical clock).
pub type Tick = u64;

/// Who issued an operation. A client is single-threaded: its operations never overlap.
pub type ClientId = u64;

/// An etcd revision (int64 on the wire; revisions start at 1, 0 means "none").
pub type Revision = i64;

/// Formats bytes as a string when they are printable UTF-8, else as hex, so counterexamples
/// stay readable for the textual keys and values the workloads use.
fn fmt_bytes(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => write!(f, "{s:?}"),
        _ => {
            write!(f, "0x")?;
            bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
    }
}

/// A key: arbitrary bytes, as in etcd.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key(pub Vec<u8>);

/// A value: arbitrary bytes. The register workload writes each value at most once, which keeps
/// counterexamples readable (a read names the write it saw).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Value(pub Vec<u8>);

macro_rules! bytes_newtype {
    ($t:ident) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_bytes(&self.0, f)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_bytes(&self.0, f)
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                Self(s.as_bytes().to_vec())
            }
        }
        impl From<String> for $t {
            fn from(s: String) -> Self {
                Self(s.into_bytes())
            }
        }
        impl From<Vec<u8>> for $t {
            fn from(b: Vec<u8>) -> Self {
                Self(b)
            }
        }
        impl From<&[u8]> for $t {
            fn from(b: &[u8]) -> Self {
                Self(b.to_vec())
            }
        }
    };
}
bytes_newtype!(Key);
bytes_newtype!(Value);

/// What a register-workload client asked for. Every call touches exactly one key, which is what
/// lets the linearizability checker partition the history per key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// `Put(key, value)`.
    Put { key: Key, value: Value },
    /// A linearizable `Range` of one key (serializable reads are not linearizable and must not
    /// be recorded here).
    Get { key: Key },
    /// A `Txn` comparing the key's value with `expected` (`None`: the key is absent, i.e.
    /// `CreateRevision == 0`) and, if equal, putting `new`.
    Cas { key: Key, expected: Option<Value>, new: Value },
    /// `DeleteRange` of one key.
    Delete { key: Key },
}

impl Call {
    pub fn key(&self) -> &Key {
        match self {
            Call::Put { key, .. } | Call::Get { key } | Call::Cas { key, .. } | Call::Delete { key } => key,
        }
    }

    /// Whether the call can change the store (a read cannot, whatever its outcome).
    pub fn may_write(&self) -> bool {
        !matches!(self, Call::Get { .. })
    }
}

/// What the store answered to a call that succeeded. `revision` is the response header's
/// revision: for a request that wrote, the revision it created; otherwise the store's current
/// revision when it was served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Return {
    Put {
        revision: Revision,
    },
    /// The value read (`None`: the key does not exist).
    Get {
        value: Option<Value>,
        revision: Revision,
    },
    /// Whether the comparison held (and the put happened).
    Cas {
        succeeded: bool,
        revision: Revision,
    },
    /// Whether a key was deleted (`deleted > 0` in etcd's response).
    Delete {
        deleted: bool,
        revision: Revision,
    },
}

impl Return {
    pub fn revision(&self) -> Revision {
        match self {
            Return::Put { revision }
            | Return::Get { revision, .. }
            | Return::Cas { revision, .. }
            | Return::Delete { revision, .. } => *revision,
        }
    }

    /// Whether this response says the request took a new revision (etcd: one revision per
    /// mutating request; a failed compare or a delete of nothing takes none).
    pub fn created_revision(&self) -> bool {
        match self {
            Return::Put { .. } => true,
            Return::Get { .. } => false,
            Return::Cas { succeeded, .. } => *succeeded,
            Return::Delete { deleted, .. } => *deleted,
        }
    }
}

/// How an operation ended, as far as the client can tell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The store answered; the operation took effect exactly once, between invoke and complete.
    Ok(Return),
    /// The operation certainly did not take effect (e.g. rejected before it was proposed:
    /// "not leader" from the member that would have proposed it, invalid request).
    Failed,
    /// The client gave up (deadline, broken connection, "request timed out"): the operation may
    /// have taken effect at any point after its invoke — even after the client gave up — or
    /// never. Never to be treated as "did not happen".
    Unknown,
}

/// One operation of the register workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub client: ClientId,
    /// When the client sent the request.
    pub invoke: Tick,
    /// When the client received the answer or gave up. For [`Outcome::Unknown`] it is only
    /// informative: the checkers treat the completion time of an unknown operation as infinity.
    pub complete: Tick,
    pub call: Call,
    pub outcome: Outcome,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{} [{}, ", self.client, self.invoke)?;
        match self.outcome {
            Outcome::Unknown => write!(f, "∞) ")?,
            _ => write!(f, "{}] ", self.complete)?,
        }
        match &self.call {
            Call::Put { key, value } => write!(f, "put({key}, {value})")?,
            Call::Get { key } => write!(f, "get({key})")?,
            Call::Cas { key, expected: Some(e), new } => write!(f, "cas({key}, {e} -> {new})")?,
            Call::Cas { key, expected: None, new } => write!(f, "cas({key}, absent -> {new})")?,
            Call::Delete { key } => write!(f, "delete({key})")?,
        }
        match &self.outcome {
            Outcome::Failed => write!(f, " -> failed"),
            Outcome::Unknown => write!(f, " -> unknown"),
            Outcome::Ok(Return::Put { revision }) => write!(f, " -> ok @{revision}"),
            Outcome::Ok(Return::Get { value: Some(v), revision }) => write!(f, " -> {v} @{revision}"),
            Outcome::Ok(Return::Get { value: None, revision }) => write!(f, " -> absent @{revision}"),
            Outcome::Ok(Return::Cas { succeeded, revision }) => {
                write!(f, " -> {} @{revision}", if *succeeded { "succeeded" } else { "compare failed" })
            }
            Outcome::Ok(Return::Delete { deleted, revision }) => {
                write!(f, " -> {} @{revision}", if *deleted { "deleted" } else { "nothing deleted" })
            }
        }
    }
}

/// A malformed history: a bug in the harness, not in the store. The checkers refuse it rather
/// than guess.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryError {
    /// `complete < invoke`.
    CompletesBeforeInvoke { index: usize },
    /// The [`Return`] variant does not answer the [`Call`] variant.
    ReturnMismatch { index: usize },
    /// Two operations of one client overlap in time (a client is single-threaded).
    ClientOverlap { client: ClientId, first: usize, second: usize },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::CompletesBeforeInvoke { index } => {
                write!(f, "operation {index} completes before it is invoked")
            }
            HistoryError::ReturnMismatch { index } => write!(f, "operation {index} has a return of another kind"),
            HistoryError::ClientOverlap { client, first, second } => {
                write!(f, "operations {first} and {second} of client {client} overlap")
            }
        }
    }
}

impl std::error::Error for HistoryError {}

/// A register-workload history: operations in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Operation>,
}

impl History {
    pub fn new(ops: Vec<Operation>) -> Self {
        Self { ops }
    }

    pub fn push(&mut self, op: Operation) {
        self.ops.push(op);
    }

    /// Checks the shape of the history (not the store's behaviour).
    pub fn validate(&self) -> Result<(), HistoryError> {
        for (index, op) in self.ops.iter().enumerate() {
            if op.complete < op.invoke {
                return Err(HistoryError::CompletesBeforeInvoke { index });
            }
            let matches = matches!(
                (&op.call, &op.outcome),
                (_, Outcome::Failed | Outcome::Unknown)
                    | (Call::Put { .. }, Outcome::Ok(Return::Put { .. }))
                    | (Call::Get { .. }, Outcome::Ok(Return::Get { .. }))
                    | (Call::Cas { .. }, Outcome::Ok(Return::Cas { .. }))
                    | (Call::Delete { .. }, Outcome::Ok(Return::Delete { .. }))
            );
            if !matches {
                return Err(HistoryError::ReturnMismatch { index });
            }
        }
        // A client's next operation starts no earlier than its previous one ended (it may start
        // at the same tick). Sorting by (client, invoke, complete) puts them side by side.
        let mut order: Vec<usize> = (0..self.ops.len()).collect();
        order.sort_by_key(|&i| (self.ops[i].client, self.ops[i].invoke, self.ops[i].complete, i));
        for pair in order.windows(2) {
            let (a, b) = (&self.ops[pair[0]], &self.ops[pair[1]]);
            if a.client == b.client && b.invoke < a.complete {
                return Err(HistoryError::ClientOverlap { client: a.client, first: pair[0], second: pair[1] });
            }
        }
        Ok(())
    }
}

/// A key-value pair as etcd reports it (`mvccpb.KeyValue`). For a delete event etcd fills only
/// `key` and `mod_revision` (the deletion's revision); the rest stays zero/empty.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Key,
    pub value: Value,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
    pub lease: i64,
}

/// `mvccpb.Event.EventType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change as a watch delivers it (`mvccpb.Event`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The key's state just before this change (only when the watcher asked for it).
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: ClientId, invoke: Tick, complete: Tick, call: Call, outcome: Outcome) -> Operation {
        Operation { client, invoke, complete, call, outcome }
    }

    #[test]
    fn a_well_formed_history_validates() {
        let h = History::new(vec![
            op(1, 0, 5, Call::Put { key: "k".into(), value: "a".into() }, Outcome::Ok(Return::Put { revision: 2 })),
            op(1, 5, 9, Call::Get { key: "k".into() }, Outcome::Unknown),
            op(2, 1, 3, Call::Delete { key: "k".into() }, Outcome::Failed),
        ]);
        assert_eq!(h.validate(), Ok(()));
    }

    #[test]
    fn malformed_histories_are_refused() {
        let put = Call::Put { key: "k".into(), value: "a".into() };
        let bad_time = History::new(vec![op(1, 5, 4, put.clone(), Outcome::Failed)]);
        assert_eq!(bad_time.validate(), Err(HistoryError::CompletesBeforeInvoke { index: 0 }));
        let bad_return =
            History::new(vec![op(1, 0, 4, put.clone(), Outcome::Ok(Return::Get { value: None, revision: 1 }))]);
        assert_eq!(bad_return.validate(), Err(HistoryError::ReturnMismatch { index: 0 }));
        let overlap =
            History::new(vec![op(7, 0, 10, put.clone(), Outcome::Unknown), op(7, 9, 12, put, Outcome::Failed)]);
        assert_eq!(overlap.validate(), Err(HistoryError::ClientOverlap { client: 7, first: 0, second: 1 }));
    }

    #[test]
    fn operations_print_readably() {
        let o = op(
            3,
            10,
            15,
            Call::Cas { key: "k".into(), expected: None, new: "v1".into() },
            Outcome::Ok(Return::Cas { succeeded: true, revision: 7 }),
        );
        assert_eq!(o.to_string(), r#"c3 [10, 15] cas("k", absent -> "v1") -> succeeded @7"#);
        assert_eq!(format!("{:?}", Key(vec![0, 255])), "0x00ff");
    }
}
