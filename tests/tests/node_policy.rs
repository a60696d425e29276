//! Tier 3: Istio's security tasks on a simulated node under `strait run`
//! (bookinfo, the client pod calling productpage's ClusterIP):
//! "Authorization for HTTP traffic", "Explicit deny", "JWT" (with Istio's
//! sample tokens and JWKS) and "IP-based" deny — 403 `RBAC: access denied`
//! with flag `RBAC` in the access log and `response_code="403"` in
//! `istio_requests_total`, 401 with Envoy's JWT messages.
use std::path::PathBuf;

use strait_tests::demo::{self, Mesh};

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/bookinfo")
}

/// `curl` from the client pod to productpage: (status, body).
fn call(mesh: &Mesh, method: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let vip = mesh
        .node()
        .service("default", "productpage")
        .unwrap()
        .cluster_ip
        .unwrap();
    let mut cmd = mesh
        .node()
        .pod("default", "client")
        .unwrap()
        .command("curl")
        .unwrap();
    cmd.args(["-sS", "-m", "10", "-X", method, "-w", "\n%{http_code}"]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    cmd.arg(format!("http://{vip}:9080/productpage"));
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{spec}---\n"
    )
}

fn expect(mesh: &Mesh, step: &str, got: (u16, String), status: u16, body: &str) {
    assert!(
        got.0 == status && got.1.contains(body),
        "{step}: expected {status} with {body:?}, got {} {:?}\ndaemon log:\n{}",
        got.0,
        got.1,
        mesh.log_tail(20)
    );
}

