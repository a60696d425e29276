//! Compile benchmark: 10,000 Services, 100,000 endpoints (10,000
//! EndpointSlices of 10, their pods from 20,000 Deployments v1/v2),
//! 10,000 VirtualServices and 10,000 DestinationRules with two subsets,
//! generated as YAML text and fed through the real loader.
//!
//! Run: `cargo run --release -p strait-config --example compile_bench`
//! Prints one JSON line:
//! `{"services":..,"endpoints":..,"virtual_services":..,"clusters":..,"l4_entries":..,
//! "load_ms":..,"compile_ms":..,"total_ms":..,"peak_rss_after_load_mb":..,"peak_rss_mb":..}`
//! (`total_ms` = load + compile; `peak_rss_mb` is VmHWM from
//! /proc/self/status, which includes the generated YAML text). Targets
//! (issue 3): load + compile < 1 s, peak RSS < 500 MB. Runs with the
//! `strait` daemon's allocator (mimalloc).
//! Sizes can be changed with `--services N --endpoints-per-service M`.
use std::fmt::Write;
use std::time::Instant;

// The `strait` daemon's allocator (proxy-userspace/src/main.rs), so the
// figures are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use strait_config::{compile, load};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Generates the YAML stream.
fn generate(services: usize, eps: usize) -> String {
    let mut y = String::with_capacity(services * 2600);
    for i in 0..services {
        let ns = format!("ns{}", i % 100);
        let name = format!("svc{i}");
        let vip = format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256);
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  clusterIP: {vip}\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n---\n"
        );
        let _ = write!(
            y,
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abc\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n- name: http\n  port: 8080\nendpoints:\n"
        );
        for j in 0..eps {
            let n = i * eps + j;
            let _ = write!(
                y,
                "- addresses: [\"10.{}.{}.{}\"]\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: {name}-v{}-{j}}}\n",
                n / 65536 % 256,
                n / 256 % 256,
                n % 256,
                j % 2 + 1
            );
        }
        // Endpoint labels come from the Deployments the pods belong to.
        y.push_str("---\n");
        for v in 1..=2 {
            let _ = write!(
                y,
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}-v{v}, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: {name}, version: v{v}}}}}\n  template:\n    metadata: {{labels: {{app: {name}, version: v{v}}}}}\n    spec: {{serviceAccountName: {name}, containers: []}}\n---\n"
            );
        }
        let _ = write!(
            y,
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts: [{name}]\n  http:\n  - match:\n    - headers:\n        end-user: {{exact: jason}}\n      uri: {{prefix: /api}}\n    route:\n    - destination: {{host: {name}, subset: v2}}\n  - route:\n    - destination: {{host: {name}, subset: v1}}\n      weight: 90\n    - destination: {{host: {name}, subset: v2}}\n      weight: 10\n    timeout: 2s\n---\n"
        );
        let _ = write!(
            y,
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  host: {name}\n  trafficPolicy:\n    loadBalancer: {{simple: ROUND_ROBIN}}\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n  - name: v2\n    labels: {{version: v2}}\n---\n"
        );
    }
    y
}

/// Peak resident set (VmHWM), MiB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() {
    let services = arg("--services", 10_000);
    let eps = arg("--endpoints-per-service", 10);
    let text = generate(services, eps);
    let t0 = Instant::now();
    let loaded = load::load_str(&text, "generated.yaml");
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    drop(text);
    assert!(!loaded.has_errors(), "{:?}", &loaded.diagnostics[..1]);
    let rss_after_load = peak_rss_mb();
    let t1 = Instant::now();
    let (snap, diags) = compile(&loaded.resources);
    let compile_ms = t1.elapsed().as_secs_f64() * 1e3;
    assert!(diags.iter().all(|d| !d.is_error()), "{:?}", diags.first());
    let endpoints: usize = snap
        .clusters
        .values()
        .filter(|c| c.subset.is_empty())
        .map(|c| c.endpoints.len())
        .sum();
    let subset_endpoints: usize = snap
        .clusters
        .values()
        .filter(|c| !c.subset.is_empty())
        .map(|c| c.endpoints.len())
        .sum();
    assert_eq!(
        subset_endpoints, endpoints,
        "every endpoint belongs to v1 or v2"
    );
    let vs = loaded
        .resources
        .iter()
        .filter(|r| r.kind() == "VirtualService")
        .count();
    println!(
        "{{\"services\":{},\"endpoints\":{endpoints},\"virtual_services\":{vs},\"clusters\":{},\"l4_entries\":{},\"load_ms\":{load_ms:.1},\"compile_ms\":{compile_ms:.1},\"total_ms\":{:.1},\"peak_rss_after_load_mb\":{rss_after_load:.1},\"peak_rss_mb\":{:.1}}}",
        snap.services.len(),
        snap.clusters.len(),
        snap.l4.len(),
        load_ms + compile_ms,
        peak_rss_mb()
    );
}
