//! TLS origination (DestinationRule `trafficPolicy.tls` SIMPLE / MUTUAL,
//! Istio's "Egress TLS origination" task): a client speaks plain HTTP (or
//! TCP) to a ServiceEntry host, the proxy opens TLS to the endpoint. The
//! upstream is a rustls server on loopback with certificates made here.
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use strait::serve::{AccessLogRecord, Proxy};
use support::client::Client;
use support::front::next_record as record;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The serial number of every leaf made here.
const LEAF_SERIAL: u64 = 4242;

/// A CA and what it signed.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf for `sans` (DNS names or URIs).
    fn leaf(&self, sans: &[&str]) -> (rcgen::Certificate, KeyPair) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        for s in sans {
            p.subject_alt_names.push(if s.contains("://") {
                rcgen::SanType::URI((*s).try_into().unwrap())
            } else {
                rcgen::SanType::DnsName((*s).try_into().unwrap())
            });
        }
        // Every leaf has serial LEAF_SERIAL (the CRL test revokes it).
        p.serial_number = Some(rcgen::SerialNumber::from(LEAF_SERIAL));
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert, key)
    }
}

/// PEM files in a directory removed on drop.
struct Files(PathBuf);

impl Files {
    fn new() -> Files {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("strait-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Files(d)
    }
    fn write(&self, name: &str, pem: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, pem).unwrap();
        p.display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test PKI: the server's CA, an unrelated CA, the clients' CA.
struct Pki {
    server_ca: Ca,
    other_ca: Ca,
    client_ca: Ca,
    files: Files,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            server_ca: Ca::new("server root"),
            other_ca: Ca::new("other root"),
            client_ca: Ca::new("client root"),
            files: Files::new(),
        }
    }
}

#[allow(deprecated)] // ring: the workspace's rustls provider
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side of the test PKI: a rustls server configuration whose
/// certificate is a leaf of `pki.server_ca` for `api.example.com`. With
/// `client_ca` it requires a client certificate from `pki.client_ca`. No
/// ALPN protocols are set.
fn server_config(pki: &Pki, client_ca: bool) -> rustls::ServerConfig {
    let (cert, key) = pki.server_ca.leaf(&["api.example.com"]);
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_ca {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(pki.client_ca.cert.der().to_vec()))
            .unwrap();
        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        builder.with_client_cert_verifier(v)
    } else {
        builder.with_no_client_auth()
    };
    builder.with_single_cert(chain, key).unwrap()
}

/// A TLS server on a fresh loopback address with configuration `cfg`: each
/// accepted connection's handshake runs in its own task and, when it
/// succeeds, `serve` is handed the TLS stream (a failed handshake just
/// closes the connection). Returns the listening address.
async fn tls_server<F, Fut>(cfg: rustls::ServerConfig, serve: F) -> SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind((support::fresh_ip(), 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            let serve = serve.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(sock).await {
                    serve(tls).await;
                }
            });
        }
    });
    addr
}

/// An HTTPS server (HTTP/1.1 and h2 by ALPN) whose responses say what it
/// saw: `sni=<name> client_cert=<bool> version=<HTTP version>`. With
/// `client_ca` it requires a client certificate from that CA.
async fn https_server(pki: &Pki, client_ca: bool) -> SocketAddr {
    let mut cfg = server_config(pki, client_ca);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tls_server(cfg, |tls| async move {
        let (_, session) = tls.get_ref();
        let sni = session.server_name().unwrap_or("-").to_string();
        let client_cert = session.peer_certificates().is_some_and(|c| !c.is_empty());
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let body = format!(
                "sni={sni} client_cert={client_cert} version={:?}",
                req.version()
            );
            async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
            }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tls), svc)
            .await;
    })
    .await
}

/// The common start of a test: a fresh [`Pki`], an [`https_server`] (with
/// `client_ca` as there) and the server CA written to `ca.pem`. Returns the
/// PKI, the server's address and the path of `ca.pem`.
async fn https_setup(client_ca: bool) -> (Pki, SocketAddr, String) {
    let pki = Pki::new();
    let server = https_server(&pki, client_ca).await;
    let ca = pki.files.write("ca.pem", &pki.server_ca.cert.pem());
    (pki, server, ca)
}

