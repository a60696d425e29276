//! Protocols through the proxy: HTTP/2 (prior knowledge), gRPC unary and
//! streaming with trailers and a gRPC abort fault, WebSocket-style upgrade,
//! opaque TCP routes, TLS passthrough by SNI, protocol sniffing, and an
//! atomic snapshot swap with a request in flight.
mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::backend::{grpc_frame, grpc_messages};
use support::client::Client;
use support::tcp::{client_hello, exchange};
use support::{Kind, MeshBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn http2_downstream_to_http1_and_http2_upstreams() {
    let mut b = MeshBuilder::new();
    b.service("web", 80, "http", &[("web-1", &[])]).await;
    b.service("h2svc", 81, "http2", &[("h2-1", &[])]).await;
    let mesh = b.start().await;
    let c = Client::http2();
    let r = c.get(&mesh.url("web", "/x"), &[]).await;
    assert_eq!((r.status.as_u16(), r.served_by()), (200, Some("web-1")));
    assert_eq!(
        mesh.backend("web", "web-1").seen()[0].version,
        http::Version::HTTP_11
    );
    let r = c.get(&mesh.url("h2svc", "/y"), &[]).await;
    assert_eq!((r.status.as_u16(), r.served_by()), (200, Some("h2-1")));
    let seen = &mesh.backend("h2svc", "h2-1").seen()[0];
    assert_eq!(seen.version, http::Version::HTTP_2);
    let front = mesh.fronts["h2svc"].to_string();
    assert_eq!(
        seen.authority.as_deref(),
        Some(front.as_str()),
        "the client's :authority, not the endpoint"
    );
    assert!(
        !seen.headers.contains_key("host"),
        "HTTP/2 carries the authority in :authority only"
    );
    let seen = &mesh.backend("web", "web-1").seen()[0];
    let front = mesh.fronts["web"].to_string();
    assert_eq!(
        seen.authority.as_deref(),
        Some(front.as_str()),
        "HTTP/2 :authority becomes Host"
    );
    // HTTP/1.1 keep-alive client on the same port works too.
    let h1 = Client::http1();
    for _ in 0..3 {
        assert_eq!(h1.get(&mesh.url("web", "/"), &[]).await.status, 200);
    }
    let logs = mesh.logs().await;
    assert_eq!(logs[0].protocol, Some("HTTP/2"));
}

/// A raw HTTP/2 connection to the proxy for gRPC calls.
async fn h2_conn(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<GrpcBody> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

type GrpcBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn grpc_request(path: &str, body: GrpcBody) -> http::Request<GrpcBody> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://grpc:50051{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap()
}

/// Service `grpc` (port 50051, `grpc`, one pod `grpc-1`) whose
/// VirtualService aborts every call under `/test.Echo/Aborted` with gRPC
/// status `abort` (a name such as `UNAVAILABLE`) and routes the rest.
/// Returns the running mesh.
async fn grpc_mesh(abort: &str) -> support::Mesh {
    let mut b = MeshBuilder::new();
    b.service("grpc", 50051, "grpc", &[("grpc-1", &[])]).await;
    b.yaml(&support::yaml::virtual_service(
        "grpc",
        &format!(
            "
  - match: [{{uri: {{prefix: /test.Echo/Aborted}}}}]
    fault: {{abort: {{percentage: {{value: 100}}, grpcStatus: {abort}}}}}
    route: [{{destination: {{host: grpc}}}}]
  - route: [{{destination: {{host: grpc}}}}]
"
        ),
    ));
    b.start().await
}

#[tokio::test]
async fn grpc_unary_streaming_trailers_and_abort() {
    let mesh = grpc_mesh("UNAVAILABLE").await;
    let mut send = h2_conn(mesh.fronts["grpc"]).await;

    // Unary.
    let body = http_body_util::Full::new(grpc_frame(b"hello")).boxed();
    let resp = send
        .send_request(grpc_request("/test.Echo/Unary", body))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-served-by-trailer"], "grpc-1");
    assert_eq!(
        grpc_messages(&collected.to_bytes()),
        vec![Bytes::from("grpc-1:hello")]
    );

    // Bidirectional streaming: each reply arrives before the next message is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    let stream = futures_stream(rx);
    let resp = send
        .send_request(grpc_request(
            "/test.Echo/Stream",
            StreamBody::new(stream).boxed(),
        ))
        .await
        .unwrap();
    let mut body = resp.into_body();
    for i in 0..3 {
        tx.send(Ok(Frame::data(grpc_frame(format!("m{i}").as_bytes()))))
            .await
            .unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let data = frame.into_data().unwrap();
        assert_eq!(
            grpc_messages(&data),
            vec![Bytes::from(format!("grpc-1:m{i}"))]
        );
    }
    drop(tx);
    let mut trailers = None;
    while let Some(f) = body.frame().await {
        if let Ok(t) = f.unwrap().into_trailers() {
            trailers = Some(t);
        }
    }
    assert_eq!(trailers.unwrap()["grpc-status"], "0");

    // An error status from the server arrives intact in the trailers.
    let body = http_body_util::Full::new(grpc_frame(b"x")).boxed();
    let resp = send
        .send_request(grpc_request("/test.Echo/Fail", body))
        .await
        .unwrap();
    let t = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .trailers()
        .cloned()
        .unwrap();
    assert_eq!(t["grpc-status"], "14");
    assert_eq!(t["grpc-message"], "backend unavailable");

    // gRPC abort fault: HTTP 200, grpc-status 14 (trailers-only).
    let before = mesh.backend("grpc", "grpc-1").hits();
    let body = http_body_util::Full::new(grpc_frame(b"x")).boxed();
    let resp = send
        .send_request(grpc_request("/test.Echo/Aborted", body))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "14");
    assert_eq!(mesh.backend("grpc", "grpc-1").hits(), before);
    let logs = mesh.logs().await;
    let aborted = logs
        .iter()
        .find(|l| l.response_flags.to_string() == "FI")
        .unwrap();
    assert_eq!(
        (aborted.request_protocol, aborted.grpc_status),
        ("grpc", Some(14))
    );
}

