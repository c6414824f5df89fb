//! What a run records while it runs, shared by the simulated clients (which append what they
//! observe) and the harness (which samples the members and reads everything at the end).
//!
//! One mutex around everything: the simulation runs on one thread, so it is never contended;
//! it exists because client futures and the harness both hold it. It is never held across an
//! `.await`.

use super::client::SimClock;
use crate::history::{History, KeyValue, Operation, Tick};
use crate::invariants::{InvariantChecker, InvariantOptions};
use crate::lease_check::LeaseRecord;
use crate::watch_check::WatcherRecord;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The outcome of the heal phase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HealOutcome {
    /// When every member answered with the same leader, term, revision and `HashKV`.
    pub converged_at: Option<Tick>,
    /// When a fresh write was acknowledged and read back through every member.
    pub live_at: Option<Tick>,
    /// The last disagreement seen (why it did not converge, if it did not).
    pub detail: String,
}

/// Everything recorded, in the checkers' types.
#[derive(Default)]
pub struct Recording {
    pub register: History,
    pub watchers: Vec<WatcherRecord>,
    pub leases: Vec<LeaseRecord>,
    pub invariants: InvariantChecker,
    /// Ticks at which some member first claimed leadership of a new term.
    pub leader_changes: Vec<Tick>,
    pub heal: HealOutcome,
    /// What the membership client did (tick, line), merged into the nemesis log at the end.
    pub membership_log: Vec<(Tick, String)>,
}

/// The recording plus the signals the clients coordinate by.
pub struct Shared {
    pub clock: SimClock,
    recording: Mutex<Recording>,
    /// Set by the heal client when it is done: the watchers stop then.
    healed: AtomicBool,
}

impl Shared {
    pub fn new(clock: SimClock) -> Arc<Shared> {
        let recording =
            Recording { invariants: InvariantChecker::new(InvariantOptions::default()), ..Default::default() };
        Arc::new(Shared { clock, recording: Mutex::new(recording), healed: AtomicBool::new(false) })
    }

    pub fn lock(&self) -> MutexGuard<'_, Recording> {
        self.recording.lock().expect("recording lock")
    }

    pub fn now(&self) -> Tick {
        self.clock.now()
    }

    pub fn push_op(&self, op: Operation) {
        self.lock().register.push(op);
    }

    /// Feeds key-values a client read to the "committed data never changes" invariant.
    pub fn observed<'a>(&self, kvs: impl IntoIterator<Item = &'a KeyValue>) {
        let at = self.now();
        let mut r = self.lock();
        for kv in kvs {
            r.invariants.observe_kv(at, kv);
        }
    }

    pub fn set_healed(&self) {
        self.healed.store(true, Ordering::Relaxed);
    }

    pub fn healed(&self) -> bool {
        self.healed.load(Ordering::Relaxed)
    }
}
