//! Table tests of the evaluation semantics, each a case from Istio's
//! documentation (tasks "Authorization for HTTP traffic", "for TCP
//! traffic", "Explicit deny", "JWT", "Ingress / IP-based", the
//! AuthorizationPolicy reference), plus JWT verification with Istio's
//! sample tokens.
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;

use super::*;

pub(super) fn snapshot(yaml: &str) -> strait_config::MeshSnapshot {
    let loaded = strait_config::load::load_str(yaml, "test.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let (snap, diags) = strait_config::compile(&loaded.resources);
    assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
    snap
}

/// Every AuthorizationPolicy and RequestAuthentication of `yaml` as one set.
pub(super) fn set(yaml: &str) -> PolicySet {
    let snap = snapshot(yaml);
    let mut s = PolicySet::default();
    for p in &snap.policies.authorization {
        s.push(Arc::new(CompiledPolicy::new(p)));
    }
    let ras: Vec<_> = snap.policies.request_authentication.iter().collect();
    if !ras.is_empty() {
        s.authn = Some(Arc::new(jwt::Authn::new(&ras)));
    }
    s
}

struct Req {
    method: &'static str,
    path: &'static str,
    host: &'static str,
    headers: HeaderMap,
    source: IpAddr,
    port: u16,
    auth: Option<JwtIdentity>,
    http: bool,
}

fn get(path: &'static str) -> Req {
    Req {
        method: "GET",
        path,
        host: "productpage.default.svc.cluster.local:9080",
        headers: HeaderMap::new(),
        source: "10.244.0.5".parse().unwrap(),
        port: 9080,
        auth: None,
        http: true,
    }
}

fn tcp(port: u16) -> Req {
    Req {
        port,
        http: false,
        ..get("/")
    }
}

impl Req {
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.append(k, v.parse().unwrap());
        self
    }
    fn from(mut self, ip: &str) -> Self {
        self.source = ip.parse().unwrap();
        self
    }
    fn jwt(mut self, claims: serde_json::Value) -> Self {
        let claims = claims.as_object().unwrap().clone();
        let iss = claims["iss"].as_str().unwrap();
        let sub = claims["sub"].as_str().unwrap();
        self.auth = Some(JwtIdentity {
            principal: format!("{iss}/{sub}"),
            claims,
        });
        self
    }
}

fn allowed(s: &PolicySet, r: &Req) -> bool {
    let a = Attrs {
        source_ip: r.source,
        remote_ip: r.source,
        dest_ip: Some("10.244.0.9".parse().unwrap()),
        dest_port: r.port,
        sni: None,
        peer: None,
        plaintext: false,
        http: r.http.then_some(HttpAttrs {
            method: r.method,
            path: r.path,
            host: r.host,
            headers: &r.headers,
            auth: r.auth.as_ref(),
        }),
    };
    s.authorize(&a).allowed
}

const POLICY: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  namespace: default\n";

fn policy(name: &str, spec: &str) -> String {
    format!("{POLICY}  name: {name}\nspec:\n{spec}")
}

#[test]
fn http_task_allow_nothing_then_viewer() {
    // "Authorization for HTTP traffic": `allow-nothing` (empty spec)
    // denies every request.
    let nothing = policy("allow-nothing", "  {}\n");
    let s = set(&nothing);
    assert!(!allowed(&s, &get("/productpage")));
    // `productpage-viewer` (ALLOW GET) then lets GET through, not POST.
    let viewer = policy(
        "productpage-viewer",
        "  selector:\n    matchLabels: {app: productpage}\n  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n",
    );
    let s = set(&format!("{nothing}---\n{viewer}"));
    assert!(allowed(&s, &get("/productpage")));
    assert!(!allowed(&s, &get("/productpage").method("POST")));
}

#[test]
fn empty_rule_allows_everything_and_no_policy_allows() {
    // Reference: `rules: [{}]` matches every request (allow-all).
    let s = set(&policy("allow-all", "  rules:\n  - {}\n"));
    assert!(allowed(&s, &get("/anything").method("DELETE")));
    assert!(allowed(&PolicySet::default(), &get("/")));
    // DENY with `{}` denies everything (deny-all example).
    let s = set(&policy("deny-all", "  action: DENY\n  rules:\n  - {}\n"));
    assert!(!allowed(&s, &get("/")));
}

