//! The lessor: the imperative shell around the [`DeadlineTable`]. It owns the table while this
//! member leads, serves keep-alives and time-to-live lookups (its own clients' and those other
//! members forward), and runs the expiry task that turns passed deadlines into revokes
//! committed through Raft, so every member deletes the same keys at the same revision.
//!
//! Which leases exist, with which TTL and keys, is replicated state (the MVCC store); the
//! lessor only adds deadlines. Lock order: the MVCC state's read lock, then the table's mutex;
//! neither is held across an `.await`.

use super::clock::LeaseClock;
use super::id_gen::IdGen;
use super::peer::{self, PeerReply, PeerRequest, Reply, TimeToLive};
use super::table::{DeadlineTable, Renewal};
use crate::error::{StoreError, StoreResult};
use crate::ids::{Leadership, LeaseId, MemberId, Revision};
use crate::member::{Inner, Member};
use crate::mvcc::{Command, Mvcc, Output};
use crate::raft::network::ForwardError;
use crate::raft::Raft;
use openraft::ServerState;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// etcd's `MaxLeaseTTL` (seconds); a larger request fails with "too large lease TTL".
pub const MAX_TTL: i64 = 9_000_000_000;
/// How often the leader looks for expired leases (etcd's lessor loop interval).
const TICK: Duration = Duration::from_millis(500);
/// Revokes proposed per tick: etcd's default revoke rate of 1000/s, split over its two ticks a
/// second. More expired leases wait for the next tick, so a mass expiry cannot flood Raft.
const MAX_REVOKES_PER_TICK: usize = 500;
/// How long a keep-alive or time-to-live may look for a leader that serves leases (the same
/// bound the member puts on proposals).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);
/// Pause before asking again after the leader changed or was unreachable.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a keep-alive of an expired lease waits for its revoke to be applied before
/// answering "gone" anyway. Below the forwarding timeout, so a forwarded keep-alive is answered.
const EXPIRED_WAIT: Duration = Duration::from_secs(3);
/// Server-chosen ids tried before giving up on a grant (each try only fails if an explicit-id
/// grant raced it to the same id).
const ID_ATTEMPTS: usize = 8;

/// etcd's minimum lease TTL: 1.5 election timeouts, rounded up to whole seconds, so that a
/// lease cannot expire while its holder merely waits out an election. Berth's election timeout
/// is randomized up to `election_timeout_max_ms`, which is the bound used here (2 s with
/// Berth's defaults, the same as etcd's default).
pub fn min_ttl(election_timeout_max_ms: u64) -> i64 {
    let seconds = (3 * election_timeout_max_ms).div_ceil(2000);
    i64::try_from(seconds).unwrap_or(i64::MAX).max(1)
}

/// The result of a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    pub revision: Revision,
    pub id: LeaseId,
    /// The TTL actually granted (raised to the minimum).
    pub ttl: i64,
}

/// The deadline table and the term it serves; `term` is `None` while this member does not lead.
struct Primary {
    term: Option<u64>,
    table: DeadlineTable,
}

struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// One member's lessor. Every member has one; only the leader's holds deadlines.
pub struct Lessor {
    me: MemberId,
    clock: Arc<dyn LeaseClock>,
    ids: IdGen,
    min_ttl: i64,
    /// Added to every deadline on promotion (etcd extends by the election timeout).
    extend: Duration,
    primary: Mutex<Primary>,
    task: Mutex<Option<Task>>,
}

/// The term in which this member leads *and* has applied an entry of its own leadership. Only
/// then has it applied every grant and revoke earlier leaders committed (expiries they decided
/// included, see [`super::fence`]), so its view of which leases exist is complete (etcd
/// promotes its lessor at the same point). The whole leader id is compared, not just the term:
/// with openraft's default leader ids another member may have led the same term before.
fn leading_term(raft: &Raft, me: MemberId) -> Option<u64> {
    let m = raft.metrics();
    let m = m.borrow();
    let mine = openraft::CommittedLeaderId::new(m.current_term, me.0);
    let caught_up = m.last_applied.is_some_and(|applied| applied.leader_id == mine);
    (m.state == ServerState::Leader && m.current_leader == Some(me.0) && caught_up).then_some(m.current_term)
}

fn leases_of(mvcc: &Mvcc) -> impl Iterator<Item = (LeaseId, i64)> + '_ {
    mvcc.leases().iter().map(|(id, lease)| (*id, lease.ttl))
}

fn unexpected(what: &str, output: &Output) -> StoreError {
    StoreError::Internal(format!("{what} applied with unexpected output {output:?}"))
}

