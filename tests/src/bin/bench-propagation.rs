//! Config propagation latency for `cargo xtask bench config` (issue 21),
//! measured on the real daemon: `strait run --config DIR` on a simulated
//! node ([`strait_tests::node`]) with N services (default 10,000; one file
//! each: Service, EndpointSlice of 10 endpoints, VirtualService) plus two
//! services under test whose one endpoint moves between two backend pods,
//! A and B, written to disk one change at a time:
//!
//! - `kernel`: `svc-l4` (no VirtualService), balanced in the kernel
//!   (`cgroup/connect4` on the client pod): the new endpoint receives
//!   traffic once its kernel map entry is rewritten;
//! - `proxy`: `svc-l7` (a VirtualService), redirected to the daemon's
//!   outbound listener: the new endpoint receives traffic once the proxy's
//!   table names it.
//!
//! A client in a meshed pod sends one request per new connection to the
//! service back to back and notes, with `CLOCK_MONOTONIC` (one clock for
//! every process of the machine), when the answering backend changes. Per
//! change: the time from the file write to the first answer of the new
//! backend (end to end; the daemon's file-watch debounce,
//! `strait::daemon::watch::DEBOUNCE_MS`, is part of it and subtracted in
//! the report), and the daemon's own timings from its `config reloaded`
//! log line: `compile_us` (reading the changed file, compiling the change),
//! `kernel_us` (the kernel map writes), `diff_to_map_us` (diff ready →
//! kernel maps written; the proxy's table swap comes first),
//! `incremental` (whether `compile::Incremental` applied it).
//!
//! `bench-propagation --strait PATH [--services N] [--changes K]`; prints
//! one JSON line. Needs root (namespaces, cgroups, BPF); removes every
//! namespace, cgroup and process it made (the node's `Drop`), on error
//! too. Internal modes: `--serve NAME ADDR` (a backend) and `--client ADDR`
//! (the client), run inside the pods.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use strait_tests::node::{Node, PodSpec};

const ADMIN: &str = "127.0.0.1:15000";
const BACKEND_PORT: u16 = 8080;
/// The services under test: (name, VIP, with a VirtualService).
const UNDER_TEST: [(&str, &str, bool); 2] = [
    ("svc-l4", "10.97.0.1", false),
    ("svc-l7", "10.97.0.2", true),
];

/// `CLOCK_MONOTONIC` in nanoseconds (comparable between processes).
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn vip(i: usize) -> String {
    format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256)
}

/// Filler service `i`: Service, EndpointSlice of 10 endpoints (addresses
/// no pod has), VirtualService.
fn filler_yaml(i: usize) -> String {
    let name = format!("svc{i}");
    let ns = format!("ns{}", i % 100);
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  clusterIP: {}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abc\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports:\n- {{name: http, port: 8080}}\nendpoints:\n",
        vip(i)
    );
    for j in 0..10 {
        let n = i * 10 + j;
        let _ = writeln!(
            y,
            "- {{addresses: [\"10.{}.{}.{}\"], conditions: {{ready: true}}}}",
            128 + n / 65536 % 64,
            n / 256 % 256,
            n % 256
        );
    }
    let _ = write!(
        y,
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{name}.{ns}.svc.cluster.local]\n  http:\n  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]\n    route: [{{destination: {{host: {name}.{ns}.svc.cluster.local}}}}]\n    timeout: 2s\n  - route: [{{destination: {{host: {name}.{ns}.svc.cluster.local}}}}]\n"
    );
    y
}

