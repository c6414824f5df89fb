//! The multi-version key space: domain types, the pure MVCC state, and API-edge validation.

mod store;
mod types;
pub mod validate;

pub use store::{Applied, Command, Journal, Lease, Mvcc, Output, StoredEvent};
pub use types::*;

#[cfg(test)]
mod model_test;
