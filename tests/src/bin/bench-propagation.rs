//! Config propagation latency for `cargo xtask bench config` (issue 21):
//! at N services (default 10,000), how long from one Service's endpoint
//! change written to disk until (a) the kernel map holds it and (b) the
//! new endpoint receives traffic through the L7 proxy. The file watcher's
//! debounce is left out (the clock starts when the daemon would wake up);
//! every step after it is the daemon's own: re-read the config directory
//! (`ConfigStore::reload`), compile the snapshot, diff it against the one
//! in service, apply the diff to the proxy (`Proxy::apply_diff`) and to the
//! kernel maps (`Datapath::apply_changes`, on a private bpffs; skipped with
//! a note when not root).
//!
//! `bench-propagation [--services N] [--changes K]`
//!
//! One file per Service (Service + EndpointSlice of 10 endpoints +
//! VirtualService), as a Kubernetes source would keep them; `svc0` has no
//! VirtualService (balanced in the kernel, mode L4) and one endpoint that
//! alternates between two loopback backends, A and B. Prints one JSON
//! line: per-step samples in milliseconds.
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Context;
use strait::datapath::{Datapath, DatapathConfig};
use strait::serve::{FixedDestination, Proxy};
use strait::sources::ConfigStore;
use strait_config::snapshot::MeshSnapshot;

/// The allocator the `strait` binary uses.
#[global_allocator]
static GLOBAL: strait::Allocator = strait::Allocator;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vip(i: usize) -> String {
    format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256)
}

/// The file of service `i`; `svc0`'s endpoint is `ep0` (ip, port).
fn service_yaml(i: usize, ep0: Option<(&str, u16)>) -> String {
    let name = format!("svc{i}");
    let ns = format!("ns{}", i % 100);
    let (target, eps) = match ep0 {
        Some((ip, port)) => (port, vec![ip.to_owned()]),
        None => (
            8080,
            (0..10)
                .map(|j| {
                    let n = i * 10 + j;
                    format!("10.{}.{}.{}", 128 + n / 65536 % 64, n / 256 % 256, n % 256)
                })
                .collect(),
        ),
    };
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  clusterIP: {}\n  selector: {{app: {name}}}\n  ports:\n  - {{name: http, port: 80, targetPort: {target}}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abc\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports:\n- {{name: http, port: {target}}}\nendpoints:\n",
        vip(i)
    );
    for e in eps {
        let _ = writeln!(y, "- {{addresses: [\"{e}\"], conditions: {{ready: true}}}}");
    }
    if ep0.is_none() {
        let _ = write!(
            y,
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{name}.{ns}.svc.cluster.local]\n  http:\n  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]\n    route: [{{destination: {{host: {name}.{ns}.svc.cluster.local}}}}]\n    timeout: 2s\n  - route: [{{destination: {{host: {name}.{ns}.svc.cluster.local}}}}]\n"
        );
    }
    y
}

/// A keep-alive HTTP/1.1 backend answering every request with `name`.
fn backend(addr: SocketAddr, name: u8) -> anyhow::Result<()> {
    let l = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s, name));
        }
    });
    Ok(())
}

fn serve(mut s: TcpStream, name: u8) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nx-served-by: {}\r\n\r\n{}",
                name as char, name as char
            );
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends requests back to back through the proxy at `front`; reports the
/// instant the backend named `want` (set by the caller, 0 = none) first
/// answers.
fn client(
    front: SocketAddr,
    want: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    seen: mpsc::Sender<Instant>,
) {
    let mut conn: Option<TcpStream> = None;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(front) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn.insert(s)
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            },
        };
        if s.write_all(b"GET / HTTP/1.1\r\nhost: svc0\r\n\r\n")
            .is_err()
        {
            conn = None;
            continue;
        }
        // The response is small: read until its one-byte body.
        let mut got = Vec::new();
        let served = loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break head
                        .lines()
                        .find_map(|l| l.strip_prefix("x-served-by:"))
                        .and_then(|v| v.trim().bytes().next());
                }
            }
        };
        if std::env::var_os("BENCH_DEBUG").is_some() {
            eprintln!("{:?} want {}", served, want.load(Ordering::Relaxed));
        }
        let Some(name) = served else {
            conn = None;
            continue;
        };
        let w = want.load(Ordering::Acquire);
        if w != 0
            && name == w
            && want
                .compare_exchange(w, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let _ = seen.send(Instant::now());
        }
    }
}