/// A service under test with its one endpoint at `ep`.
fn under_test_yaml(name: &str, vip: &str, vs: bool, ep: &str) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {vip}\n  ports:\n  - {{name: http, port: 80, targetPort: {BACKEND_PORT}}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abc\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports:\n- {{name: http, port: {BACKEND_PORT}}}\nendpoints:\n- {{addresses: [\"{ep}\"], conditions: {{ready: true}}}}\n"
    );
    if vs {
        let _ = write!(
            y,
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{name}]\n  http:\n  - route: [{{destination: {{host: {name}}}}}]\n"
        );
    }
    y
}

/// `--serve NAME ADDR`: answers every HTTP/1.1 request with a one-byte
/// body, NAME (keep-alive).
fn serve(name: u8, addr: SocketAddr) -> anyhow::Result<()> {
    let l = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    println!("ready");
    std::io::stdout().flush()?;
    for s in l.incoming().flatten() {
        std::thread::spawn(move || serve_conn(s, name));
    }
    Ok(())
}

fn serve_conn(mut s: TcpStream, name: u8) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let close = String::from_utf8_lossy(&buf[..end])
                .to_ascii_lowercase()
                .contains("connection: close");
            buf.drain(..end + 4);
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n{}\r\n{}",
                if close { "connection: close\r\n" } else { "" },
                name as char
            );
            if s.write_all(resp.as_bytes()).is_err() || close {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `--client ADDR`: one request per connection, back to back; prints
/// `<backend> <CLOCK_MONOTONIC ns>` whenever the answering backend
/// changes.
fn client(addr: SocketAddr) -> anyhow::Result<()> {
    let mut last = 0u8;
    let mut out = std::io::stdout();
    let mut buf = Vec::new();
    loop {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
            .is_err()
        {
            continue;
        }
        buf.clear();
        let _ = s.read_to_end(&mut buf);
        let at = mono_ns();
        let ok = buf.starts_with(b"HTTP/1.1 200");
        let Some(&name) = buf.last().filter(|_| ok) else {
            continue;
        };
        if name != last {
            last = name;
            writeln!(out, "{} {at}", name as char)?;
            out.flush()?;
        }
    }
}

/// The `key=value` fields of the daemon's log lines with `message`.
fn log_records(log: &Path, message: &str) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(message))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|t| {
                    let (k, v) = t.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect()
        })
        .collect()
}

fn admin_ready(node: &Node) -> bool {
    node.run_in(|| {
        let Ok(mut s) = TcpStream::connect_timeout(&ADMIN.parse().unwrap(), Duration::from_secs(2))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"GET /ready HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r.ends_with("LIVE") || r.ends_with("LIVE\n")
    })
    .unwrap_or(false)
}

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Spawns `cmd` and waits for its first stdout line; the rest of its
/// stdout goes to the returned channel.
fn spawn_lines(
    mut cmd: std::process::Command,
    what: &str,
    procs: &mut Kill,
) -> anyhow::Result<mpsc::Receiver<String>> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("spawning {what}"))?;
    let out = child.stdout.take().context("stdout")?;
    procs.0.push(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(name) = arg(&args, "--serve") {
        let addr = args.last().context("--serve NAME ADDR")?.parse()?;
        return serve(name.bytes().next().unwrap_or(b'?'), addr);
    }
    if let Some(addr) = arg(&args, "--client") {
        return client(addr.parse()?);
    }
    let strait = PathBuf::from(arg(&args, "--strait").context("--strait PATH is required")?);
    let services: usize = arg(&args, "--services").map_or(Ok(10_000), |v| v.parse())?;
    let changes: usize = arg(&args, "--changes").map_or(Ok(6), |v| v.parse())?;
    let out = run(&strait, services, changes)?;
    println!("{out}");
    Ok(())
}

