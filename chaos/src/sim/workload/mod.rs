//! The workloads the simulated clients run, each recording what it observed into the
//! checkers' types through [`super::record::Shared`]:
//!
//! - [`register`]: put / get / compare-and-set / delete on a few keys → linearizability;
//! - [`watch`]: watchers on prefixes, re-created after errors → the watch guarantees;
//! - [`lease`]: leased keys kept alive, revoked or left to expire → the lease rules.
//!
//! Every client draws its choices from its own seeded RNG, so a replay makes the same choices
//! at the same simulated times.

pub mod lease;
pub mod register;
pub mod watch;
