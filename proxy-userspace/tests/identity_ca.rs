//! The CA: Istio's CA API over TLS, what it issues (checked with openssl),
//! plugged-in roots and intermediates, who it refuses, restarts.
mod identity;

use std::time::Duration;

use identity::*;
use strait::identity::ca::{Authority, CaSettings, Origin, TokenSource};
use strait::identity::certs::cert_pem;
use strait::identity::SpiffeId;

fn reviews() -> SpiffeId {
    SpiffeId::new("cluster.local", "default", "bookinfo-reviews")
}

/// The line after the one containing `label` in `openssl x509 -text`.
fn after<'a>(text: &'a str, label: &str) -> &'a str {
    let mut lines = text.lines();
    lines
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no {label:?} in\n{text}"));
    lines.next().unwrap_or_default().trim()
}

#[tokio::test]
async fn issued_certificate_has_exactly_the_spiffe_san_ekus_and_lifetime() {
    let ca = TestCa::simple(Authority::generate("cluster.local").unwrap()).await;
    let cert = ca
        .client(TOKEN_A, Duration::from_secs(3600))
        .fetch(&reviews())
        .await
        .unwrap();
    let dir = TempDir::new("x509");
    std::fs::write(dir.path().join("leaf.pem"), cert_pem(&cert.chain[0])).unwrap();
    let text = openssl_ok(dir.path(), &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    // Exactly one SAN, the SPIFFE URI, in a critical extension (empty subject).
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "{text}"
    );
    assert_eq!(
        after(&text, "X509v3 Subject Alternative Name"),
        "URI:spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
    assert_eq!(
        after(&text, "X509v3 Extended Key Usage"),
        "TLS Web Server Authentication, TLS Web Client Authentication"
    );
    assert_eq!(after(&text, "X509v3 Basic Constraints"), "CA:FALSE");
    assert!(
        text.contains("ASN1 OID: prime256v1"),
        "ECDSA P-256 key:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.trim() == "Subject:"),
        "empty subject:\n{text}"
    );
    // Lifetime: what was asked (1 h): valid in 59 min, expired in 61 min.
    assert_eq!(cert.leaf.lifetime(), Duration::from_secs(3600));
    let (ok, _) = openssl(
        dir.path(),
        &["x509", "-in", "leaf.pem", "-noout", "-checkend", "3540"],
    );
    assert!(ok, "expires before 59 minutes");
    let (ok, _) = openssl(
        dir.path(),
        &["x509", "-in", "leaf.pem", "-noout", "-checkend", "3660"],
    );
    assert!(!ok, "valid after 61 minutes");
    // The root is last in the response, not in what the node presents.
    assert_eq!(cert.chain.len(), 1);
    assert_eq!(cert_pem(&cert.roots[0]), ca.root_pem);
    // Default lifetime when none is asked for: 24 h (a request of 0 s).
    let leaf = strait::identity::certs::parse_pem_certs(
        &ca.client(TOKEN_A, Duration::ZERO)
            .fetch(&reviews())
            .await
            .map(|c| cert_pem(&c.chain[0]))
            .unwrap(),
    )
    .unwrap();
    let info = strait::identity::CertInfo::from_der(&leaf[0]).unwrap();
    assert_eq!(info.lifetime(), Duration::from_secs(24 * 3600));
    assert_eq!(ca.metrics.success.get(), 2);
    assert_eq!(ca.metrics.csr.get(), 2);
    ca.stop().await;
}

/// A root (RSA, PKCS#1 key) and an intermediate (P-256, SEC1 key) made with
/// openssl, in Istio's plugged-in layout (`cacerts`).
fn openssl_intermediate_ca(dir: &std::path::Path) {
    let o = |args: &[&str]| openssl_ok(dir, args);
    o(&["genrsa", "-traditional", "-out", "root-key.pem", "2048"]);
    o(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "root-key.pem",
        "-sha256",
        "-days",
        "3650",
        "-subj",
        "/O=Istio/CN=Root CA",
        "-addext",
        "basicConstraints=critical,CA:true",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        "root-cert.pem",
    ]);
    o(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ca-key.pem",
    ]);
    o(&[
        "req",
        "-new",
        "-key",
        "ca-key.pem",
        "-subj",
        "/O=Istio/CN=Intermediate CA/L=node-1",
        "-out",
        "ca.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n",
    )
    .unwrap();
    o(&[
        "x509",
        "-req",
        "-in",
        "ca.csr",
        "-CA",
        "root-cert.pem",
        "-CAkey",
        "root-key.pem",
        "-CAcreateserial",
        "-days",
        "730",
        "-sha256",
        "-extfile",
        "ext.cnf",
        "-out",
        "ca-cert.pem",
    ]);
    let chain = std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap()
        + &std::fs::read_to_string(dir.join("root-cert.pem")).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();
    std::fs::remove_file(dir.join("root-key.pem")).unwrap();
    assert!(std::fs::read_to_string(dir.join("ca-key.pem"))
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
}

#[tokio::test]
async fn a_chain_through_an_intermediate_verifies_with_openssl_and_rustls() {
    let dir = TempDir::new("intermediate");
    openssl_intermediate_ca(dir.path());
    let authority = Authority::load_or_generate(dir.path(), "cluster.local").unwrap();
    assert_eq!(authority.origin(), Origin::PluggedIn);
    let root_file = std::fs::read_to_string(dir.path().join("root-cert.pem")).unwrap();
    let ca = TestCa::simple(authority).await;
    assert_eq!(
        ca.root_pem.trim(),
        root_file.trim(),
        "peers trust root-cert.pem"
    );
    let cert = ca
        .client(TOKEN_A, Duration::from_secs(3600))
        .fetch(&reviews())
        .await
        .unwrap();
    // Leaf then the intermediate; the root only as the trust anchor.
    assert_eq!(cert.chain.len(), 2);
    assert_eq!(cert.issuers.len(), 2);
    assert!(
        cert.issuers[0].subject.contains("Intermediate CA"),
        "{:?}",
        cert.issuers
    );
    std::fs::write(dir.path().join("leaf.pem"), cert_pem(&cert.chain[0])).unwrap();
    std::fs::write(dir.path().join("inter.pem"), cert_pem(&cert.chain[1])).unwrap();
    let out = openssl_ok(
        dir.path(),
        &[
            "verify",
            "-CAfile",
            "root-cert.pem",
            "-untrusted",
            "inter.pem",
            "leaf.pem",
        ],
    );
    assert_eq!(out.trim(), "leaf.pem: OK");
    // Without the intermediate the leaf does not chain to the root.
    let (ok, out) = openssl(
        dir.path(),
        &["verify", "-CAfile", "root-cert.pem", "leaf.pem"],
    );
    assert!(!ok, "{out}");
    // rustls (webpki) chains it too, as an mTLS peer will: client and server auth.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.roots[0].clone()).unwrap();
    // ring: the provider the CA and tonic use (deprecated upstream only for
    // lacking post-quantum key exchange, which Istio's peers do not use).
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider,
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(
            &cert.chain[0],
            &cert.chain[1..],
            rustls::pki_types::UnixTime::now(),
        )
        .expect("webpki accepts the chain");
    ca.stop().await;
}

#[tokio::test]
async fn a_node_is_refused_identities_of_pods_not_scheduled_on_it() {
    let ca = TestCa::simple(Authority::generate("cluster.local").unwrap()).await;
    let ttl = Duration::from_secs(600);
    // node-b runs productpage only.
    let e = ca
        .client(TOKEN_B, ttl)
        .fetch(&reviews())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("Unauthenticated"), "{e}");
    assert!(
        e.contains("node node-b may not obtain spiffe://cluster.local/ns/default/sa/bookinfo-reviews: no pod with service account bookinfo-reviews in namespace default is scheduled on it"),
        "{e}"
    );
    // No pod at all with that account.
    let ghost = SpiffeId::new("cluster.local", "default", "ghost");
    let e = ca
        .client(TOKEN_A, ttl)
        .fetch(&ghost)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("may not obtain spiffe://cluster.local/ns/default/sa/ghost"),
        "{e}"
    );
    // Another trust domain.
    let other = SpiffeId::new("example.org", "default", "bookinfo-reviews");
    let e = ca
        .client(TOKEN_A, ttl)
        .fetch(&other)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("trust domain is not cluster.local"), "{e}");
    // The same accounts on their own nodes are fine.
    ca.client(TOKEN_A, ttl).fetch(&reviews()).await.unwrap();
    ca.client(TOKEN_B, ttl)
        .fetch(&SpiffeId::new(
            "cluster.local",
            "default",
            "bookinfo-productpage",
        ))
        .await
        .unwrap();
    assert_eq!(ca.metrics.authn_failure.get(), 3);
    assert_eq!(ca.metrics.success.get(), 2);
    assert_eq!(ca.metrics.csr.get(), 5);
    ca.stop().await;
}

