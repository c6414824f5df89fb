//! The etcd `Watch` service: one bidirectional stream per call, many watchers per stream.
//!
//! This layer only translates: wire requests into [`Request`]s for a watch [`Session`], and the
//! session's [`Reply`]s into `WatchResponse`s (with the member's response header, `prev_kv`
//! stripped for watchers that did not ask for it, and etcd's fragmenting of oversized responses
//! for watchers that did). The response stream *is* the session: when the client goes away
//! tonic drops it and the watchers with it.

use super::convert;
use super::kv::{MAX_DECODING_BYTES, MAX_REQUEST_BYTES};
use super::status::to_status;
use crate::ids::Revision;
use crate::member::Member;
use crate::mvcc::KeyRange;
use crate::watch::{CreateRequest, Filters, Reply, Request, Session, WatchId, WatchSpec};
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::watch_server::{Watch, WatchServer};
use berth_proto::mvccpb;
use futures::{stream, Stream, StreamExt};
use prost::Message;
use std::pin::Pin;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

/// Responses of a fragmenting watcher are cut at this size: etcd's max request bytes plus the
/// 512 KiB it allows for gRPC overhead (`MaxRequestBytesWithOverhead`).
pub const FRAGMENT_BYTES: usize = MAX_REQUEST_BYTES + 512 * 1024;

#[derive(Clone)]
pub struct WatchService {
    member: Member,
}

