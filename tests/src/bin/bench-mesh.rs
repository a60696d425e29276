//! `bench-mesh`: the harness of `cargo xtask bench mesh` (issue 20). Two
//! simulated nodes joined by a link ([`strait_tests::node::link`]), a
//! client pod on node A, a server pod on node B running `bench-backend`,
//! and oha in the client pod. One JSON line per scenario on stdout:
//!
//! - `direct`: plain text pod to pod, no proxy;
//! - `strait-l7`: a VirtualService on the server's Service, so node A's
//!   daemon (`strait run`) routes every request (plain text between the
//!   nodes: the source-node proxy path without HBONE);
//! - `strait-l4`: the Service without the VirtualService: node A's kernel
//!   balances the connections (no proxy on the path while plain text);
//! - `strait-l4-hbone`, `strait-l7-hbone`: the same through HBONE. They
//!   are measured only when node B's daemon reports mTLS connections
//!   (`connection_security_policy="mutual_tls"`, `reporter="destination"`)
//!   for them; otherwise the line says why they are not available;
//! - `ztunnel`: ztunnel to ztunnel (dedicated mode, one per pod) when
//!   `--ztunnel` is given; not built into this harness yet, so the line
//!   says so.
//!
//! Figures per scenario: requests/s at saturation (HTTP/1.1 keep-alive,
//! 64 connections), p50/p99 at 1,000 requests/s (oha `-q` with latency
//! correction), new connections/s (one request per connection), the
//! daemons' CPU seconds per 1,000 requests summed over both nodes, and each
//! daemon's RSS.
//!
//! `bench-mesh --strait PATH --backend PATH [--oha PATH] [--secs N]
//! [--ztunnel PATH]`. Needs root; removes every namespace, cgroup and
//! process it made (the nodes' `Drop`), on error too.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use strait_tests::node::{link, Node, Pod, PodSpec, ServiceDef, ServicePort, TargetPort};

const ADMIN: &str = "127.0.0.1:15000";
const BACKEND_PORT: u16 = 8090;
const FIXED_RPS: u32 = 1_000;

struct Args {
    strait: PathBuf,
    backend: PathBuf,
    oha: PathBuf,
    secs: u32,
    ztunnel: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        strait: PathBuf::new(),
        backend: PathBuf::new(),
        oha: "oha".into(),
        secs: 3,
        ztunnel: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--strait" => a.strait = v.into(),
            "--backend" => a.backend = v.into(),
            "--oha" => a.oha = v.into(),
            "--secs" => a.secs = v.parse()?,
            "--ztunnel" => a.ztunnel = Some(v.into()),
            other => bail!("unknown argument {other}"),
        }
    }
    if a.strait.as_os_str().is_empty() || a.backend.as_os_str().is_empty() {
        bail!("usage: bench-mesh --strait PATH --backend PATH [--oha PATH] [--secs N] [--ztunnel PATH]");
    }
    Ok(a)
}

/// One oha run from the client pod; its JSON.
fn oha(client: &Pod, a: &Args, url: &str, mode: &str) -> anyhow::Result<Value> {
    let mut cmd = client.command(&a.oha)?;
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "--worker-threads",
        "1",
    ])
    .args(["-z", &format!("{}s", a.secs)]);
    match mode {
        "saturate" => cmd.args(["-c", "64"]),
        "fixed" => cmd.args([
            "-c",
            "16",
            "-q",
            &FIXED_RPS.to_string(),
            "--latency-correction",
        ]),
        _ => cmd.args(["-c", "16", "--disable-keepalive"]),
    };
    let out = cmd.arg(url).output().context("running oha")?;
    if !out.status.success() {
        bail!("oha: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("oha's JSON")?;
    let ok = v["statusCodeDistribution"]["200"].as_f64().unwrap_or(0.0);
    let success = v["summary"]["successRate"].as_f64().unwrap_or(0.0);
    if ok == 0.0 || success < 0.99 {
        bail!(
            "{url} ({mode}): {ok} responses with 200, success rate {success}; errors: {}",
            v["errorDistribution"]
        );
    }
    Ok(v)
}

fn ok_per_sec(v: &Value) -> f64 {
    v["statusCodeDistribution"]["200"].as_f64().unwrap_or(0.0)
        / v["summary"]["total"].as_f64().unwrap_or(f64::NAN)
}

/// utime + stime of `pid`, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let tck = 100.0; // USER_HZ on Linux
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / tck
}

