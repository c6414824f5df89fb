//! Typed identifiers used inside the store. Raw integers appear only at the protobuf edge.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A store revision: the logical clock of the MVCC key space. Starts at 1 (the empty store) and
/// increases by one for every request that changes something.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Revision(pub i64);

impl Revision {
    /// The revision of an empty store, as in etcd.
    pub const INITIAL: Revision = Revision(1);

    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A lease identifier. 0 means "no lease" on the wire; inside the store `Option<LeaseId>` says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeaseId(pub i64);

impl LeaseId {
    /// Maps the wire convention (0 = none) onto an option.
    pub fn from_wire(raw: i64) -> Option<LeaseId> {
        (raw != 0).then_some(LeaseId(raw))
    }
}

/// A member of the Raft group. Also the openraft node id. etcd prints it in hex.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One leader's tenure: a Raft term and the member that leads it (what openraft stamps on every
/// entry that leader appends). It fences decisions only a leader may make, such as expiring a
/// lease: see [`crate::lease::fence`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Leadership {
    pub term: u64,
    pub leader: MemberId,
}

/// 64-bit FNV-1a: a stable hash (unlike std's `DefaultHasher`, whose output may change between
/// Rust releases) used to derive member and cluster ids from names and URLs.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_stable_and_separates_parts() {
        assert_eq!(stable_hash(&[b"a", b"bc"]), stable_hash(&[b"a", b"bc"]));
        assert_ne!(stable_hash(&[b"a", b"bc"]), stable_hash(&[b"ab", b"c"]));
        // A fixed value: a change to the function would silently change every member id.
        assert_eq!(stable_hash(&[]), 0xcbf2_9ce4_8422_2325);
    }
}
