//! The openraft type configuration: what a log entry carries (a batch of store commands), what
//! applying it answers, and what the cluster knows about each member.

use crate::error::StoreResult;
use crate::mvcc::{Applied, Command};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

/// One Raft entry: a batch of client commands coalesced by group commit. Each command still
/// takes its own revision and gets its own result.
///
/// The commands are shared, not owned: an entry is handed out several times (to apply it and to
/// each follower's replication stream, see [`super::wal::recent`]), and a copy of a shared list
/// is one reference count where an owned one would copy every key and value. Encoded, it is the
/// same sequence as a `Vec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub commands: Arc<[Command]>,
}

/// The results of one applied entry, one per command (empty for blank and membership entries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalResult {
    pub results: Vec<StoreResult<Applied>>,
}

/// The log index an entry was committed at, and the results of the commands asked about.
pub type Committed = (u64, ProposalResult);

/// What the cluster configuration records about a member (etcd's `Member` minus the id).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.peer_urls.join(","))
    }
}

openraft::declare_raft_types!(
    /// Berth's Raft types.
    pub TypeConfig:
        D = Proposal,
        R = ProposalResult,
        NodeId = u64,
        Node = MemberNode,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<u64, MemberNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, MemberNode>;
pub type StorageError = openraft::StorageError<u64>;
