//! A pod: a network namespace on a veth to its node, with its own IP and
//! cgroup, and the Kubernetes identity (namespace, labels, service account)
//! the mesh sees.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;

use super::netns;

/// What to create: a pod's Kubernetes identity.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSpec {
    /// Pod name, unique per namespace on the node.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Workload labels (`app`, `version`, …) that Service selectors and
    /// DestinationRule subsets match.
    pub labels: BTreeMap<String, String>,
    /// `spec.serviceAccountName`; the SPIFFE identity is
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service_account>`.
    pub service_account: String,
    /// `(name, containerPort)` the pod serves, for named `targetPort`s.
    pub container_ports: Vec<(Option<String>, u16)>,
    /// The Deployment the pod belongs to, if any.
    pub deployment: Option<String>,
}

impl PodSpec {
    /// A pod `name` in namespace `default` with `labels`, service account
    /// `default` and no declared ports.
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Self {
        PodSpec {
            name: name.to_string(),
            namespace: super::kube::DEFAULT_NAMESPACE.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_account: super::kube::DEFAULT_SERVICE_ACCOUNT.to_string(),
            container_ports: Vec::new(),
            deployment: None,
        }
    }
}

/// A running pod. Its kernel objects belong to the [`super::Node`] and go
/// away when the node is dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    /// The Kubernetes identity it was created from.
    pub spec: PodSpec,
    /// The pod IP (`10.244.<node index>.<n>`), a /32 on the pod's `eth0`.
    pub ip: Ipv4Addr,
    /// Its IPv6 address (`fd00:244:<node index>::<n>`, a /128 on `eth0`)
    /// when the node has IPv6 ([`super::Node::enable_ipv6`]): a dual-stack
    /// pod, written as the second of `status.podIPs`.
    pub ip6: Option<Ipv6Addr>,
    /// The name of the node it runs on.
    pub node: String,
    /// Its network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// The node-side end of its veth pair, in the node's namespace (the pod
    /// side is `eth0` in the pod's namespace).
    pub node_veth: String,
    /// Its cgroup, `<cgroup2>/strait-<id>/pods/<namespace>_<name>`.
    pub cgroup: PathBuf,
}

impl Pod {
    /// The pod name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// A command that runs `program` inside this pod: in its network
    /// namespace and its cgroup (so the daemon's socket programs on the pods
    /// cgroup see its connections). Spawn it like any `Command`; the node
    /// kills it on drop if it is still running.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> anyhow::Result<Command> {
        let mut cmd = Command::new(program);
        netns::enter(&mut cmd, &self.netns, Some(&self.cgroup))?;
        Ok(cmd)
    }

    /// Runs `f` on a thread inside the pod's network namespace (not its
    /// cgroup: the test process must not move). Use it for sockets a test
    /// opens itself, e.g. a listener in the pod.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
        netns::run_in(&self.netns, f)
    }

    /// One TCP connection from this pod (its namespace and cgroup, so the
    /// daemon's capture sees it) to `addr` with `strait-probe tcp`: the
    /// first line the server sent, trimmed, or `error <kind>` (e.g.
    /// `error ConnectionRefused`).
    pub fn probe(&self, addr: std::net::SocketAddr) -> String {
        probe_with(|probe| self.command(probe), addr)
    }

    /// [`Pod::probe`] every 100 ms until `want` holds of its answer or
    /// `limit` has passed; returns the last answer (so the caller's
    /// assertion shows what it got).
    pub fn probe_until(
        &self,
        addr: std::net::SocketAddr,
        limit: std::time::Duration,
        want: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let line = self.probe(addr);
            if want(&line) || std::time::Instant::now() > deadline {
                return line;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Starts a process in the pod's cgroup, as Kubernetes' pause
    /// container: the daemon finds the pod's network namespace through it.
    /// Killed and reaped when the guard drops.
    pub fn pause(&self) -> anyhow::Result<super::Guard> {
        let child = self.command("sleep")?.arg("600").spawn()?;
        Ok(super::Guard::kill_on_drop(child))
    }

    /// The processes in the pod's cgroup.
    pub fn pids(&self) -> Vec<i32> {
        super::cgroups::pids(&self.cgroup)
    }
}

/// `strait-probe tcp <addr>` run by the command `make` builds for the
/// probe binary (a [`Pod::command`] or [`super::Node::command`]): the first
/// line the server sent, trimmed, or `error <kind>`.
pub(super) fn probe_with(
    make: impl FnOnce(std::path::PathBuf) -> anyhow::Result<Command>,
    addr: std::net::SocketAddr,
) -> String {
    let out = crate::demo::mesh::sibling("strait-probe")
        .and_then(make)
        .and_then(|mut c| Ok(c.args(["tcp", &addr.to_string()]).output()?));
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Err(e) => format!("error running strait-probe: {e:#}"),
    }
}
