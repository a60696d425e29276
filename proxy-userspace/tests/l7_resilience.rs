//! Fault injection, retries, timeouts, circuit breaking, outlier detection,
//! mirroring and CORS through the proxy, against real backends.
mod support;

use std::time::{Duration, Instant};

use support::client::Client;
use support::{Kind, MeshBuilder};

async fn ratings_mesh(pods: &[(&str, &[(&str, &str)])], istio: &str) -> support::Mesh {
    let mut b = MeshBuilder::new();
    b.service("ratings", 9080, "http", pods).await;
    b.yaml(istio);
    b.start().await
}

/// [`ratings_mesh`] with one pod `ratings-v1` and a VirtualService on
/// `ratings` whose `http:` list is `routes` (see
/// [`support::yaml::virtual_service`]).
async fn ratings_routes(routes: &str) -> support::Mesh {
    let vs = support::yaml::virtual_service("ratings", routes);
    ratings_mesh(&[("ratings-v1", &[])], &vs).await
}

#[tokio::test]
async fn fault_delay_and_abort_with_percentages() {
    let mesh = ratings_routes(
        r#"
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {delay: {percentage: {value: 100.0}, fixedDelay: 300ms}}
    route: [{destination: {host: ratings}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {percentage: {value: 100.0}, httpStatus: 500}}
    route: [{destination: {host: ratings}}]
  - match: [{uri: {prefix: /half}}]
    fault: {abort: {percentage: {value: 50.0}, httpStatus: 503}}
    route: [{destination: {host: ratings}}]
  - route: [{destination: {host: ratings}}]
"#,
    )
    .await;
    let c = Client::http1();

    let t = Instant::now();
    let r = c
        .get(&mesh.url("ratings", "/"), &[("end-user", "jason")])
        .await;
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert!(took >= Duration::from_millis(300), "delayed {took:?}");
    let t = Instant::now();
    c.get(&mesh.url("ratings", "/"), &[]).await;
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "others are not delayed"
    );

    let before = mesh.backend("ratings", "ratings-v1").hits();
    let r = c.get(&mesh.url("ratings", "/abort"), &[]).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body, "fault filter abort");
    assert_eq!(
        mesh.backend("ratings", "ratings-v1").hits(),
        before,
        "aborted requests never reach the backend"
    );

    let n = 200;
    let mut aborted = 0;
    for _ in 0..n {
        if c.get(&mesh.url("ratings", "/half"), &[]).await.status == 503 {
            aborted += 1;
        }
    }
    support::assert_binomial(aborted, n, 0.5, "50% abort");

    // A client that gives up during the delay is still logged: code 0, DC.
    let url = mesh.url("ratings", "/gone");
    let gone = tokio::time::timeout(
        Duration::from_millis(100),
        c.get(&url, &[("end-user", "jason"), ("x-request-id", "gone-1")]),
    )
    .await;
    assert!(gone.is_err(), "the client gave up first");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let logs = mesh.logs().await;
    assert!(logs
        .iter()
        .any(|l| l.response_flags.to_string() == "DI" && l.response_code == 200));
    let gone = logs
        .iter()
        .find(|l| l.request_id.as_deref() == Some("gone-1"))
        .expect("logged");
    assert_eq!(
        (gone.response_code, gone.response_flags.to_string().as_str()),
        (0, "DI,DC")
    );
    let fi = logs.iter().find(|l| l.response_code == 500).unwrap();
    assert_eq!(fi.response_flags.to_string(), "FI");
    assert_eq!(fi.response_code_details, Some("fault_filter_abort"));
}

