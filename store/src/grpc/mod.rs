//! The etcd v3 gRPC API on top of a [`Member`](crate::member::Member): services that speak
//! etcd's wire protocol (package `etcdserverpb`) so that etcd's own clients work unchanged.
//!
//! [`convert`] maps protobuf messages to domain types and back, [`status`] maps store errors to
//! etcd's gRPC codes and messages, and [`kv`] is the `KV` service.

pub mod cluster;
pub mod convert;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod status;
pub mod watch;

use crate::member::Member;
use tonic::service::Routes;

/// Every etcd service a member serves on its client URLs.
pub fn client_routes(member: &Member) -> Routes {
    Routes::new(kv_server(member.clone()))
        .add_service(maintenance::maintenance_server(member.clone()))
        .add_service(watch::watch_server(member.clone()))
        .add_service(cluster::cluster_server(member.clone()))
        .add_service(lease::lease_server(member.clone()))
}

pub use kv::{kv_server, KvService, MAX_DECODING_BYTES, MAX_REQUEST_BYTES};
pub use status::to_status;
