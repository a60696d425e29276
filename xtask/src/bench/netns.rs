//! The bench's network: three namespaces it creates and deletes, joined by
//! veth pairs created directly inside them (nothing appears in the host's
//! namespace, and nothing is routed off the machine).
//!
//! ```text
//!  client ns  198.18.0.1 ──veth── 198.18.0.2  server ns  (backend, proxies)
//!  kube ns    198.18.2.1 ──veth── 198.18.2.2  server ns
//! ```
//!
//! Addresses are from 198.18.0.0/15, the range RFC 2544 reserves for
//! benchmarking; service VIPs are in 198.19.0.0/16. The client namespace runs
//! the direct and Strait clients and never gets an iptables rule; the kube
//! namespace plays a kube-proxy node (its nat table holds the KUBE-* chains),
//! so conntrack and netfilter hooks cost nothing in the other cases. No
//! namespace has a default route.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

use super::procs::kill;
use crate::cmd::{output, sh};

/// Name prefix of every namespace and cgroup the bench creates.
pub const PREFIX: &str = "strait-bench-";
/// The server namespace's address on the client link (backend, proxies).
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const KUBE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const SERVER_KUBE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
/// Where service VIPs live.
pub const VIP_NET: &str = "198.19.0.0/16";

/// The three namespaces; deleted (with every process inside) on drop.
pub struct Topology {
    /// Direct and Strait clients.
    pub client: String,
    /// The kube-proxy (iptables DNAT) client.
    pub kube: String,
    /// Backend and proxies.
    pub server: String,
    created: Vec<String>,
}

impl Topology {
    /// Creates the namespaces, links, addresses, routes and sysctls.
    pub fn create() -> anyhow::Result<Self> {
        let id = std::process::id();
        let mut t = Self {
            client: format!("{PREFIX}{id}-cli"),
            kube: format!("{PREFIX}{id}-kube"),
            server: format!("{PREFIX}{id}-srv"),
            created: Vec::new(),
        };
        for ns in [t.client.clone(), t.kube.clone(), t.server.clone()] {
            sh(Command::new("ip").args(["netns", "add", &ns]))?;
            t.created.push(ns.clone());
            ip(&ns, &["link", "set", "lo", "up"])?;
        }
        let (srv, cli, kube) = (t.server.clone(), t.client.clone(), t.kube.clone());
        link(
            &cli,
            &format!("sbc{id}"),
            CLIENT_IP,
            &srv,
            &format!("sbs{id}"),
            SERVER_IP,
        )?;
        link(
            &kube,
            &format!("sbk{id}"),
            KUBE_IP,
            &srv,
            &format!("sbt{id}"),
            SERVER_KUBE_IP,
        )?;
        // VIPs need a route for the connect() route lookup that happens
        // before iptables' OUTPUT DNAT (kube-proxy nodes have a default
        // route); Strait's connect4 rewrites before any lookup.
        ip(&cli, &["route", "add", VIP_NET, "dev", &format!("sbc{id}")])?;
        ip(
            &kube,
            &["route", "add", VIP_NET, "via", &SERVER_KUBE_IP.to_string()],
        )?;
        ip(
            &kube,
            &[
                "route",
                "add",
                "198.18.0.0/24",
                "via",
                &SERVER_KUBE_IP.to_string(),
            ],
        )?;
        for ns in [&cli, &kube] {
            // Many short connections: a wide port range and TIME_WAIT reuse.
            sysctl(ns, "net.ipv4.ip_local_port_range=1024 65000")?;
            sysctl(ns, "net.ipv4.tcp_tw_reuse=1")?;
        }
        sysctl(&srv, "net.core.somaxconn=4096")?;
        Ok(t)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            delete_ns(&ns);
        }
    }
}

fn ip(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    sh(Command::new("ip").args(["-n", ns]).args(args))
}

fn sysctl(ns: &str, kv: &str) -> anyhow::Result<()> {
    sh(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-q", "-w", kv]))
}

/// A veth pair with one end in each namespace, addressed /24 and up.
fn link(
    a_ns: &str,
    a: &str,
    a_ip: Ipv4Addr,
    b_ns: &str,
    b: &str,
    b_ip: Ipv4Addr,
) -> anyhow::Result<()> {
    sh(Command::new("ip").args([
        "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns,
    ]))?;
    ip(a_ns, &["addr", "add", &format!("{a_ip}/24"), "dev", a])?;
    ip(b_ns, &["addr", "add", &format!("{b_ip}/24"), "dev", b])?;
    ip(a_ns, &["link", "set", a, "up"])?;
    ip(b_ns, &["link", "set", b, "up"])
}

/// Kills every process in `ns`, then deletes it (its veths, routes and
/// iptables tables go with it).
fn delete_ns(ns: &str) {
    let pids: Vec<u32> = output(Command::new("ip").args(["netns", "pids", ns]))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    kill(&pids);
    let ok = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("warning: could not delete network namespace {ns}");
    }
}

/// The bench's cgroup v2 directory for Strait's clients; its processes are
/// killed and the directory removed on drop.
pub struct BenchCgroup {
    path: PathBuf,
}

impl BenchCgroup {
    /// Creates `<cgroup2 mount>/strait-bench-<pid>`.
    pub fn create() -> anyhow::Result<Self> {
        let root = cgroup2_mount().context("no cgroup v2 filesystem in /proc/self/mounts")?;
        let path = root.join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(Self { path })
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.path);
    }
}

fn remove_cgroup(path: &Path) {
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    for _ in 0..100 {
        if std::fs::remove_dir(path).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!("warning: could not remove cgroup {}", path.display());
}

/// The cgroup v2 mount point from /proc/self/mounts (on hybrid hosts
/// `/sys/fs/cgroup/unified`).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

/// The node name bench-datapath pins under: `<bpffs>/strait/<name>/`.
pub fn pin_node() -> String {
    format!("{PREFIX}{}", std::process::id())
}

/// Where bench-datapath pins its maps and links for `node`.
fn pin_dir(node: &str) -> PathBuf {
    bpffs_mount()
        .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf"))
        .join("strait")
        .join(node)
}

/// The bpffs mount point from /proc/self/mounts.
fn bpffs_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"bpf")).then(|| PathBuf::from(f[1]))
    })
}

/// Removes the pins of a bench datapath node on drop, in case the helper
/// died before its own cleanup (unpinning the links detaches the programs).
pub struct PinGuard(pub String);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let dir = pin_dir(&self.0);
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("warning: could not remove pins {}: {e}", dir.display());
            }
        }
    }
}

/// Removes namespaces, cgroups and bpffs pins left by a bench that was killed (SIGKILL
/// gives no chance to clean up): those whose owning pid is gone.
pub fn cleanup_stale() {
    let alive = |name: &str| {
        name.strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
    };
    let list = output(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if ns.starts_with(PREFIX) && !alive(ns) {
            eprintln!("    removing stale namespace {ns}");
            delete_ns(ns);
        }
    }
    let pins = pin_dir("x");
    if let Some(strait_pins) = pins.parent() {
        for e in std::fs::read_dir(strait_pins)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && !alive(&name) {
                eprintln!("    removing stale pins {}", e.path().display());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Some(root) = cgroup2_mount() {
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && !alive(&name) {
                eprintln!("    removing stale cgroup {name}");
                remove_cgroup(&e.path());
            }
        }
    }
}