impl Lessor {
    /// A lessor for member `me`, with the minimum TTL and promotion extension derived from the
    /// Raft election timeout.
    pub fn new(me: MemberId, raft_config: &openraft::Config, clock: Arc<dyn LeaseClock>) -> Lessor {
        let ids = IdGen::new(me, clock.seed_millis());
        Lessor {
            me,
            ids,
            clock,
            min_ttl: min_ttl(raft_config.election_timeout_max),
            extend: Duration::from_millis(raft_config.election_timeout_max),
            primary: Mutex::new(Primary { term: None, table: DeadlineTable::new() }),
            task: Mutex::new(None),
        }
    }

    pub fn min_ttl(&self) -> i64 {
        self.min_ttl
    }

    fn lock(&self) -> MutexGuard<'_, Primary> {
        self.primary.lock().expect("lessor lock poisoned")
    }

    /// The table for `term`, promoted first if it served another term or none.
    fn table_for(&self, term: u64, mvcc: &Mvcc, now: Instant) -> MutexGuard<'_, Primary> {
        let mut p = self.lock();
        if p.term != Some(term) {
            p.table.promote(leases_of(mvcc), now, self.extend);
            p.term = Some(term);
            tracing::info!(term, leases = p.table.len(), "lessor promoted: every lease has its full TTL again");
        }
        p
    }

    fn demote(&self) {
        let mut p = self.lock();
        if let Some(term) = p.term.take() {
            p.table.clear();
            tracing::info!(term, "lessor demoted");
        }
    }

    /// The TTL a grant of `requested` seconds gets: raised to the minimum; too large is an error.
    pub fn effective_ttl(&self, requested: i64) -> StoreResult<i64> {
        if requested > MAX_TTL {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        Ok(requested.max(self.min_ttl))
    }

    // ---- the client-facing operations ----------------------------------------------------

    /// Grants a lease: `id` `None` lets the server choose one (chosen here, before proposing,
    /// so every member applies the same id).
    pub async fn grant(&self, member: &Member, id: Option<LeaseId>, ttl: i64) -> StoreResult<Granted> {
        let ttl = self.effective_ttl(ttl)?;
        let mut attempts = 0;
        loop {
            let chosen = id.unwrap_or_else(|| self.unused_id(member));
            attempts += 1;
            let applied = match member.propose(Command::LeaseGrant { id: chosen, ttl }).await {
                Err(StoreError::LeaseExists) if id.is_none() && attempts < ID_ATTEMPTS => continue,
                result => result?,
            };
            return match applied.output {
                Output::LeaseGrant { id, ttl } => {
                    self.start_clock(member, id, ttl);
                    Ok(Granted { revision: applied.revision, id, ttl })
                }
                other => Err(unexpected("lease grant", &other)),
            };
        }
    }

    /// A fresh id that no existing lease has.
    fn unused_id(&self, member: &Member) -> LeaseId {
        let state = member.kv().read();
        let mut id = self.ids.next();
        // Bounded: a collision needs an explicit-id grant to have picked exactly this value.
        for _ in 0..ID_ATTEMPTS {
            if !state.mvcc.leases().contains_key(&id) {
                break;
            }
            id = self.ids.next();
        }
        id
    }

    /// A grant just applied here: if this member leads, the lease's clock starts now rather
    /// than at the next tick.
    fn start_clock(&self, member: &Member, id: LeaseId, ttl: i64) {
        let Some(term) = leading_term(member.raft(), self.me) else { return };
        let now = self.clock.now();
        let state = member.kv().read();
        if state.mvcc.leases().get(&id).is_some_and(|lease| lease.ttl == ttl) {
            self.table_for(term, &state.mvcc, now).table.track(id, ttl, now);
        }
    }

    /// Revokes a lease, deleting its keys in one revision; returns that revision.
    pub async fn revoke(&self, member: &Member, id: Option<LeaseId>) -> StoreResult<Revision> {
        // Id 0 is "no lease" on the wire: there is never such a lease.
        let id = id.ok_or(StoreError::LeaseNotFound)?;
        let applied = member.propose(Command::LeaseRevoke { id }).await?;
        match applied.output {
            Output::LeaseRevoke => {
                self.lock().table.remove(id);
                Ok(applied.revision)
            }
            other => Err(unexpected("lease revoke", &other)),
        }
    }

    /// Renews a lease on the leader: its TTL, or `None` if it does not exist (or expired).
    pub async fn keep_alive(&self, member: &Member, id: Option<LeaseId>) -> StoreResult<Option<i64>> {
        let Some(id) = id else { return Ok(None) };
        match self.on_leader(member, PeerRequest::KeepAlive { id }).await? {
            PeerReply::KeepAlive(ttl) => Ok(ttl),
            other => Err(StoreError::Internal(format!("keep-alive answered with {other:?}"))),
        }
    }

    /// A lease's remaining and granted TTL (and keys), as the leader sees it; `None` if it does
    /// not exist.
    pub async fn time_to_live(
        &self,
        member: &Member,
        id: Option<LeaseId>,
        keys: bool,
    ) -> StoreResult<Option<TimeToLive>> {
        let Some(id) = id else { return Ok(None) };
        match self.on_leader(member, PeerRequest::TimeToLive { id, keys }).await? {
            PeerReply::TimeToLive(ttl) => Ok(ttl),
            other => Err(StoreError::Internal(format!("time-to-live answered with {other:?}"))),
        }
    }

    /// Every lease, after a read barrier so that a lease granted through any member before the
    /// call is listed. Returns the store revision with the ids.
    pub async fn leases(&self, member: &Member) -> StoreResult<(Revision, Vec<LeaseId>)> {
        member.read_barrier().await?;
        let state = member.kv().read();
        Ok((state.mvcc.revision(), state.mvcc.leases().keys().copied().collect()))
    }

    /// Runs `req` on the leader: here if this member leads, else forwarded. Retries while the
    /// leader is unknown, changing, or not yet serving leases in its term.
    async fn on_leader(&self, member: &Member, req: PeerRequest) -> StoreResult<PeerReply> {
        let rep = &member.inner.rep;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let (leader, url) = rep.leader(deadline).await?;
            let reply = if leader == self.me.0 {
                Ok(self.serve(member, req.clone()).await)
            } else {
                let remaining = deadline.saturating_duration_since(Instant::now());
                peer::forward(&rep.network, &url, &req, remaining).await
            };
            match reply {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(ForwardError::Failed(message))) => return Err(StoreError::Internal(message)),
                // Not (or no longer, or not yet) the serving leader, or unreachable: lease
                // lookups and renewals are safe to repeat, so find the leader again.
                Ok(Err(ForwardError::NotLeader | ForwardError::Stopped)) | Err(_) => {}
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    // ---- the leader's side ---------------------------------------------------------------

    /// Serves a lease request as the leader (from this member's clients or forwarded by
    /// another member); `NotLeader` unless this member leads and serves leases in its term.
    pub async fn serve(&self, member: &Member, req: PeerRequest) -> Reply {
        match req {
            PeerRequest::KeepAlive { id } => self.serve_keep_alive(member, id).await.map(PeerReply::KeepAlive),
            PeerRequest::TimeToLive { id, keys } => {
                self.serve_time_to_live(member, id, keys).map(PeerReply::TimeToLive)
            }
        }
    }

    fn renew_now(&self, member: &Member, id: LeaseId) -> Result<Renewal, ForwardError> {
        let term = leading_term(member.raft(), self.me).ok_or(ForwardError::NotLeader)?;
        let now = self.clock.now();
        let state = member.kv().read();
        let granted = state.mvcc.leases().get(&id).map(|lease| lease.ttl);
        let renewal = self.table_for(term, &state.mvcc, now).table.renew(id, granted, now);
        tracing::debug!(term, lease = %format!("{:x}", id.0), ?renewal, "keep-alive");
        Ok(renewal)
    }

    async fn serve_keep_alive(&self, member: &Member, id: LeaseId) -> Result<Option<i64>, ForwardError> {
        // Subscribed before the first look, so an apply in between is not missed.
        let mut applied = member.kv().subscribe();
        let give_up = Instant::now() + EXPIRED_WAIT;
        loop {
            match self.renew_now(member, id)? {
                Renewal::Renewed { ttl } => return Ok(Some(ttl)),
                Renewal::NotFound => return Ok(None),
                // Expired: its revoke is on the way through Raft. Like etcd, answer once it is
                // applied, so a client told "gone" no longer finds the lease's keys here.
                Renewal::Expired => {}
            }
            match tokio::time::timeout_at(give_up, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ForwardError::Stopped),
                // The revoke is stuck (no quorum?); the lease is past its deadline either way.
                Err(_) => return Ok(None),
            }
        }
    }

    fn serve_time_to_live(&self, member: &Member, id: LeaseId, keys: bool) -> Result<Option<TimeToLive>, ForwardError> {
        let term = leading_term(member.raft(), self.me).ok_or(ForwardError::NotLeader)?;
        let now = self.clock.now();
        let state = member.kv().read();
        let lease = state.mvcc.leases().get(&id);
        let remaining = self.table_for(term, &state.mvcc, now).table.remaining(id, lease.map(|l| l.ttl), now);
        Ok(lease.zip(remaining).map(|(lease, left)| TimeToLive {
            remaining: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            granted_ttl: lease.ttl,
            keys: if keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
        }))
    }

    /// Expired leases to revoke now, at most [`MAX_REVOKES_PER_TICK`], with the leadership that
    /// decided it (their revokes hold only in that leader's own entries); `None` unless this
    /// member leads. Also brings the table in line with the replicated leases.
    fn due(&self, member: &Member) -> Option<(Leadership, Vec<LeaseId>)> {
        let Some(term) = leading_term(member.raft(), self.me) else {
            self.demote();
            return None;
        };
        let now = self.clock.now();
        let state = member.kv().read();
        let mut p = self.table_for(term, &state.mvcc, now);
        p.table.sync(leases_of(&state.mvcc), now);
        Some((Leadership { term, leader: self.me }, p.table.expired(now, MAX_REVOKES_PER_TICK)))
    }

    /// Records how the revokes handed out by [`due`](Self::due) ended.
    fn settle(&self, outcomes: impl IntoIterator<Item = (LeaseId, StoreResult<crate::mvcc::Applied>)>) {
        let mut p = self.lock();
        for (id, outcome) in outcomes {
            match outcome {
                // Revoked, by us or (LeaseNotFound) by a client just before.
                Ok(_) | Err(StoreError::LeaseNotFound) => {
                    tracing::debug!(lease = %format!("{:x}", id.0), ?outcome, "expiry settled");
                    p.table.remove(id)
                }
                // Fenced: the proposal reached the log only after this leadership ended. Whoever
                // leads now judges the lease by its own deadlines.
                Err(StoreError::LeaderChanged) => {
                    tracing::info!(lease = %format!("{:x}", id.0), "expiry refused: the leader changed");
                    p.table.revoke_failed(id);
                }
                Err(e) => {
                    tracing::warn!(lease = %format!("{:x}", id.0), "revoking an expired lease failed, will retry: {e}");
                    p.table.revoke_failed(id);
                }
            }
        }
    }

    // ---- the expiry task -----------------------------------------------------------------

    /// Starts the expiry task for `member` (which owns this lessor); does nothing if it runs
    /// already. The task holds only a weak reference to the member, so it never keeps a
    /// dropped member alive.
    pub fn start(self: &Arc<Self>, member: &Member) {
        let mut task = self.task.lock().expect("lessor task lock");
        if task.is_none() {
            let (stop, stop_rx) = watch::channel(false);
            let handle = tokio::spawn(run(self.clone(), Arc::downgrade(&member.inner), member.raft().clone(), stop_rx));
            *task = Some(Task { stop, handle });
        }
    }

    /// Stops the expiry task and waits for it; revokes it had in flight are abandoned (they
    /// either commit or not; a later leader finds whatever is left).
    pub async fn stop(&self) {
        let task = self.task.lock().expect("lessor task lock").take();
        if let Some(Task { stop, handle }) = task {
            let _ = stop.send(true);
            if let Err(e) = handle.await {
                tracing::error!("lessor task failed: {e}");
            }
        }
        self.demote();
    }
}