#[tokio::test]
async fn retries_hide_failing_first_tries() {
    let mesh = ratings_routes(
        r#"
  - match: [{uri: {prefix: /retry}}]
    retries: {attempts: 3, retryOn: "5xx"}
    route: [{destination: {host: ratings}}]
  - match: [{uri: {prefix: /few}}]
    retries: {attempts: 1, retryOn: "gateway-error"}
    route: [{destination: {host: ratings}}]
  - match: [{uri: {prefix: /none}}]
    retries: {attempts: 0}
    route: [{destination: {host: ratings}}]
  - route: [{destination: {host: ratings}}]
"#,
    )
    .await;
    let b = mesh.backend("ratings", "ratings-v1");
    let c = Client::http1();

    b.fail_next(2, 500);
    let r = c
        .send(
            http::Method::POST,
            &mesh.url("ratings", "/retry"),
            &[],
            "payload".into(),
        )
        .await;
    assert_eq!(r.status, 200, "two failures then success within 3 retries");
    assert_eq!(b.hits(), 3);
    assert!(
        b.seen().iter().all(|s| s.body == "payload"),
        "the body is replayed on every try"
    );

    b.fail_next(3, 502);
    let r = c.get(&mesh.url("ratings", "/few"), &[]).await;
    assert_eq!(
        r.status, 502,
        "one retry is not enough: the last upstream answer is returned"
    );
    let logs = mesh.logs().await;
    assert_eq!(logs.last().unwrap().response_flags.to_string(), "URX");
    b.fail_next(0, 200);

    // Istio's default policy retries 503 twice.
    let before = b.hits();
    b.fail_next(2, 503);
    let r = c.get(&mesh.url("ratings", "/"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(b.hits() - before, 3);
    // ... but not 500.
    b.fail_next(1, 500);
    assert_eq!(c.get(&mesh.url("ratings", "/"), &[]).await.status, 500);

    b.fail_next(1, 503);
    assert_eq!(
        c.get(&mesh.url("ratings", "/none"), &[]).await.status,
        503,
        "attempts: 0 disables retries"
    );
}

#[tokio::test]
async fn route_timeout_and_per_try_timeout() {
    let mesh = ratings_routes(
        r#"
  - match: [{uri: {prefix: /delay/}}]
    timeout: 200ms
    route: [{destination: {host: ratings}}]
  - match: [{uri: {prefix: /try/delay/}}]
    retries: {attempts: 2, perTryTimeout: 100ms, retryOn: 5xx}
    rewrite: {uri: /delay/}
    route: [{destination: {host: ratings}}]
  - route: [{destination: {host: ratings}}]
"#,
    )
    .await;
    let c = Client::http1();
    let t = Instant::now();
    let r = c.get(&mesh.url("ratings", "/delay/1000"), &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.body, "upstream request timeout");
    assert!(t.elapsed() < Duration::from_millis(900));
    assert_eq!(
        c.get(&mesh.url("ratings", "/delay/20"), &[]).await.status,
        200
    );
    let logs = mesh.logs().await;
    assert!(logs
        .iter()
        .any(|l| l.response_code == 504 && l.response_flags.to_string() == "UT"));
}

#[tokio::test]
async fn circuit_breaker_overflows_with_uo() {
    // Istio's circuit-breaking task: maxConnections 1, one pending request.
    let dr = &support::yaml::destination_rule(
        "ratings",
        r#"
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
"#,
    );
    let mesh = ratings_mesh(&[("ratings-v1", &[])], dr).await;
    let url = mesh.url("ratings", "/delay/150");
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = url.clone();
        tasks.push(tokio::spawn(
            async move { Client::http1().get(&url, &[]).await },
        ));
    }
    let mut ok = 0;
    let mut overflow = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => ok += 1,
            503 => {
                assert!(r.body.contains("overflow"), "{}", r.body);
                overflow += 1
            }
            s => panic!("unexpected {s}"),
        }
    }
    // One in flight + one pending succeed, the other four overflow.
    assert_eq!((ok, overflow), (2, 4));
    let logs = mesh.logs().await;
    assert_eq!(
        logs.iter()
            .filter(|l| l.response_flags.to_string() == "UO")
            .count(),
        4
    );
}

#[tokio::test]
async fn outlier_detection_ejects_failing_host() {
    let dr = &support::yaml::rule_and_routes(
        "ratings",
        r#"
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}
"#,
        r#"
  - retries: {attempts: 0}
    route: [{destination: {host: ratings}}]
"#,
    );
    let mesh = ratings_mesh(&[("ratings-a", &[]), ("ratings-b", &[])], dr).await;
    let bad = mesh.backend("ratings", "ratings-a");
    bad.fail_next(1000, 500);
    let c = Client::http1();
    let mut errors = 0;
    for _ in 0..20 {
        if c.get(&mesh.url("ratings", "/"), &[]).await.status == 500 {
            errors += 1;
        }
    }
    assert_eq!(errors, 2, "after two consecutive 5xx the host is ejected");
    assert_eq!(bad.hits(), 2);
    // Both hosts failing: only 50% may be ejected, the last host stays.
    mesh.backend("ratings", "ratings-b").fail_next(1000, 503);
    for _ in 0..5 {
        assert_eq!(c.get(&mesh.url("ratings", "/"), &[]).await.status, 503);
    }
}

