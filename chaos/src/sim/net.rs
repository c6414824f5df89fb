//! tonic over turmoil's simulated TCP: a server side (accepted turmoil streams as tonic's
//! incoming connections) and a client side (a connector that dials turmoil streams).
//!
//! turmoil's TCP never retransmits: a segment dropped by a partition or a lossy link leaves a
//! gap that stalls the connection for good. So every client channel here sends HTTP/2
//! keep-alive pings that close a stalled connection within ~2 s (the next call reconnects),
//! servers do the same for their side, and every call in the harness has its own deadline.

use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

/// The port members serve the etcd API on (etcd's default).
pub const CLIENT_PORT: u16 = 2379;
/// The port members serve the peer transport on.
pub const PEER_PORT: u16 = 2380;

/// How often a simulated client pings an idle connection, and how long it waits for the answer
/// before declaring the connection dead.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// Bound on opening a connection (a SYN into a partition is dropped, not refused).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a client's HTTP/2 connection remembers a stream it reset (a call given up at its
/// deadline). h2 measures this in *real* time (1 s by default): a late answer to a forgotten
/// stream makes it send one more RST_STREAM frame, which shifts every later random draw of the
/// simulated network, so replays diverge depending on how fast the machine ran. Remembering
/// for longer than any run takes makes it a pure function of the simulation again; the number
/// remembered stays bounded by h2's own cap (10 streams per connection).
const RESET_STREAM_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// An accepted (or dialed) turmoil stream, with what tonic's server needs of it.
pub struct SimStream(pub turmoil::net::TcpStream);

impl Connected for SimStream {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections accepted on `port` of the current host, as tonic's `serve_with_incoming`
/// wants them. Binding happens before the stream is returned, so a caller knows the port is
/// served from then on.
pub async fn incoming(port: u16) -> io::Result<impl futures::Stream<Item = io::Result<SimStream>> + Send + 'static> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
    Ok(futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| SimStream(stream));
        Some((accepted, listener))
    }))
}

/// A tonic server builder with the keep-alive that frees a stalled connection's resources.
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
}

/// Dials `uri`'s host and port through the simulated network.
async fn dial(uri: Uri) -> io::Result<TokioIo<turmoil::net::TcpStream>> {
    let host = uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "uri without host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = turmoil::net::TcpStream::connect(format!("{host}:{port}")).await?;
    Ok(TokioIo::new(stream))
}

/// A lazily connected channel through the simulated network, configured from `endpoint`.
/// Must be called inside a simulated host (the channel's worker task is spawned there).
pub fn channel_on(endpoint: Endpoint) -> Channel {
    endpoint.http2_reset_stream_duration(RESET_STREAM_MEMORY).connect_with_connector_lazy(tower::service_fn(dial))
}

/// A client channel to a member's etcd API.
pub fn client_channel(member_host: &str) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{member_host}:{CLIENT_PORT}"))
        .expect("host names of the simulation are valid URIs")
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true);
    channel_on(endpoint)
}

/// The peer channel factory members use in the simulation: the production endpoint settings
/// ([`berth_store::raft::network::peer_endpoint`]) over simulated TCP.
pub fn peer_channel(url: &str) -> Result<Channel, String> {
    Ok(channel_on(berth_store::raft::network::peer_endpoint(url)?))
}
