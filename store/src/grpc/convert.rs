//! Conversions between etcd's protobuf messages and the store's domain types.
//!
//! Requests flow wire → domain and may be rejected (`StoreError::InvalidArgument`), because a
//! client can send anything protobuf can encode: enum numbers the schema does not know, missing
//! oneofs. Responses flow domain → wire and always succeed. Nothing here panics on any input.

use crate::error::{StoreError, StoreResult};
use crate::ids::{LeaseId, Revision};
use crate::member::Header;
use crate::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event, EventKind, KeyRange,
    KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget,
    TxnRequest, TxnResponse,
};
use berth_proto::etcdserverpb as pb;
use berth_proto::mvccpb;

// ---- wire → domain -------------------------------------------------------------------------

/// A client's Range. `serializable` is not part of the domain request (it chooses how the
/// member serves the read, not what is read), so callers read it from the wire message first.
pub fn range_request(req: pb::RangeRequest) -> StoreResult<RangeRequest> {
    let sort_order = match pb::range_request::SortOrder::try_from(req.sort_order) {
        Ok(pb::range_request::SortOrder::None) => SortOrder::None,
        Ok(pb::range_request::SortOrder::Ascend) => SortOrder::Ascend,
        Ok(pb::range_request::SortOrder::Descend) => SortOrder::Descend,
        Err(_) => return Err(invalid(format!("invalid range sort_order {}", req.sort_order))),
    };
    let sort_target = match pb::range_request::SortTarget::try_from(req.sort_target) {
        Ok(pb::range_request::SortTarget::Key) => SortTarget::Key,
        Ok(pb::range_request::SortTarget::Version) => SortTarget::Version,
        Ok(pb::range_request::SortTarget::Create) => SortTarget::Create,
        Ok(pb::range_request::SortTarget::Mod) => SortTarget::Mod,
        Ok(pb::range_request::SortTarget::Value) => SortTarget::Value,
        Err(_) => return Err(invalid(format!("invalid range sort_target {}", req.sort_target))),
    };
    Ok(RangeRequest {
        range: KeyRange::from_wire(req.key, req.range_end),
        limit: req.limit,
        // etcd reads "revision <= 0" as "the current revision".
        revision: (req.revision > 0).then_some(Revision(req.revision)),
        sort_order,
        sort_target,
        keys_only: req.keys_only,
        count_only: req.count_only,
        min_mod_revision: req.min_mod_revision,
        max_mod_revision: req.max_mod_revision,
        min_create_revision: req.min_create_revision,
        max_create_revision: req.max_create_revision,
    })
}

pub fn put_request(req: pb::PutRequest) -> PutRequest {
    PutRequest {
        key: req.key,
        value: req.value,
        lease: LeaseId::from_wire(req.lease),
        prev_kv: req.prev_kv,
        ignore_value: req.ignore_value,
        ignore_lease: req.ignore_lease,
    }
}

pub fn delete_range_request(req: pb::DeleteRangeRequest) -> DeleteRangeRequest {
    DeleteRangeRequest { range: KeyRange::from_wire(req.key, req.range_end), prev_kv: req.prev_kv }
}

/// A txn guard. The operand is chosen by `target`, not by which oneof member is set: etcd reads
/// the member matching `target` and uses the zero value when that member is absent, so a
/// mismatched or missing operand compares against 0 / empty bytes rather than being an error.
pub fn compare(c: pb::Compare) -> StoreResult<Compare> {
    use pb::compare::TargetUnion as U;
    let result = match pb::compare::CompareResult::try_from(c.result) {
        Ok(pb::compare::CompareResult::Equal) => CompareResult::Equal,
        Ok(pb::compare::CompareResult::Greater) => CompareResult::Greater,
        Ok(pb::compare::CompareResult::Less) => CompareResult::Less,
        Ok(pb::compare::CompareResult::NotEqual) => CompareResult::NotEqual,
        Err(_) => return Err(invalid(format!("invalid compare result {}", c.result))),
    };
    let operand = c.target_union;
    let target = match pb::compare::CompareTarget::try_from(c.target) {
        Ok(pb::compare::CompareTarget::Version) => CompareTarget::Version(match operand {
            Some(U::Version(v)) => v,
            _ => 0,
        }),
        Ok(pb::compare::CompareTarget::Create) => CompareTarget::Create(match operand {
            Some(U::CreateRevision(v)) => v,
            _ => 0,
        }),
        Ok(pb::compare::CompareTarget::Mod) => CompareTarget::Mod(match operand {
            Some(U::ModRevision(v)) => v,
            _ => 0,
        }),
        Ok(pb::compare::CompareTarget::Value) => CompareTarget::Value(match operand {
            Some(U::Value(v)) => v,
            _ => Vec::new(),
        }),
        Ok(pb::compare::CompareTarget::Lease) => CompareTarget::Lease(match operand {
            Some(U::Lease(v)) => v,
            _ => 0,
        }),
        Err(_) => return Err(invalid(format!("invalid compare target {}", c.target))),
    };
    Ok(Compare { range: KeyRange::from_wire(c.key, c.range_end), result, target })
}

