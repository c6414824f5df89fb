//! The etcd `KV` service (Range, Put, DeleteRange, Txn, Compact) over a [`Member`].
//!
//! Each call runs the same pipeline: size limit, wire → domain conversion, etcd's pre-Raft
//! validation, then the member (a read, or a proposal through Raft), then domain → wire with a
//! response header. Every failure leaves as a `tonic::Status` carrying etcd's exact message.

use super::convert;
use super::status::to_status;
use crate::error::{StoreError, StoreResult};
use crate::ids::Revision;
use crate::member::Member;
use crate::mvcc::{validate, Applied, Command, Output};
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::kv_server::{Kv, KvServer};
use prost::Message;
use tonic::{Request, Response, Status};

/// etcd's default `--max-request-bytes`.
pub const MAX_REQUEST_BYTES: usize = 1_572_864;

/// What the transport accepts. Well above [`MAX_REQUEST_BYTES`] so an oversize request is
/// decoded and answered with etcd's "request is too large" (which clients recognise) instead of
/// a transport-level `ResourceExhausted`; still bounded so a client cannot make us buffer
/// arbitrarily much.
pub const MAX_DECODING_BYTES: usize = 8 * 1024 * 1024;

/// The KV service of one member.
#[derive(Clone)]
pub struct KvService {
    member: Member,
}

impl KvService {
    pub fn new(member: Member) -> Self {
        KvService { member }
    }

    fn header(&self, revision: Revision) -> pb::ResponseHeader {
        convert::response_header(self.member.header(revision))
    }

    async fn propose(&self, command: Command) -> Result<Applied, Status> {
        self.member.propose(command).await.map_err(|e| to_status(&e))
    }
}

/// The KV service as a tonic server, with message limits set for etcd's size semantics.
pub fn kv_server(member: Member) -> KvServer<KvService> {
    KvServer::new(KvService::new(member))
        .max_decoding_message_size(MAX_DECODING_BYTES)
        // Responses are not limited by etcd either (a large Range answers whatever it holds).
        .max_encoding_message_size(usize::MAX)
}

fn check_size(req: &impl Message) -> StoreResult<()> {
    if req.encoded_len() > MAX_REQUEST_BYTES {
        Err(StoreError::RequestTooLarge)
    } else {
        Ok(())
    }
}

/// A proposal answered with an output of another kind means the state machine and this service
/// disagree about a command: a server bug, reported rather than trusted.
fn unexpected(what: &str, output: &Output) -> Status {
    to_status(&StoreError::Internal(format!("{what} applied with unexpected output {output:?}")))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let req = request.into_inner();
        check_size(&req)?;
        let serializable = req.serializable;
        let req = convert::range_request(req)?;
        validate::check_range(&req)?;
        let (revision, resp) = self.member.range(req, serializable).await?;
        Ok(Response::new(convert::range_response(self.header(revision), resp)))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let req = request.into_inner();
        check_size(&req)?;
        let req = convert::put_request(req);
        validate::check_put(&req)?;
        let applied = self.propose(Command::Put(req)).await?;
        match applied.output {
            Output::Put(resp) => Ok(Response::new(convert::put_response(self.header(applied.revision), resp))),
            other => Err(unexpected("put", &other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        check_size(&req)?;
        let req = convert::delete_range_request(req);
        validate::check_delete(&req)?;
        let applied = self.propose(Command::DeleteRange(req)).await?;
        match applied.output {
            Output::DeleteRange(resp) => {
                Ok(Response::new(convert::delete_range_response(self.header(applied.revision), resp)))
            }
            other => Err(unexpected("delete range", &other)),
        }
    }

    /// Every txn goes through Raft, read-only ones included. etcd serves read-only txns locally
    /// as an optimisation; proposing them is slower but trivially linearizable, and a txn with
    /// compares is proposed by etcd too.
    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let req = request.into_inner();
        check_size(&req)?;
        let req = convert::txn_request(req)?;
        validate::check_txn(&req)?;
        let applied = self.propose(Command::Txn(req)).await?;
        match applied.output {
            Output::Txn(resp) => Ok(Response::new(convert::txn_response(self.header(applied.revision), resp))),
            other => Err(unexpected("txn", &other)),
        }
    }

    /// `physical` is accepted and ignored: compaction is applied as part of the Raft entry, so it
    /// is already physical when the proposal returns.
    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let req = request.into_inner();
        check_size(&req)?;
        let applied = self.propose(Command::Compact { revision: Revision(req.revision) }).await?;
        match applied.output {
            Output::Compact => {
                Ok(Response::new(pb::CompactionResponse { header: Some(self.header(applied.revision)) }))
            }
            other => Err(unexpected("compact", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limit_is_inclusive_of_exactly_max_request_bytes() {
        // key "k" costs 3 bytes, the value field 1 tag byte + 3 length bytes.
        let put = |value_len: usize| pb::PutRequest {
            key: b"k".to_vec(),
            value: vec![b'x'; value_len],
            ..Default::default()
        };
        let at_limit = put(MAX_REQUEST_BYTES - 7);
        assert_eq!(at_limit.encoded_len(), MAX_REQUEST_BYTES);
        assert_eq!(check_size(&at_limit), Ok(()));
        assert_eq!(check_size(&put(MAX_REQUEST_BYTES - 6)), Err(StoreError::RequestTooLarge));
    }

    #[test]
    fn oversize_txn_is_too_large_with_etcds_message() {
        let op = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: b"k".to_vec(),
                value: vec![0; MAX_REQUEST_BYTES],
                ..Default::default()
            })),
        };
        let txn = pb::TxnRequest { success: vec![op], ..Default::default() };
        let status = check_size(&txn).map_err(|e| to_status(&e)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "etcdserver: request is too large");
    }

    #[test]
    fn unexpected_output_is_internal() {
        assert_eq!(unexpected("put", &Output::Compact).code(), tonic::Code::Internal);
    }
}
