//! The policy benchmark's workload (`cargo xtask bench policy`): the CPU
//! one request spends in Strait's policy check ([`strait::policy::enforce`],
//! what the request path calls) for a workload with 0, 10 and 1,000
//! AuthorizationPolicies (and 1,000 the path index cannot narrow), and with
//! one RequestAuthentication verifying Istio's sample RS256 token
//! (`demo.jwt`, key from the inline JWKS; the same token every request, so
//! after the first it is a verified-token cache hit). Prints
//! one JSON line: `{"cases":[{"name","ns_per_request","requests_per_s"}...]}`
//! (median of `--runs` runs of `--iters` requests each).
//!
//! `cargo run --release -p strait --example policy_bench -- JWT_DIR [--quick]`
use std::hint::black_box;
use std::time::Duration;

use http::HeaderMap;
use strait::policy::{enforce, HttpRequest, Outcome, PolicyTable, Request, Scope};

const PLATFORM: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{name: http, port: 80}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: default, labels: {app: web}}\nstatus: {podIP: 10.244.0.10}\n---\n";

/// `n` policies on the workload: one DENY per ten, the rest ALLOW, each
/// with its own path prefix, method and header condition; the benchmarked
/// request matches only the last ALLOW, so every policy is evaluated.
fn policies(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let (action, path) = if i % 10 == 0 {
            ("DENY", format!("/deny-{i}/*"))
        } else {
            ("ALLOW", format!("/api-{i}/*"))
        };
        s.push_str(&format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  action: {action}\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\", \"POST\"]\n        paths: [\"{path}\"]\n    when:\n    - key: request.headers[x-tenant]\n      values: [\"t{i}\", \"all\"]\n---\n"
        ));
    }
    s
}

/// `n` ALLOW policies the path index cannot narrow: each only a header
/// condition; the request matches only the last, so every one is evaluated.
fn header_only_policies(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: h{i}, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  rules:\n  - when:\n    - key: request.headers[x-tenant]\n      values: [\"t{i}\"]\n---\n"
        ));
    }
    s
}

fn table(yaml: &str) -> Option<PolicyTable> {
    let loaded = strait_config::load::load_str(yaml, "bench.yaml");
    let (snap, _) = strait_config::compile(&loaded.resources);
    PolicyTable::build(&snap, &Scope::default())
}

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): time the thread
/// was on a CPU, so other processes of a loaded machine do not inflate it.
fn cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median CPU ns per request of `enforce` (or the no-policy pointer
/// check). Not inlined, so `valgrind --tool=callgrind
/// --toggle-collect=*measure*` counts only the requests.
#[inline(never)]
fn measure(
    t: Option<&PolicyTable>,
    path: &str,
    headers: &HeaderMap,
    iters: u32,
    runs: usize,
) -> f64 {
    let cluster = "outbound|80||web.default.svc.cluster.local";
    let mut per = Vec::new();
    for _ in 0..runs {
        let start = cpu_now();
        for _ in 0..iters {
            // What the request path does: one pointer check, then the guard.
            let Some(g) = black_box(t).and_then(|t| t.guard(cluster)) else {
                continue;
            };
            let req = Request {
                source_ip: [10, 244, 0, 5].into(),
                sni: None,
                http: Some(HttpRequest {
                    method: "GET",
                    path,
                    query: None,
                    host: "web.default.svc.cluster.local",
                    headers,
                }),
            };
            let out = enforce(g, black_box(&req));
            assert!(matches!(out, Outcome::Allow { .. }), "{out:?}");
        }
        per.push((cpu_now() - start).as_nanos() as f64 / iters as f64);
    }
    per.sort_by(f64::total_cmp);
    per[per.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(args.first().expect("JWT_DIR (Istio's jwt samples)"));
    let quick = args.iter().any(|a| a == "--quick");
    let (iters, runs) = if quick { (20_000, 5) } else { (100_000, 9) };
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", "all".parse().unwrap());
    headers.insert("user-agent", "bench".parse().unwrap());
    let mut cases = Vec::new();
    // POLICY_BENCH_ONLY=<prefix>: run only the cases whose name starts
    // with it (one case per callgrind run).
    let only = std::env::var("POLICY_BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| name.starts_with(only.as_str());
    let mut push = |name: &str, ns: f64| {
        cases.push(
            serde_json::json!({"name": name, "ns_per_request": ns, "requests_per_s": 1e9 / ns}),
        );
    };
    if run("0 policies") {
        push(
            "0 policies",
            measure(None, "/api-9/x", &headers, iters * 10, runs),
        );
    }
    for n in [10usize, 1000] {
        if !run(&format!("{n} policies")) {
            continue;
        }
        let t = table(&format!("{PLATFORM}{}", policies(n)));
        let last = (0..n).rev().find(|i| i % 10 != 0).unwrap();
        let path = format!("/api-{last}/x");
        let it = if n >= 1000 { iters / 20 } else { iters };
        push(
            &format!("{n} policies"),
            measure(t.as_ref(), &path, &headers, it, runs),
        );
    }
    if run("1000 policies, no path") {
        let n = 1000;
        let t = table(&format!("{PLATFORM}{}", header_only_policies(n)));
        let mut h = headers.clone();
        h.insert("x-tenant", format!("t{}", n - 1).parse().unwrap());
        push(
            "1000 policies, no path to index (header conditions only)",
            measure(t.as_ref(), "/x", &h, iters / 20, runs),
        );
    }
    let jwt_case = "1 RequestAuthentication (RS256, cached key, token cache hit)";
    if !run(jwt_case) {
        println!(
            "{}",
            serde_json::json!({"iters": iters, "runs": runs, "cases": cases})
        );
        return;
    }
    let jwks = std::fs::read_to_string(dir.join("jwks.json")).expect("jwks.json");
    let token = std::fs::read_to_string(dir.join("demo.jwt")).expect("demo.jwt");
    let ra = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    jwks: '{}'\n---\n",
        jwks.replace('\n', " ")
    );
    let t = table(&format!("{PLATFORM}{ra}"));
    let mut h = headers.clone();
    h.insert(
        "authorization",
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    push(jwt_case, measure(t.as_ref(), "/", &h, iters / 10, runs));
    println!(
        "{}",
        serde_json::json!({"iters": iters, "runs": runs, "cases": cases})
    );
}