pub fn request_op(op: pb::RequestOp) -> StoreResult<RequestOp> {
    use pb::request_op::Request as R;
    match op.request {
        Some(R::RequestRange(r)) => range_request(r).map(RequestOp::Range),
        Some(R::RequestPut(p)) => Ok(RequestOp::Put(put_request(p))),
        Some(R::RequestDeleteRange(d)) => Ok(RequestOp::DeleteRange(delete_range_request(d))),
        Some(R::RequestTxn(t)) => txn_request(t).map(RequestOp::Txn),
        // An empty oneof is what an unknown op kind (a newer client) decodes to: refuse it
        // rather than silently skipping an operation the client expects to run.
        None => Err(invalid("txn request op is not set".to_owned())),
    }
}

/// Recursion follows nesting, which prost's decoder already bounds (depth limit 100).
pub fn txn_request(t: pb::TxnRequest) -> StoreResult<TxnRequest> {
    Ok(TxnRequest {
        compare: t.compare.into_iter().map(compare).collect::<StoreResult<_>>()?,
        success: t.success.into_iter().map(request_op).collect::<StoreResult<_>>()?,
        failure: t.failure.into_iter().map(request_op).collect::<StoreResult<_>>()?,
    })
}

fn invalid(message: String) -> StoreError {
    StoreError::InvalidArgument(format!("etcdserver: {message}"))
}

// ---- domain → wire -------------------------------------------------------------------------

pub fn response_header(h: Header) -> pb::ResponseHeader {
    pb::ResponseHeader {
        cluster_id: h.cluster_id,
        member_id: h.member_id.0,
        revision: h.revision.0,
        raft_term: h.raft_term,
    }
}

pub fn key_value(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision.0,
        mod_revision: kv.mod_revision.0,
        version: kv.version,
        value: kv.value,
        lease: kv.lease.map_or(0, |l| l.0),
    }
}

