//! The Kubernetes API of `berth server` driven by the `kube` crate (the Rust client most
//! controllers use): CRUD, optimistic concurrency, every patch type, server-side apply
//! conflicts, pagination, selectors, watches from a resourceVersion and after compaction,
//! deletion propagation through ownerReferences, cluster IP allocation, content negotiation.
//!
//! Each test starts a one-member cluster (the API is the same on every replica; the
//! three-replica behaviour is covered by `kubectl.rs`) and works in its own namespace.

mod common;

use berth_proto::etcdserverpb::{kv_client::KvClient, CompactionRequest};
use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::Client;
use serde_json::json;
use std::time::Duration;

fn client(cluster: &Cluster) -> Client {
    let config = kube::Config::new(cluster.api_url(0).parse().expect("API URL"));
    Client::try_from(config).expect("kube client")
}

fn start() -> Cluster {
    let cluster = Cluster::start(1);
    api_ready(&cluster, 0, START_DEADLINE);
    cluster
}

async fn namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.expect("create namespace");
}

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "env": [{"name": "A", "value": "1"}]}]}}}
    }))
    .unwrap()
}

fn api_error(e: kube::Error) -> kube::core::ErrorResponse {
    match e {
        kube::Error::Api(status) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn crud_conflicts_and_defaults() {
    let cluster = start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = client(&cluster);
        namespace(&client, "crud").await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "crud");
        let created = cms.create(&PostParams::default(), &config_map("a", json!({"app": "x"}))).await.unwrap();
        let meta = &created.metadata;
        assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36), "uid is a UUID: {meta:?}");
        assert!(meta.creation_timestamp.is_some());
        let rv: i64 = meta.resource_version.as_deref().unwrap().parse().unwrap();
        assert!(rv > 0);

        let err = api_error(cms.create(&PostParams::default(), &config_map("a", json!({}))).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
        let err = api_error(cms.get("missing").await.unwrap_err());
        assert_eq!(
            (err.code, err.reason.as_str(), err.message.as_str()),
            (404, "NotFound", "configmaps \"missing\" not found")
        );
        let err = api_error(cms.create(&PostParams::default(), &config_map("Bad_Name", json!({}))).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));

        // Optimistic concurrency: a stale resourceVersion is a 409 Conflict.
        let mut fresh = cms.get("a").await.unwrap();
        fresh.data = Some([("k".to_string(), "v2".to_string())].into());
        let updated = cms.replace("a", &PostParams::default(), &fresh).await.unwrap();
        assert_ne!(updated.metadata.resource_version, fresh.metadata.resource_version);
        let err = api_error(cms.replace("a", &PostParams::default(), &fresh).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
        assert!(err.message.contains("the object has been modified"), "{}", err.message);

        // Defaults, generation bumped only by spec changes.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "crud");
        let d = deployments.create(&PostParams::default(), &deployment("web", 2)).await.unwrap();
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.revision_history_limit, Some(10));
        assert_eq!(spec.progress_deadline_seconds, Some(600));
        assert_eq!(spec.strategy.as_ref().unwrap().type_.as_deref(), Some("RollingUpdate"));
        assert_eq!(spec.template.spec.as_ref().unwrap().restart_policy.as_deref(), Some("Always"));
        assert_eq!(d.metadata.generation, Some(1));
        let labelled = deployments
            .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
            .await
            .unwrap();
        assert_eq!(labelled.metadata.generation, Some(1));
        let scaled = deployments
            .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}})))
            .await
            .unwrap();
        assert_eq!(scaled.metadata.generation, Some(2));
        let scale = deployments.get_scale("web").await.unwrap();
        assert_eq!(scale.spec.unwrap().replicas, Some(3));

        // Delete; a pod on no node goes at once.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "crud");
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        )
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        assert_eq!(pods.get("p").await.unwrap().status.unwrap().phase.as_deref(), Some("Pending"));
        pods.delete("p", &DeleteParams::default()).await.unwrap();
        assert_eq!(api_error(pods.get("p").await.unwrap_err()).code, 404);
        let stale = DeleteParams {
            preconditions: Some(kube::api::Preconditions { uid: Some("nope".into()), resource_version: None }),
            ..Default::default()
        };
        assert_eq!(api_error(cms.delete("a", &stale).await.unwrap_err()).code, 409);
        cms.delete("a", &DeleteParams::default()).await.unwrap();
        assert_eq!(api_error(cms.get("a").await.unwrap_err()).code, 404);
    });
}

