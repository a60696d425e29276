//! The outbound listener: accept, find the original destination, detect the
//! protocol, then serve HTTP (Strait's HTTP/1.1 loop, hyper for HTTP/2 and
//! what that loop hands on) or proxy TCP / TLS.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use super::conn_exec::ConnExec;
use super::http::{handle, ConnInfo};
use super::{tcp, Shared};
use crate::proxy::h1;
use crate::runtime::table::PortProtocol;
use crate::transport::accept::AcceptBackoff;
use crate::transport::orig_dst::OriginalDst;
use crate::transport::sniff::{sniff, Sniffed};
use crate::transport::tls;

/// Accepts connections until the listener fails.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    orig: Arc<dyn OriginalDst>,
) -> std::io::Result<()> {
    serve_counted(shared, listener, orig, Arc::new(AtomicUsize::new(0))).await
}

/// Like [`serve`], keeping `live` = the connections being served (for
/// draining on shutdown).
pub async fn serve_counted(
    shared: Arc<Shared>,
    listener: TcpListener,
    orig: Arc<dyn OriginalDst>,
    live: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let listen_addr = listener.local_addr()?;
    let mut backoff = AcceptBackoff::new("outbound listener");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => {
                backoff.accepted();
                s
            }
            // Out of file descriptors and the like: keep serving, but
            // back off instead of spinning a core on a listener that
            // stays readable.
            Err(e) if is_transient(&e) => {
                backoff.failed(&e).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(slot) = ConnSlot::take(&shared) else {
            overloaded(&shared, stream, peer, listen_addr, &*orig);
            continue;
        };
        let local = stream.local_addr().unwrap_or(listen_addr);
        let Some(dst) = orig.original_destination(peer, local) else {
            continue;
        };
        if dst == listen_addr {
            // Would loop back into the proxy (Envoy's BlackHoleCluster).
            continue;
        }
        let shared = shared.clone();
        let guard = LiveGuard::new(&live);
        tokio::spawn(async move {
            connection(shared, stream, peer, dst).await;
            drop(guard);
            drop(slot);
        });
    }
}

/// One of `settings.max_connections` client connections, given back when
/// dropped.
struct ConnSlot(Arc<Shared>);

impl ConnSlot {
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        let max = shared.settings.max_connections;
        let n = shared.connections.fetch_add(1, Ordering::AcqRel);
        if n >= max {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(shared.clone()))
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Envoy's overload reply: `503`, body `envoy overloaded`.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 16\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nenvoy overloaded";

/// A connection over the cap: on a port declared HTTP it gets Envoy's
/// overload reply (without reading the request), on any other it is
/// closed at once. Logged with flag `OL`. Never blocks the accept loop.
fn overloaded(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    listen_addr: SocketAddr,
    orig: &dyn OriginalDst,
) {
    let local = stream.local_addr().unwrap_or(listen_addr);
    let dst = orig.original_destination(peer, local);
    let http = dst.is_some_and(|d| {
        shared.table.load().service(d).is_some_and(|s| {
            matches!(
                s.protocol,
                PortProtocol::Http | PortProtocol::Http2 | PortProtocol::Grpc
            )
        })
    });
    if shared.sink.enabled() {
        shared.sink.log(super::AccessLogRecord {
            start_time: Some(std::time::SystemTime::now()),
            request_protocol: if http { "http" } else { "tcp" },
            response_code: if http { 503 } else { 0 },
            response_flags: super::ResponseFlags::OVERLOAD_MANAGER,
            response_code_details: Some("overload"),
            downstream_local_address: dst,
            downstream_remote_address: Some(peer),
            ..Default::default()
        });
    }
    if http {
        // Non-blocking; a reply that does not fit the socket buffer at
        // once is simply cut (the socket buffer is far larger).
        let _ = stream.try_write(OVERLOADED);
    }
    drop(stream);
}

/// Counts one connection being served until dropped.
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::AcqRel);
        Self(live.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    ) || e
        .raw_os_error()
        .is_some_and(|c| c == libc::EMFILE || c == libc::ENFILE)
}

async fn connection(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, dst: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let table = shared.table.load_full();
    let declared = table
        .service(dst)
        .map_or(PortProtocol::Unknown, |s| s.protocol);
    let timeout = shared.settings.protocol_detection_timeout;
    let (http, sniffed) = match declared {
        PortProtocol::Http | PortProtocol::Http2 | PortProtocol::Grpc => (true, false),
        PortProtocol::Tcp => (false, false),
        PortProtocol::Tls => {
            let sni = tls::peek_sni(&stream, timeout).await;
            tcp::proxy(shared, table, stream, peer, dst, sni).await;
            return;
        }
        PortProtocol::Unknown => match sniff(&stream, timeout).await {
            Ok(Sniffed::Http1 | Sniffed::Http2) => (true, true),
            Ok(Sniffed::Tls) => {
                let sni = tls::peek_sni(&stream, timeout).await;
                tcp::proxy(shared, table, stream, peer, dst, sni).await;
                return;
            }
            Ok(Sniffed::Opaque) => (false, true),
            Err(_) => return,
        },
    };
    if !http {
        tcp::proxy(shared, table, stream, peer, dst, None).await;
        return;
    }
    drop(table);
    let info_settings = shared.settings.clone();
    let info = Arc::new(ConnInfo {
        shared,
        dst,
        peer,
        sniffed,
        peer_info: crate::telemetry::PeerInfo::plaintext(),
    });
    // HTTP/1.1 on Strait's own loop; hyper takes over what it hands on
    // (HTTP/2, upgrades, streamed uploads), with the bytes read so far.
    let io = match h1::server::serve(info.clone(), stream).await {
        h1::server::Handoff::Done => return,
        h1::server::Handoff::Hyper(io) => io,
    };
    // Boxed: hyper keeps the request's future in place while it runs,
    // so it moves a pointer instead of the whole (kilobytes) future.
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (parts, body) = req.into_parts();
        Box::pin(handle(info.clone(), parts.into(), body))
    });
    // HTTP/2 streams run in this task, each response written when done.
    let exec = ConnExec::default();
    let mut builder = auto::Builder::new(exec.clone());
    // The same limits as Strait's own loop: heads over 60 KiB get 431
    // (hyper answers 431 when its read buffer fills before the head
    // ends), and a head must arrive within the request-headers timeout
    // (hyper's timer also closes a connection idle that long between
    // requests).
    builder
        .http1()
        .keep_alive(true)
        .max_buf_size(h1::server::MAX_HEAD)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(info_settings.request_headers_timeout);
    builder.http2().max_concurrent_streams(Some(1024));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    let _ = exec.drive(conn).await;
}