/// A plain HTTP/1.1 server answering `plain`.
async fn http_server() -> SocketAddr {
    let l = TcpListener::bind((support::fresh_ip(), 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let svc = service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                    "plain",
                ))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc),
            );
        }
    });
    addr
}

/// The mesh: ServiceEntry `api.example.com` (VIP `vip`, port 80, protocol
/// `protocol`) whose one endpoint is `backend`, and a DestinationRule with
/// the `tls` block given.
fn mesh_yaml(backend: SocketAddr, vip: &str, protocol: &str, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.example.com]
  addresses: [{vip}]
  ports: [{{number: 80, name: p, protocol: {protocol}}}]
  resolution: STATIC
  location: MESH_EXTERNAL
  endpoints: [{{address: {ip}, ports: {{p: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {tls}
",
        ip = backend.ip(),
        port = backend.port(),
    )
}

/// A proxy for [`mesh_yaml`]; returns the proxy, its front listener and
/// the access log.
async fn proxy_for(
    backend: SocketAddr,
    vip: &str,
    protocol: &str,
    tls: &str,
) -> (
    Proxy,
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<AccessLogRecord>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let proxy = Proxy::new(&support::compile(&mesh_yaml(backend, vip, protocol, tls)))
        .unwrap()
        .with_access_log(Arc::new(tx));
    let dst: SocketAddr = format!("{vip}:80").parse().unwrap();
    let (front, _) = support::front::serve_fixed(proxy.clone(), dst).await;
    (proxy, front, rx)
}

/// [`proxy_for`] without the proxy handle.
async fn proxy(
    backend: SocketAddr,
    vip: &str,
    protocol: &str,
    tls: &str,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<AccessLogRecord>,
) {
    let (_, front, rx) = proxy_for(backend, vip, protocol, tls).await;
    (front, rx)
}

async fn get(front: SocketAddr) -> support::client::Resp {
    Client::http1()
        .get(&format!("http://{front}/"), &[("host", "api.example.com")])
        .await
}

/// The `tls` block of mode SIMPLE trusting the CA file `ca`, with `extra`
/// appended inside the braces (`""` or `", key: value, …"`).
fn simple(ca: &str, extra: &str) -> String {
    format!("{{mode: SIMPLE, caCertificates: {ca}{extra}}}")
}

/// [`proxy`] for an `HTTP` port: the front listener and the access log.
async fn http_proxy(
    backend: SocketAddr,
    vip: &str,
    tls: &str,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<AccessLogRecord>,
) {
    proxy(backend, vip, "HTTP", tls).await
}

/// The status of one GET through a fresh [`http_proxy`] for `tls` (its
/// access log is dropped).
async fn status_through(backend: SocketAddr, vip: &str, tls: &str) -> http::StatusCode {
    let (front, _log) = http_proxy(backend, vip, tls).await;
    get(front).await.status
}

/// Takes the next access-log record and asserts it is an upstream TLS
/// failure after the default retry: flags `UF,URX` and a transport failure
/// reason containing `needle` (`what` names the case in the messages).
/// Returns the reason.
async fn assert_uf(
    log: &mut tokio::sync::mpsc::UnboundedReceiver<AccessLogRecord>,
    needle: &str,
    what: &str,
) -> String {
    let rec = record(log).await;
    // Envoy retries connect failures (MeshConfig defaultHttpRetryPolicy).
    assert_eq!(rec.response_flags.to_string(), "UF,URX", "{what}");
    let reason = rec.upstream_transport_failure_reason.unwrap_or_default();
    assert!(reason.contains(needle), "{what}: {reason}");
    reason
}

#[tokio::test]
async fn simple_verifies_the_ca_and_sends_the_host_as_sni() {
    let (_pki, server, ca) = https_setup(false).await;
    let (front, mut log) = http_proxy(server, "240.0.0.1", &simple(&ca, "")).await;
    let r = get(front).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        "sni=api.example.com client_cert=false version=HTTP/1.1"
    );
    let rec = record(&mut log).await;
    assert!(rec.response_flags.is_empty(), "{}", rec.response_flags);
    // Originated TLS is not mesh mTLS: Istio's label says `none`.
    assert_eq!(rec.peer.security, strait::telemetry::SecurityPolicy::None);
    assert_eq!(rec.peer.source_principal, None);
    // The connection is kept: a second request is served too.
    assert_eq!(get(front).await.status, 200);
}

#[tokio::test]
async fn simple_with_the_wrong_ca_is_503_uf() {
    let (pki, server, _) = https_setup(false).await;
    let ca = pki.files.write("other.pem", &pki.other_ca.cert.pem());
    let (front, mut log) = http_proxy(server, "240.0.0.2", &simple(&ca, "")).await;
    let r = get(front).await;
    assert_eq!(r.status, 503);
    let reason = assert_uf(&mut log, "UnknownIssuer", "wrong CA").await;
    assert!(reason.starts_with("TLS_error:"), "{reason}");
}

#[tokio::test]
async fn sni_and_subject_alt_names_replace_the_host_name_check() {
    let (_pki, server, ca) = https_setup(false).await;
    // The SNI names another host; the SAN list accepts the certificate.
    let tls = simple(
        &ca,
        ", sni: edge.example.net, subjectAltNames: [api.example.com]",
    );
    let (front, _log) = http_proxy(server, "240.0.0.3", &tls).await;
    let r = get(front).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("sni=edge.example.net "), "{}", r.body);
    // A SAN list the certificate does not satisfy: 503 UF.
    let tls = simple(
        &ca,
        ", subjectAltNames: [spiffe://cluster.local/ns/x/sa/y, web.example.com]",
    );
    let (front, mut log) = http_proxy(server, "240.0.0.4", &tls).await;
    assert_eq!(get(front).await.status, 503);
    assert_uf(&mut log, "SAN mismatch", "SAN list").await;
    // Without a SAN list the SNI must be one of the certificate's names.
    let tls = simple(&ca, ", sni: edge.example.net");
    assert_eq!(status_through(server, "240.0.0.5", &tls).await, 503);
}

#[tokio::test]
async fn insecure_skip_verify_accepts_any_certificate() {
    let (pki, server, _) = https_setup(false).await;
    let ca = pki.files.write("other.pem", &pki.other_ca.cert.pem());
    let tls = simple(&ca, ", insecureSkipVerify: true");
    let (front, _log) = http_proxy(server, "240.0.0.6", &tls).await;
    let r = get(front).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn mutual_presents_the_client_certificate() {
    let (pki, server, ca) = https_setup(true).await;
    let (cert, key) = pki
        .client_ca
        .leaf(&["spiffe://cluster.local/ns/default/sa/client"]);
    let cert = pki.files.write("client.pem", &cert.pem());
    let key = pki.files.write("client.key", &key.serialize_pem());
    let tls = format!(
        "{{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {cert}, privateKey: {key}}}"
    );
    let (front, _log) = http_proxy(server, "240.0.0.7", &tls).await;
    let r = get(front).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        "sni=api.example.com client_cert=true version=HTTP/1.1"
    );
    // The same server refuses a SIMPLE client (no certificate).
    let (front, mut log) = http_proxy(server, "240.0.0.8", &simple(&ca, "")).await;
    assert_eq!(get(front).await.status, 503);
    let rec = record(&mut log).await;
    assert!(!rec.response_flags.is_empty(), "an upstream failure flag");
}

#[tokio::test]
async fn http2_cluster_negotiates_h2_over_tls() {
    let (_pki, server, ca) = https_setup(false).await;
    let (front, _log) = proxy(server, "240.0.0.9", "HTTP2", &simple(&ca, "")).await;
    let r = get(front).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        "sni=api.example.com client_cert=false version=HTTP/2.0"
    );
}

