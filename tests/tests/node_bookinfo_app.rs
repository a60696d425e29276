//! bookinfo-app on loopback, no namespaces: the call graph, the JSON each
//! service answers, header forwarding and upstream error reporting.
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use strait_tests::node::bookinfo::get;

const APP: &str = env!("CARGO_BIN_EXE_bookinfo-app");

/// A running app, killed on drop.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Running {
    let mut child = Command::new(APP)
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env("POD_NAME", format!("{}-pod", args[1]))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Running { child, addr }
}

fn url(r: &Running) -> String {
    format!("http://{}", r.addr)
}

fn productpage(headers: &[(&str, &str)], pp: &Running) -> (u16, Value) {
    get(pp.addr, "productpage:9080", "/productpage", headers).unwrap()
}

#[test]
fn productpage_shows_the_whole_call_graph() {
    let ratings = start(&["--service", "ratings", "--version", "v1"]);
    let details = start(&["--service", "details", "--version", "v1"]);
    let reviews_v1 = start(&[
        "--service",
        "reviews",
        "--version",
        "v1",
        "--ratings",
        &url(&ratings),
    ]);
    let reviews_v3 = start(&[
        "--service",
        "reviews",
        "--version",
        "v3",
        "--ratings",
        &url(&ratings),
    ]);
    let reviews = format!("{},{}", url(&reviews_v1), url(&reviews_v3));
    let pp = start(&[
        "--service",
        "productpage",
        "--version",
        "v1",
        "--details",
        &url(&details),
        "--reviews",
        &reviews,
    ]);

    let mut seen = Vec::new();
    for _ in 0..2 {
        let (status, body) = productpage(&[("end-user", "jason"), ("x-request-id", "r-1")], &pp);
        assert_eq!(status, 200);
        assert_eq!(body["service"], "productpage");
        assert_eq!(body["version"], "v1");
        assert_eq!(body["pod"], "productpage-pod");
        assert_eq!(body["details"]["service"], "details");
        assert_eq!(body["details"]["version"], "v1");
        assert_eq!(body["reviews"]["service"], "reviews");
        let version = body["reviews"]["version"].as_str().unwrap().to_string();
        match version.as_str() {
            // v1 calls no ratings; v3 does and shows red stars.
            "v1" => assert!(body["reviews"].get("ratings").is_none(), "{body}"),
            "v3" => {
                assert_eq!(body["reviews"]["ratings"]["service"], "ratings");
                assert_eq!(body["reviews"]["stars"], "red");
                // Forwarded two hops: productpage -> reviews -> ratings.
                let h = &body["reviews"]["ratings"]["headers"];
                assert_eq!(h["end-user"], "jason");
                assert_eq!(h["x-request-id"], "r-1");
            }
            v => panic!("unexpected reviews version {v}"),
        }
        seen.push(version);
    }
    seen.sort();
    assert_eq!(seen, ["v1", "v3"], "two reviews URLs are used round robin");
}

#[test]
fn trace_headers_are_forwarded_and_host_names_the_service() {
    let ratings = start(&["--service", "ratings", "--version", "v1"]);
    let reviews = start(&[
        "--service",
        "reviews",
        "--version",
        "v2",
        "--ratings",
        &url(&ratings),
    ]);
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (status, body) = get(
        reviews.addr,
        "reviews:9080",
        "/reviews/0",
        &[
            ("traceparent", traceparent),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-1"),
            ("x-unrelated", "not forwarded"),
        ],
    )
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["stars"], "black");
    let h = &body["ratings"]["headers"];
    assert_eq!(h["traceparent"], traceparent);
    assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(h["x-b3-traceid"], "463ac35c9f6413ad");
    assert_eq!(h["b3"], "463ac35c9f6413ad-a2fb4a1d1a96d312-1");
    assert!(h.get("x-unrelated").is_none());
    assert_eq!(body["ratings"]["ratings"]["Reviewer1"], 5);
}

#[test]
fn upstream_failures_are_reported_with_their_status() {
    let details = start(&["--service", "details", "--version", "v1"]);
    // "ratings" here is really details, which has no /ratings/0: a 404.
    let reviews = start(&[
        "--service",
        "reviews",
        "--version",
        "v2",
        "--ratings",
        &url(&details),
    ]);
    let (status, body) = get(reviews.addr, "reviews:9080", "/reviews/0", &[]).unwrap();
    assert_eq!(status, 200, "bookinfo still answers when ratings fails");
    assert_eq!(body["ratings"]["error"], "ratings service unavailable");
    assert_eq!(body["ratings"]["status"], 404);

    // Nothing listens: no status, a reason instead.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let reviews = start(&[
        "--service",
        "reviews",
        "--version",
        "v3",
        "--ratings",
        &format!("http://{closed}"),
    ]);
    let (_, body) = get(reviews.addr, "reviews:9080", "/reviews/0", &[]).unwrap();
    assert_eq!(body["ratings"]["error"], "ratings service unavailable");
    assert!(body["ratings"].get("status").is_none());
    assert!(body["ratings"]["reason"].as_str().unwrap().len() > 3);
}

#[test]
fn slow_upstreams_time_out_as_bookinfo_does() {
    // A listener that never answers stands in for a delayed service.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let reviews = start(&[
        "--service",
        "reviews",
        "--version",
        "v3",
        "--ratings",
        &silent_url,
        "--timeout-ms",
        "300",
    ]);
    let t = std::time::Instant::now();
    let (_, body) = get(reviews.addr, "reviews:9080", "/reviews/0", &[]).unwrap();
    let took = t.elapsed();
    assert_eq!(body["ratings"]["reason"], "timeout after 300 ms");
    assert!(
        took >= std::time::Duration::from_millis(300) && took.as_secs() < 3,
        "{took:?}"
    );
}

#[test]
fn health_and_unknown_paths() {
    let details = start(&["--service", "details", "--version", "v1"]);
    let (status, body) = get(details.addr, "details:9080", "/", &[]).unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = get(details.addr, "details:9080", "/details/7", &[]).unwrap();
    assert_eq!((status, body["id"].as_str()), (200, Some("7")));
    let (status, _) = get(details.addr, "details:9080", "/reviews/0", &[]).unwrap();
    assert_eq!(status, 404);
}

#[test]
fn bad_upstream_urls_are_rejected_at_start() {
    let out = Command::new(APP)
        .args([
            "--service",
            "productpage",
            "--listen",
            "127.0.0.1:0",
            "--details",
            "ftp://x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--details: \"ftp://x\" is not an http:// URL"));
}