fn futures_stream(
    rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::convert::Infallible>>,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>>
       + Send
       + Sync
       + 'static {
    struct S(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::convert::Infallible>>);
    impl futures_core::Stream for S {
        type Item = Result<Frame<Bytes>, std::convert::Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
    S(rx)
}

#[tokio::test]
async fn websocket_upgrade_tunnels_bytes() {
    let mut b = MeshBuilder::new();
    b.service("ws", 8080, "http", &[("ws-1", &[])]).await;
    let mesh = b.start().await;
    let mut s = tokio::net::TcpStream::connect(mesh.fronts["ws"])
        .await
        .unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws:8080\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"hello").await.unwrap();
    let mut buf = vec![0u8; "ws-1:hello".len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf, b"ws-1:hello");
}

#[tokio::test]
async fn tcp_routes_tls_sni_and_sniffing() {
    let mut b = MeshBuilder::new();
    b.versioned(Kind::Tcp, "db", 3306, "tcp", &["v1", "v2"])
        .await;
    b.versioned(Kind::Tcp, "secure", 443, "tls", &["a", "b"])
        .await;
    b.tcp_service("opaque", 7000, "custom", &[("opaque-1", &[])])
        .await;
    b.service("sniffed", 7001, "custom", &[("sniffed-1", &[])])
        .await;
    b.yaml(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: default}
spec:
  host: db
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 3306}]
    route: [{destination: {host: db, subset: v2, port: {number: 3306}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: default}
spec:
  host: secure
  subsets: [{name: a, labels: {version: a}}, {name: b, labels: {version: b}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure, a.example.com, "*.example.org"]
  tls:
  - match: [{port: 443, sniHosts: [a.example.com]}]
    route: [{destination: {host: secure, subset: a}}]
  - match: [{port: 443, sniHosts: ["*.example.org"]}]
    route: [{destination: {host: secure, subset: b}}]
"#,
    );
    let mesh = b.start().await;

    let got = exchange(mesh.fronts["db"], b"ping", "db-v2:ping".len()).await;
    assert_eq!(got, b"db-v2:ping");

    let hello = client_hello("a.example.com");
    let got = exchange(
        mesh.fronts["secure"],
        &hello,
        "secure-a:".len() + hello.len(),
    )
    .await;
    assert!(
        got.starts_with(b"secure-a:"),
        "{:?}",
        String::from_utf8_lossy(&got[..9])
    );
    assert_eq!(
        &got["secure-a:".len()..],
        &hello[..],
        "ClientHello passed through untouched"
    );
    let hello = client_hello("www.example.org");
    let got = exchange(mesh.fronts["secure"], &hello, 9).await;
    assert!(got.starts_with(b"secure-b:"));

    // Undeclared protocol: opaque bytes go through as TCP...
    let got = exchange(
        mesh.fronts["opaque"],
        b"\x00\x01binary",
        "opaque-1:".len() + 8,
    )
    .await;
    assert_eq!(got, b"opaque-1:\x00\x01binary");
    // ... and HTTP is detected and routed as HTTP.
    let r = Client::http1().get(&mesh.url("sniffed", "/"), &[]).await;
    assert_eq!((r.status.as_u16(), r.served_by()), (200, Some("sniffed-1")));

    let logs = mesh.logs().await;
    let tls = logs
        .iter()
        .find(|l| l.requested_server_name.as_deref() == Some("a.example.com"))
        .unwrap();
    assert_eq!(
        &*tls.upstream_cluster.clone().unwrap(),
        "outbound|443|a|secure.default.svc.cluster.local"
    );
}

#[tokio::test]
async fn snapshot_swap_is_atomic_and_in_flight_requests_finish() {
    let mut b = MeshBuilder::new();
    b.versioned(Kind::Http, "reviews", 9080, "http", &["v1", "v2"])
        .await;
    let dr = &support::yaml::destination_rule(
        "reviews",
        r#"
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"#,
    );
    let vs = |subset: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n"
        )
    };
    b.yaml(dr);
    let mut mesh = b.start().await;
    let services_yaml = mesh.yaml.clone();
    mesh.replace_istio(&services_yaml, &vs("v1"));
    let c = Client::http1();
    assert_eq!(
        c.get(&mesh.url("reviews", "/"), &[]).await.served_by(),
        Some("reviews-v1")
    );
    let url = mesh.url("reviews", "/delay/300");
    let in_flight = tokio::spawn(async move { Client::http1().get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    mesh.replace_istio(&services_yaml, &vs("v2"));
    assert_eq!(
        c.get(&mesh.url("reviews", "/"), &[]).await.served_by(),
        Some("reviews-v2")
    );
    let r = in_flight.await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.served_by()),
        (200, Some("reviews-v1"))
    );
}