pub fn event(e: Event) -> mvccpb::Event {
    let kind = match e.kind {
        EventKind::Put => mvccpb::event::EventType::Put,
        EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event { r#type: kind as i32, kv: Some(key_value(e.kv)), prev_kv: e.prev_kv.map(key_value) }
}

pub fn range_response(header: pb::ResponseHeader, r: RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_response(header: pb::ResponseHeader, r: PutResponse) -> pb::PutResponse {
    pb::PutResponse { header: Some(header), prev_kv: r.prev_kv.map(key_value) }
}

pub fn delete_range_response(header: pb::ResponseHeader, r: DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

/// A txn's responses. As in etcd, only the outer response carries the full header; the nested
/// ones carry just the revision (etcd fills cluster/member/term on the top-level header only).
pub fn txn_response(header: pb::ResponseHeader, r: TxnResponse) -> pb::TxnResponse {
    let nested = pb::ResponseHeader { revision: header.revision, ..Default::default() };
    pb::TxnResponse {
        header: Some(header),
        succeeded: r.succeeded,
        responses: r.responses.into_iter().map(|op| response_op(nested, op)).collect(),
    }
}

fn response_op(header: pb::ResponseHeader, op: ResponseOp) -> pb::ResponseOp {
    use pb::response_op::Response as R;
    let response = match op {
        ResponseOp::Range(r) => R::ResponseRange(range_response(header, r)),
        ResponseOp::Put(p) => R::ResponsePut(put_response(header, p)),
        ResponseOp::DeleteRange(d) => R::ResponseDeleteRange(delete_range_response(header, d)),
        ResponseOp::Txn(t) => R::ResponseTxn(txn_response(header, t)),
    };
    pb::ResponseOp { response: Some(response) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MemberId;
    use crate::mvcc::RangeEnd;

    fn kv(key: &str, lease: Option<LeaseId>) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            create_revision: Revision(2),
            mod_revision: Revision(3),
            version: 2,
            lease,
        }
    }

    #[test]
    fn range_request_defaults_and_revision_convention() {
        let r = range_request(pb::RangeRequest { key: b"a".to_vec(), ..Default::default() }).unwrap();
        assert_eq!(r, RangeRequest::new(KeyRange::single(b"a".to_vec())));
        for (wire, domain) in [(0, None), (-5, None), (7, Some(Revision(7)))] {
            let req = pb::RangeRequest { key: b"a".to_vec(), revision: wire, ..Default::default() };
            assert_eq!(range_request(req).unwrap().revision, domain);
        }
        let req = pb::RangeRequest {
            key: b"a".to_vec(),
            range_end: vec![0],
            sort_order: 2,
            sort_target: 3,
            ..Default::default()
        };
        let r = range_request(req).unwrap();
        assert_eq!(
            (r.range.end, r.sort_order, r.sort_target),
            (RangeEnd::Unbounded, SortOrder::Descend, SortTarget::Mod)
        );
    }

    #[test]
    fn unknown_enum_numbers_are_invalid_arguments() {
        for (order, target) in [(3, 0), (-1, 0), (0, 5), (0, i32::MIN)] {
            let req =
                pb::RangeRequest { key: b"a".to_vec(), sort_order: order, sort_target: target, ..Default::default() };
            assert!(matches!(range_request(req), Err(StoreError::InvalidArgument(_))), "{order} {target}");
        }
        let c = pb::Compare { key: b"a".to_vec(), result: 4, ..Default::default() };
        assert!(matches!(compare(c), Err(StoreError::InvalidArgument(_))));
        let c = pb::Compare { key: b"a".to_vec(), target: 9, ..Default::default() };
        assert!(matches!(compare(c), Err(StoreError::InvalidArgument(_))));
    }

    #[test]
    fn put_lease_zero_is_no_lease() {
        let p = put_request(pb::PutRequest { key: b"k".to_vec(), lease: 0, ..Default::default() });
        assert_eq!(p.lease, None);
        let p = put_request(pb::PutRequest { key: b"k".to_vec(), lease: 42, ..Default::default() });
        assert_eq!(p.lease, Some(LeaseId(42)));
    }

    #[test]
    fn compare_operand_follows_target_and_range_end_is_kept() {
        use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
        let c = pb::Compare {
            result: R::Greater as i32,
            target: T::Mod as i32,
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            target_union: Some(U::ModRevision(9)),
        };
        let c = compare(c).unwrap();
        assert_eq!(c.range, KeyRange::from_wire(b"a".to_vec(), b"b".to_vec()));
        assert_eq!((c.result, c.target), (CompareResult::Greater, CompareTarget::Mod(9)));

        // etcd reads the member named by `target`; a mismatched or missing one is its zero value.
        let c = pb::Compare {
            target: T::Value as i32,
            key: b"a".to_vec(),
            target_union: Some(U::Lease(5)),
            ..Default::default()
        };
        assert_eq!(compare(c).unwrap().target, CompareTarget::Value(Vec::new()));
        let c = pb::Compare { target: T::Create as i32, key: b"a".to_vec(), target_union: None, ..Default::default() };
        assert_eq!(compare(c).unwrap().target, CompareTarget::Create(0));
    }

    #[test]
    fn missing_request_op_is_rejected_even_when_nested() {
        assert!(matches!(request_op(pb::RequestOp { request: None }), Err(StoreError::InvalidArgument(_))));
        let inner = pb::TxnRequest { failure: vec![pb::RequestOp { request: None }], ..Default::default() };
        let outer = pb::TxnRequest {
            success: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestTxn(inner)) }],
            ..Default::default()
        };
        assert!(matches!(txn_request(outer), Err(StoreError::InvalidArgument(_))));
    }

    #[test]
    fn nested_txn_converts_in_order() {
        use pb::request_op::Request as R;
        let op = |r| pb::RequestOp { request: Some(r) };
        let inner = pb::TxnRequest {
            success: vec![op(R::RequestPut(pb::PutRequest { key: b"x".to_vec(), ..Default::default() }))],
            ..Default::default()
        };
        let t = pb::TxnRequest {
            compare: vec![pb::Compare { key: b"c".to_vec(), ..Default::default() }],
            success: vec![
                op(R::RequestRange(pb::RangeRequest { key: b"r".to_vec(), ..Default::default() })),
                op(R::RequestTxn(inner)),
            ],
            failure: vec![op(R::RequestDeleteRange(pb::DeleteRangeRequest {
                key: b"d".to_vec(),
                range_end: b"e".to_vec(),
                prev_kv: true,
            }))],
        };
        let t = txn_request(t).unwrap();
        assert_eq!(t.compare[0].target, CompareTarget::Version(0));
        assert!(matches!(&t.success[0], RequestOp::Range(r) if r.range.start == b"r"));
        assert!(
            matches!(&t.success[1], RequestOp::Txn(i) if matches!(&i.success[0], RequestOp::Put(p) if p.key == b"x"))
        );
        assert!(
            matches!(&t.failure[0], RequestOp::DeleteRange(d) if d.prev_kv && d.range.end == RangeEnd::Before(b"e".to_vec()))
        );
    }

    #[test]
    fn key_value_and_event_to_wire() {
        let w = key_value(kv("k", None));
        assert_eq!((w.lease, w.create_revision, w.mod_revision, w.version), (0, 2, 3, 2));
        assert_eq!(key_value(kv("k", Some(LeaseId(7)))).lease, 7);

        let tomb = KeyValue {
            key: b"k".to_vec(),
            value: vec![],
            create_revision: Revision(0),
            mod_revision: Revision(4),
            version: 0,
            lease: None,
        };
        let e = event(Event { kind: EventKind::Delete, kv: tomb, prev_kv: Some(kv("k", None)) });
        assert_eq!(e.r#type, mvccpb::event::EventType::Delete as i32);
        assert_eq!(e.kv.map(|k| k.mod_revision), Some(4));
        assert_eq!(e.prev_kv.map(|k| k.value), Some(b"v".to_vec()));
        let e = event(Event { kind: EventKind::Put, kv: kv("k", None), prev_kv: None });
        assert_eq!((e.r#type, e.prev_kv), (mvccpb::event::EventType::Put as i32, None));
    }

    #[test]
    fn header_and_nested_txn_response() {
        let header =
            response_header(Header { cluster_id: 1, member_id: MemberId(2), revision: Revision(3), raft_term: 4 });
        assert_eq!(header, pb::ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 });

        let inner = TxnResponse { succeeded: false, responses: vec![ResponseOp::Put(PutResponse { prev_kv: None })] };
        let resp = TxnResponse {
            succeeded: true,
            responses: vec![
                ResponseOp::Range(RangeResponse { kvs: vec![kv("a", None)], more: true, count: 5 }),
                ResponseOp::DeleteRange(DeleteRangeResponse { deleted: 1, prev_kvs: vec![] }),
                ResponseOp::Txn(inner),
            ],
        };
        let w = txn_response(header, resp);
        assert_eq!(w.header, Some(header));
        assert!(w.succeeded);
        use pb::response_op::Response as R;
        let nested = pb::ResponseHeader { revision: 3, ..Default::default() };
        match &w.responses[0].response {
            Some(R::ResponseRange(r)) => {
                assert_eq!((r.header, r.more, r.count, r.kvs.len()), (Some(nested), true, 5, 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&w.responses[1].response, Some(R::ResponseDeleteRange(d)) if d.deleted == 1));
        match &w.responses[2].response {
            Some(R::ResponseTxn(t)) => {
                assert!(!t.succeeded);
                assert!(matches!(&t.responses[0].response, Some(R::ResponsePut(p)) if p.header == Some(nested)));
            }
            other => panic!("{other:?}"),
        }
    }
}
