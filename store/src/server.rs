//! Runs a member as a server: binds the client and peer listeners (before anything else, so a
//! taken port fails fast), serves the etcd API and the peer transport, and shuts down in order
//! when asked: stop accepting, let in-flight requests finish (bounded), stop Raft, sync.

use crate::grpc::client_routes;
use crate::member::{Member, MemberConfig, StartError};
use crate::raft::transport::peer_server;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;

/// How long in-flight requests (and open streams) get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub member: MemberConfig,
    pub listen_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot listen on {url}: {source}")]
    Listen { url: String, source: std::io::Error },
}

/// Parses an `http://host:port` URL into a socket address (etcd flag syntax).
pub fn socket_addr(url: &str) -> Result<SocketAddr, ServerError> {
    let bad = |reason: &str| ServerError::Url { url: url.to_string(), reason: reason.to_string() };
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            bad("TLS is not supported yet; use http://")
        } else {
            bad("expected http://HOST:PORT")
        }
    })?;
    let host_port = rest.trim_end_matches('/');
    use std::net::ToSocketAddrs;
    host_port
        .to_socket_addrs()
        .map_err(|e| bad(&e.to_string()))?
        .next()
        .ok_or_else(|| bad("the host resolves to no address"))
}

/// Accepted connections with Nagle's algorithm off: tonic's `tcp_nodelay` does not reach
/// sockets that come from our own listener, and small gRPC frames would otherwise wait for
/// delayed ACKs (tens of milliseconds per request).
fn incoming(listener: TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("cannot disable Nagle on an accepted connection: {e}");
            }
        })
    })
}

async fn bind(urls: &[String]) -> Result<Vec<TcpListener>, ServerError> {
    let mut listeners = Vec::new();
    for url in urls {
        let addr = socket_addr(url)?;
        let listener =
            TcpListener::bind(addr).await.map_err(|source| ServerError::Listen { url: url.clone(), source })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Runs until `shutdown` resolves, then stops cleanly.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let client_listeners = bind(&config.listen_client_urls).await?;
    let peer_listeners = bind(&config.listen_peer_urls).await?;
    let member = Member::open(&config.member).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = JoinSet::new();
    for listener in peer_listeners {
        let service = peer_server(member.clone());
        let stop = stopped(stop_rx.clone());
        servers.spawn(async move {
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming(listener), stop)
                .await
        });
    }
    member.bootstrap().await?;
    for listener in client_listeners {
        let routes = client_routes(&member);
        let stop = stopped(stop_rx.clone());
        servers.spawn(async move {
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming(listener), stop)
                .await
        });
    }
    tracing::info!(
        member = %member.id(),
        cluster = %format!("{:x}", member.cluster_id()),
        clients = ?config.listen_client_urls,
        peers = ?config.listen_peer_urls,
        "serving"
    );
    // A member removed from the cluster stops, as etcd's does: it can no longer serve anything.
    tokio::select! {
        _ = shutdown => {}
        _ = member.removed() => tracing::warn!("removed from the cluster; stopping"),
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Watch streams never end on their own: close them now, or draining waits them out.
    member.watch_hub().close();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(result) = servers.join_next().await {
            if let Ok(Err(e)) = result {
                tracing::warn!("server ended with an error: {e}");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some requests were still running after {DRAIN_TIMEOUT:?}; closing them");
        servers.shutdown().await;
    }
    member.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_like_etcd_flags() {
        assert_eq!(socket_addr("http://127.0.0.1:2379").unwrap(), "127.0.0.1:2379".parse().unwrap());
        assert_eq!(socket_addr("http://127.0.0.1:2379/").unwrap().port(), 2379);
        assert!(socket_addr("https://127.0.0.1:2379").unwrap_err().to_string().contains("TLS"));
        assert!(socket_addr("127.0.0.1:2379").is_err());
        assert!(socket_addr("http://127.0.0.1").is_err());
    }
}
