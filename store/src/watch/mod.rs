//! Watches: the etcd `Watch` semantics over the member's applied state.
//!
//! Each member serves watches from what it has applied itself, so watches keep working across
//! leader changes. The state machine publishes every applied, persisted batch to the member's
//! [`WatchHub`]; the hub routes the events to the *synced* watchers' bounded queues. A watcher
//! whose queue is full, that starts in the past, or that lived through a snapshot install is
//! *unsynced*: its stream replays its history from the MVCC store ([`Mvcc::events_since`]) in
//! steps until it has caught up, then it rejoins the live path at exactly the revision its
//! history ended — or, if that history was compacted, it is canceled with the compact revision.
//! Writers never wait for watchers, and no event is ever dropped silently.
//!
//! - [`core`]: the pure bookkeeping (watchers, queues, synced/unsynced, what to send next).
//! - [`hub`]: the core behind a lock, stream wake-ups, the shutdown signal.
//! - [`session`]: one watch stream, driven by the gRPC service in [`crate::grpc::watch`].
//!
//! [`Mvcc::events_since`]: crate::mvcc::Mvcc::events_since

pub mod core;
pub mod hub;
pub mod session;

pub use self::core::{Filters, Limits, StreamId, WatchId, WatchSpec};
pub use hub::{WatchConfig, WatchHub, DEFAULT_PROGRESS_NOTIFY_INTERVAL};
pub use session::{CreateRequest, Reply, Request, Session};