#[tokio::test]
async fn a_workload_token_obtains_its_own_identity_only() {
    let ca = TestCa::simple(Authority::generate("cluster.local").unwrap()).await;
    let ttl = Duration::from_secs(600);
    let own = SpiffeId::new("cluster.local", "default", "bookinfo-productpage");
    let cert = ca.client(TOKEN_PRODUCTPAGE, ttl).fetch(&own).await.unwrap();
    assert_eq!(cert.leaf.uri_sans, [own.to_string()]);
    let e = ca
        .client(TOKEN_PRODUCTPAGE, ttl)
        .fetch(&reviews())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("workload spiffe://cluster.local/ns/default/sa/bookinfo-productpage may not obtain spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "{e}"
    );
    ca.stop().await;
}

#[tokio::test]
async fn a_bad_or_revoked_token_is_refused() {
    let dir = TempDir::new("tokens");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("# node tokens\n{TOKEN_A} node-a\n")).unwrap();
    let ca = TestCa::start(
        Authority::generate("cluster.local").unwrap(),
        CaSettings::default(),
        TokenSource::File(tokens.clone()),
        &default_pods(),
    )
    .await;
    let ttl = Duration::from_secs(600);
    let e = ca
        .client("not-a-token-of-anyone-000", ttl)
        .fetch(&reviews())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Unauthenticated") && e.contains("unknown bearer token"),
        "{e}"
    );
    ca.client(TOKEN_A, ttl).fetch(&reviews()).await.unwrap();
    // Revoked: the file is read again on every request.
    std::fs::write(&tokens, "").unwrap();
    let e = ca
        .client(TOKEN_A, ttl)
        .fetch(&reviews())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown bearer token"), "{e}");
    assert_eq!(ca.metrics.authn_failure.get(), 2);
    ca.stop().await;
}

