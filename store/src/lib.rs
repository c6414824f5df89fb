//! Berth's replicated store: an etcd-v3-compatible MVCC key-value store on openraft + sled.
//!
//! Layers, from the inside out: [`mvcc`] is the pure key space; [`engine`] is where bytes
//! become durable; [`raft`] adapts both to openraft (log storage, state machine, transport);
//! [`member`] assembles one running member; [`grpc`] speaks the etcd v3 API on top of it.

pub mod error;
pub mod ids;
pub mod mvcc;

pub use error::{StoreError, StoreResult};
pub mod backup;
pub mod cluster;
pub mod codec;
pub mod engine;
pub mod grpc;
pub mod lease;
pub mod member;
pub mod raft;
pub mod read_batch;
pub mod server;
pub mod watch;