#[test]
fn explicit_deny_beats_allow() {
    // "Explicit deny": deny GET unless `x-token: admin`, with an
    // allow-all ALLOW policy beside it.
    let yaml = format!(
        "{}---\n{}",
        policy("allow-all", "  rules:\n  - {}\n"),
        policy(
            "deny-method-get",
            "  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n    when:\n    - key: request.headers[x-token]\n      notValues: [\"admin\"]\n"
        )
    );
    let s = set(&yaml);
    assert!(!allowed(&s, &get("/productpage")));
    assert!(allowed(&s, &get("/productpage").header("x-token", "admin")));
    assert!(allowed(&s, &get("/productpage").method("POST")));
    // `notPaths`: deny GET except /ratings/2.
    let s = set(&policy(
        "deny-path",
        "  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        notPaths: [\"/ratings/2\"]\n",
    ));
    assert!(allowed(&s, &get("/ratings/2")));
    assert!(!allowed(&s, &get("/ratings/1")));
}

#[test]
fn path_host_and_header_matching() {
    // Reference: exact, prefix `*`, suffix `*`, presence `*`; hosts are
    // case-insensitive.
    let s = set(&policy(
        "paths",
        "  rules:\n  - to:\n    - operation:\n        paths: [\"/exact\", \"/api/*\", \"*.png\"]\n",
    ));
    for (p, ok) in [
        ("/exact", true),
        ("/exact/", false),
        ("/api/v1", true),
        ("/img/a.png", true),
        ("/img/a.jpg", false),
    ] {
        assert_eq!(allowed(&s, &get(p)), ok, "{p}");
    }
    let s = set(&policy(
        "tmpl",
        "  rules:\n  - to:\n    - operation:\n        paths: [\"/foo/{*}/bar\", \"/baz/{**}\"]\n",
    ));
    assert!(allowed(&s, &get("/foo/x/bar")));
    assert!(!allowed(&s, &get("/foo/x/y/bar")));
    assert!(allowed(&s, &get("/baz/x/y")));
    let s = set(&policy(
        "hosts",
        "  rules:\n  - to:\n    - operation:\n        hosts: [\"ProductPage.default.svc.cluster.local:*\"]\n",
    ));
    assert!(allowed(&s, &get("/")));
    let s = set(&policy(
        "present",
        "  rules:\n  - when:\n    - key: request.headers[x-user]\n      values: [\"*\"]\n",
    ));
    assert!(!allowed(&s, &get("/")));
    assert!(allowed(&s, &get("/").header("x-user", "a")));
}

#[test]
fn ip_blocks_deny() {
    // "Ingress / IP-based": DENY by `ipBlocks` (and `remoteIpBlocks`,
    // which is the peer without trusted proxies).
    let s = set(&policy(
        "ip",
        "  action: DENY\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.244.0.0/24\", \"1.2.3.4\"]\n",
    ));
    assert!(!allowed(&s, &get("/").from("10.244.0.7")));
    assert!(!allowed(&s, &get("/").from("1.2.3.4")));
    assert!(allowed(&s, &get("/").from("10.244.1.7")));
    let s = set(&policy(
        "remote",
        "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        notRemoteIpBlocks: [\"10.244.1.0/24\"]\n",
    ));
    assert!(allowed(&s, &get("/").from("10.244.0.7")));
    assert!(!allowed(&s, &get("/").from("10.244.1.7")));
    let s = set(&policy(
        "cond",
        "  action: DENY\n  rules:\n  - when:\n    - key: source.ip\n      values: [\"10.244.0.0/16\"]\n    - key: destination.port\n      values: [\"9080\"]\n",
    ));
    assert!(!allowed(&s, &get("/")));
    assert!(allowed(&s, &tcp(9081)));
}

