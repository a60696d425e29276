//! `cargo xtask bench l7`: HTTP/1.1 keep-alive and HTTP/2 (cleartext, prior
//! knowledge) through each proxy to the same backend (bench-backend, hyper),
//! with oha as the client:
//!
//! - saturation: requests/s with a fixed number of concurrent requests;
//!   the proxy's CPU (utime + stime of its processes) per 1,000 requests is
//!   taken over this run;
//! - fixed rate: 1,000 requests/s (open loop, oha `-q` with
//!   `--latency-correction`), latency p50/p99/p99.9.
//!
//! nginx and HAProxy are configured as an operator would for this job:
//! worker processes / threads = CPUs the proxy may use, keep-alive
//! connections to the upstream, no access log (Strait's is off too), h1 to
//! the upstream (nginx cannot proxy h2 upstream; all use h1 upstream).
use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::netns::SERVER_IP;
use super::procs::{cpu_seconds, in_ns, peak_rss_mib, tree, Proc};
use super::report::{Section, Table};
use super::rounds;
use super::stats::Samples;
use super::{interrupted, Env, HTTP_BACKEND_PORT};
use crate::cmd::step;

/// The fixed request rate for the latency figures.
const FIXED_RPS: u32 = 1_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    fn idx(self) -> usize {
        match self {
            Proto::H1 => 0,
            Proto::H2 => 1,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1 keep-alive",
            Proto::H2 => "HTTP/2 (h2c, prior knowledge)",
        }
    }
}

/// One contender: where it listens for each protocol and its processes.
struct Contender {
    name: &'static str,
    h1_port: u16,
    h2_port: u16,
    proc: Option<Proc>,
    /// Why there is no figure, per protocol (H1, H2): "not yet
    /// available", or the error that stopped this contender.
    missing: [Option<String>; 2],
}

impl Contender {
    fn port(&self, p: Proto) -> u16 {
        match p {
            Proto::H1 => self.h1_port,
            Proto::H2 => self.h2_port,
        }
    }
}

/// Figures of one contender for one protocol.
#[derive(Default)]
struct Figures {
    rps: Samples,
    p50: Samples,
    p99: Samples,
    p999: Samples,
    cpu_per_1k: Samples,
    fixed_rate_achieved: Samples,
    /// Runs measured again because the host stole CPU time during them
    /// or paused a fixed-rate run.
    repeated: u32,
}

