//! The etcd `Lease` service (LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive,
//! LeaseLeases) over a member's [`Lessor`](crate::lease::Lessor).
//!
//! This layer only translates: raw ids become `Option<LeaseId>` (0 = none), results become
//! responses with headers, and the two "not found" answers etcd gives as values rather than
//! errors are produced here: a keep-alive of an unknown lease answers TTL 0, a time-to-live
//! answers TTL -1.

use super::convert;
use super::status::to_status;
use crate::ids::{LeaseId, Revision};
use crate::member::Member;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::lease_server::{Lease, LeaseServer};
use futures::Stream;
use std::pin::Pin;
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone)]
pub struct LeaseService {
    member: Member,
}

pub fn lease_server(member: Member) -> LeaseServer<LeaseService> {
    LeaseServer::new(LeaseService { member })
}

impl LeaseService {
    fn header(&self, revision: Revision) -> pb::ResponseHeader {
        convert::response_header(self.member.header(revision))
    }

    /// A header at the store's current revision, for answers that change nothing.
    fn current_header(&self) -> pb::ResponseHeader {
        let revision = self.member.kv().read().mvcc.revision();
        self.header(revision)
    }

    async fn keep_alive_once(&self, req: pb::LeaseKeepAliveRequest) -> Result<pb::LeaseKeepAliveResponse, Status> {
        // The header is taken before renewing, as etcd does: its revision is then never later
        // than a revoke the renewal could race with, so a client cannot see "renewed" at a
        // revision after the lease's keys were deleted.
        let header = self.current_header();
        let ttl = self.member.lessor().keep_alive(&self.member, LeaseId::from_wire(req.id)).await?;
        Ok(pb::LeaseKeepAliveResponse { header: Some(header), id: req.id, ttl: ttl.unwrap_or(0) })
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        let granted = self.member.lessor().grant(&self.member, LeaseId::from_wire(req.id), req.ttl).await?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: Some(self.header(granted.revision)),
            id: granted.id.0,
            ttl: granted.ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let req = request.into_inner();
        let revision = self.member.lessor().revoke(&self.member, LeaseId::from_wire(req.id)).await?;
        Ok(Response::new(pb::LeaseRevokeResponse { header: Some(self.header(revision)) }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    /// One renewal at a time per stream, in request order: the stream itself applies
    /// backpressure (the next request is read only once the previous answer is sent), so a
    /// client cannot queue unbounded work. The stream ends when the client closes its side; an
    /// error (no leader within the request timeout) ends it with that error, as etcd does.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let inbound = request.into_inner();
        let responses = futures::stream::unfold(Some((inbound, self.clone())), |state| async move {
            let (mut inbound, service) = state?;
            // A receive error means the client went away: nothing to answer.
            let req = inbound.message().await.ok()??;
            match service.keep_alive_once(req).await {
                Ok(resp) => Some((Ok(resp), Some((inbound, service)))),
                Err(status) => Some((Err(status), None)),
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let found = self.member.lessor().time_to_live(&self.member, LeaseId::from_wire(req.id), req.keys).await?;
        let resp = match found {
            Some(ttl) => pb::LeaseTimeToLiveResponse {
                header: Some(self.current_header()),
                id: req.id,
                ttl: ttl.remaining,
                granted_ttl: ttl.granted_ttl,
                keys: ttl.keys,
            },
            None => pb::LeaseTimeToLiveResponse {
                header: Some(self.current_header()),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let (revision, ids) = self.member.lessor().leases(&self.member).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.header(revision)),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id: id.0 }).collect(),
        }))
    }
}