#[test]
fn istio_security_tasks_on_a_node() {
    let name = "istio_security_tasks_on_a_node";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let Some(jwt) = strait_tests::demo::istio_jwt(name) else {
        return;
    };
    let s = samples();
    let opts = demo::test_options(
        s.join("platform.yaml"),
        vec![s.join("destination-rules.yaml")],
        217,
    )
    .unwrap();
    let mesh = Mesh::start(&p, opts).unwrap();
    expect(
        &mesh,
        "no policy",
        call(&mesh, "GET", &[]),
        200,
        "productpage",
    );

    // "Authorization for HTTP traffic": allow-nothing, then a GET viewer.
    let nothing = policy("allow-nothing", "  {}\n");
    mesh.write_config_file("policy.yaml", &nothing).unwrap();
    expect(
        &mesh,
        "allow-nothing",
        call(&mesh, "GET", &[]),
        403,
        "RBAC: access denied",
    );
    let viewer = policy(
        "productpage-viewer",
        "  selector:\n    matchLabels:\n      app: productpage\n  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n",
    );
    mesh.write_config_file("policy.yaml", &format!("{nothing}{viewer}"))
        .unwrap();
    let (code, body) = call(&mesh, "GET", &[]);
    expect(
        &mesh,
        "viewer GET",
        (code, body.clone()),
        200,
        "productpage",
    );
    // productpage's own calls to details/reviews are still denied.
    assert!(
        body.contains("unavailable") || body.contains("403"),
        "{body}"
    );
    expect(
        &mesh,
        "viewer POST",
        call(&mesh, "POST", &[]),
        403,
        "RBAC: access denied",
    );

    // "Explicit deny": DENY beats ALLOW.
    let allow_all = policy("allow-all", "  rules:\n  - {}\n");
    let deny_get = policy(
        "deny-method-get",
        "  selector:\n    matchLabels:\n      app: productpage\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n    when:\n    - key: request.headers[x-token]\n      notValues: [\"admin\"]\n",
    );
    mesh.write_config_file("policy.yaml", &format!("{allow_all}{deny_get}"))
        .unwrap();
    expect(
        &mesh,
        "deny GET",
        call(&mesh, "GET", &[]),
        403,
        "RBAC: access denied",
    );
    expect(
        &mesh,
        "deny GET, admin token",
        call(&mesh, "GET", &[("x-token", "admin")]),
        200,
        "productpage",
    );

    // "IP-based": DENY the client pod's address.
    let client_ip = mesh.node().pod("default", "client").unwrap().ip;
    let deny_ip = policy(
        "deny-client-ip",
        &format!(
            "  selector:\n    matchLabels:\n      app: productpage\n  action: DENY\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"{client_ip}/32\"]\n"
        ),
    );
    mesh.write_config_file("policy.yaml", &format!("{allow_all}{deny_ip}"))
        .unwrap();
    expect(
        &mesh,
        "ipBlocks deny",
        call(&mesh, "GET", &[]),
        403,
        "RBAC: access denied",
    );

    // "JWT": RequestAuthentication with Istio's JWKS; a policy requiring a
    // request principal; the `sub` claim copied to `end-user`, which
    // productpage echoes.
    let jwks = std::fs::read_to_string(jwt.join("jwks.json")).unwrap();
    let token = |f: &str| strait_tests::demo::jwt_file(&jwt, f);
    let ra = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt-example\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: productpage\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    outputClaimToHeaders:\n    - header: end-user\n      claim: sub\n    jwks: '{}'\n---\n",
        jwks.replace('\n', " ")
    );
    let require = policy(
        "require-jwt",
        "  selector:\n    matchLabels:\n      app: productpage\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"*\"]\n",
    );
    mesh.write_config_file("policy.yaml", &format!("{ra}{require}"))
        .unwrap();
    let demo = token("demo.jwt");
    let bearer = format!("Bearer {demo}");
    let (code, body) = call(&mesh, "GET", &[("authorization", &bearer)]);
    expect(
        &mesh,
        "valid token",
        (code, body.clone()),
        200,
        "productpage",
    );
    assert!(
        body.contains("\"end-user\":\"testing@secure.istio.io\""),
        "{body}"
    );
    expect(
        &mesh,
        "no token",
        call(&mesh, "GET", &[]),
        403,
        "RBAC: access denied",
    );
    // Tampered: another payload under demo.jwt's signature.
    let b64 = |j: &str| {
        use std::fmt::Write;
        // base64url without padding, by hand (test input only).
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = j.as_bytes();
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..=c.len() {
                let _ = write!(s, "{}", A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        s
    };
    let parts: Vec<&str> = demo.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(r#"{"exp":4685989700,"iss":"testing@secure.istio.io","sub":"admin"}"#),
        parts[2]
    );
    expect(
        &mesh,
        "tampered token",
        call(
            &mesh,
            "GET",
            &[("authorization", &format!("Bearer {forged}"))],
        ),
        401,
        "Jwt verification fails",
    );
    let expired = format!(
        "{}.{}.{}",
        parts[0],
        b64(r#"{"exp":1000,"iss":"testing@secure.istio.io","sub":"testing@secure.istio.io"}"#),
        parts[2]
    );
    expect(
        &mesh,
        "expired token",
        call(
            &mesh,
            "GET",
            &[("authorization", &format!("Bearer {expired}"))],
        ),
        401,
        "Jwt is expired",
    );
    // `request.auth.claims[groups]`: groups-scope.jwt has group1, demo.jwt none.
    let groups = policy(
        "require-group1",
        "  selector:\n    matchLabels:\n      app: productpage\n  action: ALLOW\n  rules:\n  - when:\n    - key: request.auth.claims[groups]\n      values: [\"group1\"]\n",
    );
    mesh.write_config_file("policy.yaml", &format!("{ra}{groups}"))
        .unwrap();
    let g = format!("Bearer {}", token("groups-scope.jwt"));
    expect(
        &mesh,
        "group1 token",
        call(&mesh, "GET", &[("authorization", &g)]),
        200,
        "productpage",
    );
    expect(
        &mesh,
        "token without groups",
        call(&mesh, "GET", &[("authorization", &bearer)]),
        403,
        "RBAC: access denied",
    );

    // Denials are in the access log (flag RBAC) and the metrics.
    let log = mesh.log();
    assert!(
        log.lines().any(|l| l.contains(" 403 RBAC ")),
        "no access-log line with 403 RBAC:\n{}",
        mesh.log_tail(30)
    );
    let metrics = mesh.admin_text("/stats/prometheus").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total") && l.contains("response_code=\"403\"")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total") && l.contains("response_code=\"401\"")),
        "{metrics}"
    );
}

