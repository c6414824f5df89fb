//! The clock lease deadlines are measured by, injected so that simulations can drive and skew it.
//!
//! Production uses tokio's clock: under turmoil (and tokio's paused test clock) that clock is
//! simulated time, so lease expiry follows the simulation instead of the wall. The chaos suite
//! wraps a clock to add skew; nothing in the lease code reads time any other way.

use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// A source of time for the lessor.
pub trait LeaseClock: Send + Sync + 'static {
    /// A monotonic instant: lease deadlines are `now() + TTL`.
    fn now(&self) -> Instant;

    /// Milliseconds since the Unix epoch, read once at start to seed lease id generation (as
    /// etcd does), so ids from before a restart are not handed out again. A simulation
    /// overrides it to stay deterministic.
    fn seed_millis(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// tokio's clock (real time in production, simulated time under turmoil).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

impl LeaseClock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}