pub fn watch_server(member: Member) -> WatchServer<WatchService> {
    WatchServer::new(WatchService { member })
        .max_decoding_message_size(MAX_DECODING_BYTES)
        // A watcher that does not fragment gets whole revisions whatever their size, as in etcd.
        .max_encoding_message_size(usize::MAX)
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: GrpcRequest<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Requests with an empty oneof (a newer client's unknown request kind) are skipped, as
        // etcd does, rather than ending the stream.
        let inbound = request.into_inner().filter_map(|r| std::future::ready(r.map(request_of).transpose()));
        let session = Session::open(self.member.kv().clone());
        let state = Some((session, Box::pin(inbound), self.member.clone()));
        let replies = stream::unfold(state, |state| async move {
            let (mut session, mut inbound, member) = state?;
            match session.next(&mut inbound).await {
                Ok(Some(reply)) => {
                    let responses = responses(&member, reply);
                    Some((Ok(responses), Some((session, inbound, member))))
                }
                Ok(None) => None,
                Err(e) => Some((Err(to_status(&e)), None)),
            }
        });
        let out = replies.flat_map(|r| match r {
            Ok(responses) => stream::iter(responses.into_iter().map(Ok)).left_stream(),
            Err(status) => stream::once(std::future::ready(Err(status))).right_stream(),
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// A wire request as a session request; `None` for an empty oneof.
pub fn request_of(req: pb::WatchRequest) -> Option<Request> {
    use pb::watch_request::RequestUnion as U;
    match req.request_union? {
        U::CreateRequest(c) => {
            // etcd: an empty key means "\0", the smallest key.
            let key = if c.key.is_empty() { vec![0] } else { c.key };
            let mut filters = Filters::default();
            for f in c.filters {
                // Unknown filter numbers are ignored, as etcd does.
                match pb::watch_create_request::FilterType::try_from(f) {
                    Ok(pb::watch_create_request::FilterType::Noput) => filters.no_put = true,
                    Ok(pb::watch_create_request::FilterType::Nodelete) => filters.no_delete = true,
                    Err(_) => {}
                }
            }
            Some(Request::Create(CreateRequest {
                watch_id: c.watch_id,
                start_revision: c.start_revision,
                spec: WatchSpec {
                    range: KeyRange::from_wire(key, c.range_end),
                    filters,
                    prev_kv: c.prev_kv,
                    progress_notify: c.progress_notify,
                    fragment: c.fragment,
                },
            }))
        }
        U::CancelRequest(c) => Some(Request::Cancel(WatchId(c.watch_id))),
        U::ProgressRequest(_) => Some(Request::Progress),
    }
}

/// The wire responses for one reply: one, or several fragments.
fn responses(member: &Member, reply: Reply) -> Vec<pb::WatchResponse> {
    let header = |revision: Revision| Some(convert::response_header(member.header(revision)));
    let response = match reply {
        Reply::Created { id, revision } => {
            pb::WatchResponse { header: header(revision), watch_id: id.0, created: true, ..Default::default() }
        }
        Reply::CreateFailed { revision, reason } => pb::WatchResponse {
            header: header(revision),
            watch_id: WatchId::NONE.0,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        },
        Reply::Canceled { id, revision, reason } => pb::WatchResponse {
            header: header(revision),
            watch_id: id.0,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        },
        Reply::Compacted { id, revision, compact_revision } => pb::WatchResponse {
            header: header(revision),
            watch_id: id.0,
            canceled: true,
            compact_revision: compact_revision.0,
            ..Default::default()
        },
        Reply::Progress { id, revision } => {
            pb::WatchResponse { header: header(revision), watch_id: id.0, ..Default::default() }
        }
        Reply::Events { id, revision, events, prev_kv, fragment } => {
            let events = events
                .iter()
                .map(|e| {
                    let mut e = (**e).clone();
                    if !prev_kv {
                        e.prev_kv = None;
                    }
                    convert::event(e)
                })
                .collect();
            let response = pb::WatchResponse { header: header(revision), watch_id: id.0, events, ..Default::default() };
            return if fragment { fragments(response, FRAGMENT_BYTES) } else { vec![response] };
        }
    };
    vec![response]
}

/// etcd's fragmenting: a response of at least `limit` bytes with more than one event is sent as
/// several, each under `limit` unless a single event is larger, all but the last marked
/// `fragment`. Clients concatenate the events of consecutive fragments.
pub fn fragments(response: pb::WatchResponse, limit: usize) -> Vec<pb::WatchResponse> {
    if response.encoded_len() < limit || response.events.len() < 2 {
        return vec![response];
    }
    let mut rest = response.events.into_iter().peekable();
    let base = pb::WatchResponse { events: Vec::new(), fragment: true, ..response };
    // The encoded size of a fragment: the base (with `fragment` set) plus each event as a
    // length-delimited field 11 (a one-byte tag).
    let base_len = base.encoded_len();
    let field_len = |e: &mvccpb::Event| 1 + prost::length_delimiter_len(e.encoded_len()) + e.encoded_len();
    let mut out = Vec::new();
    while rest.peek().is_some() {
        let mut piece = base.clone();
        let mut len = base_len;
        while let Some(next) = rest.peek() {
            let next_len = field_len(next);
            if !piece.events.is_empty() && len + next_len >= limit {
                break;
            }
            len += next_len;
            piece.events.extend(rest.next());
        }
        out.push(piece);
    }
    if let Some(last) = out.last_mut() {
        last.fragment = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::RangeEnd;

    fn event(key: &str, value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            r#type: mvccpb::event::EventType::Put as i32,
            kv: Some(mvccpb::KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; value_len],
                mod_revision: 7,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn create_request_conventions() {
        use pb::watch_request::RequestUnion as U;
        let create =
            |c: pb::WatchCreateRequest| request_of(pb::WatchRequest { request_union: Some(U::CreateRequest(c)) });
        let Some(Request::Create(c)) = create(pb::WatchCreateRequest::default()) else { panic!() };
        assert_eq!(c.spec.range, KeyRange::single(vec![0]), "empty key is \\0");
        let Some(Request::Create(c)) = create(pb::WatchCreateRequest {
            key: b"a".to_vec(),
            range_end: vec![0],
            filters: vec![0, 1, 7],
            watch_id: 5,
            start_revision: 9,
            prev_kv: true,
            fragment: true,
            progress_notify: true,
        }) else {
            panic!()
        };
        assert_eq!(c.spec.range.end, RangeEnd::Unbounded);
        assert_eq!(c.spec.filters, Filters { no_put: true, no_delete: true }, "unknown filter 7 ignored");
        assert_eq!((c.watch_id, c.start_revision), (5, 9));
        assert!(c.spec.prev_kv && c.spec.fragment && c.spec.progress_notify);
        assert_eq!(request_of(pb::WatchRequest { request_union: None }), None);
        let cancel = pb::WatchRequest { request_union: Some(U::CancelRequest(pb::WatchCancelRequest { watch_id: 3 })) };
        assert_eq!(request_of(cancel), Some(Request::Cancel(WatchId(3))));
        let progress = pb::WatchRequest { request_union: Some(U::ProgressRequest(pb::WatchProgressRequest {})) };
        assert_eq!(request_of(progress), Some(Request::Progress));
    }

    #[test]
    fn small_or_single_event_responses_are_not_fragmented() {
        let small =
            pb::WatchResponse { watch_id: 1, events: vec![event("a", 10), event("b", 10)], ..Default::default() };
        assert_eq!(fragments(small.clone(), 1000), vec![small]);
        let one_big = pb::WatchResponse { watch_id: 1, events: vec![event("a", 5000)], ..Default::default() };
        assert_eq!(fragments(one_big.clone(), 1000), vec![one_big]);
    }

    #[test]
    fn fragments_are_under_the_limit_in_order_and_only_the_last_is_final() {
        let events: Vec<mvccpb::Event> = (0..20).map(|i| event(&format!("k{i:02}"), 300)).collect();
        let header = Some(pb::ResponseHeader { revision: 7, ..Default::default() });
        let whole = pb::WatchResponse { header, watch_id: 4, events: events.clone(), ..Default::default() };
        let pieces = fragments(whole, 1000);
        assert!(pieces.len() > 5, "{}", pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            assert!(p.encoded_len() < 1000, "piece {i} is {} bytes", p.encoded_len());
            assert_eq!(p.fragment, i + 1 < pieces.len());
            assert_eq!((p.watch_id, p.header), (4, header));
        }
        let joined: Vec<mvccpb::Event> = pieces.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, events);
        // An event larger than the limit travels alone.
        let big =
            pb::WatchResponse { events: vec![event("a", 10), event("b", 2000), event("c", 10)], ..Default::default() };
        let pieces = fragments(big, 1000);
        assert_eq!(pieces.iter().map(|p| p.events.len()).collect::<Vec<_>>(), [1, 1, 1]);
    }
}
