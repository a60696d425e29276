//! Two linked nodes meshed over HBONE, the topology of the cross-node
//! tests: node A runs `strait run --ca-dir` (the embedded CA, also serving
//! node B) with the client pods; node B runs `strait run --ca-address`
//! against it with pod `server` (service account `echo`, label
//! `app: echo`). Service `echo` selects the server on both nodes, and both
//! daemons read one config directory.
use std::net::Ipv4Addr;
use std::path::Path;

use super::{link, Daemon, MeshCa, Node, PodSpec, ServiceDef, ServicePort};

/// The two nodes and their daemons (stopped with SIGTERM on drop, before
/// the nodes go).
pub struct MeshPair {
    /// Node A: the clients and the CA.
    pub a: Node,
    /// Node B: the server.
    pub b: Node,
    /// Node A's daemon.
    pub da: Daemon,
    /// Node B's daemon.
    pub db: Daemon,
    /// Service `echo`'s cluster IP.
    pub vip: Ipv4Addr,
}

/// What differs between the tests that build a [`MeshPair`].
pub struct PairSpec<'a> {
    /// Node A's index (node B's is the next one).
    pub index: u8,
    /// Service `echo`'s ports.
    pub ports: Vec<ServicePort>,
    /// Node A's client pods as (name, service account); each is labelled
    /// `app: <name>`.
    pub clients: &'a [(&'a str, &'a str)],
    /// Both daemons' `RUST_LOG`.
    pub rust_log: &'a str,
}

impl MeshPair {
    /// Builds the nodes and pods, links them, writes the config, runs
    /// `before_daemons(node B, config dir)` (start servers, write
    /// policies), then starts both daemons (`--admin 127.0.0.1:15000
    /// --drain-ms 200`; node B's once A's CA has written its root). Does
    /// not wait for certificates: the tests poll until traffic flows.
    /// Panics on any failure.
    pub fn start(
        p: &crate::privileged::Privileged,
        spec: PairSpec<'_>,
        before_daemons: impl FnOnce(&Node, &Path),
    ) -> MeshPair {
        let mut a = Node::new(&p.cgroup2, "node-a", spec.index).unwrap();
        let mut b = Node::new(&p.cgroup2, "node-b", spec.index + 1).unwrap();
        for (name, sa) in spec.clients {
            let mut c = PodSpec::new(name, &[("app", name)]);
            c.service_account = sa.to_string();
            a.add_pod(c).unwrap();
        }
        let mut server = PodSpec::new("server", &[("app", "echo")]);
        server.service_account = "echo".into();
        b.add_pod(server).unwrap();
        let svc = ServiceDef::app("echo", "echo", spec.ports);
        let vip = a.add_service(svc.clone()).unwrap().cluster_ip.unwrap();
        b.add_service(svc).unwrap();
        link(&a, &b).unwrap();
        // One config directory for both nodes (each writes its own pods).
        let config = a.tmp_dir().join("config");
        a.write_config(&config).unwrap();
        b.write_config(&config).unwrap();
        before_daemons(&b, &config);

        let start = |node: &Node, args: Vec<std::ffi::OsString>| {
            Daemon::on(node, &config)
                .quick(spec.rust_log)
                .args(args)
                .sigterm_on_drop()
                .spawn()
                .unwrap()
        };
        let ca = MeshCa::new(&a, &[&b]).unwrap();
        let mut da = start(&a, ca.server_args());
        da.wait_file(&ca.root());
        let db = start(&b, ca.client_args(&b).unwrap());
        MeshPair { a, b, da, db, vip }
    }

    /// Both daemons' logs, for a failure message.
    pub fn logs(&self) -> String {
        format!("node A:\n{}\nnode B:\n{}", self.da.log(), self.db.log())
    }
}