#[test]
fn every_patch_type_and_server_side_apply() {
    let cluster = start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = client(&cluster);
        namespace(&client, "patches").await;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "patches");
        deployments.create(&PostParams::default(), &deployment("web", 1)).await.unwrap();
        let pp = PatchParams::default();

        let json_patch: json_patch::Patch = serde_json::from_value(json!([{"op": "replace", "path": "/spec/replicas", "value": 4}])).unwrap();
        let d = deployments.patch("web", &pp, &Patch::<()>::Json(json_patch)).await.unwrap();
        assert_eq!(d.spec.unwrap().replicas, Some(4));

        let d = deployments.patch("web", &pp, &Patch::Merge(json!({"metadata": {"annotations": {"a": "1"}}}))).await.unwrap();
        assert_eq!(d.metadata.annotations.unwrap()["a"], "1");

        // Strategic merge: containers merge by name, env by name.
        let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "2"}]}]}}}});
        let d = deployments.patch("web", &pp, &Patch::Strategic(smp)).await.unwrap();
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("nginx:1.27"));
        let env: Vec<&str> = c.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(env, vec!["A", "B"]);

        // Server-side apply: another manager's field conflicts unless forced.
        let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 7}});
        let err = api_error(deployments.patch("web", &PatchParams::apply("alice"), &Patch::Apply(&cfg)).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
        assert!(err.message.contains("Apply failed with 1 conflict"), "{}", err.message);
        let d = deployments.patch("web", &PatchParams::apply("alice").force(), &Patch::Apply(&cfg)).await.unwrap();
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(7));
        let managers: Vec<(String, String)> = d.metadata.managed_fields.unwrap().into_iter().map(|m| (m.manager.unwrap(), m.operation.unwrap())).collect();
        assert!(managers.contains(&("alice".into(), "Apply".into())), "{managers:?}");

        // Apply creates, then stays idempotent.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1"}});
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "patches");
        let first = cms.patch("applied", &PatchParams::apply("bob"), &Patch::Apply(&cm)).await.unwrap();
        let second = cms.patch("applied", &PatchParams::apply("bob"), &Patch::Apply(&cm)).await.unwrap();
        assert_eq!(first.metadata.resource_version, second.metadata.resource_version, "a no-op apply writes nothing");

        // Strict field validation rejects unknown fields.
        let bogus = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bogus"}, "bogus": 1});
        let strict = PatchParams { field_validation: Some(kube::api::ValidationDirective::Strict), ..PatchParams::apply("bob") };
        let err = api_error(cms.patch("bogus", &strict, &Patch::Apply(&bogus)).await.unwrap_err());
        assert_eq!(err.code, 400);
        assert!(err.message.contains("unknown field \"bogus\""), "{}", err.message);
    });
}

#[test]
fn pagination_selectors_and_watches() {
    let cluster = start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = client(&cluster);
        namespace(&client, "lists").await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "lists");
        for i in 0..7 {
            let tier = if i % 2 == 0 { "front" } else { "back" };
            cms.create(
                &PostParams::default(),
                &config_map(&format!("cm-{i}"), json!({"tier": tier, "n": i.to_string()})),
            )
            .await
            .unwrap();
        }
        // Pages of 3 at one revision.
        let mut names = Vec::new();
        let mut params = ListParams::default().limit(3);
        let mut revisions = Vec::new();
        loop {
            let page = cms.list(&params).await.unwrap();
            revisions.push(page.metadata.resource_version.clone());
            names.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        assert_eq!(names, (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>());
        assert!(revisions.windows(2).all(|w| w[0] == w[1]), "every page is read at one revision: {revisions:?}");

        let front = cms.list(&ListParams::default().labels("tier=front")).await.unwrap();
        assert_eq!(front.items.len(), 4);
        let set = cms.list(&ListParams::default().labels("tier in (back),n notin (1)")).await.unwrap();
        assert_eq!(set.items.len(), 2);
        let by_name = cms.list(&ListParams::default().fields("metadata.name=cm-3")).await.unwrap();
        assert_eq!(by_name.items.len(), 1);
        let err = api_error(cms.list(&ListParams::default().fields("data.k=v")).await.unwrap_err());
        assert_eq!(err.code, 400);

        // Watch from the list's revision sees exactly what happened after it, filtered.
        let rv = cms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
        cms.patch("cm-0", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"tier": "back"}}})))
            .await
            .unwrap();
        cms.patch("cm-2", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "v2"}}))).await.unwrap();
        cms.delete("cm-4", &DeleteParams::default()).await.unwrap();
        let wp = WatchParams::default().labels("tier=front").timeout(10);
        let stream = cms.watch(&wp, &rv).await.unwrap().boxed();
        let events: Vec<(String, String)> = stream
            .take(3)
            .map_ok(|e| match e {
                WatchEvent::Added(o) => ("ADDED".to_string(), o.metadata.name.unwrap()),
                WatchEvent::Modified(o) => ("MODIFIED".to_string(), o.metadata.name.unwrap()),
                WatchEvent::Deleted(o) => ("DELETED".to_string(), o.metadata.name.unwrap()),
                other => (format!("{other:?}"), String::new()),
            })
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            events,
            vec![
                ("DELETED".into(), "cm-0".into()),
                ("MODIFIED".into(), "cm-2".into()),
                ("DELETED".into(), "cm-4".into())
            ],
            "cm-0 stopped matching the selector, so it is DELETED for this watcher"
        );

        // After compaction, watching from an old revision is 410 Gone (Expired).
        let mut kv = KvClient::connect(cluster.client_url(0)).await.unwrap();
        let current = cms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
        kv.compact(CompactionRequest { revision: current.parse().unwrap(), physical: true }).await.unwrap();
        let mut stream = cms.watch(&WatchParams::default().timeout(10), &rv).await.unwrap().boxed();
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await.expect("an event") {
            Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
            other => panic!("expected a 410 ERROR event, got {other:?}"),
        }
        let err = api_error(
            cms.list(&ListParams::default().limit(2).continue_token(&encode_old_continue(&rv))).await.unwrap_err(),
        );
        assert_eq!(err.code, 410);
    });
}