fn compile(store: &mut ConfigStore) -> (MeshSnapshot, f64, f64) {
    let t = Instant::now();
    let reload = store.reload();
    let load_ms = ms(t.elapsed());
    let t = Instant::now();
    let (snap, _) = strait_config::compile(&reload.resources);
    (snap, load_ms, ms(t.elapsed()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let services = arg("--services", 10_000);
    let changes = arg("--changes", 10);
    let dir = std::env::temp_dir().join(format!("strait-propagation-{}", std::process::id()));
    let result = run(&dir, services, changes);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(dir: &Path, services: usize, changes: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Backends A and B on one port, two loopback addresses.
    let probe = TcpListener::bind("127.0.0.2:0")?;
    let port = probe.local_addr()?.port();
    drop(probe);
    backend(SocketAddr::from(([127, 0, 0, 2], port)), b'a')?;
    backend(SocketAddr::from(([127, 0, 0, 3], port)), b'b')?;
    for i in 1..services {
        std::fs::write(dir.join(format!("svc{i}.yaml")), service_yaml(i, None))?;
    }
    let svc0 = dir.join("svc0.yaml");
    std::fs::write(&svc0, service_yaml(0, Some(("127.0.0.2", port))))?;

    let mut store = ConfigStore::new(dir);
    let (snap, load0, compile0) = compile(&mut store);
    anyhow::ensure!(
        snap.services.len() == services,
        "compiled {} services of {services}",
        snap.services.len()
    );
    let proxy = Proxy::new(&snap).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The kernel maps, on a private bpffs (root only).
    let bpffs =
        std::env::temp_dir().join(format!("strait-propagation-bpffs-{}", std::process::id()));
    let mut kernel = None;
    let mut kernel_note = String::new();
    if rustix::process::geteuid().is_root() {
        std::fs::create_dir_all(&bpffs)?;
        strait::datapath::ensure_bpffs(&bpffs)?;
        let mut cfg = DatapathConfig::new("propagation");
        cfg.bpffs = bpffs.clone();
        let mut dp = Datapath::new(&cfg)?;
        dp.apply(&snap.l4)?;
        kernel = Some(dp);
    } else {
        kernel_note = "not root: kernel map writes not measured".into();
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let front = listener.local_addr()?;
    let dst: SocketAddr = format!("{}:80", vip(0)).parse()?;
    let p = proxy.clone();
    rt.spawn(async move {
        let _ = p.serve(listener, FixedDestination(dst)).await;
    });
    let want = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (w, s) = (want.clone(), stop.clone());
    let client_thread = std::thread::spawn(move || client(front, w, s, tx));

    let mut current = snap;
    let (mut load, mut comp, mut diffs, mut proxy_ms, mut kernel_ms, mut e2e) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut outcome = Ok(());
    for k in 0..changes {
        let (ip, name) = if k % 2 == 0 {
            ("127.0.0.3", b'b')
        } else {
            ("127.0.0.2", b'a')
        };
        std::fs::write(&svc0, service_yaml(0, Some((ip, port))))?;
        want.store(name, Ordering::Release);
        let t0 = Instant::now();
        let (snap, l, c) = compile(&mut store);
        let t = Instant::now();
        let diff = strait_config::snapshot::diff(&current, &snap);
        diffs.push(ms(t.elapsed()));
        let t = Instant::now();
        proxy
            .apply_diff(&snap, &diff)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        proxy_ms.push(ms(t.elapsed()));
        if let Some(dp) = kernel.as_mut() {
            let t = Instant::now();
            let r = dp.apply_changes(&snap.l4, &diff.l4)?;
            kernel_ms.push(ms(t.elapsed()));
            anyhow::ensure!(r.updated == 1, "one kernel service rewritten: {r:?}");
        }
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(at) => e2e.push(ms(at.saturating_duration_since(t0))),
            Err(_) => {
                outcome = Err(anyhow::anyhow!("backend {} never answered", name as char));
                break;
            }
        }
        load.push(l);
        comp.push(c);
        current = snap;
    }
    // The full path, for comparison: every cluster compared, every kernel
    // service compared.
    let t = Instant::now();
    proxy.update(&current).map_err(|e| anyhow::anyhow!("{e}"))?;
    let full_proxy = ms(t.elapsed());
    let full_kernel = match kernel.as_mut() {
        Some(dp) => {
            let t = Instant::now();
            dp.apply(&current.l4)?;
            Some(ms(t.elapsed()))
        }
        None => None,
    };
    stop.store(true, Ordering::Relaxed);
    let _ = client_thread.join();
    if let Some(dp) = kernel.take() {
        let _ = dp.cleanup();
        let _ = rustix::mount::unmount(&bpffs, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&bpffs);
    }
    outcome?;
    let j = serde_json::json!({
        "services": services,
        "changes": changes,
        "initial_load_ms": load0,
        "initial_compile_ms": compile0,
        "load_ms": load,
        "compile_ms": comp,
        "diff_ms": diffs,
        "proxy_apply_ms": proxy_ms,
        "kernel_write_ms": kernel_ms,
        "end_to_end_ms": e2e,
        "full_proxy_update_ms": full_proxy,
        "full_kernel_apply_ms": full_kernel,
        "note": kernel_note,
    });
    println!("{j}");
    Ok(())
}