/// "Authorization for TCP traffic": tcp-echo on ports 9000 and 9001; an
/// ALLOW policy on port 9000 closes 9001 connections; an ALLOW rule with
/// HTTP-only fields allows nothing on TCP; a DENY rule with HTTP-only
/// fields denies its port.
#[test]
fn istio_tcp_authorization_task_on_a_node() {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};
    use strait_tests::node::echo::{self, Then};
    use strait_tests::node::{Daemon, Node, PodSpec, ServiceDef, ServicePort};

    let name = "istio_tcp_authorization_task_on_a_node";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-1", 218).unwrap();
    node.add_pod(PodSpec::new("client", &[("app", "client")]))
        .unwrap();
    node.add_pod(PodSpec::new("tcp-echo", &[("app", "tcp-echo")]))
        .unwrap();
    let port = |n: u16| ServicePort::named(&format!("tcp-{n}"), n);
    node.add_service(ServiceDef::app(
        "tcp-echo",
        "tcp-echo",
        vec![port(9000), port(9001)],
    ))
    .unwrap();
    // tcp-echo: answers every connection with "hello <port>".
    let server = node.pod("default", "tcp-echo").unwrap();
    for n in [9000u16, 9001] {
        let l = echo::listen(&server.netns, (server.ip, n)).unwrap();
        echo::tcp(l, move |_| format!("hello {n}"), Then::Close);
    }
    let dir = node.tmp_dir().join("config");
    node.write_config(&dir).unwrap();
    let mut daemon = Daemon::on(&node, &dir)
        .args(["--admin", demo::mesh::ADMIN])
        .spawn()
        .unwrap();
    let admin: SocketAddr = demo::mesh::ADMIN.parse().unwrap();
    daemon.wait_ready(&node, admin, Duration::from_secs(20));
    let vip = node
        .service("default", "tcp-echo")
        .unwrap()
        .cluster_ip
        .unwrap();
    let probe = |n: u16| {
        let client = node.pod("default", "client").unwrap();
        client.probe(SocketAddr::from((vip, n)))
    };
    // Applies a policy file and waits until the daemon answers as `ready`
    // says (a reload takes well under a second; allow 10 s).
    let apply = |yaml: &str, ready: &dyn Fn() -> bool| {
        let tmp = dir.join(".policy.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, dir.join("policy.yaml")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "policy not in force after 10 s:\n{yaml}\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(probe(9000), "hello 9000");
    assert_eq!(probe(9001), "hello 9001");
    let selector = "  selector:\n    matchLabels:\n      app: tcp-echo\n";
    let spec = |name: &str, body: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{selector}{body}"
        )
    };
    apply(
        &spec(
            "tcp-policy",
            "  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        ports: [\"9000\"]\n",
        ),
        &|| probe(9001) != "hello 9001",
    );
    assert_eq!(probe(9000), "hello 9000");
    assert!(!probe(9001).contains("hello"));
    // HTTP-only field in an ALLOW rule: the rule is ignored, nothing allowed.
    apply(
        &spec(
            "tcp-policy",
            "  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        ports: [\"9000\"]\n",
        ),
        &|| probe(9000) != "hello 9000",
    );
    assert!(!probe(9001).contains("hello"));
    // HTTP-only field in a DENY rule: port 9000 denied, 9001 allowed.
    apply(
        &spec(
            "tcp-policy",
            "  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        ports: [\"9000\"]\n",
        ),
        &|| probe(9001) == "hello 9001",
    );
    assert!(!probe(9000).contains("hello"));
    let text = daemon.log();
    assert!(
        text.lines()
            .any(|l| l.contains(" RBAC ") && l.contains("tcp-echo")),
        "{text}"
    );
}
