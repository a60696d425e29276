//! Istio's bookinfo on a simulated node: a pod per Deployment replica, each
//! running `bookinfo-app` (tests/src/bin/bookinfo-app.rs) as the service and
//! version its labels (`app`, `version`) name, wired to its upstreams.
//!
//! [`Upstream::Vip`] points upstream URLs at the Services' ClusterIPs, which
//! only the mesh (the daemon's socket programs) makes reachable;
//! [`Upstream::Direct`] points them at the endpoint pod IPs (round robin in
//! the app), so bookinfo also works over plain routing without the mesh.
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

pub use super::http::get;
use super::{Node, Platform};

/// The bookinfo services `bookinfo-app` can play, by their `app` label.
pub const SERVICES: [&str; 4] = ["productpage", "details", "reviews", "ratings"];

/// Where the apps send their upstream calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// `http://<ClusterIP>:<port>`: needs the mesh to reach anything.
    Vip,
    /// `http://<pod IP>:<targetPort>` of every endpoint, round robin.
    Direct,
}

/// How to start bookinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The `bookinfo-app` binary ([`app_path`], or
    /// `env!("CARGO_BIN_EXE_bookinfo-app")` in this crate's tests).
    pub app: PathBuf,
    /// Where upstream URLs point.
    pub upstream: Upstream,
    /// `--timeout-ms` for every app: one upstream timeout instead of
    /// bookinfo's (3 s productpage→details/reviews, 10 s / 2.5 s
    /// reviews v2 / v3 →ratings). `None` keeps bookinfo's.
    pub timeout_ms: Option<u64>,
}

impl Options {
    /// `app` with `upstream` URLs and bookinfo's own timeouts.
    pub fn new(app: impl Into<PathBuf>, upstream: Upstream) -> Self {
        Options {
            app: app.into(),
            upstream,
            timeout_ms: None,
        }
    }
}

/// One running bookinfo process.
#[derive(Debug)]
pub struct App {
    /// Its pod's name.
    pub pod: String,
    /// Its pod's IP.
    pub ip: Ipv4Addr,
    /// Port it listens on (the Service's target port), on all addresses.
    pub port: u16,
    /// Its `app` label: productpage, details, reviews or ratings.
    pub service: String,
    /// Its `version` label.
    pub version: String,
    /// Its stdout and stderr.
    pub log: PathBuf,
    child: Child,
}

/// The running bookinfo; dropping it kills the apps (the node would too).
#[derive(Debug)]
pub struct BookinfoHandle {
    apps: Vec<App>,
    productpage_vip: Option<SocketAddr>,
}

/// The `bookinfo-app` binary next to the running executable (cargo puts
/// binaries in `target/<profile>/`, test executables in
/// `target/<profile>/deps/`). Integration tests can pass
/// `env!("CARGO_BIN_EXE_bookinfo-app")` instead.
pub fn app_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("bookinfo-app"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "no bookinfo-app beside {}: `cargo build -p strait-tests`",
                exe.display()
            )
        })
}

/// Reads `platform_yaml`, creates its Services and pods on `node`
/// ([`Node::apply`]) and starts `opts.app` in every pod whose `app` label
/// is a bookinfo service, listening on `0.0.0.0:<target port>`, with
/// `POD_NAME` set and its output in `<node tmp>/bookinfo-<pod>.log`.
/// Returns once every app accepts connections on its pod IP (10 s at most).
/// Write the daemon's view with [`Node::write_config`] afterwards. Errors
/// name the file, the pod, or quote the app's log.
pub fn start(
    node: &mut Node,
    platform_yaml: &Path,
    opts: &Options,
) -> anyhow::Result<BookinfoHandle> {
    let platform = Platform::from_file(platform_yaml)?;
    start_platform(node, &platform, opts)
}

