//! HTTP routing with Istio semantics through the proxy, with real clients
//! and backends on loopback: every match kind, weights, subsets, rewrite,
//! redirect, direct response, header operations, no route, the default
//! route, and the access log.
mod support;

use support::client::Client;
use support::{assert_binomial, Kind, MeshBuilder};

const DR_REVIEWS: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"#;

async fn reviews_mesh(vs: &str) -> support::Mesh {
    let mut b = MeshBuilder::new();
    b.versioned(Kind::Http, "reviews", 9080, "http", &["v1", "v2", "v3"])
        .await;
    b.yaml(DR_REVIEWS);
    b.yaml(vs);
    b.start().await
}

/// One table row: a request and the instance that must serve it.
struct Case {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    want: &'static str,
}

#[tokio::test]
async fn every_match_kind_first_match_wins() {
    let vs = &support::yaml::virtual_service(
        "reviews",
        r#"
  - name: exact-uri
    match: [{uri: {exact: /exact}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: prefix-ignore-case
    match: [{uri: {prefix: /Pre}, ignoreUriCase: true}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: regex-uri
    match: [{uri: {regex: "/items/[0-9]+"}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: header-exact
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: header-prefix
    match: [{headers: {x-team: {prefix: blue}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: header-regex
    match: [{headers: {x-id: {regex: "a+b"}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: header-present
    match: [{headers: {x-present: {}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: without-header
    match: [{uri: {prefix: /without}, withoutHeaders: {x-skip: {}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: method
    match: [{method: {exact: DELETE}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: query
    match: [{queryParams: {user: {exact: kim}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: authority
    match: [{authority: {prefix: reviews.other}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: port-and-scheme
    match: [{port: 9080, scheme: {exact: https}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: two-blocks-ored
    match: [{uri: {exact: /or-a}}, {uri: {exact: /or-b}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: catch-all
    route: [{destination: {host: reviews, subset: v1}}]
"#,
    );
    let mesh = reviews_mesh(vs).await;
    let c = Client::http1();
    let cases = [
        Case {
            what: "exact uri",
            method: "GET",
            path: "/exact",
            headers: &[],
            want: "reviews-v2",
        },
        Case {
            what: "exact uri is not a prefix",
            method: "GET",
            path: "/exact/more",
            headers: &[],
            want: "reviews-v1",
        },
        Case {
            what: "prefix ignoring case",
            method: "GET",
            path: "/pRefix",
            headers: &[],
            want: "reviews-v3",
        },
        Case {
            what: "regex, whole path",
            method: "GET",
            path: "/items/42",
            headers: &[],
            want: "reviews-v2",
        },
        Case {
            what: "regex must match whole path",
            method: "GET",
            path: "/items/42/x",
            headers: &[],
            want: "reviews-v1",
        },
        Case {
            what: "header exact",
            method: "GET",
            path: "/",
            headers: &[("end-user", "jason")],
            want: "reviews-v2",
        },
        Case {
            what: "header exact mismatch",
            method: "GET",
            path: "/",
            headers: &[("end-user", "json")],
            want: "reviews-v1",
        },
        Case {
            what: "header prefix",
            method: "GET",
            path: "/",
            headers: &[("x-team", "blue-7")],
            want: "reviews-v3",
        },
        Case {
            what: "header regex",
            method: "GET",
            path: "/",
            headers: &[("x-id", "aaab")],
            want: "reviews-v3",
        },
        Case {
            what: "header present",
            method: "GET",
            path: "/",
            headers: &[("x-present", "")],
            want: "reviews-v2",
        },
        Case {
            what: "without header absent",
            method: "GET",
            path: "/without",
            headers: &[],
            want: "reviews-v3",
        },
        Case {
            what: "without header present",
            method: "GET",
            path: "/without",
            headers: &[("x-skip", "1")],
            want: "reviews-v1",
        },
        Case {
            what: "method",
            method: "DELETE",
            path: "/",
            headers: &[],
            want: "reviews-v2",
        },
        Case {
            what: "query param",
            method: "GET",
            path: "/q?a=1&user=kim",
            headers: &[],
            want: "reviews-v3",
        },
        Case {
            what: "query param mismatch",
            method: "GET",
            path: "/q?user=kimberly",
            headers: &[],
            want: "reviews-v1",
        },
        Case {
            what: "authority",
            method: "GET",
            path: "/",
            headers: &[("host", "reviews.other:9080")],
            want: "reviews-v2",
        },
        Case {
            what: "port and scheme",
            method: "GET",
            path: "/",
            headers: &[("x-forwarded-proto", "https")],
            want: "reviews-v3",
        },
        Case {
            what: "second match block",
            method: "GET",
            path: "/or-b",
            headers: &[],
            want: "reviews-v2",
        },
        Case {
            what: "first match wins over later rules",
            method: "GET",
            path: "/exact",
            headers: &[("x-team", "blue")],
            want: "reviews-v2",
        },
        Case {
            what: "catch-all",
            method: "GET",
            path: "/anything",
            headers: &[],
            want: "reviews-v1",
        },
    ];
    for case in &cases {
        let r = c
            .send(
                case.method.parse().unwrap(),
                &mesh.url("reviews", case.path),
                case.headers,
                Default::default(),
            )
            .await;
        assert_eq!(r.status, 200, "{}: {r:?}", case.what);
        assert_eq!(r.served_by(), Some(case.want), "{}", case.what);
    }
}

#[tokio::test]
async fn weighted_subsets_follow_weights() {
    let vs = &support::yaml::virtual_service(
        "reviews",
        r#"
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v3}, weight: 20}
"#,
    );
    let mesh = reviews_mesh(vs).await;
    let c = Client::http1();
    let n = 400;
    let mut v3 = 0;
    for _ in 0..n {
        let r = c.get(&mesh.url("reviews", "/"), &[]).await;
        match r.served_by() {
            Some("reviews-v3") => v3 += 1,
            Some("reviews-v1") => {}
            other => panic!("unexpected backend {other:?}"),
        }
    }
    assert_binomial(v3, n, 0.2, "v3 share");
    assert_eq!(
        mesh.backend("reviews", "reviews-v2").hits(),
        0,
        "v2 has weight 0"
    );
}

#[tokio::test]
async fn rewrite_redirect_direct_response_and_headers() {
    let vs = &support::yaml::virtual_service(
        "reviews",
        r#"
  - match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new, authority: rewritten.example}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /svc/}}]
    rewrite:
      uriRegexRewrite: {match: "^/svc/([^/]+)(/.*)$", rewrite: "\\2/instance/\\1"}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {exact: /moved}}]
    redirect: {uri: /here, authority: elsewhere.example, redirectCode: 302}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - headers:
      request:
        set: {x-set: one}
        add: {x-add: two}
        remove: [x-drop]
      response:
        set: {x-resp: yes}
        remove: [x-served-by-remove]
    route:
    - destination: {host: reviews, subset: v2}
      headers:
        request: {set: {x-dest: v2}}
        response: {add: {x-dest-resp: v2}}
"#,
    );
    let mesh = reviews_mesh(vs).await;
    let c = Client::http1();
    let v1 = mesh.backend("reviews", "reviews-v1");

    let r = c.get(&mesh.url("reviews", "/old/page?q=1"), &[]).await;
    assert_eq!(r.status, 200);
    let seen = v1.seen().pop().unwrap();
    assert_eq!(
        seen.path, "/new/page?q=1",
        "prefix rewrite keeps the rest of the path"
    );
    assert_eq!(seen.headers["host"], "rewritten.example");
    assert_eq!(seen.headers["x-envoy-original-path"], "/old/page");

    c.get(&mesh.url("reviews", "/svc/foo/v1/api"), &[]).await;
    assert_eq!(v1.seen().pop().unwrap().path, "/v1/api/instance/foo");

    let r = c.get(&mesh.url("reviews", "/moved?x=1"), &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("http://elsewhere.example/here?x=1")
    );

    let r = c.get(&mesh.url("reviews", "/teapot"), &[]).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.body, "short and stout");

    let r = c
        .get(
            &mesh.url("reviews", "/h"),
            &[("x-drop", "bye"), ("x-set", "zero"), ("x-add", "one")],
        )
        .await;
    assert_eq!(r.served_by(), Some("reviews-v2"));
    assert_eq!(r.header("x-resp"), Some("yes"));
    assert_eq!(r.header("x-dest-resp"), Some("v2"));
    let seen = mesh.backend("reviews", "reviews-v2").seen().pop().unwrap();
    assert_eq!(seen.headers["x-set"], "one");
    let adds: Vec<_> = seen
        .headers
        .get_all("x-add")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(adds, ["one", "two"]);
    assert!(!seen.headers.contains_key("x-drop"));
    assert_eq!(seen.headers["x-dest"], "v2");
    assert!(
        seen.headers.contains_key("x-request-id"),
        "x-request-id is generated"
    );
}

#[tokio::test]
async fn no_route_is_404_nr_and_logged_like_envoy() {
    let vs = &support::yaml::virtual_service(
        "reviews",
        r#"
  - name: only-api
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews, subset: v1}}]
"#,
    );
    let mesh = reviews_mesh(vs).await;
    let c = Client::http1();
    let r = c
        .get(
            &mesh.url("reviews", "/other"),
            &[("user-agent", "curl/7.88.1")],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = c
        .get(
            &mesh.url("reviews", "/api/x"),
            &[("x-request-id", "req-1"), ("user-agent", "curl/7.88.1")],
        )
        .await;
    assert_eq!(r.status, 200);
    let logs = mesh.logs().await;
    let nr = logs
        .iter()
        .find(|l| l.response_code == 404)
        .expect("404 logged");
    assert_eq!(nr.response_flags.to_string(), "NR");
    assert_eq!(nr.response_code_details, Some("route_not_found"));
    let ok = logs
        .iter()
        .find(|l| l.request_id.as_deref() == Some("req-1"))
        .expect("200 logged");
    let line = ok.to_string();
    let v1 = mesh.backend("reviews", "reviews-v1").addr;
    assert!(
        line.contains("\"GET /api/x HTTP/1.1\" 200 - via_upstream - \"-\" 0 10 "),
        "{line}"
    );
    assert!(line.contains(&format!("\"curl/7.88.1\" \"req-1\" \"{}\" \"{v1}\" outbound|9080|v1|reviews.default.svc.cluster.local ", mesh.fronts["reviews"])), "{line}");
    assert!(line.ends_with(" - only-api"), "{line}");
}

#[tokio::test]
async fn no_virtual_service_balances_over_all_endpoints() {
    let mut b = MeshBuilder::new();
    b.service(
        "details",
        9080,
        "http",
        &[("details-a", &[]), ("details-b", &[]), ("details-c", &[])],
    )
    .await;
    // No VirtualService and no DestinationRule: round robin.
    let mesh = b.start().await;
    let c = Client::http1();
    for _ in 0..30 {
        assert_eq!(c.get(&mesh.url("details", "/"), &[]).await.status, 200);
    }
    for pod in ["details-a", "details-b", "details-c"] {
        assert_eq!(
            mesh.backend("details", pod).hits(),
            10,
            "round robin gives {pod} a third"
        );
    }
}

#[tokio::test]
async fn source_labels_and_namespace_match_the_client_pod() {
    let vs = &support::yaml::virtual_service(
        "reviews",
        r#"
  - match: [{sourceLabels: {app: sleep}, sourceNamespace: other}]
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{sourceLabels: {app: sleep}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#,
    );
    let without_client = reviews_mesh(vs).await;
    let c = Client::http1();
    let r = c.get(&without_client.url("reviews", "/"), &[]).await;
    assert_eq!(
        r.served_by(),
        Some("reviews-v1"),
        "an unknown client has no labels"
    );
    drop(without_client);
    // The test client (127.0.0.1) is the pod `sleep` in namespace default.
    let client_pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: sleep, namespace: default, labels: {app: sleep}}\nstatus: {podIP: 127.0.0.1}";
    let mesh = reviews_mesh(&format!("{vs}\n---\n{client_pod}")).await;
    let r = c.get(&mesh.url("reviews", "/"), &[]).await;
    assert_eq!(
        r.served_by(),
        Some("reviews-v2"),
        "labels match, namespace does not"
    );
}

#[tokio::test]
async fn consistent_hash_on_header_and_generated_cookie() {
    let mut b = MeshBuilder::new();
    let names: Vec<String> = (0..4).map(|i| format!("cart-{i}")).collect();
    let pods: Vec<support::Pod> = names.iter().map(|n| (n.as_str(), &[][..])).collect();
    b.service("cart", 8080, "http", &pods).await;
    let names: Vec<String> = (0..4).map(|i| format!("session-{i}")).collect();
    let pods: Vec<support::Pod> = names.iter().map(|n| (n.as_str(), &[][..])).collect();
    b.service("session", 8080, "http", &pods).await;
    b.yaml(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: default}
spec:
  host: cart
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: session, namespace: default}
spec:
  host: session
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: sticky, path: /, ttl: 60s}}}
"#,
    );
    let mesh = b.start().await;
    let c = Client::http1();
    let mut owners = std::collections::HashSet::new();
    for user in [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ] {
        let first = c.get(&mesh.url("cart", "/"), &[("x-user", user)]).await;
        let owner = first.served_by().expect("served").to_owned();
        for _ in 0..5 {
            let r = c.get(&mesh.url("cart", "/"), &[("x-user", user)]).await;
            assert_eq!(
                r.served_by(),
                Some(owner.as_str()),
                "{user} sticks to one host"
            );
        }
        owners.insert(owner);
    }
    assert!(
        owners.len() >= 2,
        "eight users spread over several hosts: {owners:?}"
    );

    let first = c.get(&mesh.url("session", "/"), &[]).await;
    let set = first
        .header("set-cookie")
        .expect("cookie generated")
        .to_owned();
    assert!(
        set.starts_with("sticky=\"") && set.contains("Max-Age=60; Path=/; HttpOnly"),
        "{set}"
    );
    let value = set.split(';').next().unwrap();
    let owner = first.served_by().unwrap().to_owned();
    for _ in 0..5 {
        let r = c.get(&mesh.url("session", "/"), &[("cookie", value)]).await;
        assert_eq!(
            r.served_by(),
            Some(owner.as_str()),
            "the generated cookie pins the first host"
        );
        assert!(r.header("set-cookie").is_none());
    }
}