#[tokio::test]
async fn disable_sends_plain_text() {
    let server = http_server().await;
    let (front, _log) = http_proxy(server, "240.0.0.10", "{mode: DISABLE}").await;
    let r = get(front).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "plain");
}

#[tokio::test]
async fn settings_that_cannot_be_honoured_fail_closed() {
    let pki = Pki::new();
    let server = https_server(&pki, false).await;
    for (vip, tls, why) in [
        (
            "240.0.0.11",
            "{mode: SIMPLE, credentialName: api-cert}".to_string(),
            "credentialName",
        ),
        (
            "240.0.0.12",
            "{mode: SIMPLE, caCertificates: /nonexistent/strait-ca.pem}".to_string(),
            "caCertificates: /nonexistent/strait-ca.pem",
        ),
    ] {
        let (front, mut log) = http_proxy(server, vip, &tls).await;
        assert_eq!(get(front).await.status, 503, "{tls}");
        assert_uf(&mut log, why, &tls).await;
    }
}

/// A TCP port with SIMPLE: the client's bytes reach the server inside TLS.
#[tokio::test]
async fn tcp_cluster_originates_tls() {
    let pki = Pki::new();
    let server = tls_server(server_config(&pki, false), |mut tls| async move {
        let mut buf = [0u8; 5];
        if tls.read_exact(&mut buf).await.is_ok() {
            let _ = tls.write_all(b"tls:").await;
            let _ = tls.write_all(&buf).await;
            let _ = tls.shutdown().await;
        }
    })
    .await;
    let ca = pki.files.write("ca.pem", &pki.server_ca.cert.pem());
    let (front, mut log) = proxy(server, "240.0.0.13", "TCP", &simple(&ca, "")).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), c.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"tls:hello");
    drop(c); // the record is written when both directions have closed
    let rec = record(&mut log).await;
    assert_eq!(rec.request_protocol, "tcp");
    assert_eq!(rec.peer.security, strait::telemetry::SecurityPolicy::None);
}

