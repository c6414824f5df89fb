//! Leases: grant, revoke, keep-alive, time-to-live and expiry decided by the leader.
//!
//! Which leases exist (id, TTL, attached keys) is replicated state in the MVCC store, changed
//! only by committed `LeaseGrant`/`LeaseRevoke`/`LeaseExpire` commands. Deadlines are not
//! replicated: the leader's [`Lessor`] keeps them in a [`DeadlineTable`], renews them on
//! keep-alive, and proposes a revoke (`LeaseExpire`) when one passes, so every member deletes
//! the same keys at the same revision. That revoke is fenced: it holds only in a log entry the
//! deciding leader appended itself, never after a later leader (which may have renewed the
//! lease) took over. Followers forward keep-alives and time-to-live lookups to the leader
//! ([`peer`]). A new leader gives every lease its full TTL again (plus an election timeout), so
//! a failover never expires a lease whose holder kept it alive.
//!
//! - [`table`]: the pure deadline bookkeeping (no IO, no clock).
//! - [`fence`]: the pure rule that an expiry holds only in its deciding leader's own entry.
//! - [`lessor`]: the shell: leadership, forwarding, the expiry task.
//! - [`clock`]: the injected clock; [`id_gen`]: server-chosen lease ids; [`peer`]: the
//!   forwarding protocol.

pub mod clock;
pub mod fence;
pub mod id_gen;
pub mod lessor;
pub mod peer;
pub mod table;

pub use clock::{LeaseClock, TokioClock};
pub use lessor::{min_ttl, Granted, Lessor, MAX_TTL};
pub use peer::TimeToLive;
pub use table::{DeadlineTable, Renewal};

use crate::member::Member;
use crate::raft::network::{decode, encode};
use berth_proto::berthraftpb::Payload;
use tonic::Status;

/// Serves a lease request another member forwarded to this one (the leader).
pub async fn handle_peer(member: &Member, payload: Payload) -> Result<Payload, Status> {
    let req: peer::PeerRequest = decode(payload)?;
    let reply: peer::Reply = member.lessor().serve(member, req).await;
    encode(&reply)
}
