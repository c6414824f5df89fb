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