#[test]
fn jwt_request_principals_and_claims() {
    // "JWT": require a request principal; `request.auth.claims[groups]`.
    let tok = serde_json::json!({"iss": "testing@secure.istio.io", "sub": "testing@secure.istio.io",
        "groups": ["group1", "group2"], "nested": {"key1": ["valueA", "valueB"]}});
    let s = set(&policy(
        "require-jwt",
        "  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"testing@secure.istio.io/testing@secure.istio.io\"]\n",
    ));
    assert!(allowed(&s, &get("/headers").jwt(tok.clone())));
    assert!(!allowed(&s, &get("/headers")));
    let s = set(&policy(
        "any-jwt",
        "  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"*\"]\n",
    ));
    assert!(
        !allowed(&s, &get("/")),
        "missing token with requestPrincipals [*] is denied"
    );
    let s = set(&policy(
        "groups",
        "  rules:\n  - when:\n    - key: request.auth.claims[groups]\n      values: [\"group1\"]\n",
    ));
    assert!(allowed(&s, &get("/").jwt(tok.clone())));
    let other = serde_json::json!({"iss": "i", "sub": "s", "groups": ["group3"]});
    assert!(!allowed(&s, &get("/").jwt(other)));
    let s = set(&policy(
        "nested",
        "  rules:\n  - when:\n    - key: request.auth.claims[nested][key1]\n      values: [\"valueA\"]\n",
    ));
    assert!(allowed(&s, &get("/").jwt(tok.clone())));
    let s = set(&policy(
        "principal",
        "  rules:\n  - when:\n    - key: request.auth.principal\n      values: [\"testing@secure.istio.io/*\"]\n",
    ));
    assert!(allowed(&s, &get("/").jwt(tok)));
}

#[test]
fn tcp_traffic_semantics() {
    // "Authorization for TCP traffic": ALLOW ports 9000/9001 → 9002 denied.
    let s = set(&policy(
        "tcp-policy",
        "  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        ports: [\"9000\", \"9001\"]\n",
    ));
    assert!(allowed(&s, &tcp(9000)));
    assert!(!allowed(&s, &tcp(9002)));
    // An ALLOW rule with HTTP-only fields is ignored for TCP: nothing left
    // to allow, so TCP is denied.
    let s = set(&policy(
        "tcp-policy",
        "  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        ports: [\"9000\"]\n",
    ));
    assert!(!allowed(&s, &tcp(9000)));
    // A DENY rule with HTTP-only fields denies with those fields ignored:
    // port 9000 is denied, 9001 is not.
    let s = set(&format!(
        "{}---\n{}",
        policy("allow-all", "  rules:\n  - {}\n"),
        policy(
            "tcp-deny",
            "  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        ports: [\"9000\"]\n"
        )
    ));
    assert!(!allowed(&s, &tcp(9000)));
    assert!(allowed(&s, &tcp(9001)));
}

#[test]
fn peer_identity_rules_fail_closed() {
    // Without mTLS the peer identity is unknown: an ALLOW on principals
    // never matches, a DENY on namespaces always denies.
    let s = set(&policy(
        "p",
        "  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/default/sa/sleep\"]\n",
    ));
    assert!(!allowed(&s, &get("/")));
    let s = set(&policy(
        "d",
        "  action: DENY\n  rules:\n  - from:\n    - source:\n        notNamespaces: [\"foo\"]\n",
    ));
    let d = {
        let r = get("/");
        let a = Attrs {
            source_ip: r.source,
            remote_ip: r.source,
            dest_ip: None,
            dest_port: 80,
            sni: None,
            peer: None,
            plaintext: false,
            http: None,
        };
        s.authorize(&a)
    };
    assert!(!d.allowed);
    assert_eq!(d.why, Why::DenyUndecidable);
    // With an identity (once mTLS lands) the rule is decided.
    let peer = PeerIdentity {
        principal: "cluster.local/ns/foo/sa/sleep".into(),
        namespace: "foo".into(),
    };
    let a = Attrs {
        source_ip: "10.0.0.1".parse().unwrap(),
        remote_ip: "10.0.0.1".parse().unwrap(),
        dest_ip: None,
        dest_port: 80,
        sni: None,
        peer: Some(&peer),
        plaintext: false,
        http: None,
    };
    assert!(s.authorize(&a).allowed);
    // serviceAccounts (`namespace/name`) and trustDomains are peer
    // identity too: never allow without it, decided with it.
    let s = set(&policy(
        "sa",
        "  rules:\n  - from:\n    - source:\n        serviceAccounts: [\"foo/sleep\"]\n        trustDomains: [\"cluster.local\"]\n",
    ));
    let no_peer = Attrs { peer: None, ..a };
    assert!(!s.authorize(&no_peer).allowed);
    let a = Attrs {
        peer: Some(&peer),
        plaintext: false,
        ..no_peer
    };
    assert!(s.authorize(&a).allowed);
    let other = PeerIdentity {
        principal: "cluster.local/ns/bar/sa/sleep".into(),
        namespace: "bar".into(),
    };
    let b = Attrs {
        peer: Some(&other),
        plaintext: false,
        ..a
    };
    assert!(!s.authorize(&b).allowed);
    let d = set(&policy(
        "no-sa",
        "  action: DENY\n  rules:\n  - from:\n    - source:\n        notServiceAccounts: [\"foo/sleep\"]\n",
    ));
    let no_peer = Attrs { peer: None, ..b };
    assert_eq!(d.authorize(&no_peer).why, Why::DenyUndecidable);
}

