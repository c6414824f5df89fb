//! Store errors as gRPC statuses, with the codes etcd's server uses (its `rpctypes` table).
//!
//! The message is always the error's `Display` text, unchanged: etcd's Go client turns a status
//! back into a typed error by looking its message up, so any rewording breaks its error checks
//! (`errors.Is(err, rpctypes.ErrCompacted)` and friends).

use crate::error::StoreError;
use tonic::{Code, Status};

/// The gRPC code etcd answers `err` with.
pub fn code(err: &StoreError) -> Code {
    use StoreError::*;
    match err {
        Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
        LeaseNotFound | MemberNotFound => Code::NotFound,
        LeaseExists
        | PeerUrlExists
        | MemberNotLearner
        | NotEnoughStartedMembers
        | MemberIdExists
        | LearnerNotReady
        | TooManyLearners
        | NotLeader
        | BadLeaderTransferee => Code::FailedPrecondition,
        // etcd has no gRPC mapping for this one, so its clients see it as Unknown.
        LeaderTransferTimeout => Code::Unknown,
        EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey | RequestTooLarge
        | InvalidArgument(_) | MemberBadUrls => Code::InvalidArgument,
        NoLeader | Timeout | LeaderChanged | Unhealthy | Stopped => Code::Unavailable,
        Internal(_) => Code::Internal,
    }
}

pub fn to_status(err: &StoreError) -> Status {
    Status::new(code(err), err.to_string())
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Status {
        to_status(&err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_match_etcd() {
        let cases = [
            (StoreError::Compacted, Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted"),
            (StoreError::FutureRevision, Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision"),
            (StoreError::LeaseNotFound, Code::NotFound, "etcdserver: requested lease not found"),
            (StoreError::LeaseExists, Code::FailedPrecondition, "etcdserver: lease already exists"),
            (StoreError::LeaseTtlTooLarge, Code::OutOfRange, "etcdserver: too large lease TTL"),
            (StoreError::EmptyKey, Code::InvalidArgument, "etcdserver: key is not provided"),
            (StoreError::DuplicateKey, Code::InvalidArgument, "etcdserver: duplicate key given in txn request"),
            (StoreError::RequestTooLarge, Code::InvalidArgument, "etcdserver: request is too large"),
            (StoreError::NoLeader, Code::Unavailable, "etcdserver: no leader"),
            (StoreError::MemberNotFound, Code::NotFound, "etcdserver: member not found"),
            (StoreError::PeerUrlExists, Code::FailedPrecondition, "etcdserver: Peer URLs already exists"),
            (StoreError::MemberBadUrls, Code::InvalidArgument, "etcdserver: given member URLs are invalid"),
            (StoreError::TooManyLearners, Code::FailedPrecondition, "etcdserver: too many learner members in cluster"),
            (StoreError::BadLeaderTransferee, Code::FailedPrecondition, "etcdserver: bad leader transferee"),
            (StoreError::InvalidArgument("bad".into()), Code::InvalidArgument, "bad"),
            (StoreError::Internal("disk".into()), Code::Internal, "etcdserver: disk"),
        ];
        for (err, code, message) in cases {
            let status = Status::from(err);
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }
}