fn run(strait: &Path, services: usize, changes: usize) -> anyhow::Result<Value> {
    let Some(p) = strait_tests::privileged::require("bench-propagation") else {
        bail!("bench-propagation needs root, cgroup v2 and the eBPF object");
    };
    let me = std::env::current_exe()?;
    let mut node = Node::new(&p.cgroup2, "prop", 63)?;
    node.set_namespace_labels("backends", &[]);
    node.add_pod(PodSpec::new("client", &[("app", "client")]))?;
    for n in ["a", "b"] {
        let mut spec = PodSpec::new(&format!("backend-{n}"), &[("app", n)]);
        spec.namespace = "backends".into();
        node.add_pod(spec)?;
    }
    let ip = |n: &str| -> anyhow::Result<String> {
        Ok(node
            .pod("backends", &format!("backend-{n}"))
            .context("backend pod")?
            .ip
            .to_string())
    };
    let (ip_a, ip_b) = (ip("a")?, ip("b")?);
    let mut procs = Kill(Vec::new());
    for (n, ip) in [("a", &ip_a), ("b", &ip_b)] {
        let mut cmd = node
            .pod("backends", &format!("backend-{n}"))
            .context("backend pod")?
            .command(&me)?;
        cmd.args(["--serve", n, &format!("{ip}:{BACKEND_PORT}")]);
        let rx = spawn_lines(cmd, "a backend", &mut procs)?;
        let first = rx.recv_timeout(Duration::from_secs(10));
        if first.as_deref() != Ok("ready") {
            bail!("backend {n} did not start: {first:?}");
        }
    }

    let dir = node.tmp_dir().join("config");
    node.write_config(&dir)?;
    for i in 1..=services {
        std::fs::write(dir.join(format!("svc{i}.yaml")), filler_yaml(i))?;
    }
    for (name, vip, vs) in UNDER_TEST {
        std::fs::write(
            dir.join(format!("{name}.yaml")),
            under_test_yaml(name, vip, vs, &ip_a),
        )?;
    }
    let log = node.tmp_dir().join("strait.log");
    let f = std::fs::File::create(&log)?;
    let started = Instant::now();
    let daemon = node
        .strait_run(strait, &dir)?
        .args(["--admin", ADMIN, "--no-access-log", "--log-level", "info"])
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .context("spawning strait run")?;
    procs.0.push(daemon);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !admin_ready(&node) {
        if let Some(st) = procs
            .0
            .last_mut()
            .map(Child::try_wait)
            .transpose()?
            .flatten()
        {
            bail!(
                "strait run exited ({st}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!("strait run not ready in 180 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let startup_ms = started.elapsed().as_secs_f64() * 1e3;

    let client_pod = node.pod("default", "client").context("client pod")?;
    let mut results = serde_json::Map::new();
    for (path, (name, vip, vs)) in ["kernel", "proxy"].into_iter().zip(UNDER_TEST) {
        let mut cmd = client_pod.command(&me)?;
        cmd.args(["--client", &format!("{vip}:80")]);
        let seen = spawn_lines(cmd, "the client", &mut procs)?;
        let first = seen
            .recv_timeout(Duration::from_secs(20))
            .with_context(|| format!("{path}: no answer through {name}"))?;
        if !first.starts_with('a') {
            bail!("{path}: the first answer is not from backend A: {first}");
        }
        let mut e2e_ms = Vec::new();
        let mut fields: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut incremental = 0;
        for k in 0..changes {
            let (to, want) = if k % 2 == 0 {
                (&ip_b, 'b')
            } else {
                (&ip_a, 'a')
            };
            let before = log_records(&log, "config reloaded").len();
            std::thread::sleep(Duration::from_millis(300));
            let t0 = mono_ns();
            std::fs::write(
                dir.join(format!("{name}.yaml")),
                under_test_yaml(name, vip, vs, to),
            )?;
            let line = loop {
                let line = seen
                    .recv_timeout(Duration::from_secs(20))
                    .with_context(|| format!("{path}: backend {want} never answered"))?;
                if line.starts_with(want) {
                    break line;
                }
            };
            let at: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .context("client line")?;
            e2e_ms.push(at.saturating_sub(t0) as f64 / 1e6);
            // The daemon's record of that reload.
            let deadline = Instant::now() + Duration::from_secs(10);
            let rec = loop {
                let recs = log_records(&log, "config reloaded");
                if recs.len() > before {
                    break recs[before].clone();
                }
                if Instant::now() > deadline {
                    bail!("{path}: no `config reloaded` line in the daemon's log");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if rec.get("incremental").map(String::as_str) == Some("true") {
                incremental += 1;
            }
            for key in [
                "compile_us",
                "proxy_us",
                "kernel_us",
                "diff_to_map_us",
                "publish_us",
                "elapsed_ms",
                "route_tables_built",
                "policy_tables_built",
            ] {
                if let Some(v) = rec.get(key).and_then(|v| v.parse::<f64>().ok()) {
                    fields.entry(key).or_default().push(v);
                }
            }
        }
        let mut v = json!({
            "service": name,
            "end_to_end_ms": e2e_ms,
            "incremental": incremental,
            "changes": changes,
        });
        for (k, samples) in fields {
            v[k] = json!(samples);
        }
        results.insert(path.to_string(), v);
        // This path's client stops before the next one starts.
        if let Some(mut c) = procs.0.pop() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    let rss_kb = procs
        .0
        .iter()
        .find(|c| {
            std::fs::read_link(format!("/proc/{}/exe", c.id()))
                .is_ok_and(|e| e.file_name() == strait.file_name())
        })
        .and_then(|c| std::fs::read_to_string(format!("/proc/{}/status", c.id())).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        });
    drop(procs);
    Ok(json!({
        "services": services + UNDER_TEST.len(),
        "endpoints": services * 10 + UNDER_TEST.len(),
        "debounce_ms": strait::daemon::watch::DEBOUNCE_MS,
        "startup_ms": startup_ms,
        "daemon_rss_mb": rss_kb.map(|k| k / 1024.0),
        "kernel": results.remove("kernel"),
        "proxy": results.remove("proxy"),
    }))
}
