//! Berth's control plane: the Kubernetes-compatible API server on the replicated store.
//!
//! Layers, from the inside out: [`storage`] is the narrow store interface (range, CAS txn,
//! watch) and its etcd-gRPC implementation; the pure core — [`registry`] (one entry per kind),
//! [`meta`], [`defaults`], [`validation`], [`selector`], [`patch`], [`table`], [`discovery`],
//! [`openapi`], [`protobuf`] (request bodies in Kubernetes' protobuf), [`gc`] (deletion
//! propagation), [`service_ip`] — decides; [`api`] is the HTTP shell that reads, decides and writes;
//! [`replica`] runs the store member and the API server of one `berth server` replica.

pub mod api;
pub mod defaults;
pub mod discovery;
pub mod env;
pub mod error;
pub mod gc;
pub mod kubeconfig;
pub mod meta;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod replica;
pub mod selector;
pub mod service_ip;
pub mod storage;
pub mod table;
pub mod validation;
