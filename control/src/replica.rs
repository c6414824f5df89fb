//! One control-plane replica (`berth server`): the store member and the Kubernetes API server
//! in one process, with one shutdown. The API server reaches the store through the member's
//! own client URL (the etcd gRPC API), so it sees exactly what any etcd client sees.

use crate::api;
use crate::env::Env;
use crate::registry;
use crate::storage::etcd::EtcdStorage;
use crate::storage::Storage;
use berth_store::server::{self, ServerConfig, ServerError};
use serde_json::json;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The Kubernetes API's default URL.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:6443";
/// How often open watches get a bookmark (a store progress notification).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);
/// How long the API server gets to finish requests at shutdown.
const API_DRAIN: Duration = Duration::from_secs(5);
/// Pause between attempts to create the bootstrap namespaces while the store has no quorum.
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(500);
/// Namespaces every cluster has.
pub const BOOTSTRAP_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub server: ServerConfig,
    /// `None`: the default URL, where a taken port only disables the API (with a warning), so
    /// several default-configured processes on one machine still run their stores.
    pub listen_api_url: Option<String>,
    pub write_kubeconfig: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("{0}")]
    Server(#[from] ServerError),
    #[error("cannot write the kubeconfig {path}: {source}")]
    Kubeconfig { path: String, source: std::io::Error },
    #[error("{0}")]
    Storage(String),
}

async fn bind_api(config: &ReplicaConfig) -> Result<Option<(TcpListener, String)>, ReplicaError> {
    let url = config.listen_api_url.clone().unwrap_or_else(|| DEFAULT_API_URL.to_string());
    let addr = server::socket_addr(&url)?;
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some((listener, url))),
        Err(e) if config.listen_api_url.is_none() => {
            tracing::warn!("not serving the Kubernetes API: cannot listen on {url}: {e} (set --listen-api-url)");
            Ok(None)
        }
        Err(source) => Err(ServerError::Listen { url, source }.into()),
    }
}

/// The client URL the API server uses to reach this replica's own member.
fn local_store_url(listen_client_urls: &[String]) -> Result<String, ReplicaError> {
    let url = listen_client_urls.first().ok_or_else(|| ReplicaError::Storage("no --listen-client-urls".into()))?;
    Ok(crate::kubeconfig::client_url(url))
}

/// Runs the replica until `shutdown` resolves (or the member stops on its own, e.g. when it is
/// removed from the cluster).
pub async fn run(config: ReplicaConfig, shutdown: impl Future<Output = ()>) -> Result<(), ReplicaError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let work = run_until(config, stop_rx);
    tokio::pin!(work);
    tokio::pin!(shutdown);
    let mut signalled = false;
    // `shutdown` is polled from the very start (before any port is bound), so a signal that
    // arrives during start-up already finds its handler and stops the replica cleanly.
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown, if !signalled => {
                signalled = true;
                let _ = stop_tx.send(true);
            }
            result = &mut work => return result,
        }
    }
}

async fn run_until(config: ReplicaConfig, stop_rx: watch::Receiver<bool>) -> Result<(), ReplicaError> {
    // The API port is bound before the store starts, so a taken port fails fast.
    let api = bind_api(&config).await?;
    let store_url = local_store_url(&config.server.listen_client_urls)?;
    let storage: Arc<dyn Storage> = Arc::new(
        EtcdStorage::connect_lazy(&store_url, BOOKMARK_INTERVAL).map_err(|e| ReplicaError::Storage(e.to_string()))?,
    );
    // The API side stops when asked, or when the store stops on its own.
    let (api_stop_tx, api_stop_rx) = watch::channel(false);
    let mut api_task = None;
    if let Some((listener, url)) = api {
        let url = crate::kubeconfig::client_url(&url);
        if let Some(path) = &config.write_kubeconfig {
            crate::kubeconfig::write(path, &url)
                .map_err(|source| ReplicaError::Kubeconfig { path: path.display().to_string(), source })?;
        }
        tracing::info!(api = %url, kubeconfig = ?config.write_kubeconfig, "serving the Kubernetes API");
        let env = Env::system();
        let serve = api::serve(listener, storage.clone(), env.clone(), stopped(api_stop_rx.clone()));
        let boot = bootstrap(storage.clone(), env, api_stop_rx.clone());
        api_task = Some(tokio::spawn(async move {
            let (served, ()) = tokio::join!(serve, boot);
            if let Err(e) = served {
                tracing::warn!("the API server ended with an error: {e}");
            }
        }));
    }
    let result = server::run(config.server, async {
        stopped(stop_rx).await;
        let _ = api_stop_tx.send(true);
    })
    .await;
    let _ = api_stop_tx.send(true);
    if let Some(task) = api_task {
        let abort = task.abort_handle();
        if tokio::time::timeout(API_DRAIN, task).await.is_err() {
            tracing::warn!("API requests still running after {API_DRAIN:?}; closing them");
            abort.abort();
        }
    }
    result.map_err(ReplicaError::from)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Creates the bootstrap namespaces, retrying while the store has no quorum yet. Every replica
/// does this; all but the first find them existing.
async fn bootstrap(storage: Arc<dyn Storage>, env: Env, mut stop: watch::Receiver<bool>) {
    let state = api::ApiState { storage, env, shutdown: stop.clone() };
    let namespaces = registry::find("", "v1", "namespaces").expect("namespaces are registered");
    for name in BOOTSTRAP_NAMESPACES {
        loop {
            if *stop.borrow() {
                return;
            }
            match api::handlers::ensure_exists(&state, namespaces, json!({"metadata": {"name": name}})).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::debug!("bootstrap namespace {name}: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(BOOTSTRAP_RETRY) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }
    tracing::info!("bootstrap namespaces exist");
}
