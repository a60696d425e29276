//! Test harness for the L7 proxy: services made of real backends on
//! loopback, a mesh compiled from YAML through the config crate, a running
//! proxy with one front listener per service port, clients, and the access
//! log.
#![allow(dead_code)]
pub mod backend;
pub mod client;
pub mod front;
pub mod tcp;
pub mod yaml;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strait::serve::{AccessLogRecord, FixedDestination, Proxy};
use tokio::net::TcpListener;

pub use backend::Backend;

/// A loopback address no other test of this process uses. The second
/// octet comes from the process id so concurrently running test binaries
/// do not collide.
pub fn fresh_ip() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let b = 20 + (std::process::id() % 200) as u8;
    IpAddr::V4(Ipv4Addr::new(
        127,
        b,
        (n / 250) as u8 + 1,
        (n % 250) as u8 + 2,
    ))
}

/// A virtual IP for a service: inside 127.0.0.0/8 too, but never bound.
fn fresh_vip() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let b = 20 + (std::process::id() % 200) as u8;
    IpAddr::V4(Ipv4Addr::new(
        127,
        b,
        200 + (n / 250) as u8,
        (n % 250) as u8 + 2,
    ))
}

/// One service: its backends (pods) and the YAML that declares it.
pub struct Service {
    /// Short name.
    pub name: String,
    /// Service port.
    pub port: u16,
    /// ClusterIP.
    pub vip: IpAddr,
    /// Backends by pod name.
    pub backends: HashMap<String, Backend>,
    /// Raw TCP backends by pod name.
    pub tcp_backends: HashMap<String, tcp::TcpBackend>,
    /// Byte-recording HTTP/1.1 backends by pod name.
    pub raw_backends: HashMap<String, tcp::RawHttpBackend>,
}

impl Service {
    /// The backend of pod `name`.
    pub fn backend(&self, name: &str) -> &Backend {
        &self.backends[name]
    }
}

/// A pod: its name and labels.
pub type Pod<'a> = (&'a str, &'a [(&'a str, &'a str)]);

/// Builds a mesh.
#[derive(Default)]
pub struct MeshBuilder {
    yaml: String,
    services: Vec<Service>,
    settings: Option<strait::serve::ProxySettings>,
}

/// What a service's backends speak.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`Backend`]: HTTP/1.1 and h2 that echoes what it saw.
    Http,
    /// [`tcp::TcpBackend`]: raw TCP echo.
    Tcp,
    /// [`tcp::RawHttpBackend`]: records the exact bytes, answers `200 ok`.
    RawHttp,
}