/// The nginx configuration: h1 on `h1`, h2c on `h2`, upstream keep-alive.
fn nginx_conf(env: &Env, workers: usize, h1: u16, h2: u16) -> String {
    let tmp = env.tmp.display();
    let mut s = String::new();
    let _ = write!(
        s,
        "worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    upstream backend {{
        server {SERVER_IP}:{HTTP_BACKEND_PORT};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {SERVER_IP}:{h1} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
    server {{
        listen {SERVER_IP}:{h2} http2 backlog=4096;
        http2_max_concurrent_streams 256;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
"
    );
    s
}

/// The HAProxy configuration: h1 on `h1`, h2c on `h2`, connection reuse to
/// the upstream, no logging.
fn haproxy_conf(threads: usize, h1: u16, h2: u16) -> String {
    format!(
        "global
    nbthread {threads}
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend h1
    bind {SERVER_IP}:{h1}
    default_backend upstream
frontend h2
    bind {SERVER_IP}:{h2} proto h2
    default_backend upstream
backend upstream
    server backend {SERVER_IP}:{HTTP_BACKEND_PORT}
"
    )
}

/// Waits until `port` answers 200 over `proto` from the client namespace.
fn wait_http(
    env: &Env,
    name: &str,
    port: u16,
    proto: Proto,
    proc: &mut Proc,
) -> anyhow::Result<()> {
    let url = format!("http://{SERVER_IP}:{port}/");
    for _ in 0..100 {
        proc.check_alive()?;
        let mut c = in_ns(&env.topo.client, None, "curl");
        c.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "1",
        ]);
        if proto == Proto::H2 {
            c.arg("--http2-prior-knowledge");
        }
        if crate::cmd::output(c.arg(&url)).is_some_and(|s| s.trim() == "200") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{name} does not answer 200 on {url} ({proto:?})")
}

/// CPUs the proxy under test may use (worker count = these).
fn server_cpus(env: &Env) -> usize {
    if env.cpus.server.is_some() {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn start(env: &Env) -> anyhow::Result<Vec<Contender>> {
    let workers = server_cpus(env);
    let mut out = vec![Contender {
        name: "direct (backend)",
        h1_port: HTTP_BACKEND_PORT,
        h2_port: HTTP_BACKEND_PORT,
        proc: None,
        missing: [None, None],
    }];

    out.push(strait(env)?);

    let conf = env.tmp.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(env, workers, 8091, 8092))?;
    let mut cmd = in_ns(&env.topo.server, env.cpus.server, "nginx");
    cmd.arg("-p").arg(&env.tmp).arg("-c").arg(&conf);
    let mut p = Proc::spawn("nginx", cmd)?;
    wait_http(env, "nginx", 8091, Proto::H1, &mut p)?;
    wait_http(env, "nginx", 8092, Proto::H2, &mut p)?;
    out.push(Contender {
        name: "nginx",
        h1_port: 8091,
        h2_port: 8092,
        proc: Some(p),
        missing: [None, None],
    });

    let conf = env.tmp.join("haproxy.cfg");
    std::fs::write(&conf, haproxy_conf(workers, 8093, 8094))?;
    let mut cmd = in_ns(&env.topo.server, env.cpus.server, "haproxy");
    cmd.arg("-db").arg("-f").arg(&conf);
    let mut p = Proc::spawn("haproxy", cmd)?;
    wait_http(env, "haproxy", 8093, Proto::H1, &mut p)?;
    wait_http(env, "haproxy", 8094, Proto::H2, &mut p)?;
    out.push(Contender {
        name: "HAProxy",
        h1_port: 8093,
        h2_port: 8094,
        proc: Some(p),
        missing: [None, None],
    });
    Ok(out)
}

/// Strait's L7 proxy, run by the `bench-strait-l7` helper binary (a
/// listener that forwards everything to the backend through
/// `strait::serve`). Reported as not yet available until that binary
/// exists in the workspace.
fn strait(env: &Env) -> anyhow::Result<Contender> {
    let mut c = Contender {
        name: "Strait",
        h1_port: 8095,
        h2_port: 8095,
        proc: None,
        missing: [None, None],
    };
    let exe = env.dist_bin("bench-strait-l7");
    if !exe.exists() {
        let why = "not yet available (the L7 proxy has not landed)".to_string();
        c.missing = [Some(why.clone()), Some(why)];
        return Ok(c);
    }
    let mut cmd = in_ns(&env.topo.server, env.cpus.server, &exe);
    cmd.args(["--listen", &format!("{SERVER_IP}:8095")])
        .args(["--upstream", &format!("{SERVER_IP}:{HTTP_BACKEND_PORT}")])
        .args(["--workers", &server_cpus(env).to_string()]);
    let started = Proc::spawn("bench-strait-l7", cmd).and_then(|mut p| {
        p.wait_line("ready", Duration::from_secs(10))?;
        Ok(p)
    });
    let mut p = match started {
        Ok(p) => p,
        Err(e) => {
            let why = format!("failed to start: {e:#}");
            eprintln!("warning: Strait L7 {why}");
            c.missing = [Some(why.clone()), Some(why)];
            return Ok(c);
        }
    };
    // A protocol Strait does not serve yet is reported, not fatal.
    for proto in [Proto::H1, Proto::H2] {
        if let Err(e) = wait_http(env, "Strait", 8095, proto, &mut p) {
            eprintln!("warning: {e:#}");
            c.missing[proto.idx()] = Some(format!("failed: {e:#}"));
        }
    }
    c.proc = Some(p);
    Ok(c)
}

/// One oha run; returns its parsed JSON.
fn oha(env: &Env, port: u16, proto: Proto, secs: u32, fixed: bool) -> anyhow::Result<Value> {
    if interrupted() {
        bail!("interrupted");
    }
    let threads = if env.cpus.load.is_some() { 1 } else { 2 };
    let mut cmd = in_ns(&env.topo.client, env.cpus.load, "oha");
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "--worker-threads",
        &threads.to_string(),
    ])
    .args(["-z", &format!("{secs}s")]);
    // Saturation: 64 requests in flight (64 h1 connections, or 4 h2
    // connections × 16 streams). Fixed rate: enough in flight to never lag.
    match (proto, fixed) {
        (Proto::H1, false) => cmd.args(["-c", "64"]),
        (Proto::H2, false) => cmd.args(["--http2", "-c", "4", "-p", "16"]),
        (Proto::H1, true) => cmd.args(["-c", "16"]),
        (Proto::H2, true) => cmd.args(["--http2", "-c", "2", "-p", "8"]),
    };
    if fixed {
        cmd.args(["-q", &FIXED_RPS.to_string(), "--latency-correction"]);
    }
    cmd.arg(format!("http://{SERVER_IP}:{port}/"));
    let out = cmd.output().context("running oha")?;
    if !out.status.success() {
        bail!(
            "oha failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing oha's JSON output")
}

/// Responses with status 200 in an oha result.
fn ok_count(v: &Value) -> f64 {
    v["statusCodeDistribution"]["200"].as_f64().unwrap_or(0.0)
}

/// A run during which the host stole more than this fraction of the CPU
/// time (/proc/stat `steal`) is measured again, once.
const MAX_STEAL: f64 = 0.03;
/// Tries per run (the last one counts).
const ATTEMPTS: u32 = 2;

/// A fixed-rate run whose p99 is over this many times its own p50 was
/// paused (at 1,000 requests/s on loopback none of the contenders has such
/// a tail otherwise: 2-3x in undisturbed runs): measured again, once.
const MAX_P99_OVER_P50: f64 = 5.0;

/// Runs `f` again when the host stole more than [`MAX_STEAL`] of the CPU
/// during it or `paused` says its result shows a pause, up to [`ATTEMPTS`]
/// tries; counts the repeats in `repeated`. The last try counts, whatever
/// it shows, so a contender that is slow every time is reported slow.
fn quiet<T>(
    repeated: &mut u32,
    paused: impl Fn(&T) -> bool,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut attempt = 1;
    loop {
        let before = super::cpu_times();
        let v = f()?;
        let steal = super::steal_fraction(before, super::cpu_times()).unwrap_or(0.0);
        if (steal <= MAX_STEAL && !paused(&v)) || attempt == ATTEMPTS {
            return Ok(v);
        }
        *repeated += 1;
        attempt += 1;
    }
}

/// One saturation run: requests/s and the proxy's CPU per 1,000 requests.
fn saturate(
    env: &Env,
    c: &Contender,
    proto: Proto,
    secs: u32,
    f: &mut Figures,
) -> anyhow::Result<()> {
    let pids = c.proc.as_ref().map(|p| tree(p.pid())).unwrap_or_default();
    let (sat, cpu) = quiet(
        &mut f.repeated,
        |_| false,
        || {
            let cpu0 = cpu_seconds(&pids);
            let sat = oha(env, c.port(proto), proto, secs, false)?;
            Ok((sat, cpu_seconds(&pids) - cpu0))
        },
    )?;
    let total = sat["summary"]["total"].as_f64().unwrap_or(f64::NAN);
    let ok = ok_count(&sat);
    let success = sat["summary"]["successRate"].as_f64().unwrap_or(0.0);
    if ok == 0.0 || success < 0.99 {
        bail!(
            "{} {proto:?}: {ok} responses with 200, success rate {success}; errors: {}",
            c.name,
            sat["errorDistribution"]
        );
    }
    f.rps.push(ok / total);
    if !pids.is_empty() {
        f.cpu_per_1k.push(cpu / (ok / 1000.0));
    }
    Ok(())
}

/// One fixed-rate run: latency percentiles at [`FIXED_RPS`].
fn fixed_rate(
    env: &Env,
    c: &Contender,
    proto: Proto,
    secs: u32,
    f: &mut Figures,
) -> anyhow::Result<()> {
    let pct = |v: &Value, k: &str| v["latencyPercentiles"][k].as_f64().map(|s| s * 1e6);
    let paused = |v: &Value| {
        pct(v, "p99")
            .zip(pct(v, "p50"))
            .is_some_and(|(p99, p50)| p99 > MAX_P99_OVER_P50 * p50)
    };
    let fixed = quiet(&mut f.repeated, paused, || {
        oha(env, c.port(proto), proto, secs, true)
    })?;
    let pct = |k: &str| pct(&fixed, k);
    f.p50.push(pct("p50").context("oha: no p50")?);
    f.p99.push(pct("p99").context("oha: no p99")?);
    f.p999.push(pct("p99.9").context("oha: no p99.9")?);
    f.fixed_rate_achieved
        .push(ok_count(&fixed) / fixed["summary"]["total"].as_f64().unwrap_or(f64::NAN));
    Ok(())
}

/// Which measurement of a round.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Saturation,
    FixedRate,
}

