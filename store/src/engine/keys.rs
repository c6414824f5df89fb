//! The layout of the engine's single key space. Integers are big-endian so that byte order is
//! numeric order and range scans walk revisions in sequence. (The Raft log is not here: it has
//! its own segments, see [`super::segments`].)

use crate::ids::{LeaseId, Revision};

/// Chunks of stored MVCC events, by the (revision, sub) of their first event.
pub const CHUNK: u8 = b'c';
/// Where each stored event had a record of its own before chunks (only checked for).
pub const EVENT_BEFORE_CHUNKS: u8 = b'r';
/// Leases by id.
pub const LEASE: u8 = b's';
/// Single metadata records.
pub const META: u8 = b'm';

pub const STATE_MACHINE: &[u8] = b"mstate";

pub fn chunk(revision: Revision, sub: u32) -> Vec<u8> {
    let mut k = vec![CHUNK];
    k.extend_from_slice(&revision.0.to_be_bytes());
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

pub fn lease(id: LeaseId) -> Vec<u8> {
    let mut k = vec![LEASE];
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

/// `[start, end)` bounds covering every key with the one-byte `prefix`.
pub fn all(prefix: u8) -> (Vec<u8>, Vec<u8>) {
    (vec![prefix], vec![prefix + 1])
}