impl MeshBuilder {
    /// An empty mesh.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds service `name` (namespace `default`) with one port named
    /// `port_name`, and one backend per `(pod name, labels)`; every pod gets
    /// label `app: name`.
    pub async fn service(&mut self, name: &str, port: u16, port_name: &str, pods: &[Pod<'_>]) {
        self.add_service(name, port, port_name, pods, Kind::Http)
            .await
    }

    /// Like [`MeshBuilder::service`] with backends that record the exact
    /// bytes they receive and answer every request head `200 ok`
    /// (`tcp::RawHttpBackend`).
    pub async fn raw_http_service(
        &mut self,
        name: &str,
        port: u16,
        port_name: &str,
        pods: &[Pod<'_>],
    ) {
        self.add_service(name, port, port_name, pods, Kind::RawHttp)
            .await
    }

    /// Adds service `name` like [`MeshBuilder::service`] with `kind`
    /// backends, one per entry of `versions`: pod `<name>-<version>`
    /// labelled `version: <version>` (and `app: <name>`).
    pub async fn versioned(
        &mut self,
        kind: Kind,
        name: &str,
        port: u16,
        port_name: &str,
        versions: &[&str],
    ) {
        let pods: Vec<String> = versions.iter().map(|v| format!("{name}-{v}")).collect();
        let labels: Vec<[(&str, &str); 1]> = versions.iter().map(|v| [("version", *v)]).collect();
        let pods: Vec<Pod<'_>> = pods
            .iter()
            .zip(&labels)
            .map(|(p, l)| (p.as_str(), &l[..]))
            .collect();
        self.add_service(name, port, port_name, &pods, kind).await
    }

    /// Proxy settings (timeouts, limits) instead of the defaults.
    pub fn settings(&mut self, s: strait::serve::ProxySettings) {
        self.settings = Some(s);
    }

    /// Like [`MeshBuilder::service`] with raw TCP echo backends.
    pub async fn tcp_service(&mut self, name: &str, port: u16, port_name: &str, pods: &[Pod<'_>]) {
        self.add_service(name, port, port_name, pods, Kind::Tcp)
            .await
    }

    async fn add_service(
        &mut self,
        name: &str,
        port: u16,
        port_name: &str,
        pods: &[Pod<'_>],
        kind: Kind,
    ) {
        let vip = fresh_vip();
        let mut backends = HashMap::new();
        let mut tcp_backends = HashMap::new();
        let mut raw_backends = HashMap::new();
        let mut target = 0u16;
        let mut yaml = String::new();
        for (pod, labels) in pods {
            let ip = fresh_ip();
            let addr = SocketAddr::new(ip, target);
            if kind == Kind::Tcp {
                let b = tcp::TcpBackend::start(pod, addr)
                    .await
                    .expect("bind backend");
                target = b.addr.port();
                tcp_backends.insert(pod.to_string(), b);
            } else if kind == Kind::RawHttp {
                let b = tcp::RawHttpBackend::start(addr)
                    .await
                    .expect("bind backend");
                target = b.addr.port();
                raw_backends.insert(pod.to_string(), b);
            } else {
                let b = Backend::start(pod, addr).await.expect("bind backend");
                target = b.addr.port();
                backends.insert(pod.to_string(), b);
            }
            let mut l = format!("app: {name}");
            for (k, v) in labels.iter() {
                write!(l, ", {k}: \"{v}\"").unwrap();
            }
            writeln!(
                yaml,
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: default, labels: {{{l}}}}}\nstatus: {{podIP: {ip}}}"
            )
            .unwrap();
        }
        writeln!(
            self.yaml,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {vip}\n  selector: {{app: {name}}}\n  ports: [{{name: {port_name}, port: {port}, targetPort: {target}}}]\n{yaml}"
        )
        .unwrap();
        let name = name.to_owned();
        self.services.push(Service {
            name,
            port,
            vip,
            backends,
            tcp_backends,
            raw_backends,
        });
    }

    /// Adds Istio resources (VirtualService, DestinationRule, ...).
    pub fn yaml(&mut self, yaml: &str) {
        self.yaml.push_str("\n---\n");
        self.yaml.push_str(yaml);
        self.yaml.push('\n');
    }

    /// Compiles the YAML (panicking with the diagnostics on any error),
    /// starts the proxy and one front listener per service.
    pub async fn start(self) -> Mesh {
        let snapshot = compile(&self.yaml);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AccessLogRecord>();
        let l2 = log.clone();
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                l2.lock().unwrap().push(r);
            }
        });
        let mut proxy = Proxy::new(&snapshot).expect("runtime table builds");
        if let Some(s) = self.settings {
            proxy = proxy.with_settings(s);
        }
        let proxy = proxy.with_access_log(Arc::new(tx));
        let mut fronts = HashMap::new();
        let mut tasks = Vec::new();
        for s in &self.services {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            fronts.insert(s.name.clone(), listener.local_addr().unwrap());
            let p = proxy.clone();
            let dst = SocketAddr::new(s.vip, s.port);
            tasks.push(tokio::spawn(async move {
                let _ = p.serve(listener, FixedDestination(dst)).await;
            }));
        }
        Mesh {
            proxy,
            services: self.services,
            fronts,
            log,
            tasks,
            yaml: self.yaml,
        }
    }
}

/// Compiles YAML through the config crate; panics on diagnostics that are
/// errors.
pub fn compile(yaml: &str) -> strait_config::MeshSnapshot {
    let loaded = strait_config::load::load_str(yaml, "test.yaml");
    assert!(
        !loaded.has_errors(),
        "load errors: {:?}",
        loaded.diagnostics
    );
    let (snap, diags) = strait_config::compile(&loaded.resources);
    let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "compile errors: {errors:?}");
    snap
}

/// A running mesh; stops its listeners when dropped.
pub struct Mesh {
    /// The proxy.
    pub proxy: Proxy,
    /// Services and their backends.
    pub services: Vec<Service>,
    /// Service name → the proxy listener that stands for its VIP:port.
    pub fronts: HashMap<String, SocketAddr>,
    log: Arc<Mutex<Vec<AccessLogRecord>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The YAML the mesh was compiled from.
    pub yaml: String,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Mesh {
    /// `http://<front of service>` + `path`.
    pub fn url(&self, service: &str, path: &str) -> String {
        format!("http://{}{}", self.fronts[service], path)
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| s.name == name)
            .expect("service exists")
    }

    /// The backend of pod `pod` of `service`.
    pub fn backend(&self, service: &str, pod: &str) -> &Backend {
        self.service(service).backend(pod)
    }

    /// Access-log records so far (waits briefly for in-flight ones).
    pub async fn logs(&self) -> Vec<AccessLogRecord> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.log.lock().unwrap().clone()
    }

    /// Recompiles with `extra` YAML appended and swaps the snapshot in.
    pub fn update(&mut self, extra: &str) {
        self.yaml.push_str("\n---\n");
        self.yaml.push_str(extra);
        let snap = compile(&self.yaml);
        self.proxy.update(&snap).expect("runtime table builds");
    }

    /// Replaces the Istio part of the config: the services' YAML plus `istio`.
    pub fn replace_istio(&mut self, base: &str, istio: &str) {
        self.yaml = format!("{base}\n---\n{istio}");
        let snap = compile(&self.yaml);
        self.proxy.update(&snap).expect("runtime table builds");
    }
}

/// Standard deviation bound: `|observed - n p| < 5 sigma` of the binomial.
pub fn assert_binomial(observed: usize, n: usize, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (observed as f64 - mean).abs() <= 5.0 * sigma + 1.0,
        "{what}: {observed} of {n}, expected {mean:.1} ± {:.1}",
        5.0 * sigma
    );
}
