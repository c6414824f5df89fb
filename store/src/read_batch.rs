//! Coalesces linearizable read barriers. A ReadIndex round (a quorum heartbeat, or a request to
//! the leader) costs a network round trip; every read that arrives while one round runs waits
//! for the *next* round instead of starting its own, so under load one round serves many reads.
//!
//! Safety: a read may only be served after a barrier that *started* after the read arrived.
//! Reads queue in a channel; the owner task takes everything queued, runs one barrier, and
//! answers exactly those reads; reads arriving meanwhile stay queued for the following round.

use crate::error::{StoreError, StoreResult};
use std::future::Future;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Reads waiting for a barrier; beyond this callers wait to enqueue (backpressure).
const QUEUE: usize = 8192;

type Waiter = oneshot::Sender<StoreResult<()>>;

/// The handle reads use; cheap to clone.
#[derive(Clone)]
pub struct ReadBatcher {
    tx: mpsc::Sender<Waiter>,
}

impl ReadBatcher {
    /// Starts the task that runs `barrier` once per round. The task ends when every handle is
    /// dropped; the caller owns its JoinHandle.
    pub fn start<F, Fut>(barrier: F) -> (ReadBatcher, JoinHandle<()>)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<()>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<Waiter>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut round = vec![first];
                while let Ok(w) = rx.try_recv() {
                    round.push(w);
                }
                let result = barrier().await;
                for w in round {
                    let _ = w.send(result.clone());
                }
            }
        });
        (ReadBatcher { tx }, task)
    }

    /// Returns once a barrier that started after this call has completed.
    pub async fn barrier(&self) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn concurrent_reads_share_rounds_and_each_waits_for_a_later_round() {
        let started = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicU64::new(0));
        let (s, f) = (started.clone(), finished.clone());
        let (reads, task) = ReadBatcher::start(move || {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
        let mut handles = Vec::new();
        for _ in 0..100 {
            let reads = reads.clone();
            let started = started.clone();
            handles.push(tokio::spawn(async move {
                let rounds_started_before = started.load(Ordering::SeqCst);
                reads.barrier().await.unwrap();
                rounds_started_before
            }));
        }
        for h in handles {
            let before = h.await.unwrap();
            // The round that answered this read began after it arrived: at least one more
            // round than had started when the read was issued has finished.
            assert!(finished.load(Ordering::SeqCst) > before);
        }
        let rounds = started.load(Ordering::SeqCst);
        assert!(rounds <= 3, "100 concurrent reads took {rounds} rounds");
        drop(reads);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_round_fails_its_reads() {
        let (reads, _task) = ReadBatcher::start(|| async { Err(StoreError::NoLeader) });
        assert_eq!(reads.barrier().await, Err(StoreError::NoLeader));
    }
}
