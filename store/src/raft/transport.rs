//! The server side of the peer transport: hands openraft's RPCs to the local Raft node, and runs
//! proposals and read-index requests that followers forward to this member while it leads.

use super::network::{decode, encode, ForwardError, ProposeReply, ReadIndexReply};
use super::types::*;
use crate::member::Member;
use crate::mvcc::Command;
use berth_proto::berthraftpb::raft_transport_server::{RaftTransport, RaftTransportServer};
use berth_proto::berthraftpb::Payload;
use openraft::error::RaftError;
use tonic::{Request, Response, Status, Streaming};

/// The replies of one AppendEntries stream, in request order.
pub type AppendReplies = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Payload, Status>> + Send>>;

pub struct PeerService {
    raft: Raft,
    member: Member,
}

pub fn peer_server(member: Member) -> RaftTransportServer<PeerService> {
    RaftTransportServer::new(PeerService { raft: member.raft().clone(), member })
        .max_decoding_message_size(super::network::MAX_PEER_MESSAGE)
        .max_encoding_message_size(super::network::MAX_PEER_MESSAGE)
}

/// Maps openraft's answer to a forwarded call onto what the forwarding member must know.
fn forward_error<E: std::fmt::Display>(e: RaftError<u64, E>, not_leader: impl Fn(&E) -> bool) -> ForwardError {
    match e {
        RaftError::APIError(api) if not_leader(&api) => ForwardError::NotLeader,
        RaftError::APIError(api) => ForwardError::Failed(api.to_string()),
        RaftError::Fatal(_) => ForwardError::Stopped,
    }
}

#[tonic::async_trait]
impl RaftTransport for PeerService {
    type AppendEntriesStream = AppendReplies;

    /// Answers each request of the stream in turn; the stream ends when the leader closes it.
    async fn append_entries(&self, req: Request<Streaming<Payload>>) -> Result<Response<AppendReplies>, Status> {
        let replies = futures::stream::unfold((self.raft.clone(), req.into_inner()), |(raft, mut requests)| async {
            let request = requests.message().await.ok()??;
            let reply = match decode(request) {
                Ok(rpc) => encode(&raft.append_entries(rpc).await),
                Err(status) => Err(status),
            };
            Some((reply, (raft, requests)))
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(req.into_inner())?;
        Ok(Response::new(encode(&self.raft.vote(rpc).await)?))
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(req.into_inner())?;
        Ok(Response::new(encode(&self.raft.install_snapshot(rpc).await)?))
    }

    /// Forwarded commands join this leader's batcher, so they share an entry with the commands
    /// of its own clients and of other followers. A member that does not lead says so rather
    /// than forwarding again: the follower then asks for the leader afresh.
    async fn propose(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let commands: Vec<Command> = decode(req.into_inner())?;
        let leading = self.raft.metrics().borrow().current_leader == Some(self.member.id().0);
        let reply: ProposeReply = if leading {
            self.member.propose_together(commands).await.map_err(ForwardError::of)
        } else {
            Err(ForwardError::NotLeader)
        };
        Ok(Response::new(encode(&reply)?))
    }

    async fn read_index(&self, _req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let reply: ReadIndexReply = match self.raft.ensure_linearizable().await {
            Ok(read_log_id) => Ok(read_log_id.map_or(0, |id| id.index)),
            Err(e) => {
                Err(forward_error(e, |api| matches!(api, openraft::error::CheckIsLeaderError::ForwardToLeader(_))))
            }
        };
        Ok(Response::new(encode(&reply)?))
    }

    async fn lease(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        Ok(Response::new(crate::lease::handle_peer(&self.member, req.into_inner()).await?))
    }

    async fn admin(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        Ok(Response::new(crate::cluster::handle_peer(&self.member, req.into_inner()).await?))
    }
}
