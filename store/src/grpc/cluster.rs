//! The etcd `Cluster` service: member list and membership changes. The semantics live in
//! [`crate::cluster`]; this file only converts between the wire and those types.

use super::convert;
use crate::cluster::{self, AdminOutput, AdminRequest, MemberInfo};
use crate::error::StoreError;
use crate::ids::MemberId;
use crate::member::Member;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct ClusterService {
    member: Member,
}

pub fn cluster_server(member: Member) -> ClusterServer<ClusterService> {
    ClusterServer::new(ClusterService { member })
}

pub fn member_to_wire(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id.0,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

impl ClusterService {
    fn header(&self) -> pb::ResponseHeader {
        let revision = self.member.kv().read().mvcc.revision();
        convert::response_header(self.member.header(revision))
    }

    async fn change(&self, req: AdminRequest) -> Result<(Option<pb::Member>, Vec<pb::Member>), Status> {
        match cluster::execute(&self.member, req).await? {
            AdminOutput::Members { added, members } => {
                Ok((added.map(member_to_wire), members.into_iter().map(member_to_wire).collect()))
            }
            other => Err(StoreError::Internal(format!("unexpected answer to a membership change: {other:?}")).into()),
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, req: Request<pb::MemberAddRequest>) -> Result<Response<pb::MemberAddResponse>, Status> {
        let req = req.into_inner();
        let (member, members) =
            self.change(AdminRequest::Add { peer_urls: req.peer_ur_ls, is_learner: req.is_learner }).await?;
        Ok(Response::new(pb::MemberAddResponse { header: Some(self.header()), member, members }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = MemberId(req.into_inner().id);
        let (_, members) = self.change(AdminRequest::Remove { id }).await?;
        Ok(Response::new(pb::MemberRemoveResponse { header: Some(self.header()), members }))
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let req = req.into_inner();
        let (_, members) =
            self.change(AdminRequest::Update { id: MemberId(req.id), peer_urls: req.peer_ur_ls }).await?;
        Ok(Response::new(pb::MemberUpdateResponse { header: Some(self.header()), members }))
    }

    /// Served from this member's applied membership, like etcd; `linearizable` first waits until
    /// this member has applied everything committed before the request.
    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if req.into_inner().linearizable {
            self.member.read_barrier().await?;
        }
        let members = cluster::members_of(self.member.kv().read().membership.membership());
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.header()),
            members: members.into_iter().map(member_to_wire).collect(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let id = MemberId(req.into_inner().id);
        let (_, members) = self.change(AdminRequest::Promote { id }).await?;
        Ok(Response::new(pb::MemberPromoteResponse { header: Some(self.header()), members }))
    }
}