/// Raw-bytes gRPC codec, so tonic needs no protobuf code generation.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf;
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

#[tokio::test]
async fn tonic_client_sees_messages_and_statuses_through_the_proxy() {
    let mesh = grpc_mesh("RESOURCE_EXHAUSTED").await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", mesh.fronts["grpc"]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let path = |p: &'static str| http::uri::PathAndQuery::from_static(p);

    grpc.ready().await.unwrap();
    let resp = grpc
        .unary(
            tonic::Request::new(Bytes::from("hi")),
            path("/test.Echo/Unary"),
            RawCodec,
        )
        .await
        .unwrap();
    assert_eq!(resp.into_inner(), "grpc-1:hi");

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    let outbound = MessageStream(rx);
    grpc.ready().await.unwrap();
    let mut replies = grpc
        .streaming(
            tonic::Request::new(outbound),
            path("/test.Echo/Stream"),
            RawCodec,
        )
        .await
        .unwrap()
        .into_inner();
    for i in 0..3 {
        tx.send(Ok(Frame::data(Bytes::from(format!("s{i}")))))
            .await
            .unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m, Some(Bytes::from(format!("grpc-1:s{i}"))));
    }
    drop(tx);
    assert_eq!(
        replies.message().await.unwrap(),
        None,
        "stream ends with status OK"
    );

    grpc.ready().await.unwrap();
    let err = grpc
        .unary(
            tonic::Request::new(Bytes::from("x")),
            path("/test.Echo/Fail"),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::Unavailable, "backend unavailable")
    );

    grpc.ready().await.unwrap();
    let err = grpc
        .unary(
            tonic::Request::new(Bytes::from("x")),
            path("/test.Echo/Aborted"),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::ResourceExhausted, "fault filter abort")
    );
}

/// Client messages for tonic, fed from a channel one at a time.
struct MessageStream(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::convert::Infallible>>);

impl futures_core::Stream for MessageStream {
    type Item = Bytes;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Bytes>> {
        self.0
            .poll_recv(cx)
            .map(|m| m.and_then(|f| f.ok()).and_then(|f| f.into_data().ok()))
    }
}
