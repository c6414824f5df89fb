//! The client side of the peer transport: openraft's RPCs and Berth's forwarding calls
//! (proposals and read-index requests sent to the leader), as opaque bincode payloads over gRPC.
//! One lazily connected HTTP/2 channel per peer URL is shared by every caller, and so are the
//! idle AppendEntries streams to it: replication and heartbeats take one, send a request, wait
//! for its reply and give the stream back, so a reply can never answer a later request.

use super::types::*;
use crate::error::StoreError;
use crate::mvcc::Command;
use berth_proto::berthraftpb::raft_transport_client::RaftTransportClient;
use berth_proto::berthraftpb::Payload;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Peer messages can carry snapshot chunks and large batches; bound them well above both.
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;

/// Why a forwarded call did not run on the leader. Only `NotLeader` is safe to retry elsewhere:
/// the command was certainly not appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    #[error("not the leader")]
    NotLeader,
    /// The leader stopped or gave up waiting: the command may still commit.
    #[error("server stopped")]
    Stopped,
    #[error("{0}")]
    Failed(String),
}

impl ForwardError {
    /// What the forwarding member must know of why the leader's batcher failed its commands.
    pub fn of(e: StoreError) -> ForwardError {
        match e {
            // The batcher found no leader to append to: nothing was appended.
            StoreError::NoLeader => ForwardError::NotLeader,
            StoreError::Internal(msg) => ForwardError::Failed(msg),
            // Stopped or timed out: the entry may still commit, so the outcome is unknown.
            _ => ForwardError::Stopped,
        }
    }
}

/// The reply to forwarded commands: the log index they were committed at and their results.
pub type ProposeReply = Result<Committed, ForwardError>;
/// The reply to a read-index request: the log index a linearizable read must wait for.
pub type ReadIndexReply = Result<u64, ForwardError>;

/// Opens a (lazy) channel to a peer URL. Production dials TCP; the simulation dials through
/// its simulated network.
pub type ChannelFactory = Arc<dyn Fn(&str) -> Result<Channel, String> + Send + Sync>;

#[derive(Clone)]
pub struct PeerNetwork {
    /// What every caller shares with one peer, by peer URL.
    links: Arc<Mutex<BTreeMap<String, PeerLink>>>,
    connect: ChannelFactory,
}

/// The channel to one peer and the AppendEntries streams over it that no call is using.
#[derive(Clone)]
struct PeerLink {
    channel: Channel,
    idle: IdleStreams,
}

/// Idle AppendEntries streams to one peer. A replication stream and a heartbeat round at the
/// same time need two; more are closed when they come back.
#[derive(Clone, Default)]
struct IdleStreams(Arc<Mutex<Vec<AppendStream>>>);
const IDLE_STREAMS_PER_PEER: usize = 4;

impl IdleStreams {
    fn take(&self) -> Option<AppendStream> {
        self.0.lock().expect("idle streams lock").pop()
    }

    fn give_back(&self, stream: AppendStream) {
        let mut idle = self.0.lock().expect("idle streams lock");
        if idle.len() < IDLE_STREAMS_PER_PEER {
            idle.push(stream);
        }
    }

    fn clear(&self) {
        self.0.lock().expect("idle streams lock").clear();
    }
}

/// One AppendEntries stream, used by one call at a time.
struct AppendStream {
    requests: tokio::sync::mpsc::Sender<Payload>,
    replies: tonic::Streaming<Payload>,
}

impl AppendStream {
    async fn open(client: &mut RaftTransportClient<Channel>) -> Result<AppendStream, tonic::Status> {
        let (requests, outgoing) = tokio::sync::mpsc::channel(1);
        let replies = client.append_entries(tokio_stream::wrappers::ReceiverStream::new(outgoing)).await?.into_inner();
        Ok(AppendStream { requests, replies })
    }

    /// Sends one request and waits for its reply. A call that is dropped midway drops the
    /// stream with it (it was taken out of the idle list), so no late reply is ever read.
    async fn exchange(&mut self, request: Payload) -> Result<Payload, tonic::Status> {
        let closed = || tonic::Status::aborted("the AppendEntries stream closed");
        self.requests.send(request).await.map_err(|_| closed())?;
        self.replies.message().await?.ok_or_else(closed)
    }
}

impl Default for PeerNetwork {
    fn default() -> Self {
        PeerNetwork::with_connector(Arc::new(tcp_channel))
    }
}

/// A lazily connected TCP channel with Nagle off and keep-alives that notice a dead peer.
pub fn tcp_channel(url: &str) -> Result<Channel, String> {
    Ok(peer_endpoint(url)?.tcp_nodelay(true).connect_lazy())
}

/// The endpoint settings every peer channel shares, whatever carries it.
pub fn peer_endpoint(url: &str) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("bad peer url {url}: {e}"))?
        .connect_timeout(Duration::from_secs(1))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5)))
}

impl PeerNetwork {
    pub fn with_connector(connect: ChannelFactory) -> Self {
        PeerNetwork { links: Arc::default(), connect }
    }

    /// What callers share with the peer at `url`, made on first use.
    fn link(&self, url: &str) -> Result<PeerLink, String> {
        let mut links = self.links.lock().expect("peer links lock");
        if let Some(link) = links.get(url) {
            return Ok(link.clone());
        }
        let link = PeerLink { channel: (self.connect)(url)?, idle: IdleStreams::default() };
        links.insert(url.to_string(), link.clone());
        Ok(link)
    }