#[test]
fn custom_and_unknown_keys_fail_closed() {
    let s = set(&policy(
        "ext",
        "  action: CUSTOM\n  provider:\n    name: my-ext-authz\n  rules:\n  - to:\n    - operation:\n        paths: [\"/admin/*\"]\n",
    ));
    assert!(!allowed(&s, &get("/admin/x")));
    assert!(allowed(&s, &get("/public")));
    let s = set(&policy(
        "weird",
        "  action: DENY\n  rules:\n  - when:\n    - key: experimental.envoy.filters.whatever\n      values: [\"x\"]\n",
    ));
    let r = get("/");
    assert!(!allowed(&s, &r));
}

#[test]
fn audit_never_decides() {
    let s = set(&policy(
        "audit",
        "  action: AUDIT\n  rules:\n  - to:\n    - operation:\n        paths: [\"/headers\"]\n",
    ));
    let r = get("/headers");
    let a = Attrs {
        source_ip: r.source,
        remote_ip: r.source,
        dest_ip: None,
        dest_port: 80,
        sni: None,
        peer: None,
        plaintext: false,
        http: Some(HttpAttrs {
            method: "GET",
            path: "/headers",
            host: "x",
            headers: &r.headers,
            auth: None,
        }),
    };
    let d = s.authorize(&a);
    assert!(d.allowed);
    assert_eq!(d.audited.len(), 1);
}

/// A file of Istio's JWT samples: `../shared/istio/jwt/` beside the
/// repository (or beside the worktrees' directory).
pub(super) fn sample(name: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for up in ["../../shared/istio/jwt", "../../../shared/istio/jwt"] {
        if let Ok(s) = std::fs::read_to_string(root.join(up).join(name)) {
            return s;
        }
    }
    panic!("Istio's JWT sample {name} not found in ../shared/istio/jwt/");
}

pub(super) fn jwks() -> String {
    sample("jwks.json")
}

pub(super) fn token(name: &str) -> String {
    sample(name).trim().to_string()
}

fn authn(extra: &str) -> Arc<jwt::Authn> {
    let yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: default\nspec:\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    jwks: '{}'\n{extra}",
        jwks().replace('\n', "")
    );
    set(&yaml).authn.expect("authn")
}

pub(super) fn bearer(t: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {t}").parse().unwrap());
    h
}

#[test]
fn jwt_verification_with_istio_samples() {
    let a = authn("");
    match a.authenticate(&bearer(&token("demo.jwt")), None) {
        AuthnResult::Verified(id, edits) => {
            assert_eq!(
                id.principal,
                "testing@secure.istio.io/testing@secure.istio.io"
            );
            assert_eq!(id.claims["foo"], "bar");
            // The token is not forwarded by default.
            assert_eq!(edits, vec![HeaderEdit::Remove(http::header::AUTHORIZATION)]);
        }
        other => panic!("{other:?}"),
    }
    match a.authenticate(&bearer(&token("groups-scope.jwt")), None) {
        AuthnResult::Verified(id, _) => assert_eq!(id.claims["groups"][0], "group1"),
        other => panic!("{other:?}"),
    }
    // `?access_token=` is a default location too.
    let q = format!("access_token={}", token("demo.jwt"));
    assert!(matches!(
        a.authenticate(&HeaderMap::new(), Some(&q)),
        AuthnResult::Verified(..)
    ));
    assert!(matches!(
        a.authenticate(&HeaderMap::new(), None),
        AuthnResult::NoToken
    ));
}

/// `demo.jwt` with its payload replaced (signature no longer matches).
fn tampered(payload: serde_json::Value) -> String {
    use base64::Engine as _;
    let t = token("demo.jwt");
    let parts: Vec<&str> = t.split('.').collect();
    let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
    format!("{}.{p}.{}", parts[0], parts[2])
}

