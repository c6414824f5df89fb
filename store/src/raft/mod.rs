//! openraft adapters: the write-ahead log and durable log storage over it, the state machine over
//! the MVCC store (and the thread that persists it), and the peer transport (client and server side).

pub mod history;
pub mod log_store;
pub mod network;
pub mod persister;
pub mod state_machine;
pub mod transport;
pub mod types;
pub mod wal;

pub use types::*;

/// Whether the caller runs on a multi-threaded tokio runtime (a server). The deterministic
/// simulation and unit tests run on a current-thread one, where work that a server moves off
/// its workers (onto another worker or a thread of its own) runs in place instead, so that
/// nothing outside the simulation's seed decides what happens when.
pub(crate) fn on_worker_threads() -> bool {
    matches!(
        tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::MultiThread)
    )
}
