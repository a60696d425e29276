//! Test servers in a pod's (or the node's) network namespace, each on a
//! thread of its own for the rest of the test: a TCP server that greets
//! every client ([`tcp`]), a minimal HTTP/1.1 server ([`http`]) and a
//! hyper server for HTTP/1.1, h2c and gRPC ([`hyper`]). The first two
//! record what they saw ([`Seen`]) so a test can assert that a refused
//! client never reached the workload.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

/// What a test server saw: one entry per accepted connection, in order:
/// (peer, what the client sent). [`tcp`] pushes the entry when it accepts
/// (with "" until it has read, see [`Then`]); [`http`] when it has read the
/// request head, with the request line.
pub type Seen = Arc<Mutex<Vec<(SocketAddr, String)>>>;

/// The peers' addresses of `seen` (IPv4-mapped IPv6 made IPv4).
pub fn peers(seen: &Seen) -> Vec<IpAddr> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.ip().to_canonical())
        .collect()
}

/// Binds `addr` inside the network namespace `netns` (a pod's
/// [`super::Pod::netns`] or [`super::Node::netns`]).
pub fn listen(netns: &str, addr: impl Into<SocketAddr>) -> anyhow::Result<TcpListener> {
    let addr = addr.into();
    super::netns::run_in(netns, || TcpListener::bind(addr))
        .with_context(|| format!("enter {netns}"))?
        .with_context(|| format!("bind {addr} in {netns}"))
}

/// What [`tcp`] does after its greeting.
#[derive(Clone, Copy, Debug)]
pub enum Then {
    /// Closes at once.
    Close,
    /// Reads one line (what the client sends first; 5 s at most) and
    /// records it, then closes.
    ReadLine,
    /// Records everything the client sends until it closes (or is silent
    /// for the given time), then closes.
    ReadToEnd(Duration),
}

/// A server-first TCP server on `l`: writes `greeting(peer)` and a newline
/// to every client, then does `then`.
pub fn tcp(
    l: TcpListener,
    greeting: impl Fn(SocketAddr) -> String + Send + 'static,
    then: Then,
) -> Seen {
    serve(l, move |mut c, peer, seen| {
        let i = {
            let mut s = seen.lock().unwrap();
            s.push((peer, String::new()));
            s.len() - 1
        };
        let _ = writeln!(c, "{}", greeting(peer));
        let got = match then {
            Then::Close => return,
            Then::ReadLine => {
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                let _ = BufReader::new(&c).read_line(&mut line);
                line
            }
            Then::ReadToEnd(silence) => {
                let _ = c.set_read_timeout(Some(silence));
                let mut buf = Vec::new();
                let _ = c.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            }
        };
        seen.lock().unwrap()[i].1 = got;
    })
}

/// An HTTP/1.1 server on `l`: reads each request's head (5 s at most),
/// records (peer, request line), answers `200` with `body(peer, path)` and
/// closes.
pub fn http(l: TcpListener, body: impl Fn(SocketAddr, &str) -> String + Send + 'static) -> Seen {
    serve(l, move |mut c, peer, seen| {
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let mut r = BufReader::new(&c);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        seen.lock().unwrap().push((peer, line.trim().to_string()));
        let body = body(peer, &path);
        let _ = write!(
            c,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    })
}

/// Accepts on `l` on a thread of its own and hands each connection (one
/// after the other) to `each` with its peer and the server's [`Seen`].
fn serve(l: TcpListener, each: impl Fn(TcpStream, SocketAddr, &Seen) + Send + 'static) -> Seen {
    let seen: Seen = Default::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let Ok(peer) = c.peer_addr() else { continue };
            each(c, peer, &s);
        }
    });
    seen
}

/// A hyper server (HTTP/1.1 and h2c, by what the client speaks) on each
/// of `listeners`, on a thread with its own runtime: every request gets
/// `handle(peer, &request)` (the request body is not read).
pub fn hyper<B, F>(listeners: Vec<TcpListener>, handle: F)
where
    F: Fn(SocketAddr, &http::Request<hyper::body::Incoming>) -> http::Response<B>
        + Send
        + Sync
        + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    for l in &listeners {
        l.set_nonblocking(true).expect("non-blocking listener");
    }
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            for l in listeners {
                let l = tokio::net::TcpListener::from_std(l).expect("listener");
                let handle = handle.clone();
                tokio::spawn(async move {
                    loop {
                        let Ok((s, peer)) = l.accept().await else {
                            continue;
                        };
                        let handle = handle.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(
                                move |req: http::Request<hyper::body::Incoming>| {
                                    let resp = handle(peer, &req);
                                    async move { Ok::<_, std::convert::Infallible>(resp) }
                                },
                            );
                            let _ = hyper_util::server::conn::auto::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                            .await;
                        });
                    }
                });
            }
            std::future::pending::<()>().await
        });
    });
}
