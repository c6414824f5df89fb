//! Berth's chaos suite: the turmoil simulation harness ([`sim`]) and the checkers that judge
//! the histories it records.
//!
//! The checkers are pure: no IO, no clocks, no randomness, no tokio. The harness records what
//! clients observed into the types of [`history`] and the other modules' input types, and hands
//! them to:
//!
//! - [`linearizability::check_linearizability`] (+ [`linearizability::check_revisions`]) — the
//!   register workload, per key, Porcupine-style;
//! - [`watch_check::check_watches`] — watch streams against the true MVCC history;
//! - [`lease_check::check_leases`] — lease keys live exactly as long as their lease;
//! - [`invariants::InvariantChecker`] — one leader per term, monotonic terms and applied
//!   revisions, immutable committed data, fed continually during a run.
//!
//! Every checker is shown able to fail by its tests (known-bad histories). See `README.md`.

pub mod history;
pub mod invariants;
pub mod lease_check;
pub mod linearizability;
pub mod sim;
pub mod watch_check;
