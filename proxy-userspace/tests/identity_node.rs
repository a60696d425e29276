//! The node side: certificates per service account, renewal at half life
//! with connections that outlive it, CA outages, dropped identities, and
//! what `/certs` shows (never key material).
mod identity;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use identity::*;
use strait::identity::ca::Authority;
use strait::identity::client::SecretManager;
use strait::identity::{CertStore, SpiffeId, WorkloadCert};
use strait::telemetry::identity::CertExpiry;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn reviews() -> SpiffeId {
    SpiffeId::new("cluster.local", "default", "bookinfo-reviews")
}

/// Waits (generously: the machine may be loaded) until `f` returns Some.
async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[allow(deprecated)] // ring: see identity_ca.rs
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An mTLS echo server that requires a client certificate chaining to
/// `store`'s trust bundle (as an HBONE server does) and answers each line
/// with `<client leaf serial> <line>`.
async fn echo_server(store: &CertStore) -> std::net::SocketAddr {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(store.root_store()),
        provider(),
    )
    .build()
    .unwrap();
    let server_key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_key.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.key_pair.serialize_der().into()),
        )
        .unwrap();
    std::fs::write(server_cert_path(), server_key.cert.pem()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let serial = {
                    let (_, conn) = tls.get_ref();
                    let leaf = &conn.peer_certificates().unwrap()[0];
                    strait::identity::CertInfo::from_der(leaf).unwrap().serial
                };
                let (r, mut w) = tokio::io::split(tls);
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    if w.write_all(format!("{serial} {l}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn server_cert_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("strait-identity-echo-{}.pem", std::process::id()))
}

type Conn = (
    tokio::io::Lines<
        BufReader<tokio::io::ReadHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>,
    >,
    tokio::io::WriteHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
);

/// A client connection presenting `cert` (the store's current one).
async fn connect(addr: std::net::SocketAddr, cert: &WorkloadCert) -> Conn {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read_to_string(server_cert_path()).unwrap();
    roots.add_parsable_certificates(strait::identity::certs::parse_pem_certs(&pem).unwrap());
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(cert.chain.clone(), cert.private_key())
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (r, w) = tokio::io::split(tls);
    (BufReader::new(r).lines(), w)
}

async fn say(conn: &mut Conn, line: &str) -> String {
    conn.1
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), conn.0.next_line())
        .await
        .expect("echo answered")
        .unwrap()
        .expect("connection open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_at_half_life_replaces_the_certificate_and_connections_survive() {
    let ca = TestCa::simple(Authority::generate("cluster.local").unwrap()).await;
    let ttl = Duration::from_secs(6);
    let store = CertStore::new(strait::identity::certs::parse_pem_certs(&ca.root_pem).unwrap());
    let expiry = CertExpiry::default();
    let mgr = SecretManager::new(ca.client(TOKEN_A, ttl), store.clone(), expiry.clone());
    mgr.set_wanted(&BTreeSet::from([reviews()]));
    let first = wait_for("the first certificate", Duration::from_secs(60), || {
        store.get(&reviews())
    })
    .await;
    assert_eq!(first.leaf.lifetime(), ttl);
    // Renewal is planned at half the lifetime (+-1% jitter).
    let planned = first
        .renew_at
        .duration_since(first.leaf.not_before())
        .unwrap();
    assert!(
        (Duration::from_millis(2940)..=Duration::from_millis(3060)).contains(&planned),
        "renewal planned {planned:?} after not_before"
    );

    let addr = echo_server(&store).await;
    let mut old_conn = connect(addr, &first).await;
    assert_eq!(
        say(&mut old_conn, "one").await,
        format!("{} one", first.leaf.serial)
    );

    let second = wait_for("the renewed certificate", Duration::from_secs(60), || {
        store
            .get(&reviews())
            .filter(|c| c.leaf.serial != first.leaf.serial)
    })
    .await;
    // Renewed around half life, before the old one expired.
    let gap = second
        .leaf
        .not_before()
        .duration_since(first.leaf.not_before())
        .unwrap();
    assert!(
        gap >= Duration::from_secs(2),
        "renewed {gap:?} after issuance, before half life"
    );
    assert!(
        second.leaf.not_before() < first.leaf.not_after(),
        "renewed only after expiry"
    );
    assert_eq!(second.roots, first.roots);

    // The connection made with the old certificate still works; a new one
    // presents the new certificate.
    assert_eq!(
        say(&mut old_conn, "two").await,
        format!("{} two", first.leaf.serial)
    );
    let current = store.get(&reviews()).unwrap();
    let mut new_conn = connect(addr, &current).await;
    assert_eq!(
        say(&mut new_conn, "three").await,
        format!("{} three", current.leaf.serial)
    );
    assert_ne!(current.leaf.serial, first.leaf.serial);
    drop(mgr);
    ca.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_outage_keeps_the_current_certificate_and_retries() {
    let dir = TempDir::new("outage");
    let ca =
        TestCa::simple(Authority::load_or_generate(dir.path(), "cluster.local").unwrap()).await;
    let addr = ca.addr;
    let ttl = Duration::from_secs(4);
    let store = CertStore::new(strait::identity::certs::parse_pem_certs(&ca.root_pem).unwrap());
    let mgr = SecretManager::new(
        ca.client(TOKEN_A, ttl),
        store.clone(),
        CertExpiry::default(),
    );
    mgr.set_wanted(&BTreeSet::from([reviews()]));
    let first = wait_for("the first certificate", Duration::from_secs(60), || {
        store.get(&reviews())
    })
    .await;
    let csrs = ca.metrics.csr.clone();
    ca.stop().await;
    // Past the renewal time the CA is unreachable: the certificate stays.
    let past_renewal = first.renew_at + Duration::from_millis(800);
    while std::time::SystemTime::now() < past_renewal {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still = store
        .get(&reviews())
        .expect("certificate kept while the CA is down");
    assert_eq!(still.leaf.serial, first.leaf.serial);
    assert_eq!(csrs.get(), 1, "no CSR reached the stopped CA");
    // The CA comes back (same root, same port): the retries get through.
    let ca = TestCa::start_at(
        addr,
        Authority::load_or_generate(dir.path(), "cluster.local").unwrap(),
        Default::default(),
        static_tokens(),
        &default_pods(),
    )
    .await;
    let renewed = wait_for(
        "a certificate from the restarted CA",
        Duration::from_secs(90),
        || {
            store
                .get(&reviews())
                .filter(|c| c.leaf.serial != first.leaf.serial)
        },
    )
    .await;
    assert_eq!(renewed.roots, first.roots);
    assert!(ca.metrics.success.get() >= 1);
    drop(mgr);
    ca.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_without_pods_are_dropped_and_certs_show_no_key_material() {
    let ca = TestCa::simple(Authority::generate("cluster.local").unwrap()).await;
    let store = CertStore::new(strait::identity::certs::parse_pem_certs(&ca.root_pem).unwrap());
    let expiry = CertExpiry::default();
    let mgr = SecretManager::new(
        ca.client(TOKEN_A, Duration::from_secs(3600)),
        store.clone(),
        expiry.clone(),
    );
    let ratings = SpiffeId::new("cluster.local", "default", "bookinfo-ratings");
    mgr.set_wanted(&BTreeSet::from([reviews(), ratings.clone()]));
    wait_for("both certificates", Duration::from_secs(60), || {
        (store.list().len() == 2).then_some(())
    })
    .await;

    let json = serde_json::to_string_pretty(&store.to_json()).unwrap();
    let cert = store.get(&reviews()).unwrap();
    let debug = format!("{cert:?}");
    let key_der = match cert.private_key() {
        rustls::pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        _ => unreachable!(),
    };
    let key_b64_fragment: String = {
        let pem = rcgen::KeyPair::try_from(key_der.as_slice())
            .unwrap()
            .serialize_pem();
        pem.lines().nth(1).unwrap().to_string()
    };
    for (what, text) in [("/certs JSON", &json), ("Debug", &debug)] {
        assert!(!text.contains("PRIVATE KEY"), "{what} shows a key:\n{text}");
        assert!(
            !text.contains(&key_b64_fragment),
            "{what} shows key bytes:\n{text}"
        );
    }
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let c = &v["certificates"][1];
    assert_eq!(
        c["identity"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
    assert_eq!(c["serial_number"], cert.leaf.serial);
    assert_eq!(c["expiration_time"], cert.leaf.not_after);
    let to_renewal = c["seconds_to_renewal"].as_i64().unwrap();
    // Half of 3600 s, +-1% jitter (36 s).
    assert!((1700..=1840).contains(&to_renewal), "{to_renewal}");
    assert_eq!(c["issuer_chain"].as_array().unwrap().len(), 1, "{c}");
    assert_eq!(v["trust_bundle"].as_array().unwrap().len(), 1);

    // ratings' pod left the node.
    mgr.set_wanted(&BTreeSet::from([reviews()]));
    assert!(store.get(&ratings).is_none());
    assert!(store.get(&reviews()).is_some());
    let mut reg = prometheus_client::registry::Registry::default();
    reg.register("istio_agent_cert_expiry_seconds", "x", expiry.clone());
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
    assert!(
        out.contains("resource_name=\"spiffe://cluster.local/ns/default/sa/bookinfo-reviews\""),
        "{out}"
    );
    assert!(!out.contains("bookinfo-ratings"), "{out}");
    drop(mgr);
    ca.stop().await;
}