/// Peak RSS (VmHWM) of `pid`, MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Measures one scenario: saturation, fixed rate, new connections.
fn measure(
    name: &str,
    client: &Pod,
    a: &Args,
    url: &str,
    daemons: &[u32],
) -> anyhow::Result<Value> {
    let cpu0: f64 = daemons.iter().map(|p| cpu_seconds(*p)).sum();
    let sat = oha(client, a, url, "saturate")?;
    let cpu = daemons.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu0;
    let ok = sat["statusCodeDistribution"]["200"].as_f64().unwrap_or(0.0);
    let fixed = oha(client, a, url, "fixed")?;
    let pct = |k: &str| fixed["latencyPercentiles"][k].as_f64().map(|s| s * 1e6);
    let conns = oha(client, a, url, "connections")?;
    Ok(json!({
        "scenario": name,
        "rps": ok_per_sec(&sat),
        "p50_us": pct("p50"),
        "p99_us": pct("p99"),
        "new_connections_per_s": ok_per_sec(&conns),
        "cpu_s_per_1k": (!daemons.is_empty()).then(|| cpu / (ok / 1000.0)),
        "rss_mib": daemons.iter().map(|p| rss_mib(*p)).collect::<Vec<_>>(),
    }))
}

fn missing(name: &str, why: &str) -> Value {
    json!({"scenario": name, "missing": why})
}

