//! CUSTOM AuthorizationPolicies through the real proxy, against a small
//! external authorizer on loopback (like Istio's `samples/extauthz` HTTP
//! server: `x-ext-authz: allow` allows, anything else is denied with 403
//! and a body): allow with `headersToUpstreamOnAllow`, deny with the
//! provider's status/body/headers (`UAEX`), the check request's shape
//! (`pathPrefix`, `includeRequestHeadersInCheck`,
//! `includeAdditionalHeadersInCheck`), Istio's order CUSTOM → DENY →
//! ALLOW, errors and timeouts under `failOpen` / `statusOnError`, and
//! providers Strait cannot ask failing closed.
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::client::Client;
use support::{fresh_ip, MeshBuilder};
use tokio::net::TcpListener;

/// One check request as the authorizer saw it.
#[derive(Clone, Debug)]
struct Check {
    method: http::Method,
    path: String,
    headers: HeaderMap,
}

/// A loopback external authorizer.
struct Authorizer {
    addr: SocketAddr,
    checks: Arc<Mutex<Vec<Check>>>,
}

impl Authorizer {
    async fn start() -> Authorizer {
        let listener = TcpListener::bind(SocketAddr::new(fresh_ip(), 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let checks: Arc<Mutex<Vec<Check>>> = Arc::default();
        let seen = checks.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |r: Request<Incoming>| {
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(answer(r, &seen).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Authorizer { addr, checks }
    }

    fn checks(&self) -> Vec<Check> {
        self.checks.lock().unwrap().clone()
    }
}

async fn answer(r: Request<Incoming>, seen: &Mutex<Vec<Check>>) -> Response<Full<Bytes>> {
    seen.lock().unwrap().push(Check {
        method: r.method().clone(),
        path: r.uri().to_string(),
        headers: r.headers().clone(),
    });
    let verdict = r
        .headers()
        .get("x-ext-authz")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match verdict.as_str() {
        "allow" => Response::builder()
            .status(200)
            .header("x-ext-authz-check-result", "allowed")
            .header("x-user", "alice")
            .header("x-not-forwarded", "1")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Response::new(Full::new(Bytes::new()))
        }
        "boom" => Response::builder()
            .status(500)
            .body(Full::new(Bytes::from_static(b"authorizer broke")))
            .unwrap(),
        _ => Response::builder()
            .status(403)
            .header("x-ext-authz-check-result", "denied")
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(
                b"denied by ext_authz for testing purpose",
            )))
            .unwrap(),
    }
}

fn mesh_config(providers: &str) -> String {
    let body: String = format!("extensionProviders:\n{providers}")
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n{body}")
}

/// An `envoyExtAuthzHttp` provider `name` at `addr` with `extra` fields
/// (YAML lines, indented for the provider's object).
fn provider(name: &str, addr: SocketAddr, extra: &str) -> String {
    format!(
        "- name: {name}\n  envoyExtAuthzHttp:\n    service: \"{}\"\n    port: {}\n{extra}",
        addr.ip(),
        addr.port()
    )
}

const CUSTOM_ON_ADMIN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: default}
spec:
  selector: {matchLabels: {app: api}}
  action: CUSTOM
  provider: {name: sample}
  rules:
  - to:
    - operation:
        paths: ["/admin/*"]
"#;

async fn mesh(providers: &str, policies: &str) -> support::Mesh {
    let mut b = MeshBuilder::new();
    b.service("api", 9080, "http", &[("api-v1", &[])]).await;
    b.yaml(&mesh_config(providers));
    b.yaml(policies);
    b.start().await
}

/// Services `api`, `web` and `db` (port 9080, one pod `<name>-v1` each),
/// the extension `providers` in MeshConfig, and for each `(app, provider)`
/// of `policies` a CUSTOM AuthorizationPolicy `ext-<app>` selecting
/// `app: <app>` whose `rules` (a YAML flow list) send matching requests to
/// `provider`. Returns the running mesh.
async fn custom_authz_mesh(
    providers: &str,
    policies: &[(&str, &str)],
    rules: &str,
) -> support::Mesh {
    let mut yaml = String::new();
    for (app, p) in policies {
        yaml.push_str(&format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: ext-{app}, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  action: CUSTOM\n  provider: {{name: {p}}}\n  rules: {rules}\n"
        ));
    }
    let mut b = MeshBuilder::new();
    for s in ["api", "web", "db"] {
        b.service(s, 9080, "http", &[(&format!("{s}-v1"), &[])])
            .await;
    }
    b.yaml(&mesh_config(providers));
    b.yaml(&yaml);
    b.start().await
}

