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
use super::orig_dst::OriginalDst;
use super::sniff::{sniff, Sniffed};
use super::table::PortProtocol;
use super::{h1, tcp, tls, Shared};

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
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            // Out of file descriptors and the like: keep serving.
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
            Err(e) => return Err(e),
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
        });
    }
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
    let info = Arc::new(ConnInfo {
        shared,
        dst,
        peer,
        sniffed,
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
    // No header-read timer: Envoy's `request_headers_timeout` is off by
    // default too, and arming a timer per request costs CPU.
    // HTTP/2 streams run in this task, each response written when done.
    let exec = ConnExec::default();
    let mut builder = auto::Builder::new(exec.clone());
    builder.http1().keep_alive(true);
    builder.http2().max_concurrent_streams(Some(1024));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    let _ = exec.drive(conn).await;
}