/// `caCrl`: a server certificate the CA revoked is refused (503 UF); a
/// CRL that does not list it changes nothing.
#[tokio::test]
async fn ca_crl_refuses_a_revoked_server_certificate() {
    let (pki, server, ca) = https_setup(false).await;
    let crl = |serial: u64| {
        rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(serial),
                revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&pki.server_ca.cert, &pki.server_ca.key)
        .unwrap()
        .pem()
        .unwrap()
    };
    let revoked = pki.files.write("revoked.crl", &crl(LEAF_SERIAL));
    let tls = simple(&ca, &format!(", caCrl: {revoked}"));
    let (front, mut log) = http_proxy(server, "240.0.0.14", &tls).await;
    assert_eq!(get(front).await.status, 503);
    assert_uf(&mut log, "Revoked", "revoked").await;
    let other = pki.files.write("other.crl", &crl(7));
    let tls = simple(&ca, &format!(", caCrl: {other}"));
    assert_eq!(status_through(server, "240.0.0.15", &tls).await, 200);
}

/// A changed `tls` policy applies on reload: the cluster's pools are
/// rebuilt with the new client configuration (wrong CA, then the right
/// one, then back).
#[tokio::test]
async fn a_changed_tls_policy_applies_on_reload() {
    let (pki, server, good) = https_setup(false).await;
    let bad = pki.files.write("other.pem", &pki.other_ca.cert.pem());
    let vip = "240.0.0.16";
    let (proxy, front, _log) = proxy_for(server, vip, "HTTP", &simple(&bad, "")).await;
    let reload = |ca: &str| {
        proxy
            .update(&support::compile(&mesh_yaml(
                server,
                vip,
                "HTTP",
                &simple(ca, ""),
            )))
            .unwrap()
    };
    assert_eq!(get(front).await.status, 503);
    reload(&good);
    assert_eq!(get(front).await.status, 200);
    reload(&bad);
    assert_eq!(
        get(front).await.status,
        503,
        "the pooled TLS connection is not reused"
    );
}

/// A PASSTHROUGH cluster (original destination) originates TLS too, to
/// the address the client connected to.
#[tokio::test]
async fn passthrough_cluster_originates_tls_to_the_original_destination() {
    let (_pki, server, ca) = https_setup(false).await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.example.com]
  addresses: [{ip}]
  ports: [{{number: {port}, name: p, protocol: HTTP}}]
  resolution: NONE
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec:
  host: api.example.com
  trafficPolicy:
    loadBalancer: {{simple: PASSTHROUGH}}
    tls: {{mode: SIMPLE, caCertificates: {ca}}}
",
        ip = server.ip(),
        port = server.port(),
    );
    let proxy = Proxy::new(&support::compile(&yaml)).unwrap();
    let (front, _) = support::front::serve_fixed(proxy, server).await;
    let r = get(front).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        "sni=api.example.com client_cert=false version=HTTP/1.1"
    );
}