/// The expiry task: every tick (and on every leadership change) it lets the lessor promote or
/// demote itself, then proposes revokes for expired leases and waits for them before looking
/// again, so no lease is ever revoked twice at once.
async fn run(lessor: Arc<Lessor>, member: Weak<Inner>, raft: Raft, mut stop: watch::Receiver<bool>) {
    let mut leadership = raft.server_metrics();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
            changed = leadership.changed() => if changed.is_err() { break },
        }
        let Some(inner) = member.upgrade() else { break };
        let member = Member { inner };
        let Some((decided_by, due)) = lessor.due(&member).filter(|(_, due)| !due.is_empty()) else {
            continue;
        };
        let ids: Vec<String> = due.iter().map(|id| format!("{:x}", id.0)).collect();
        tracing::info!(count = due.len(), term = decided_by.term, leases = ?ids, "revoking expired leases");
        // Proposed together, so group commit puts them in one Raft entry; each is still its own
        // revision, deleting its lease's keys atomically.
        let expire = |id: &LeaseId| member.propose(Command::LeaseExpire { id: *id, decided_by });
        let revokes = futures::future::join_all(due.iter().map(expire));
        let outcomes = tokio::select! {
            _ = stop.changed() => break,
            outcomes = revokes => outcomes,
        };
        lessor.settle(due.into_iter().zip(outcomes));
    }
    lessor.demote();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(min_ttl(1000), 2, "etcd's default");
        assert_eq!(min_ttl(1200), 2, "Berth's default");
        assert_eq!(min_ttl(600), 1);
        assert_eq!(min_ttl(2000), 3);
        assert_eq!(min_ttl(0), 1);
    }
}
