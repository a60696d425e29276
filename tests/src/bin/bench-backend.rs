//! The one backend every `cargo xtask bench` contender talks to, so the
//! proxies are compared against the same upstream.
//!
//! `bench-backend [--tcp IP:PORT]... [--http IP:PORT]...`
//!
//! - `--tcp`: per connection, read one request (up to 1 KiB), answer `OK\n`
//!   and close: the L4 connect+request+close case.
//! - `--http`: HTTP/1.1 keep-alive and HTTP/2 cleartext (prior knowledge) on
//!   the same port (hyper-util's auto server); every request gets
//!   `200` with a 20-byte `text/plain` body.
//!
//! Tokio runs one worker thread per CPU this process may use (taskset).
//! Prints `ready` on stdout once every listener is bound.
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{service::service_fn, Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &[u8] = b"hello from backend!\n";

fn main() {
    let mut tcp = Vec::new();
    let mut http = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let addr: SocketAddr = match it.next().map(|v| v.parse()) {
            Some(Ok(a)) => a,
            _ => usage(&format!("{flag} needs IP:PORT")),
        };
        match flag.as_str() {
            "--tcp" => tcp.push(addr),
            "--http" => http.push(addr),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if tcp.is_empty() && http.is_empty() {
        usage("nothing to serve");
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for addr in tcp {
            let l = bind(addr).await;
            tasks.push(tokio::spawn(serve_tcp(l)));
        }
        for addr in http {
            let l = bind(addr).await;
            tasks.push(tokio::spawn(serve_http(l)));
        }
        println!("ready");
        for t in tasks {
            let _ = t.await;
        }
    });
}

fn usage(msg: &str) -> ! {
    eprintln!("bench-backend: {msg}");
    eprintln!("usage: bench-backend [--tcp IP:PORT]... [--http IP:PORT]...");
    std::process::exit(2);
}

async fn bind(addr: SocketAddr) -> TcpListener {
    match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench-backend: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    }
}

async fn serve_tcp(l: TcpListener) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = reply_ok(s).await;
        });
    }
}

async fn reply_ok(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = [0u8; 1024];
    let _ = s.read(&mut buf).await?;
    s.write_all(b"OK\n").await?;
    s.shutdown().await
}

async fn serve_http(l: TcpListener) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
                resp.headers_mut()
                    .insert("content-type", "text/plain".parse().expect("static"));
                Ok::<_, Infallible>(resp)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}
