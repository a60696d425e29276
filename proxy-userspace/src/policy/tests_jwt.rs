//! The verified-token cache (expiry checked on every hit, a key-set change
//! verifies again) and `jwksUri` over https.
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use super::jwt::{jwks, status, AuthnResult, CLOCK_SKEW_SECS};
use super::tests::{bearer, jwks as istio_jwks, set, token};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn oct_jwks(secret: &[u8]) -> String {
    use base64::Engine as _;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    format!("{{\"keys\":[{{\"kty\":\"oct\",\"kid\":\"k1\",\"alg\":\"HS256\",\"k\":\"{k}\"}}]}}")
}

fn hs256(secret: &[u8], claims: serde_json::Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("k1".into());
    jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap()
}

fn ra(rule: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: default}}\nspec:\n  jwtRules:\n  - issuer: cache@test\n{rule}")
}

#[test]
fn cached_tokens_are_checked_for_expiry_on_every_hit() {
    let secret = b"a-secret-of-32-bytes-for-hs256!!";
    let a = set(&ra(&format!("    jwks: '{}'\n", oct_jwks(secret))))
        .authn
        .unwrap();
    // Expires (with Envoy's 60 s skew) two seconds from now.
    let exp = now() + 2 - CLOCK_SKEW_SECS;
    let t = hs256(
        secret,
        serde_json::json!({"iss": "cache@test", "sub": "u", "exp": exp}),
    );
    for _ in 0..3 {
        assert!(matches!(
            a.authenticate(&bearer(&t), None),
            AuthnResult::Verified(..)
        ));
    }
    assert_eq!(a.cached_tokens(), 1);
    // A bad token is not cached.
    let bad = format!("{}x", &t[..t.len() - 1]);
    assert!(matches!(
        a.authenticate(&bearer(&bad), None),
        AuthnResult::Failed(_)
    ));
    assert_eq!(a.cached_tokens(), 1);
    // Once expired, the cached entry answers Envoy's message and goes.
    while now() <= exp + CLOCK_SKEW_SECS {
        std::thread::sleep(Duration::from_millis(200));
    }
    match a.authenticate(&bearer(&t), None) {
        AuthnResult::Failed(m) => assert_eq!(m, status::EXPIRED),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.cached_tokens(), 0);
}

#[test]
fn a_changed_key_set_verifies_cached_tokens_again() {
    // Nothing serves this URI: the keys are installed by hand.
    let uri = "http://127.0.0.1:9/strait-test-rotation.json";
    let a = set(&ra(&format!("    jwksUri: {uri}\n"))).authn.unwrap();
    let remote = jwks::remote(uri, Duration::from_secs(1));
    let old = b"old-secret-old-secret-old-secret";
    remote.set(jwks::KeySet::parse(&oct_jwks(old)).unwrap());
    let t = hs256(old, serde_json::json!({"iss": "cache@test", "sub": "u"}));
    assert!(matches!(
        a.authenticate(&bearer(&t), None),
        AuthnResult::Verified(..)
    ));
    assert_eq!(a.cached_tokens(), 1);
    // Rotated: the old key is gone, so is the cached verification.
    remote.set(jwks::KeySet::parse(&oct_jwks(b"new-secret-new-secret-new-secret")).unwrap());
    match a.authenticate(&bearer(&t), None) {
        AuthnResult::Failed(m) => assert_eq!(m, status::VERIFICATION),
        other => panic!("{other:?}"),
    }
}

/// A TLS server on loopback for `localhost`, its certificate signed by a
/// fresh CA; serves `body` to every request. Returns the port and the CA.
fn tls_server(body: String) -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let cfg = Arc::new(cfg);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in listener.incoming().map_while(Result::ok) {
            let cfg = cfg.clone();
            let body = body.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, s);
                let mut buf = [0u8; 2048];
                if tls.read(&mut buf).is_err() {
                    return;
                }
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, ca_cert.pem())
}

#[test]
fn https_jwks_uri_is_fetched_with_a_trusted_ca_only() {
    let (port, ca) = tls_server(istio_jwks());
    let uri = format!("https://localhost:{port}/jwks.json");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Before its CA is trusted, the server's certificate is refused.
    let err = rt
        .block_on(jwks::fetch(&uri, Duration::from_secs(10)))
        .unwrap_err();
    assert!(err.contains("TLS") && err.contains("certificate"), "{err}");
    jwks::add_trusted_ca(ca.as_bytes()).unwrap();
    let body = rt
        .block_on(jwks::fetch(&uri, Duration::from_secs(10)))
        .unwrap();
    assert!(jwks::KeySet::parse(&body).is_ok());
    // Through a RequestAuthentication: the refresher fetches it and
    // Istio's sample token verifies.
    let yaml = format!("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: tls, namespace: default}}\nspec:\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    jwksUri: {uri}\n");
    let a = set(&yaml).authn.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match a.authenticate(&bearer(&token("demo.jwt")), None) {
            AuthnResult::Verified(..) => break,
            AuthnResult::Failed(m) => assert_eq!(m, status::JWKS_FETCH),
            AuthnResult::NoToken => unreachable!(),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "https JWKS never fetched"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(matches!(
        a.authenticate(&HeaderMap::new(), None),
        AuthnResult::NoToken
    ));
}

#[test]
fn presence_required_and_space_delimited_claims() {
    use super::{Attrs, HttpAttrs};
    let secret = b"another-secret-of-32-bytes-hs256";
    let yaml = format!(
        "{}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: writers, namespace: default}}\nspec:\n  rules:\n  - when:\n    - key: request.auth.claims[scope]\n      values: [\"write\"]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: no-banned, namespace: default}}\nspec:\n  action: DENY\n  rules:\n  - when:\n    - key: request.auth.claims[roles]\n      values: [\"banned\"]\n",
        ra(&format!(
            "    jwks: '{}'\n    presence: REQUIRED\n    spaceDelimitedClaims: [roles]\n",
            oct_jwks(secret)
        ))
    );
    let s = set(&yaml);
    let a = s.authn.clone().unwrap();
    // presence: REQUIRED: no token is a 401 with Envoy's message.
    match a.authenticate(&HeaderMap::new(), None) {
        AuthnResult::Failed(m) => assert_eq!(m, status::MISSING),
        other => panic!("{other:?}"),
    }
    let allowed = |claims: serde_json::Value| {
        let t = hs256(secret, claims);
        let AuthnResult::Verified(id, _) = a.authenticate(&bearer(&t), None) else {
            panic!("token fails");
        };
        let h = HeaderMap::new();
        let at = Attrs {
            source_ip: "10.0.0.1".parse().unwrap(),
            remote_ip: "10.0.0.1".parse().unwrap(),
            dest_ip: None,
            dest_port: 80,
            sni: None,
            peer: None,
            plaintext: false,
            http: Some(HttpAttrs {
                method: "GET",
                path: "/",
                host: "web",
                headers: &h,
                auth: Some(&id),
            }),
        };
        s.authorize(&at).allowed
    };
    let c = |scope: &str, roles: &str| serde_json::json!({"iss": "cache@test", "sub": "u", "scope": scope, "roles": roles});
    // `scope` is space-delimited by default, `roles` by the rule.
    assert!(allowed(c("read write", "dev")));
    assert!(allowed(c("write", "dev")));
    assert!(!allowed(c("read", "dev")));
    assert!(!allowed(c("read writer", "dev")));
    assert!(!allowed(c("read write", "dev banned")));
    assert!(!allowed(c("write", "banned")));
}