/// GET `path` of a daemon's admin API from inside its node.
fn admin(node: &Node, path: &str) -> String {
    node.command("curl")
        .ok()
        .and_then(|mut c| {
            c.args(["-sS", "-m", "5", &format!("http://{ADMIN}{path}")])
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Requests node `node`'s daemon counted with mTLS as the destination.
fn mtls_requests(node: &Node) -> f64 {
    admin(node, "/stats/prometheus")
        .lines()
        .filter(|l| {
            (l.starts_with("istio_requests_total{")
                || l.starts_with("istio_tcp_connections_opened_total{"))
                && l.contains("reporter=\"destination\"")
                && l.contains("connection_security_policy=\"mutual_tls\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_ready(node: &Node, child: &mut Child, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if admin(node, "/ready").trim() == "LIVE" {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            bail!(
                "strait run on {} exited ({st}):\n{}",
                node.name(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("strait run on {} not ready in 60 s", node.name())
}

/// Starts `strait run` on `node` reading `config`.
fn daemon(node: &Node, a: &Args, config: &Path) -> anyhow::Result<Child> {
    let log = node.tmp_dir().join("strait.log");
    let f = std::fs::File::create(&log)?;
    let mut child = node
        .strait_run(&a.strait, config)?
        .args(["--admin", ADMIN, "--no-access-log", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .context("spawning strait run")?;
    wait_ready(node, &mut child, &log)?;
    Ok(child)
}

fn run(a: &Args) -> anyhow::Result<Vec<Value>> {
    let Some(p) = strait_tests::privileged::require("bench-mesh") else {
        bail!("bench-mesh needs root, cgroup v2 and the eBPF object");
    };
    let mut na = Node::new(&p.cgroup2, "mesh-a", 61)?;
    let mut nb = Node::new(&p.cgroup2, "mesh-b", 62)?;
    link(&na, &nb)?;
    let svc = ServiceDef {
        name: "bench".into(),
        namespace: "default".into(),
        selector: BTreeMap::from([("app".to_string(), "server".to_string())]),
        ports: vec![ServicePort {
            name: Some("http".into()),
            port: 80,
            target_port: Some(TargetPort::Number(BACKEND_PORT)),
            protocol: "TCP".into(),
            app_protocol: None,
        }],
        cluster_ip: None,
        headless: false,
    };
    na.add_pod(PodSpec::new("client", &[("app", "client")]))?;
    nb.add_pod(PodSpec::new("server", &[("app", "server")]))?;
    let vip: Ipv4Addr = na
        .add_service(svc.clone())?
        .cluster_ip
        .context("the service has a ClusterIP")?;
    nb.add_service(svc)?;
    let server_ip = nb.pod("default", "server").context("server pod")?.ip;
    let mut backend = nb
        .pod("default", "server")
        .context("server pod")?
        .command(&a.backend)?
        .args(["--http", &format!("{server_ip}:{BACKEND_PORT}")])
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning bench-backend")?;
    {
        use std::io::BufRead;
        let out = backend.stdout.take().context("backend stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("bench-backend did not start: {line:?}");
        }
    }
    let client = na.pod("default", "client").context("client pod")?;
    let mut out = Vec::new();
    eprintln!("bench-mesh: direct");
    out.push(measure(
        "direct",
        client,
        a,
        &format!("http://{server_ip}:{BACKEND_PORT}/"),
        &[],
    )?);

    // Strait on both nodes; both see the whole cluster.
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bench, namespace: default}\nspec:\n  hosts: [bench]\n  http:\n  - route:\n    - destination: {host: bench}\n";
    let mut daemons = Vec::new();
    for n in [&na, &nb] {
        let dir = n.tmp_dir().join("config");
        na.write_config(&dir)?;
        nb.write_config(&dir)?;
        std::fs::write(dir.join("bench-vs.yaml"), vs)?;
        daemons.push(daemon(n, a, &dir)?);
    }
    let pids: Vec<u32> = daemons.iter().map(Child::id).collect();
    eprintln!("bench-mesh: strait-l7");
    let before = mtls_requests(&nb);
    let l7 = measure("strait-l7", client, a, &format!("http://{vip}/"), &pids)?;
    let mtls = mtls_requests(&nb) - before > 0.0;
    let routed = admin(&na, "/stats/prometheus").lines().any(|l| {
        l.starts_with("istio_requests_total{") && l.contains("destination_service=\"bench.")
    });
    if !routed {
        bail!("strait-l7: node A's daemon counted no request to the bench service");
    }
    out.push(if mtls {
        let mut v = l7.clone();
        v["scenario"] = json!("strait-l7-hbone");
        v
    } else {
        l7
    });
    let no_hbone = "not available: node B's daemon reported no mTLS (HBONE) connection \
                    (connection_security_policy=\"mutual_tls\", reporter=\"destination\"); \
                    the HBONE transport is not in this build";
    if !mtls {
        out.push(missing("strait-l7-hbone", no_hbone));
    }

    // L4: without the VirtualService the service needs no proxy on the
    // source node (kernel load balancing, or HBONE when meshed mTLS is on).
    for n in [&na, &nb] {
        std::fs::remove_file(n.tmp_dir().join("config/bench-vs.yaml"))?;
    }
    std::thread::sleep(Duration::from_secs(3)); // reload (debounced, < 1 s)
    eprintln!("bench-mesh: strait-l4");
    let before = mtls_requests(&nb);
    let mut l4 = measure("strait-l4", client, a, &format!("http://{vip}/"), &pids)?;
    if mtls_requests(&nb) - before > 0.0 {
        l4["scenario"] = json!("strait-l4-hbone");
        out.push(l4);
    } else {
        out.push(l4);
        out.push(missing("strait-l4-hbone", no_hbone));
    }
    out.push(missing(
        "ztunnel",
        match &a.ztunnel {
            None => "not run: ZTUNNEL_BIN is not set",
            Some(_) => "not run: the ztunnel dedicated-mode scenario is not in this harness yet",
        },
    ));
    for mut d in daemons {
        let _ = d.kill();
        let _ = d.wait();
    }
    let _ = backend.kill();
    let _ = backend.wait();
    Ok(out)
}

fn main() {
    let result = args().and_then(|a| run(&a));
    match result {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
        }
        Err(e) => {
            eprintln!("bench-mesh: {e:#}");
            std::process::exit(1);
        }
    }
}