/// [`start`] from an already parsed platform.
pub fn start_platform(
    node: &mut Node,
    platform: &Platform,
    opts: &Options,
) -> anyhow::Result<BookinfoHandle> {
    let (app, upstream) = (&opts.app, opts.upstream);
    let created = node.apply(platform)?;
    let mut handle = BookinfoHandle {
        apps: Vec::new(),
        productpage_vip: None,
    };
    for pod_name in created {
        let pod = node
            .pods()
            .iter()
            .find(|p| p.spec.name == pod_name)
            .expect("just created")
            .clone();
        let Some(service) = pod
            .spec
            .labels
            .get("app")
            .filter(|a| SERVICES.contains(&a.as_str()))
        else {
            continue;
        };
        let version = pod
            .spec
            .labels
            .get("version")
            .cloned()
            .unwrap_or("v1".into());
        let port = listen_port(node, &pod.spec.namespace, service)?;
        let log = node.tmp_dir().join(format!("bookinfo-{pod_name}.log"));
        let out = std::fs::File::create(&log)?;
        let mut cmd = pod.command(app)?;
        cmd.args(["--service", service, "--version", &version])
            .arg("--listen")
            .arg(format!("0.0.0.0:{port}"))
            .env("POD_NAME", &pod_name)
            .args(
                opts.timeout_ms
                    .iter()
                    .flat_map(|ms| ["--timeout-ms".to_string(), ms.to_string()]),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let calls: &[&str] = match service.as_str() {
            "productpage" => &["details", "reviews"],
            "reviews" if version != "v1" => &["ratings"],
            _ => &[],
        };
        for target in calls {
            let urls = upstream_urls(node, &pod.spec.namespace, target, upstream)?;
            cmd.arg(format!("--{target}")).arg(urls.join(","));
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {} in pod {pod_name}", app.display()))?;
        handle.apps.push(App {
            pod: pod_name,
            ip: pod.ip,
            port,
            service: service.clone(),
            version,
            log,
            child,
        });
    }
    if !handle.apps.iter().any(|a| a.service == "productpage") {
        bail!("the platform has no Deployment labelled app: productpage");
    }
    handle.productpage_vip = service_addr(node, "productpage");
    handle.wait_ready(node, Duration::from_secs(10))?;
    Ok(handle)
}

/// The port the Service named `service` forwards to (its first port's
/// target), which the app listens on.
fn listen_port(node: &Node, namespace: &str, service: &str) -> anyhow::Result<u16> {
    let svc = node
        .service(namespace, service)
        .ok_or_else(|| anyhow!("no Service {namespace}/{service} for the {service} pods"))?;
    let ports = node
        .endpoints(namespace, service)
        .first()
        .map(|p| p.spec.container_ports.clone())
        .unwrap_or_default();
    Ok(svc.ports[0].target_port_number(&ports))
}

fn service_addr(node: &Node, service: &str) -> Option<SocketAddr> {
    let svc = node.services().iter().find(|s| s.name == service)?;
    Some(SocketAddr::from((svc.cluster_ip?, svc.ports[0].port)))
}

fn upstream_urls(
    node: &Node,
    namespace: &str,
    service: &str,
    upstream: Upstream,
) -> anyhow::Result<Vec<String>> {
    let svc = node
        .service(namespace, service)
        .ok_or_else(|| anyhow!("no Service {namespace}/{service}"))?;
    match upstream {
        Upstream::Vip => {
            let vip = svc
                .cluster_ip
                .ok_or_else(|| anyhow!("Service {namespace}/{service} is headless"))?;
            Ok(vec![format!("http://{vip}:{}", svc.ports[0].port)])
        }
        Upstream::Direct => {
            let port = listen_port(node, namespace, service)?;
            let urls: Vec<String> = node
                .endpoints(namespace, service)
                .iter()
                .map(|p| format!("http://{}:{port}", p.ip))
                .collect();
            if urls.is_empty() {
                bail!(
                    "Service {namespace}/{service} has no endpoints on node {}",
                    node.name()
                );
            }
            Ok(urls)
        }
    }
}

impl App {
    /// The app's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl BookinfoHandle {
    /// The running apps.
    pub fn apps(&self) -> &[App] {
        &self.apps
    }

    /// productpage's ClusterIP address (`<vip>:9080`), for clients in the
    /// mesh.
    pub fn productpage_vip(&self) -> Option<SocketAddr> {
        self.productpage_vip
    }

    /// The first productpage pod's address (`<pod IP>:9080`), reachable
    /// from the node and every pod without the mesh.
    pub fn productpage_direct(&self) -> SocketAddr {
        let app = self
            .apps
            .iter()
            .find(|a| a.service == "productpage")
            .expect("start checks there is one");
        SocketAddr::from((app.ip, app.port))
    }

    /// Kills the app in `pod` (to make its service fail); returns whether
    /// there was one.
    pub fn kill(&mut self, pod: &str) -> bool {
        match self.apps.iter_mut().find(|a| a.pod == pod) {
            Some(app) => {
                let _ = app.child.kill();
                let _ = app.child.wait();
                true
            }
            None => false,
        }
    }

    /// Waits until every app accepts TCP connections on its pod IP, probing
    /// from the node's namespace; on timeout the error quotes the log of the
    /// first app that is not up.
    pub fn wait_ready(&mut self, node: &Node, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for app in &mut self.apps {
            let addr = SocketAddr::from((app.ip, app.port));
            loop {
                if let Some(status) = app.child.try_wait()? {
                    bail!("{} exited with {status}: {}", app.pod, tail(&app.log));
                }
                let up = node.run_in(|| {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                })?;
                if up {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} not listening on {addr} after {timeout:?}: {}",
                        app.pod,
                        tail(&app.log)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

impl Drop for BookinfoHandle {
    fn drop(&mut self) {
        for app in &mut self.apps {
            let _ = app.child.kill();
            let _ = app.child.wait();
        }
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
