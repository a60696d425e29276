//! The destination side of HBONE across two simulated nodes: L7
//! AuthorizationPolicy and RequestAuthentication enforced on the node of
//! the server pod, on HTTP parsed inside the tunnel (no waypoint), with
//! the client's SPIFFE identity from its certificate; and the destination
//! node's telemetry (`reporter="destination"`, `mutual_tls`, the client's
//! `source_principal`) for tunnelled requests and connections, denied ones
//! included.
//!
//! Node A runs `strait run --ca-dir` (the embedded CA, also serving node
//! B) with the client pods; node B runs `strait run --ca-address` with the
//! server pod. Both read one config directory.
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use strait_tests::node::echo::{self, Then};
use strait_tests::node::{MeshPair, Node, PairSpec, ServicePort};

const ADMIN: &str = "127.0.0.1:15000";

fn port(name: &str, port: u16) -> ServicePort {
    ServicePort::named(name, port)
}

/// Node B's `/stats/prometheus`.
fn metrics_b(m: &MeshPair) -> String {
    let out =
        m.b.command("curl")
            .unwrap()
            .args([
                "-sS",
                "-m",
                "10",
                &format!("http://{ADMIN}/stats/prometheus"),
            ])
            .output()
            .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Node A with pods `client` (service account `sleep`) and `intruder`
/// (`other`) and the embedded CA; node B with pod `server` (`echo`,
/// label `app: echo`); Service `echo` with `ports`. `before_daemons` runs
/// once the pods exist (start servers, write policies).
fn two_nodes(
    p: &strait_tests::privileged::Privileged,
    index: u8,
    ports: Vec<ServicePort>,
    before_daemons: impl FnOnce(&Node, &Path),
) -> MeshPair {
    let spec = PairSpec {
        index,
        ports,
        clients: &[("client", "sleep"), ("intruder", "other")],
        rust_log: "info,strait::serve=debug",
    };
    MeshPair::start(p, spec, before_daemons)
}

/// An HTTP/1.1 + h2c server in pod `server` on `port`: answers
/// `<canary> peer=<ip> <METHOD> <path>`.
fn serve_http(node: &Node, port: u16, canary: &'static str) {
    let p = node.pod("default", "server").unwrap();
    let l = echo::listen(&p.netns, (p.ip, port)).unwrap();
    echo::hyper(vec![l], move |peer, req| {
        let text = format!(
            "{canary} peer={} {} {}",
            peer.ip(),
            req.method(),
            req.uri().path()
        );
        http::Response::new(http_body_util::Full::new(bytes::Bytes::from(text)))
    });
}

/// A TCP server in pod `server` on `port`: sends `<canary> peer=<ip>` to
/// every client.
fn serve_canary(node: &Node, port: u16, canary: &'static str) {
    let p = node.pod("default", "server").unwrap();
    let l = echo::listen(&p.netns, (p.ip, port)).unwrap();
    let greet = move |peer: SocketAddr| format!("{canary} peer={}", peer.ip());
    echo::tcp(l, greet, Then::ReadLine);
}

/// curl from pod `pod` of node A: (status, body); status 0 when no HTTP
/// answer came.
fn curl(m: &MeshPair, pod: &str, args: &[&str]) -> (u16, String) {
    let client = m.a.pod("default", pod).unwrap();
    strait_tests::node::http::curl(client.command("curl").unwrap(), args)
}

/// The first line the server sent to a TCP probe from pod `pod` of node A.
fn probe(m: &MeshPair, pod: &str, addr: SocketAddr) -> String {
    m.a.pod("default", pod).unwrap().probe(addr)
}

/// Retries `f` until `ok` holds (certificates and listeners come up
/// asynchronously), 90 s at most; returns the last value.
fn eventually<T: std::fmt::Debug>(
    m: &MeshPair,
    what: &str,
    f: impl Fn() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = f();
        if ok(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{what}: {got:?}\n{}", m.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Node B's metric lines of `family` that contain every one of `labels`.
fn series<'a>(metrics: &'a str, family: &str, labels: &[&str]) -> Vec<&'a str> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .collect()
}

const SLEEP: &str = "source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\"";
const OTHER: &str = "source_principal=\"spiffe://cluster.local/ns/default/sa/other\"";
const DEST: &str = "reporter=\"destination\"";
const MTLS: &str = "connection_security_policy=\"mutual_tls\"";
const ECHO: &str = "destination_principal=\"spiffe://cluster.local/ns/default/sa/echo\"";

#[test]
fn l7_authorization_policy_is_enforced_inside_the_tunnel_and_the_destination_reports_it() {
    let name =
        "l7_authorization_policy_is_enforced_inside_the_tunnel_and_the_destination_reports_it";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let canary: &'static str = "L7-IN-TUNNEL-4c1e";
    // 7401: HTTP, GET from sleep only (an L7 policy); 7403: TCP, sleep
    // only (an L4 policy, decided at the CONNECT); 7404: a TCP server on
    // a port whose only policy has HTTP fields (Istio: deny).
    let ports = vec![
        port("http", 7401),
        port("tcp-l4", 7403),
        port("tcp-l7", 7404),
    ];
    let m = two_nodes(&p, 54, ports, |b, config| {
        serve_http(b, 7401, canary);
        serve_canary(b, 7403, canary);
        serve_canary(b, 7404, canary);
        std::fs::write(
            config.join("authz.yaml"),
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: get-from-sleep, namespace: default}\n\
             spec:\n  selector: {matchLabels: {app: echo}}\n  action: ALLOW\n  rules:\n\
             \x20 - from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}]\n\
             \x20   to: [{operation: {methods: [GET], ports: [\"7401\", \"7404\"]}}]\n---\n\
             apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: tcp-from-sleep, namespace: default}\n\
             spec:\n  selector: {matchLabels: {app: echo}}\n  action: ALLOW\n  rules:\n\
             \x20 - from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}]\n\
             \x20   to: [{operation: {ports: [\"7403\"]}}]\n",
        )
        .unwrap();
    });
    let server_ip = m.b.pods()[0].ip;
    let url = format!("http://{server_ip}:7401/hello");
    // GET from sleep: through the tunnel, checked on node B, delivered
    // from 127.0.0.6.
    let got = eventually(
        &m,
        "GET from sleep",
        || curl(&m, "client", &[&url]),
        |r| r.0 == 200,
    );
    assert_eq!(got.1, format!("{canary} peer=127.0.0.6 GET /hello"));
    // The same over h2 (prior knowledge) inside the tunnel.
    assert_eq!(
        curl(&m, "client", &["--http2-prior-knowledge", &url]),
        (200, format!("{canary} peer=127.0.0.6 GET /hello"))
    );
    // POST from sleep: the L7 rule does not match → Envoy's RBAC 403.
    assert_eq!(
        curl(&m, "client", &["-X", "POST", "-d", "x", &url]),
        (403, "RBAC: access denied".to_string()),
        "{}",
        m.logs()
    );
    // GET from another service account: 403 too (the principal is the
    // tunnel's peer certificate, not anything the request says).
    assert_eq!(
        curl(&m, "intruder", &[&url]),
        (403, "RBAC: access denied".to_string())
    );
    // Path normalization before matching and delivery.
    assert_eq!(
        curl(
            &m,
            "client",
            &[
                "--path-as-is",
                &format!("http://{server_ip}:7401/a/../hello")
            ]
        ),
        (200, format!("{canary} peer=127.0.0.6 GET /hello"))
    );
    // L4 policy port: sleep gets through, another identity is refused at
    // the CONNECT (401), before the pod hears of it.
    let tcp = SocketAddr::from((server_ip, 7403));
    assert_eq!(probe(&m, "client", tcp), format!("{canary} peer=127.0.0.6"));
    assert!(!probe(&m, "intruder", tcp).contains(canary));
    // Not HTTP on a port whose policy needs HTTP facts: denied, even for
    // sleep.
    let opaque = SocketAddr::from((server_ip, 7404));
    assert!(
        !probe(&m, "client", opaque).contains(canary),
        "{}",
        m.logs()
    );

    // Node B reports as the destination, with the client's identity.
    let metrics = eventually(
        &m,
        "node B's destination metrics",
        || metrics_b(&m),
        |t| {
            !series(t, "istio_tcp_connections_closed_total", &[DEST, OTHER]).is_empty()
                && series(t, "istio_tcp_connections_opened_total", &[DEST, SLEEP]).len() >= 2
        },
    );
    let requests = "istio_requests_total";
    let ok = series(
        &metrics,
        requests,
        &[DEST, MTLS, SLEEP, ECHO, "response_code=\"200\""],
    );
    assert!(!ok.is_empty(), "{metrics}");
    assert!(
        ok.iter().all(|l| l.contains("source_workload=\"client\"")
            && l.contains("destination_workload=\"server\"")),
        "{ok:?}"
    );
    let denied = series(
        &metrics,
        requests,
        &[
            DEST,
            MTLS,
            "response_code=\"403\"",
            "response_flags=\"RBAC\"",
        ],
    );
    assert!(denied.iter().any(|l| l.contains(SLEEP)), "{metrics}");
    assert!(denied.iter().any(|l| l.contains(OTHER)), "{metrics}");
    // Tunnelled connections: the allowed L4 one, the one refused at the
    // CONNECT (401) and the opaque one denied inside, each with the peer.
    let tcp_open = "istio_tcp_connections_opened_total";
    assert!(
        !series(
            &metrics,
            tcp_open,
            &[DEST, MTLS, SLEEP, ECHO, "response_flags=\"-\""]
        )
        .is_empty(),
        "{metrics}"
    );
    assert!(
        !series(
            &metrics,
            tcp_open,
            &[DEST, MTLS, OTHER, "response_flags=\"RBAC\""]
        )
        .is_empty(),
        "{metrics}"
    );
    assert!(
        !series(
            &metrics,
            tcp_open,
            &[DEST, MTLS, SLEEP, "response_flags=\"RBAC\""]
        )
        .is_empty(),
        "{metrics}"
    );
    let sent = series(
        &metrics,
        "istio_tcp_sent_bytes_total",
        &[DEST, SLEEP, "response_flags=\"-\""],
    );
    assert!(
        sent.iter().any(|l| !l.ends_with(" 0")),
        "no bytes counted: {sent:?}"
    );
}

#[test]
fn request_authentication_is_checked_inside_the_tunnel() {
    let name = "request_authentication_is_checked_inside_the_tunnel";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let Some(jwt) = strait_tests::demo::istio_jwt(name) else {
        return;
    };
    let token = |f: &str| strait_tests::demo::jwt_file(&jwt, f);
    let jwks = std::fs::read_to_string(jwt.join("jwks.json")).unwrap();
    let canary: &'static str = "JWT-IN-TUNNEL-9d2a";
    let m = two_nodes(&p, 56, vec![port("http", 7401)], |b, config| {
        serve_http(b, 7401, canary);
        let ra = format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
             metadata: {{name: jwt, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: echo}}}}\n\
             \x20 jwtRules:\n  - issuer: testing@secure.istio.io\n    jwks: '{}'\n---\n\
             apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: require-jwt, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: echo}}}}\n\
             \x20 action: ALLOW\n  rules:\n  - from: [{{source: {{requestPrincipals: [\"*\"]}}}}]\n",
            jwks.replace('\n', " ")
        );
        std::fs::write(config.join("jwt.yaml"), ra).unwrap();
    });
    let server_ip = m.b.pods()[0].ip;
    let url = format!("http://{server_ip}:7401/headers");
    let with = |auth: Option<&str>| {
        let h = auth.map(|a| format!("authorization: Bearer {a}"));
        let mut args: Vec<&str> = Vec::new();
        if let Some(h) = &h {
            args.extend(["-H", h.as_str()]);
        }
        args.push(&url);
        curl(&m, "client", &args)
    };
    // No token where a request principal is required: 403 (once the
    // tunnel is up).
    let got = eventually(&m, "no token", || with(None), |r| r.0 != 0 && r.0 != 503);
    assert_eq!(
        got,
        (403, "RBAC: access denied".to_string()),
        "{}",
        m.logs()
    );
    // A tampered token: 401 with Envoy's body.
    let demo = token("demo.jwt");
    let mut parts: Vec<String> = demo.split('.').map(String::from).collect();
    parts[1] = parts[1].chars().rev().collect();
    let (code, body) = with(Some(&parts.join(".")));
    assert_eq!(code, 401, "{body}");
    assert!(body.starts_with("Jwt "), "{body}");
    // A valid token: delivered.
    assert_eq!(
        with(Some(&demo)),
        (200, format!("{canary} peer=127.0.0.6 GET /headers")),
        "{}",
        m.logs()
    );
    let metrics = metrics_b(&m);
    for code in ["200", "401", "403"] {
        let rc = format!("response_code=\"{code}\"");
        assert!(
            !series(&metrics, "istio_requests_total", &[DEST, MTLS, SLEEP, &rc]).is_empty(),
            "{code}: {metrics}"
        );
    }
}

/// An external authorizer in pod `server` on `port`, like Istio's
/// `samples/extauthz`: `x-ext-authz: allow` allows, anything else gets 403
/// `denied by ext_authz for testing purpose`.
fn serve_authorizer(node: &Node, port: u16) {
    let p = node.pod("default", "server").unwrap();
    let l = echo::listen(&p.netns, (p.ip, port)).unwrap();
    echo::hyper(vec![l], |_, req| {
        let allow = req
            .headers()
            .get("x-ext-authz")
            .is_some_and(|v| v == "allow");
        let (status, body) = if allow {
            (200, "")
        } else {
            (403, "denied by ext_authz for testing purpose")
        };
        http::Response::builder()
            .status(status)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    });
}

#[test]
fn custom_policy_asks_the_external_authorizer_for_requests_inside_the_tunnel() {
    let name = "custom_policy_asks_the_external_authorizer_for_requests_inside_the_tunnel";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let canary: &'static str = "EXT-AUTHZ-IN-TUNNEL-7b3f";
    // The authorizer runs in the protected pod on 7409; the policy names
    // port 7401 only, or the daemon's own check requests to 7409 would be
    // captured and sent to the authorizer again (a loop, as with a sidecar
    // whose CUSTOM policy covers its authorizer's port).
    let m = two_nodes(&p, 58, vec![port("http", 7401)], |b, config| {
        serve_http(b, 7401, canary);
        serve_authorizer(b, 7409);
        let authz = b.pod("default", "server").unwrap().ip;
        std::fs::write(
            config.join("ext-authz.yaml"),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n\
                 \x20   extensionProviders:\n\
                 \x20   - name: sample\n\
                 \x20     envoyExtAuthzHttp:\n\
                 \x20       service: \"{authz}\"\n\
                 \x20       port: 7409\n\
                 \x20       includeRequestHeadersInCheck: [\"x-ext-authz\"]\n---\n\
                 apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                 metadata: {{name: ext, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: echo}}}}\n\
                 \x20 action: CUSTOM\n  provider: {{name: sample}}\n  rules:\n  - to: [{{operation: {{ports: [\"7401\"], paths: [\"/admin/*\"]}}}}]\n"
            ),
        )
        .unwrap();
    });
    let server_ip = m.b.pods()[0].ip;
    let url = |path: &str| format!("http://{server_ip}:7401{path}");
    // Not matched by the CUSTOM rule: the authorizer is not asked.
    let got = eventually(
        &m,
        "a public path",
        || curl(&m, "client", &[&url("/public")]),
        |r| r.0 == 200,
    );
    assert_eq!(got.1, format!("{canary} peer=127.0.0.6 GET /public"));
    // Matched: the authorizer decides on node B.
    assert_eq!(
        curl(
            &m,
            "client",
            &["-H", "x-ext-authz: allow", &url("/admin/x")]
        ),
        (200, format!("{canary} peer=127.0.0.6 GET /admin/x")),
        "{}",
        m.logs()
    );
    assert_eq!(
        curl(&m, "client", &["-H", "x-ext-authz: deny", &url("/admin/x")]),
        (403, "denied by ext_authz for testing purpose".to_string()),
        "{}",
        m.logs()
    );
    // The check requests took the mesh's outbound decision: the
    // authorizer is a meshed pod, so they went through an HBONE tunnel to
    // its port presenting the protected workload's identity.
    let checked_via_tunnel = m.db.log().lines().any(|l| {
        l.contains("inbound HBONE connection")
            && l.contains(&format!("dst.addr={server_ip}:7409"))
            && l.contains("src.identity=spiffe://cluster.local/ns/default/sa/echo")
    });
    assert!(checked_via_tunnel, "{}", m.logs());
    let metrics = metrics_b(&m);
    assert!(
        !series(
            &metrics,
            "istio_requests_total",
            &[
                DEST,
                MTLS,
                SLEEP,
                "response_code=\"403\"",
                "response_flags=\"UAEX\""
            ]
        )
        .is_empty(),
        "{metrics}"
    );
}