#[test]
fn jwt_failures_get_envoys_messages() {
    let a = authn("");
    let fail = |h: HeaderMap| match a.authenticate(&h, None) {
        AuthnResult::Failed(m) => m,
        other => panic!("{other:?}"),
    };
    let forged = tampered(
        serde_json::json!({"iss": "testing@secure.istio.io", "sub": "admin", "exp": 4685989700u64}),
    );
    assert_eq!(fail(bearer(&forged)), "Jwt verification fails");
    let expired =
        tampered(serde_json::json!({"iss": "testing@secure.istio.io", "sub": "x", "exp": 1000}));
    assert_eq!(fail(bearer(&expired)), "Jwt is expired");
    let other = tampered(serde_json::json!({"iss": "someone-else", "sub": "x"}));
    assert_eq!(fail(bearer(&other)), "Jwt issuer is not configured");
    assert_eq!(
        fail(bearer("not-a-jwt")),
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    );
    // Audiences: the sample token has no `aud`.
    let a = authn("    audiences: [\"my-aud\"]\n");
    match a.authenticate(&bearer(&token("demo.jwt")), None) {
        AuthnResult::Failed(m) => assert_eq!(m, "Audiences in Jwt are not allowed"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn jwt_locations_and_outputs() {
    let a = authn(
        "    fromHeaders:\n    - name: x-jwt\n    fromCookies: [\"session\"]\n    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - header: x-foo\n      claim: foo\n    forwardOriginalToken: true\n",
    );
    let mut h = HeaderMap::new();
    h.insert("x-jwt", token("demo.jwt").parse().unwrap());
    match a.authenticate(&h, None) {
        AuthnResult::Verified(_, edits) => {
            let payload = token("demo.jwt").split('.').nth(1).unwrap().to_string();
            assert!(edits.contains(&HeaderEdit::Set(
                http::HeaderName::from_static("x-jwt-payload"),
                payload.parse().unwrap()
            )));
            assert!(edits.contains(&HeaderEdit::Set(
                http::HeaderName::from_static("x-foo"),
                "bar".parse().unwrap()
            )));
            assert!(!edits.iter().any(|e| matches!(e, HeaderEdit::Remove(_))));
        }
        other => panic!("{other:?}"),
    }
    let mut h = HeaderMap::new();
    h.insert(
        "cookie",
        format!("a=b; session={}", token("demo.jwt"))
            .parse()
            .unwrap(),
    );
    assert!(matches!(
        a.authenticate(&h, None),
        AuthnResult::Verified(..)
    ));
    // Authorization: Bearer is not a location of this rule any more.
    assert!(matches!(
        a.authenticate(&bearer(&token("demo.jwt")), None),
        AuthnResult::NoToken
    ));
}

#[test]
fn table_scopes_selector_namespace_root_and_remote_nodes() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: foo}\nspec:\n  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{name: http, port: 80}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: foo, labels: {app: web}}\nspec: {nodeName: n1}\nstatus: {podIP: 10.244.0.10}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-2, namespace: foo, labels: {app: web}}\nspec: {nodeName: n2}\nstatus: {podIP: 10.244.1.10}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: other, namespace: bar, labels: {app: other}}\nspec: {nodeName: n1}\nstatus: {podIP: 10.244.0.11}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: mesh-web, namespace: istio-system}\nspec:\n  selector: {matchLabels: {app: web}}\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/admin\"]}}]}]\n";
    let snap = snapshot(yaml);
    let scope = Scope {
        node: Some("n1".into()),
        ..Scope::default()
    };
    let t = PolicyTable::build(&snap, &scope).expect("policies apply");
    // Root-namespace policy with a selector applies in every namespace.
    let w1: IpAddr = "10.244.0.10".parse().unwrap();
    assert_eq!(t.workloads[&w1].authz[0].0, "istio-system/mesh-web");
    assert!(t.workloads[&w1].local);
    let w2: IpAddr = "10.244.1.10".parse().unwrap();
    assert!(!t.workloads[&w2].local);
    assert!(!t
        .workloads
        .contains_key(&"10.244.0.11".parse::<IpAddr>().unwrap()));
    // The service's cluster has a remote policy-selected endpoint: denied.
    let g = t
        .guard("outbound|80||web.foo.svc.cluster.local")
        .expect("guard");
    assert!(g
        .remote
        .as_deref()
        .unwrap()
        .contains("foo/web-2 on node n2"));
    let req = Request {
        source_ip: "10.244.0.11".parse().unwrap(),
        sni: None,
        http: None,
    };
    assert!(matches!(enforce(g, &req), Outcome::Denied(d) if d.why == Why::RemoteWorkload));
    // Single node (no scope node): enforced locally.
    let t = PolicyTable::build(&snap, &Scope::default()).unwrap();
    let g = t.guard("outbound|80||web.foo.svc.cluster.local").unwrap();
    assert!(g.remote.is_none());
    // The DENY rule names a path: on TCP its HTTP field is ignored and it
    // denies (Istio); over HTTP only /admin is denied.
    assert!(matches!(enforce(g, &req), Outcome::Denied(d) if d.why == Why::DenyUndecidable));
    let h = HeaderMap::new();
    let http = |path| Request {
        source_ip: "10.244.0.11".parse().unwrap(),
        sni: None,
        http: Some(HttpRequest {
            method: "GET",
            path,
            query: None,
            host: "web.foo",
            headers: &h,
        }),
    };
    assert!(matches!(enforce(g, &http("/")), Outcome::Allow { .. }));
    assert!(matches!(enforce(g, &http("/admin")), Outcome::Denied(_)));
}