#[tokio::test]
async fn authorizer_allows_and_denies_only_what_custom_rules_match() {
    let authz = Authorizer::start().await;
    let extra = "    pathPrefix: /check\n    includeRequestHeadersInCheck: [\"x-ext-authz\", \"x-tenant-*\"]\n    includeAdditionalHeadersInCheck: {x-from-proxy: strait}\n    headersToUpstreamOnAllow: [\"x-ext-authz-check-result\", \"x-user\"]\n    headersToDownstreamOnDeny: [\"x-ext-authz-check-result\", \"content-type\"]\n";
    let m = mesh(&provider("sample", authz.addr, extra), CUSTOM_ON_ADMIN).await;
    let c = Client::http1();

    // Not matched by the CUSTOM rules: the authorizer is not asked.
    let r = c.get(&m.url("api", "/public"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(authz.checks().is_empty());

    // Allowed: headersToUpstreamOnAllow reach the backend, others do not.
    let r = c
        .get(
            &m.url("api", "/admin/users?page=2"),
            &[
                ("x-ext-authz", "allow"),
                ("x-tenant-id", "t1"),
                ("x-secret", "s"),
                ("authorization", "Basic dTpw"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = m.backend("api", "api-v1").seen();
    let last = seen.last().unwrap();
    assert_eq!(last.headers["x-ext-authz-check-result"], "allowed");
    assert_eq!(last.headers["x-user"], "alice");
    assert!(!last.headers.contains_key("x-not-forwarded"));

    // The check request: method, pathPrefix + path + query, the listed
    // headers plus authorization and host, the additional header.
    let checks = authz.checks();
    assert_eq!(checks.len(), 1);
    let ck = &checks[0];
    assert_eq!(ck.method, http::Method::GET);
    assert_eq!(ck.path, "/check/admin/users?page=2");
    assert_eq!(ck.headers["x-ext-authz"], "allow");
    assert_eq!(ck.headers["x-tenant-id"], "t1");
    assert_eq!(ck.headers["authorization"], "Basic dTpw");
    assert_eq!(ck.headers["x-from-proxy"], "strait");
    assert!(!ck.headers.contains_key("x-secret"), "{:?}", ck.headers);
    assert_eq!(ck.headers["host"], m.fronts["api"].to_string().as_str());

    // Denied: the provider's status, body and the listed headers; UAEX.
    let hits = m.backend("api", "api-v1").hits();
    let r = c
        .get(&m.url("api", "/admin/users"), &[("x-ext-authz", "deny")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body, "denied by ext_authz for testing purpose");
    assert_eq!(r.header("x-ext-authz-check-result"), Some("denied"));
    assert_eq!(m.backend("api", "api-v1").hits(), hits);
    let logs = m.logs().await;
    let l = logs.iter().find(|l| l.response_code == 403).unwrap();
    assert_eq!(l.response_flags.to_string(), "UAEX");
    assert_eq!(l.response_code_details, Some("ext_authz_denied"));
}

#[tokio::test]
async fn custom_is_asked_before_deny_and_allow() {
    let authz = Authorizer::start().await;
    let deny = support::yaml::deny_policy("no-delete", "api", r#"methods: ["DELETE"]"#);
    let policies = format!("{CUSTOM_ON_ADMIN}\n---\n{deny}");
    let m = mesh(
        &provider(
            "sample",
            authz.addr,
            "    includeRequestHeadersInCheck: [\"x-ext-authz\"]\n",
        ),
        &policies,
    )
    .await;
    let c = Client::http1();
    let del = |path: &str, verdict: &'static str| {
        let url = m.url("api", path);
        let c = &c;
        async move {
            c.send(
                http::Method::DELETE,
                &url,
                &[("x-ext-authz", verdict)],
                Bytes::new(),
            )
            .await
        }
    };
    // The authorizer allows, then DENY decides: 403 RBAC.
    let r = del("/admin/x", "allow").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body, "RBAC: access denied");
    assert_eq!(authz.checks().len(), 1);
    // The authorizer denies first: its answer, even though DENY matches too.
    let r = del("/admin/x", "no").await;
    assert_eq!(r.body, "denied by ext_authz for testing purpose");
    assert_eq!(authz.checks().len(), 2);
}

#[tokio::test]
async fn errors_follow_fail_open_and_status_on_error() {
    let authz = Authorizer::start().await;
    // Nothing listens here.
    let gone = TcpListener::bind(SocketAddr::new(fresh_ip(), 0))
        .await
        .unwrap();
    let dead = gone.local_addr().unwrap();
    drop(gone);
    let providers = [
        provider(
            "closed",
            authz.addr,
            "    timeout: 300ms\n    statusOnError: \"503\"\n    includeRequestHeadersInCheck: [\"x-ext-authz\"]\n",
        ),
        provider("open", dead, "    failOpen: true\n"),
        provider("default", dead, ""),
    ]
    .join("");
    let m = custom_authz_mesh(
        &providers,
        &[("api", "closed"), ("web", "open"), ("db", "default")],
        "[{}]",
    )
    .await;
    let c = Client::http1();

    // A 5xx from the authorizer is an error: statusOnError.
    let r = c.get(&m.url("api", "/"), &[("x-ext-authz", "boom")]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    // No answer within `timeout`: statusOnError.
    let t0 = std::time::Instant::now();
    let r = c.get(&m.url("api", "/"), &[("x-ext-authz", "slow")]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    // Unreachable authorizer with failOpen: allowed.
    let r = c.get(&m.url("web", "/"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Unreachable authorizer, defaults: Envoy's 403, empty body.
    let r = c.get(&m.url("db", "/"), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body, "");
    assert_eq!(m.backend("db", "db-v1").hits(), 0);
    let logs = m.logs().await;
    assert!(
        logs.iter()
            .filter(|l| l.response_code_details == Some("ext_authz_error"))
            .count()
            >= 3,
        "{logs:?}"
    );
}

#[tokio::test]
async fn providers_strait_cannot_ask_fail_closed() {
    let authz = Authorizer::start().await;
    let providers = [
        format!(
            "- name: grpc\n  envoyExtAuthzGrpc:\n    service: \"{}\"\n    port: {}\n",
            authz.addr.ip(),
            authz.addr.port()
        ),
        provider(
            "body",
            authz.addr,
            "    includeRequestBodyInCheck: {maxRequestBytes: 100}\n",
        ),
        provider("ok", authz.addr, ""),
    ]
    .join("");
    let m = custom_authz_mesh(
        &providers,
        &[("api", "grpc"), ("web", "body"), ("db", "missing")],
        r#"[{to: [{operation: {paths: ["/private/*"]}}]}]"#,
    )
    .await;
    let c = Client::http1();
    for s in ["api", "web", "db"] {
        let r = c
            .get(&m.url(s, "/private/x"), &[("x-ext-authz", "allow")])
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{s}: {}", r.body);
        assert_eq!(r.body, "RBAC: access denied", "{s}");
        // What the CUSTOM rules do not match is not affected.
        let r = c.get(&m.url(s, "/public"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{s}: {}", r.body);
    }
    assert!(authz.checks().is_empty());
}

#[tokio::test]
async fn registry_service_provider_is_resolved_through_its_cluster() {
    let authz = Authorizer::start().await;
    let se = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext-authz, namespace: default}}\nspec:\n  hosts: [ext-authz.example.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: {port}, name: http, protocol: HTTP}}]\n  endpoints: [{{address: \"{ip}\"}}]\n",
        port = authz.addr.port(),
        ip = authz.addr.ip()
    );
    let prov = format!(
        "- name: sample\n  envoyExtAuthzHttp:\n    service: default/ext-authz.example.internal\n    port: {}\n    includeRequestHeadersInCheck: [\"x-ext-authz\"]\n",
        authz.addr.port()
    );
    let m = mesh(&prov, &format!("{se}\n---\n{CUSTOM_ON_ADMIN}")).await;
    let c = Client::http1();
    let r = c
        .get(&m.url("api", "/admin/a"), &[("x-ext-authz", "allow")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = c.get(&m.url("api", "/admin/a"), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(authz.checks().len(), 2);
}