/// Runs the L7 suite and returns its section.
pub fn run(env: &Env) -> anyhow::Result<Section> {
    let secs: u32 = if env.quick { 3 } else { 10 };
    let sat_secs: u32 = if env.quick { 2 } else { 3 };
    step("L7: starting nginx, HAProxy and Strait in the server namespace");
    let mut contenders = start(env)?;
    let protos = [Proto::H1, Proto::H2];
    let mut figs: Vec<Vec<Figures>> = protos
        .iter()
        .map(|_| contenders.iter().map(|_| Figures::default()).collect())
        .collect();
    // Warm-up, not recorded.
    for c in contenders.iter() {
        for p in protos.into_iter().filter(|p| c.missing[p.idx()].is_none()) {
            oha(env, c.port(p), p, 1, false)?;
        }
    }
    // Saturation runs are short and many, every contender back to back in
    // each round with the first one rotating (as in L4), so that each
    // round's ratios compare runs seconds apart; Strait and nginx, whose
    // ratio is judged, always run one right after the other. The
    // fixed-rate runs follow in the first `env.runs` rounds.
    let rounds = if env.quick { 9 } else { 20 };
    let judged = (
        contenders.iter().position(|c| c.name == "Strait"),
        contenders.iter().position(|c| c.name == "nginx"),
    );
    for r in 0..rounds {
        for (pi, proto) in protos.iter().enumerate() {
            let kinds: &[Kind] = if r < env.runs {
                &[Kind::Saturation, Kind::FixedRate]
            } else {
                &[Kind::Saturation]
            };
            for &kind in kinds {
                let order = match judged {
                    (Some(s), Some(n)) => rounds::order(r, contenders.len(), (s, n)),
                    _ => (0..contenders.len())
                        .map(|k| (r + k) % contenders.len())
                        .collect(),
                };
                for ci in order {
                    let c = &mut contenders[ci];
                    if c.missing[proto.idx()].is_some() {
                        continue;
                    }
                    step(&format!(
                        "L7 round {}/{rounds}: {} {} {kind:?}",
                        r + 1,
                        c.name,
                        proto.title()
                    ));
                    let f = &mut figs[pi][ci];
                    let res = match kind {
                        Kind::Saturation => saturate(env, c, *proto, sat_secs, f),
                        Kind::FixedRate => fixed_rate(env, c, *proto, secs, f),
                    }
                    .and_then(|()| c.proc.as_mut().map_or(Ok(()), Proc::check_alive));
                    match res {
                        Ok(()) => {}
                        // The baseline failing means the setup is broken.
                        Err(e) if ci == 0 || interrupted() => return Err(e),
                        Err(e) => {
                            eprintln!("warning: {} {proto:?}: {e:#}", c.name);
                            c.missing[pi] = Some(format!("failed: {e:#}"));
                        }
                    }
                }
            }
        }
    }
    let rss: Vec<Option<f64>> = contenders
        .iter()
        .map(|c| c.proc.as_ref().map(|p| peak_rss_mib(&tree(p.pid()))))
        .collect();

    let mut tables = Vec::new();
    let mut raw = Vec::new();
    for (pi, proto) in protos.iter().enumerate() {
        let base = &figs[pi][0];
        let rows = contenders
            .iter()
            .zip(&figs[pi])
            .zip(&rss)
            .map(|((c, f), rss)| {
                if let Some(why) = &c.missing[pi] {
                    let mut row = vec![c.name.to_string(), why.clone()];
                    row.extend(std::iter::repeat_n("—".to_string(), 6));
                    return row;
                }
                vec![
                    c.name.to_string(),
                    f.rps.cell(0, Some(&base.rps)),
                    f.rps
                        .paired_ratios(&base.rps)
                        .map_or("n/a".into(), |r| r.cell(3, None)),
                    f.p50.cell(0, Some(&base.p50)),
                    f.p99.cell(0, Some(&base.p99)),
                    f.p999.cell(0, Some(&base.p999)),
                    if c.proc.is_some() {
                        f.cpu_per_1k.cell(3, None)
                    } else {
                        "—".into()
                    },
                    rss.map_or("—".into(), |m| format!("{m:.1}")),
                ]
            })
            .collect();
        let achieved = figs[pi]
            .iter()
            .zip(&contenders)
            .filter(|(_, c)| c.missing[pi].is_none())
            .map(|(f, c)| format!("{} {}", c.name, f.fixed_rate_achieved.cell(0, None)))
            .collect::<Vec<_>>()
            .join(", ");
        tables.push(Table {
            title: format!("L7: {}", proto.title()),
            columns: [
                "proxy",
                "requests/s at saturation",
                "rate ÷ direct, same round",
                &format!("p50 µs @ {FIXED_RPS}/s"),
                "p99 µs",
                "p99.9 µs",
                "proxy CPU s / 1,000 req",
                "proxy peak RSS MiB",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            rows,
            notes: vec![
                format!("Fixed-rate runs achieved (req/s): {achieved}."),
                format!(
                    "Runs measured again because the host stole more than {:.0}% of the CPU time during them, or (fixed rate) their p99 was over {MAX_P99_OVER_P50}x their own p50, the mark of a host pause (one retry, the retry counts): {}.",
                    MAX_STEAL * 100.0,
                    contenders
                        .iter()
                        .zip(&figs[pi])
                        .map(|(c, f)| format!("{} {}", c.name, f.repeated))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                targets(&contenders, &figs[pi], &rss, pi),
            ],
        });
        raw.push(json!({
            "protocol": proto.title(),
            "contenders": contenders.iter().zip(&figs[pi]).zip(&rss).map(|((c, f), rss)| json!({
                "name": c.name,
                "missing": c.missing[pi],
                "requests_per_s": f.rps.json(),
                "rate_over_direct_paired": f.rps.paired_ratios(&figs[pi][0].rps).map(|r| r.json()),
                "p50_us": f.p50.json(), "p99_us": f.p99.json(), "p999_us": f.p999.json(),
                "cpu_s_per_1k_requests": f.cpu_per_1k.json(),
                "peak_rss_mib": rss,
                "fixed_rate_achieved": f.fixed_rate_achieved.json(),
                "runs_repeated_for_steal": f.repeated,
            })).collect::<Vec<_>>(),
        }));
    }
    let workers = server_cpus(env);
    let runs = env.runs;
    Ok(Section {
        title: "L7: HTTP through a proxy".into(),
        intro: vec![
            format!(
                "Client: oha {} in the client namespace (chosen because it drives HTTP/1.1 and h2 at a fixed open-loop rate with latency correction and reports percentiles as JSON; h2load has no fixed rate or percentiles, wrk no h2 or fixed rate). Saturation: {rounds} rounds of {sat_secs} s with 64 requests in flight (h1: 64 connections; h2: 4 connections × 16 streams); each round runs every contender back to back, the first one rotating and Strait right next to nginx, after one unrecorded warm-up run each. \
                 Latency: {runs} runs of {secs} s at a fixed {FIXED_RPS} requests/s (open loop, `--latency-correction`), in the first rounds. \
                 \"rate ÷ direct, same round\" is each round's requests/s over direct's in that round (median, min–max): it cancels the drift between rounds, as in L4. \
                 Backend: `bench-backend --http` (hyper, h1 + h2c, 20-byte body), the same for all. Every proxy speaks HTTP/1.1 keep-alive to the backend.",
                super::install::OHA_VERSION
            ),
            format!(
                "nginx {}: `worker_processes {workers}`, upstream `keepalive 256`, `proxy_http_version 1.1`, `access_log off`. \
                 HAProxy {}: `nbthread {workers}`, `http-reuse always`, no log. \
                 Strait: `bench-strait-l7` (the daemon's `strait::serve` on the outbound path: original destination → Service → route → cluster → endpoint pool) built with the `dist` profile Strait ships with (fat LTO), `{workers}` worker thread(s) each with its own current-thread runtime, access log and metrics sink off. Worker count = CPUs the proxy is pinned to. \
                 Proxy CPU is utime+stime of the proxy's processes over the saturation run; peak RSS is VmHWM summed over its processes at the end of the suite.",
                version("nginx", &["-v"]),
                version("haproxy", &["-v"]),
            ),
        ],
        tables,
        json: Value::Array(raw),
    })
}

/// Issue 5's targets for Strait, checked against this table's medians:
/// requests/s at least nginx's, p99 added over direct under 200 µs at
/// 1,000 req/s, peak RSS under 20 MB.
fn targets(cs: &[Contender], figs: &[Figures], rss: &[Option<f64>], pi: usize) -> String {
    let idx = |name: &str| {
        cs.iter()
            .position(|c| c.name == name && c.missing[pi].is_none())
    };
    let (Some(s), Some(n)) = (idx("Strait"), idx("nginx")) else {
        return "Issue 5 targets: not checked (Strait or nginx has no figure).".into();
    };
    let ok = |b: bool| if b { "met" } else { "not met" };
    let (srps, nrps) = (figs[s].rps.median(), figs[n].rps.median());
    // Same-round differences, like the rates: a host pause during one
    // direct run would otherwise move the baseline's median.
    let added = (figs[s].p99.0.len() == figs[0].p99.0.len()).then(|| {
        Samples(
            figs[s]
                .p99
                .0
                .iter()
                .zip(&figs[0].p99.0)
                .map(|(a, b)| a - b)
                .collect(),
        )
    });
    let mut out = String::from("Issue 5 targets for Strait: ");
    // Judged on the same-round ratio: the medians of separate runs carry
    // the drift between rounds, which is larger than the difference.
    if let (Some(a), Some(b), Some(p)) = (srps, nrps, figs[s].rps.paired_ratios(&figs[n].rps)) {
        let m = p.median().unwrap_or(f64::NAN);
        let _ = write!(
            out,
            "requests/s ≥ nginx's: Strait ÷ nginx in the same round {} over {} rounds, medians {:.0} vs {:.0} ({}); ",
            p.cell(3, None),
            p.0.len(),
            a,
            b,
            ok(m >= 1.0)
        );
    }
    // A baseline whose own p99 is many times its p50 was paused by the host
    // (loopback without a proxy has no other reason to be slow): then the
    // difference says nothing about Strait.
    let disturbed = figs[0]
        .p99
        .median()
        .zip(figs[0].p50.median())
        .filter(|(p99, p50)| *p99 > 5.0 * p50);
    match (added.as_ref().and_then(Samples::median), disturbed) {
        (Some(d), Some((p99, p50))) => {
            let _ = write!(
                out,
                "p99 added over direct at {FIXED_RPS}/s: not judged in this run ({d:.0} µs same-round median), direct's own p99 {p99:.0} µs is over 5× its p50 {p50:.0} µs (host pauses); "
            );
        }
        (Some(d), None) => {
            let _ = write!(
                out,
                "p99 added over direct at {FIXED_RPS}/s (Strait − direct in the same round, median): {d:.0} µs, target < 200 ({}); ",
                ok(d < 200.0)
            );
        }
        (None, _) => {}
    }
    if let Some(m) = rss[s] {
        let _ = write!(
            out,
            "peak RSS {m:.1} MiB, target < 20 MB ({}).",
            ok(m * 1.048_576 < 20.0)
        );
    }
    out
}

/// The first line a `tool` prints about its version (nginx prints to stderr).
fn version(tool: &str, args: &[&str]) -> String {
    Command::new(tool)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            let line = String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("nginx/").map(String::from))
                .or_else(|| line.split_whitespace().nth(2).map(String::from))
                .unwrap_or_default()
        })
        .unwrap_or_default()
}