#[tokio::test]
async fn a_lifetime_over_the_maximum_is_refused() {
    let settings = CaSettings {
        default_ttl: Duration::from_secs(600),
        max_ttl: Duration::from_secs(3600),
    };
    let ca = TestCa::start(
        Authority::generate("cluster.local").unwrap(),
        settings,
        static_tokens(),
        &default_pods(),
    )
    .await;
    let e = ca
        .client(TOKEN_A, Duration::from_secs(7200))
        .fetch(&reviews())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("InvalidArgument")
            && e.contains("requested TTL 2h is greater than the max allowed TTL 1h"),
        "{e}"
    );
    let ok = ca
        .client(TOKEN_A, Duration::from_secs(3600))
        .fetch(&reviews())
        .await
        .unwrap();
    assert_eq!(ok.leaf.lifetime(), Duration::from_secs(3600));
    ca.stop().await;
}

#[tokio::test]
async fn restarting_with_the_same_ca_dir_keeps_the_root() {
    let dir = TempDir::new("restart");
    let first = Authority::load_or_generate(dir.path(), "cluster.local").unwrap();
    assert_eq!(first.origin(), Origin::SelfSignedNew);
    let root = first.root_pem();
    let ca = TestCa::simple(first).await;
    let before = ca
        .client(TOKEN_A, Duration::from_secs(600))
        .fetch(&reviews())
        .await
        .unwrap();
    ca.stop().await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("ca-key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the key is readable by its owner only");
    let second = Authority::load_or_generate(dir.path(), "cluster.local").unwrap();
    assert_eq!(second.origin(), Origin::SelfSignedPersisted);
    assert_eq!(second.root_pem(), root);
    let ca = TestCa::simple(second).await;
    let after = ca
        .client(TOKEN_A, Duration::from_secs(600))
        .fetch(&reviews())
        .await
        .unwrap();
    assert_eq!(after.roots, before.roots);
    assert_ne!(after.leaf.serial, before.leaf.serial);
    // A half-written layout is an error naming the missing file, not a new root.
    std::fs::remove_file(dir.path().join("ca-key.pem")).unwrap();
    let e = Authority::load_or_generate(dir.path(), "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ca-cert.pem is present but ca-key.pem is missing"),
        "{e}"
    );
    ca.stop().await;
}

#[tokio::test]
async fn a_key_that_does_not_match_ca_cert_is_rejected() {
    let a = TempDir::new("mismatch-a");
    let b = TempDir::new("mismatch-b");
    Authority::load_or_generate(a.path(), "cluster.local").unwrap();
    Authority::load_or_generate(b.path(), "cluster.local").unwrap();
    std::fs::copy(b.path().join("ca-key.pem"), a.path().join("ca-key.pem")).unwrap();
    let e = Authority::load_or_generate(a.path(), "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ca-key.pem: does not match the public key of ca-cert.pem"),
        "{e}"
    );
}

#[tokio::test]
async fn a_leaf_never_outlives_the_signing_certificate() {
    let dir = TempDir::new("short-root");
    openssl_ok(
        dir.path(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca-key.pem",
        ],
    );
    openssl_ok(
        dir.path(),
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca-key.pem",
            "-days",
            "1",
            "-subj",
            "/O=cluster.local",
            "-addext",
            "basicConstraints=critical,CA:true",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-out",
            "ca-cert.pem",
        ],
    );
    std::fs::copy(
        dir.path().join("ca-cert.pem"),
        dir.path().join("root-cert.pem"),
    )
    .unwrap();
    std::fs::copy(
        dir.path().join("ca-cert.pem"),
        dir.path().join("cert-chain.pem"),
    )
    .unwrap();
    let ca =
        TestCa::simple(Authority::load_or_generate(dir.path(), "cluster.local").unwrap()).await;
    let cert = ca
        .client(TOKEN_A, Duration::from_secs(48 * 3600))
        .fetch(&reviews())
        .await
        .unwrap();
    assert!(
        cert.leaf.not_after() <= cert.issuers[0].not_after(),
        "{:?} {:?}",
        cert.leaf,
        cert.issuers
    );
    assert!(cert.leaf.lifetime() <= Duration::from_secs(24 * 3600));
    ca.stop().await;
}
