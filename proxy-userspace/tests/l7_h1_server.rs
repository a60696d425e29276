//! The outbound listener's own HTTP/1.1 loop (`proxy::h1::server`) seen
//! from a raw client: pipelined requests answered in order, `HEAD`,
//! `connection: close`, a `date` header, small request bodies, and the
//! requests it hands to hyper (HTTP/1.0, oversized bodies) still served.
mod support;

use std::time::Duration;

use support::MeshBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn mesh() -> support::Mesh {
    let mut b = MeshBuilder::new();
    b.service("ratings", 9080, "http", &[("ratings-v1", &[])])
        .await;
    b.start().await
}

/// Writes `req` and reads until `done` holds for what arrived (or EOF).
async fn exchange(s: &mut TcpStream, req: &[u8], done: impl Fn(&str) -> bool) -> String {
    s.write_all(req).await.unwrap();
    let mut got = Vec::new();
    let read = async {
        loop {
            let mut b = [0u8; 8192];
            let n = s.read(&mut b).await.unwrap();
            got.extend_from_slice(&b[..n]);
            if n == 0 || done(&String::from_utf8_lossy(&got)) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("response in time");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let mesh = mesh().await;
    let mut s = TcpStream::connect(mesh.fronts["ratings"]).await.unwrap();
    let two = b"GET /status/201 HTTP/1.1\r\nhost: ratings\r\n\r\nGET /status/202 HTTP/1.1\r\nhost: ratings\r\n\r\n";
    let out = exchange(&mut s, two, |t| t.matches("ratings-v1").count() >= 4).await;
    let first = out.find("HTTP/1.1 201 Created").expect(&out);
    let second = out.find("HTTP/1.1 202 Accepted").expect(&out);
    assert!(first < second, "{out}");
    assert!(out.to_ascii_lowercase().contains("\r\ndate: "), "{out}");
    // The connection stays open for more.
    let out = exchange(&mut s, b"GET / HTTP/1.1\r\nhost: ratings\r\n\r\n", |t| {
        t.contains("\r\n\r\nratings-v1")
    })
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
}

#[tokio::test]
async fn head_close_and_bodies() {
    let mesh = mesh().await;
    let front = mesh.fronts["ratings"];
    // HEAD: the head only, then the next response on the same connection.
    let mut s = TcpStream::connect(front).await.unwrap();
    let out = exchange(
        &mut s,
        b"HEAD / HTTP/1.1\r\nhost: ratings\r\n\r\nGET /status/203 HTTP/1.1\r\nhost: ratings\r\n\r\n",
        |t| t.contains("\r\n\r\nratings-v1"),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let second = out.find("HTTP/1.1 203").expect(&out);
    assert!(
        !out[..second].ends_with("ratings-v1"),
        "HEAD has no body: {out}"
    );

    // `connection: close`: answered with it, then the proxy closes.
    let mut s = TcpStream::connect(front).await.unwrap();
    let out = exchange(
        &mut s,
        b"POST / HTTP/1.1\r\nhost: ratings\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello",
        |_| false,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    let seen = mesh.backend("ratings", "ratings-v1").seen();
    assert_eq!(&seen.last().unwrap().body[..], b"hello");

    // Handed to hyper: HTTP/1.0, and a body over 64 KiB.
    let mut s = TcpStream::connect(front).await.unwrap();
    let out = exchange(&mut s, b"GET / HTTP/1.0\r\nhost: ratings\r\n\r\n", |_| {
        false
    })
    .await;
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
    let mut s = TcpStream::connect(front).await.unwrap();
    let mut big = b"PUT / HTTP/1.1\r\nhost: ratings\r\ncontent-length: 100000\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 100_000));
    let out = exchange(&mut s, &big, |t| t.contains("\r\n\r\nratings-v1")).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let seen = mesh.backend("ratings", "ratings-v1").seen();
    assert_eq!(seen.last().unwrap().body.len(), 100_000);
}