/// A continue token for revision `rv` (the server's format: base64 JSON), now compacted.
fn encode_old_continue(rv: &str) -> String {
    use base64::Engine;
    let token =
        json!({"v": "meta.k8s.io/v1", "rv": rv.parse::<i64>().unwrap(), "start": "/registry/configmaps/lists/cm-5"});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

/// A ReplicaSet owned by `owner` (a Deployment), as the deployment controller writes them.
fn replica_set(name: &str, owner: &Deployment) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": owner.metadata.name, "uid": owner.metadata.uid,
            "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap()
}

#[test]
fn deletion_propagation_cluster_ips_and_negotiation() {
    let cluster = start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = client(&cluster);
        namespace(&client, "gc").await;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "gc");
        let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "gc");
        let pp = PostParams::default();

        // Orphan: the ReplicaSet stays, without its owner.
        let d = deployments.create(&pp, &deployment("web", 1)).await.unwrap();
        replica_sets.create(&pp, &replica_set("web-1", &d)).await.unwrap();
        deployments.delete("web", &DeleteParams::orphan()).await.unwrap();
        assert_eq!(api_error(deployments.get("web").await.unwrap_err()).code, 404);
        let rs = replica_sets.get("web-1").await.unwrap();
        assert!(rs.metadata.owner_references.is_none(), "{:?}", rs.metadata);
        replica_sets.delete("web-1", &DeleteParams::default()).await.unwrap();

        // Foreground and background: the ReplicaSet goes with its owner.
        for params in [DeleteParams::foreground(), DeleteParams::background()] {
            let d = deployments.create(&pp, &deployment("web", 1)).await.unwrap();
            replica_sets.create(&pp, &replica_set("web-1", &d)).await.unwrap();
            deployments.delete("web", &params).await.unwrap();
            assert_eq!(api_error(replica_sets.get("web-1").await.unwrap_err()).code, 404, "{params:?}");
            assert_eq!(api_error(deployments.get("web").await.unwrap_err()).code, 404);
        }

        // A cluster IP is held by one Service at a time.
        let services: Api<Service> = Api::namespaced(client.clone(), "gc");
        let service = |name: &str, ip: Option<&str>| -> Service {
            serde_json::from_value(
                json!({"metadata": {"name": name}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}),
            )
            .unwrap()
        };
        let a = services.create(&pp, &service("a", None)).await.unwrap();
        let ip = a.spec.unwrap().cluster_ip.unwrap();
        let err = api_error(services.create(&pp, &service("b", Some(&ip))).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
        assert!(err.message.ends_with("provided IP is already allocated"), "{}", err.message);
        services.delete("a", &DeleteParams::default()).await.unwrap();
        let b = services.create(&pp, &service("b", Some(&ip))).await.unwrap();
        assert_eq!(b.spec.unwrap().cluster_ip, Some(ip), "released with the Service that held it");
    });

    // A client that takes protobuf answers only is told so (every answer is JSON).
    let addr = cluster.api_url(0).trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    let request = format!(
        "GET /api/v1/namespaces/gc/services HTTP/1.1\r\nHost: {addr}\r\nAccept: application/vnd.kubernetes.protobuf\r\nConnection: close\r\n\r\n"
    );
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 406"), "{response}");
    assert!(response.contains("\"reason\":\"NotAcceptable\""), "{response}");
}
