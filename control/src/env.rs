//! What the API server takes from the world besides the store: the time and randomness (uids,
//! generated names, cluster IPs). Injected so tests and simulations can pin them.

use chrono::{DateTime, Utc};
use rand::{RngCore, SeedableRng};
use std::sync::{Arc, Mutex};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[derive(Clone)]
pub struct Env {
    pub clock: Arc<dyn Clock>,
    rng: Arc<Mutex<rand::rngs::StdRng>>,
}

impl Env {
    /// The real clock and an OS-seeded generator.
    pub fn system() -> Env {
        Env { clock: Arc::new(SystemClock), rng: Arc::new(Mutex::new(rand::rngs::StdRng::from_entropy())) }
    }

    /// A given clock and a seeded generator (tests).
    pub fn with(clock: Arc<dyn Clock>, seed: u64) -> Env {
        Env { clock, rng: Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed))) }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0u8; N];
        // A poisoned lock only means another request panicked mid-draw; the generator is fine.
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        rng.fill_bytes(&mut bytes);
        bytes
    }

    pub fn uid(&self) -> String {
        crate::meta::uuid_v4(self.random_bytes())
    }
}