#[test]
fn jwks_uri_is_fetched_and_shared() {
    use std::io::{Read, Write};
    // A one-route HTTP server on loopback serving Istio's JWKS.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body = jwks();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: remote\n  namespace: default\nspec:\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    jwksUri: http://{addr}/jwks.json\n"
    );
    let a = set(&yaml).authn.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match a.authenticate(&bearer(&token("demo.jwt")), None) {
            AuthnResult::Verified(id, _) => {
                assert_eq!(
                    id.principal,
                    "testing@secure.istio.io/testing@secure.istio.io"
                );
                break;
            }
            // Until the first fetch lands: Envoy's message.
            AuthnResult::Failed(m) => assert_eq!(m, "Jwks remote fetch is failed"),
            AuthnResult::NoToken => unreachable!(),
        }
        assert!(std::time::Instant::now() < deadline, "JWKS never fetched");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A second policy set naming the same URI shares the fetched keys.
    let b = set(&yaml).authn.unwrap();
    assert!(matches!(
        b.authenticate(&bearer(&token("demo.jwt")), None),
        AuthnResult::Verified(..)
    ));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Istio's RBAC filter for a plaintext peer (the in-pod policy listener):
/// no identity, so `principals` / `namespaces` / `source.principal` rules
/// do not match and their `not*` forms do. Without that knowledge (the
/// identity is unknown) a DENY on them denies and an ALLOW never allows.
#[test]
fn a_plaintext_peer_has_no_identity_as_istio_decides() {
    let check = |yaml: &str, plaintext: bool| {
        let s = set(yaml);
        let headers = HeaderMap::new();
        let a = Attrs {
            source_ip: "10.244.0.5".parse().unwrap(),
            remote_ip: "10.244.0.5".parse().unwrap(),
            dest_ip: None,
            dest_port: 9080,
            sni: None,
            peer: None,
            plaintext,
            http: Some(HttpAttrs {
                method: "GET",
                path: "/",
                host: "h",
                headers: &headers,
                auth: None,
            }),
        };
        s.authorize(&a).allowed
    };
    let deny_principal = policy(
        "deny-sleep",
        "  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/foo/sa/sleep\"]\n",
    );
    assert!(check(&deny_principal, true), "plain text is not foo/sleep");
    assert!(
        !check(&deny_principal, false),
        "unknown identity: fail closed"
    );
    let deny_namespace_cond = policy(
        "deny-foo",
        "  action: DENY\n  rules:\n  - when:\n    - key: source.namespace\n      values: [\"foo\"]\n",
    );
    assert!(check(&deny_namespace_cond, true));
    assert!(!check(&deny_namespace_cond, false));
    // Istio's "require mTLS": DENY notPrincipals ["*"] denies plain text.
    let require_mtls = policy(
        "require-mtls",
        "  action: DENY\n  rules:\n  - from:\n    - source:\n        notPrincipals: [\"*\"]\n",
    );
    assert!(!check(&require_mtls, true));
    // ALLOW principals ["*"] (any authenticated peer) never allows it.
    let allow_any_peer = policy(
        "allow-mtls",
        "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"*\"]\n",
    );
    assert!(!check(&allow_any_peer, true));
    assert!(!check(&allow_any_peer, false));
    let allow_not_foo = policy(
        "allow-not-foo",
        "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        notNamespaces: [\"foo\"]\n",
    );
    assert!(check(&allow_not_foo, true), "no namespace is not foo");
    assert!(!check(&allow_not_foo, false));
}
