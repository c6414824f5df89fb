//! The lease requests a member forwards to the leader over the peer RPC `Lease`: keep-alives
//! and time-to-live lookups need the deadlines, which only the leader keeps. Bincode inside the
//! transport's opaque payload; both sides are this module, so the enums are the protocol.

use crate::ids::LeaseId;
use crate::raft::network::{decode, encode, ForwardError, PeerNetwork};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    KeepAlive { id: LeaseId },
    TimeToLive { id: LeaseId, keys: bool },
}

/// What a lease looks like to `LeaseTimeToLive`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeToLive {
    /// Whole seconds left (truncated, as etcd reports them); 0 once expired.
    pub remaining: i64,
    pub granted_ttl: i64,
    /// Attached keys, in key order; empty unless asked for.
    pub keys: Vec<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerReply {
    /// The renewed TTL, or `None` if the lease does not exist (or expired).
    KeepAlive(Option<i64>),
    /// `None` if the lease does not exist.
    TimeToLive(Option<TimeToLive>),
}

/// The answer of the member that was asked. `NotLeader` (including "leader, but not yet
/// serving leases in this term") tells the sender to find the leader again and retry; lease
/// requests have no side effect that a retry could repeat harmfully.
pub type Reply = Result<PeerReply, ForwardError>;

/// Sends `req` to the member at `url` (believed to be the leader).
pub async fn forward(
    network: &PeerNetwork,
    url: &str,
    req: &PeerRequest,
    timeout: Duration,
) -> Result<Reply, tonic::Status> {
    let mut client = network.client(url).map_err(tonic::Status::unavailable)?;
    let mut request = tonic::Request::new(encode(req)?);
    request.set_timeout(timeout);
    let reply = client.lease(request).await?;
    decode(reply.into_inner())
}
