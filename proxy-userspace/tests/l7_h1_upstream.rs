//! The HTTP/1.1 upstream codec (`proxy::h1`) against a raw backend that
//! frames its responses every way RFC 9112 allows: chunked with trailers,
//! read-until-close, a keep-alive connection the backend closes while it
//! sits in the pool, and request bodies by length and chunked.
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Method;
use strait::serve::Proxy;
use support::client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the raw backend saw: (connection number, request line, framing,
/// body).
type Seen = Arc<Mutex<Vec<(usize, String, &'static str, Vec<u8>)>>>;

/// A backend that answers by path:
/// - `/chunked`: `hello world` in two chunks plus trailer `x-t: done`;
/// - `/close`: a body delimited by closing the connection;
/// - `/stale`: a normal response, then closes the idle connection;
/// - anything else: `conn=<n> len=<body length>`.
async fn raw_backend() -> (SocketAddr, Seen) {
    let l = TcpListener::bind((support::fresh_ip(), 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(serve(sock, n, s2.clone()));
        }
    });
    (addr, seen)
}

async fn serve(mut sock: TcpStream, conn: usize, seen: Seen) {
    let mut buf = Vec::new();
    loop {
        // Read a head.
        let (line, te, len, used) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut hs);
            if let Ok(httparse::Status::Complete(used)) = req.parse(&buf) {
                let line = format!("{} {}", req.method.unwrap(), req.path.unwrap());
                let te = req
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
                let len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |h| {
                        std::str::from_utf8(h.value).unwrap().parse().unwrap()
                    });
                break (line, te, len, used);
            }
            let mut b = [0u8; 4096];
            match sock.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        };
        buf.drain(..used);
        // Read the body: by length, or chunked up to the last chunk.
        let body = if te {
            while !buf.windows(5).any(|w| w == b"0\r\n\r\n") {
                let mut b = [0u8; 4096];
                let n = sock.read(&mut b).await.unwrap();
                buf.extend_from_slice(&b[..n]);
            }
            let end = buf.windows(5).position(|w| w == b"0\r\n\r\n").unwrap() + 5;
            let raw: Vec<u8> = buf.drain(..end).collect();
            dechunk(&raw)
        } else {
            while buf.len() < len {
                let mut b = [0u8; 65536];
                let n = sock.read(&mut b).await.unwrap();
                buf.extend_from_slice(&b[..n]);
            }
            buf.drain(..len).collect()
        };
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        let blen = body.len();
        seen.lock()
            .unwrap()
            .push((conn, line, if te { "chunked" } else { "length" }, body));
        match path.as_str() {
            "/chunked" => {
                let r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-t\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-t: done\r\n\r\n";
                sock.write_all(r).await.unwrap();
            }
            "/close" => {
                sock.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close")
                    .await
                    .unwrap();
                return;
            }
            _ => {
                let text = format!("conn={conn} len={blen}");
                let r = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                );
                sock.write_all(r.as_bytes()).await.unwrap();
                if path == "/stale" {
                    return;
                }
            }
        }
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let httparse::Status::Complete((used, size)) = httparse::parse_chunk_size(raw).unwrap()
        else {
            panic!("partial chunk")
        };
        raw = &raw[used..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size as usize]);
        raw = &raw[size as usize + 2..];
    }
}

/// A proxy for service `raw` (VIP never bound) whose one endpoint is
/// `backend`; returns the front listener's address.
async fn proxy_to(backend: SocketAddr) -> SocketAddr {
    let yaml = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: raw, namespace: default}}
spec:
  clusterIP: 127.0.250.9
  selector: {{app: raw}}
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: raw-1, namespace: default, labels: {{app: raw}}}}
status: {{podIP: {ip}}}
",
        port = backend.port(),
        ip = backend.ip()
    );
    let proxy = Proxy::new(&support::compile(&yaml)).unwrap();
    let dst: SocketAddr = "127.0.250.9:80".parse().unwrap();
    support::front::serve_fixed(proxy, dst).await.0
}

fn conns(seen: &Seen) -> Vec<usize> {
    seen.lock().unwrap().iter().map(|s| s.0).collect()
}

#[tokio::test]
async fn chunked_response_keeps_trailers_and_the_connection() {
    let (be, seen) = raw_backend().await;
    let front = proxy_to(be).await;
    let h1 = Client::http1();
    let r = h1.get(&format!("http://{front}/chunked"), &[]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "hello world"));
    // Over HTTP/2 downstream the upstream's chunked trailers arrive as
    // HTTP/2 trailers.
    let r = Client::http2()
        .get(&format!("http://{front}/chunked"), &[])
        .await;
    assert_eq!(r.body, "hello world");
    let t = r.trailers.expect("trailers forwarded");
    assert_eq!(t["x-t"], "done");
    let r = h1.get(&format!("http://{front}/next"), &[]).await;
    assert_eq!(r.status, 200);
    // Every request went over the one pooled upstream connection.
    assert_eq!(conns(&seen), vec![0, 0, 0]);
}

#[tokio::test]
async fn close_delimited_body_and_stale_pooled_connection() {
    let (be, seen) = raw_backend().await;
    let front = proxy_to(be).await;
    let h1 = Client::http1();
    let r = h1.get(&format!("http://{front}/close"), &[]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "until close"));
    // That connection cannot be reused: the next request dials anew.
    let r = h1.get(&format!("http://{front}/stale"), &[]).await;
    assert_eq!(r.body, "conn=1 len=0");
    // The backend closed connection 1 after answering; the proxy finds its
    // pooled connection dead and sends the request once more on a new one.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let r = h1.get(&format!("http://{front}/after"), &[]).await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "conn=2 len=0"));
    // A request with a body is checked against a dead pooled connection
    // before it is sent (it could not be sent twice).
    let r = h1.get(&format!("http://{front}/stale"), &[]).await;
    assert_eq!(r.body, "conn=2 len=0");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let r = h1
        .send(
            Method::POST,
            &format!("http://{front}/post"),
            &[],
            Bytes::from_static(b"abc"),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "conn=3 len=3"));
    // No request reached the backend twice.
    assert_eq!(conns(&seen), vec![0, 1, 2, 2, 3]);
}

#[tokio::test]
async fn request_bodies_by_length_and_chunked_arrive_intact() {
    let (be, seen) = raw_backend().await;
    let front = proxy_to(be).await;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let r = Client::http1()
        .send(
            Method::PUT,
            &format!("http://{front}/big"),
            &[],
            Bytes::from(big.clone()),
        )
        .await;
    assert_eq!(r.body, "conn=0 len=300000");
    // A chunked request from a raw client.
    let mut s = TcpStream::connect(front).await.unwrap();
    s.write_all(b"POST /chunked-in HTTP/1.1\r\nhost: raw\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    while !String::from_utf8_lossy(&resp).contains("len=11") {
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "response: {}", String::from_utf8_lossy(&resp));
        resp.extend_from_slice(&b[..n]);
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].3, big);
    assert_eq!(seen[1].1, "POST /chunked-in");
    assert_eq!(
        (seen[1].2, &seen[1].3[..]),
        ("chunked", &b"hello world"[..])
    );
}