#[tokio::test]
async fn no_healthy_upstream_and_connect_failure() {
    let mut b = MeshBuilder::new();
    b.versioned(Kind::Http, "ratings", 9080, "http", &["v1"])
        .await;
    b.yaml(&support::yaml::rule_and_routes(
        "ratings",
        r#"
  subsets: [{name: v9, labels: {version: v9}}, {name: v1, labels: {version: v1}}]
"#,
        r#"
  - match: [{uri: {prefix: /empty}}]
    route: [{destination: {host: ratings, subset: v9}}]
  - route: [{destination: {host: ratings, subset: v1}}]
"#,
    ));
    let mut mesh = b.start().await;
    let c = Client::http1();
    let r = c.get(&mesh.url("ratings", "/empty"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (503, "no healthy upstream")
    );
    // Stop the only backend: connect failure, retried by the default policy, then UF.
    let svc = mesh
        .services
        .iter_mut()
        .find(|s| s.name == "ratings")
        .unwrap();
    svc.backends.clear();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = c.get(&mesh.url("ratings", "/"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "upstream connect error or disconnect/reset before headers. reset reason: connection failure");
    let logs = mesh.logs().await;
    assert_eq!(logs[0].response_flags.to_string(), "UH");
    assert_eq!(logs.last().unwrap().response_flags.to_string(), "UF,URX");
}

#[tokio::test]
async fn mirror_gets_a_copy_client_sees_primary() {
    let mut b = MeshBuilder::new();
    b.versioned(Kind::Http, "httpbin", 8000, "http", &["v1", "v2"])
        .await;
    b.yaml(&support::yaml::rule_and_routes(
        "httpbin",
        r#"
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"#,
        r#"
  - route: [{destination: {host: httpbin, subset: v1}, weight: 100}]
    mirror: {host: httpbin, subset: v2}
    mirrorPercentage: {value: 100.0}
"#,
    ));
    let mesh = b.start().await;
    let c = Client::http1();
    for _ in 0..5 {
        let r = c
            .get(
                &mesh.url("httpbin", "/headers"),
                &[("host", "httpbin:8000")],
            )
            .await;
        assert_eq!(r.served_by(), Some("httpbin-v1"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mirror = mesh.backend("httpbin", "httpbin-v2");
    assert_eq!(mirror.hits(), 5, "every request mirrored");
    assert_eq!(mirror.seen()[0].headers["host"], "httpbin-shadow:8000");
    assert_eq!(mirror.seen()[0].path, "/headers");
}

#[tokio::test]
async fn cors_preflight_answered_by_proxy() {
    let mesh = ratings_routes(
        r#"
  - route: [{destination: {host: ratings}}]
    corsPolicy:
      allowOrigins: [{exact: "https://example.com"}, {regex: "https://.*\\.trusted\\.io"}]
      allowMethods: [POST, GET]
      allowHeaders: [x-custom]
      exposeHeaders: [x-served-by]
      maxAge: 24h
      allowCredentials: true
"#,
    )
    .await;
    let c = Client::http1();
    let pre = [
        ("origin", "https://api.trusted.io"),
        ("access-control-request-method", "POST"),
    ];
    let r = c
        .send(
            http::Method::OPTIONS,
            &mesh.url("ratings", "/"),
            &pre,
            Default::default(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://api.trusted.io")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("POST,GET"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-custom"));
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        mesh.backend("ratings", "ratings-v1").hits(),
        0,
        "preflight answered by the proxy"
    );

    let r = c
        .get(
            &mesh.url("ratings", "/"),
            &[("origin", "https://example.com")],
        )
        .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://example.com")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-served-by")
    );

    let r = c
        .get(&mesh.url("ratings", "/"), &[("origin", "https://evil.com")])
        .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        None,
        "unlisted origin gets no CORS headers"
    );
    let bad = [
        ("origin", "https://evil.com"),
        ("access-control-request-method", "POST"),
    ];
    c.send(
        http::Method::OPTIONS,
        &mesh.url("ratings", "/"),
        &bad,
        Default::default(),
    )
    .await;
    assert_eq!(
        mesh.backend("ratings", "ratings-v1").hits(),
        3,
        "unmatched preflight is forwarded"
    );
}