    /// A client for the peer at `url`, sharing the channel with earlier callers.
    pub fn client(&self, url: &str) -> Result<RaftTransportClient<Channel>, String> {
        Ok(transport_client(self.link(url)?.channel))
    }

    /// Sends commands to the leader at `url`, to be replicated in one entry.
    pub async fn propose(
        &self,
        url: &str,
        commands: &[Command],
        timeout: Duration,
    ) -> Result<ProposeReply, tonic::Status> {
        let mut client = self.client(url).map_err(tonic::Status::unavailable)?;
        let reply = client.propose(request(&commands, timeout)?).await?;
        decode(reply.into_inner())
    }

    /// Asks the leader at `url` for a read index.
    pub async fn read_index(&self, url: &str, timeout: Duration) -> Result<ReadIndexReply, tonic::Status> {
        let mut client = self.client(url).map_err(tonic::Status::unavailable)?;
        let reply = client.read_index(request(&(), timeout)?).await?;
        decode(reply.into_inner())
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Payload, tonic::Status> {
    bincode::serialize(value)
        .map(|data| Payload { data })
        .map_err(|e| tonic::Status::internal(format!("cannot encode peer message: {e}")))
}

pub fn decode<T: DeserializeOwned>(payload: Payload) -> Result<T, tonic::Status> {
    bincode::deserialize(&payload.data)
        .map_err(|e| tonic::Status::invalid_argument(format!("cannot decode peer message: {e}")))
}

fn transport_client(channel: Channel) -> RaftTransportClient<Channel> {
    RaftTransportClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE)
}

fn request<T: Serialize>(value: &T, timeout: Duration) -> Result<tonic::Request<Payload>, tonic::Status> {
    let mut req = tonic::Request::new(encode(value)?);
    req.set_timeout(timeout);
    Ok(req)
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &MemberNode) -> PeerClient {
        let url = node.peer_urls.first().cloned().unwrap_or_default();
        let link = self.link(&url).map(|link| (transport_client(link.channel), link.idle));
        PeerClient { target, link }
    }
}

/// openraft's connection to one peer: a client and the peer's idle AppendEntries streams.
pub struct PeerClient {
    target: u64,
    link: Result<(RaftTransportClient<Channel>, IdleStreams), String>,
}

/// A peer that refuses connections is unreachable (openraft backs off); anything else is a
/// network error it may retry at once.
fn transport_error<E: std::error::Error>(status: tonic::Status) -> RPCError<u64, MemberNode, E> {
    match status.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

// The helpers return openraft's `RPCError`, large as it is, since that is what its trait asks for.
#[allow(clippy::result_large_err)]
impl PeerClient {
    fn link<E: std::error::Error>(
        &mut self,
    ) -> Result<(&mut RaftTransportClient<Channel>, &IdleStreams), RPCError<u64, MemberNode, E>> {
        match &mut self.link {
            Ok((client, idle)) => Ok((client, idle)),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e.clone())))),
        }
    }

    /// The reply to a call, or the error it carries from the peer.
    fn reply<Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        reply: Payload,
    ) -> Result<Resp, RPCError<u64, MemberNode, E>> {
        let decoded: Result<Resp, E> = decode(reply).map_err(transport_error)?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn call<Req, Resp, E>(
        &mut self,
        req: &Req,
        option: &RPCOption,
        send: impl AsyncFnOnce(
            &mut RaftTransportClient<Channel>,
            tonic::Request<Payload>,
        ) -> Result<tonic::Response<Payload>, tonic::Status>,
    ) -> Result<Resp, RPCError<u64, MemberNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let request = request(req, option.hard_ttl()).map_err(transport_error)?;
        let reply = send(self.link()?.0, request).await.map_err(transport_error)?;
        self.reply(reply.into_inner())
    }

    /// One AppendEntries over an idle stream (or a new one). openraft bounds it with its own
    /// timeout, which drops this future and so the stream.
    async fn append(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, MemberNode, RaftError<u64>>> {
        let request = encode(rpc).map_err(transport_error)?;
        let (client, idle) = self.link()?;
        let idle = idle.clone();
        let mut stream = match idle.take() {
            Some(stream) => stream,
            None => AppendStream::open(client).await.map_err(transport_error)?,
        };
        match stream.exchange(request).await {
            Ok(reply) => {
                idle.give_back(stream);
                self.reply(reply)
            }
            Err(status) => {
                // The connection under it may be gone, and with it the other idle streams.
                idle.clear();
                Err(transport_error(status))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    /// The time limit is openraft's own timeout around this call (see [`PeerClient::append`]).
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, MemberNode, RaftError<u64>>> {
        self.append(&rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, MemberNode, RaftError<u64, InstallSnapshotError>>> {
        self.call(&rpc, &option, async |c, r| c.install_snapshot(r).await).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, MemberNode, RaftError<u64>>> {
        self.call(&rpc, &option, async |c, r| c.vote(r).await).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_batcher_that_found_no_leader_lets_the_follower_retry() {
        // Retrying elsewhere is safe only when nothing was appended.
        assert_eq!(ForwardError::of(StoreError::NoLeader), ForwardError::NotLeader);
        // Stopped or timed out, the entry may still commit: the outcome is unknown.
        assert_eq!(ForwardError::of(StoreError::Stopped), ForwardError::Stopped);
        assert_eq!(ForwardError::of(StoreError::Timeout), ForwardError::Stopped);
        assert_eq!(ForwardError::of(StoreError::Internal("x".into())), ForwardError::Failed("x".into()));
    }
}
