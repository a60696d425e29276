//! Fixtures of the XDP balancer's namespace tests (tier 3) both address
//! families share: namespaces removed when dropped, "who are you" servers
//! on the reals, clients asking them through the VIP, attaching `xdp_lb`
//! to the balancer and the reals, and the spread-then-a-node-joins check.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aya::programs::{Xdp, XdpMode};

use crate::node::{names, netns};

/// Names the reals' servers answer with, in order.
pub const REAL_NAMES: [&str; 3] = ["real-1", "real-2", "real-3"];

/// Deletes the namespaces (and so every veth) when dropped, pass or fail,
/// after stopping the servers through `stop`.
pub struct Topology {
    /// Namespaces to delete.
    pub spaces: Vec<String>,
    /// Set on drop: the servers of [`serve`] stop accepting.
    pub stop: Arc<AtomicBool>,
}

impl Topology {
    /// Creates the namespaces `names`, each deleted when the topology is
    /// dropped (also those made before a failure).
    ///
    /// Panics: a namespace cannot be created.
    pub fn create(names: &[&str]) -> Topology {
        let mut topo = Topology {
            spaces: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        for n in names {
            netns::add(n).unwrap();
            topo.spaces.push(n.to_string());
        }
        topo
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        for ns in &self.spaces {
            netns::del(ns);
        }
    }
}

/// Runs the `ip` commands `cmds` in namespace `ns`.
///
/// Panics: a command fails.
pub fn ip_in(ns: &str, cmds: &[&str]) {
    let cmds: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
    netns::ip_batch(ns, &cmds).unwrap();
}

/// Serves "who are you" lines on `bind`:`port` in namespace `ns`: every
/// line read is answered with `name`, until `stop` is set.
pub fn serve(ns: &str, bind: IpAddr, port: u16, name: &'static str, stop: Arc<AtomicBool>) {
    let listener = netns::run_in(ns, || {
        TcpListener::bind(SocketAddr::from((bind, port))).unwrap()
    })
    .unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    std::thread::spawn(move || {
                        let mut w = s.try_clone().unwrap();
                        for line in BufReader::new(s).lines() {
                            if line.is_err() || writeln!(w, "{name}").is_err() {
                                break;
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
}

/// Which real answers `s`.
///
/// Panics: no answer (see [`try_ask`]).
pub fn ask(s: &mut BufReader<TcpStream>) -> String {
    writeln!(s.get_mut(), "who").unwrap();
    let mut line = String::new();
    s.read_line(&mut line).expect("reply from a real");
    line.trim().to_string()
}

/// Which real answers `s`, or why none did (end of stream included).
pub fn try_ask(s: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    writeln!(s.get_mut(), "who")?;
    let mut line = String::new();
    if s.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim().to_string())
}

/// A new connection from namespace `client` to `vip` (10 s to connect,
/// 10 s read timeout).
pub fn connect(client: &str, vip: SocketAddr) -> std::io::Result<TcpStream> {
    let s = netns::run_in(client, || {
        TcpStream::connect_timeout(&vip, Duration::from_secs(10))
    })??;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// How many of `who` name each real.
pub fn tally<'a>(who: impl Iterator<Item = &'a String>) -> BTreeMap<&'a str, usize> {
    who.fold(BTreeMap::new(), |mut m, w| {
        *m.entry(w.as_str()).or_default() += 1;
        m
    })
}

/// Attaches the loaded `xdp_lb` of `ebpf` to `v0` in the balancer's
/// namespace `lb` and in each of `reals` (whose copy strips the tunnel
/// header of packets to a VIP: no ipip/ip6_tunnel module needed), in
/// generic mode: a veth in native mode only transmits `XDP_TX` frames when
/// its peer runs XDP or GRO (a NIC uplink uses native mode).
///
/// Panics: an attach fails.
pub fn attach_lb_and_reals(ebpf: &mut aya::Ebpf, lb: &str, reals: &[String]) {
    let prog: &mut Xdp = ebpf.program_mut("xdp_lb").unwrap().try_into().unwrap();
    netns::run_in(lb, || prog.attach("v0", XdpMode::Skb))
        .unwrap()
        .expect("attach xdp_lb to the balancer's veth");
    for r in reals {
        netns::run_in(r, || prog.attach("v0", XdpMode::Skb))
            .unwrap()
            .expect("attach xdp_lb to a real's veth");
    }
}

/// `n` connections from namespace `client` to `vip`, each with the real
/// that answered it, checked to spread over both of reals 1 and 2 (the
/// tally is printed after `label`).
///
/// Panics: a connection fails or the connections do not reach exactly
/// real-1 and real-2.
pub fn spread_over_two_reals(
    client: &str,
    vip: SocketAddr,
    n: usize,
    label: &str,
) -> Vec<(BufReader<TcpStream>, String)> {
    let first: Vec<(BufReader<TcpStream>, String)> = (0..n)
        .map(|_| {
            let s = connect(client, vip).unwrap_or_else(|e| panic!("connect to {vip}: {e}"));
            let mut s = BufReader::new(s);
            let who = ask(&mut s);
            (s, who)
        })
        .collect();
    let spread = tally(first.iter().map(|(_, w)| w));
    eprintln!("{label}: {spread:?}");
    assert_eq!(
        spread.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["real-1", "real-2"]),
        "connections spread over both reals"
    );
    first
}

/// With `ebpf`'s balancer attached and `vip` on reals 1 and 2: 24
/// connections from `client` spread over both; after `join` (which adds
/// real 3) each keeps its real, and new connections reach real 3. Then
/// the counters: every packet balanced and decapsulated, none dropped as
/// malformed or without a real.
///
/// Panics: any of that does not hold.
pub fn spreads_then_keeps_flows_when_a_node_joins(
    ebpf: &mut aya::Ebpf,
    client: &str,
    vip: SocketAddr,
    join: impl FnOnce(&mut aya::Ebpf),
) {
    const N: usize = 24;
    let open = || connect(client, vip).unwrap_or_else(|e| panic!("connect to {vip}: {e}"));
    let mut first = spread_over_two_reals(client, vip, N, "two reals");

    // A third node joins: established connections stay on their real.
    join(ebpf);
    for (i, (s, who)) in first.iter_mut().enumerate() {
        assert_eq!(&ask(s), who, "connection {i} moved to another real");
    }
    let later: BTreeMap<String, usize> = (0..N).fold(BTreeMap::new(), |mut m, _| {
        *m.entry(ask(&mut BufReader::new(open()))).or_default() += 1;
        m
    });
    eprintln!("three reals, new connections: {later:?}");
    assert!(
        later.contains_key("real-3"),
        "new connections reach the new real: {later:?}"
    );
    let stats = strait::datapath::xlb_stats(ebpf).unwrap();
    eprintln!("{stats:?}");
    assert!(stats.packets >= 4 * N as u64, "{stats:?}");
    assert_eq!(stats.malformed_dropped + stats.no_real_dropped, 0);
    assert!(stats.decapsulated >= stats.packets, "{stats:?}");
}

/// The whole namespace check of a balancer family: `apply(ebpf, 2)`
/// fills the tables with the VIP on reals 1 and 2, `xdp_lb` is loaded and
/// attached in `lb` and `reals` ([`attach_lb_and_reals`]), then
/// [`spreads_then_keeps_flows_when_a_node_joins`] with `apply(ebpf, 3)`
/// adding real 3.
///
/// Panics: as those functions.
pub fn balance_then_a_node_joins(
    ebpf: &mut aya::Ebpf,
    (lb, reals, client): (&str, &[String], &str),
    vip: SocketAddr,
    mut apply: impl FnMut(&mut aya::Ebpf, u8),
) {
    apply(ebpf, 2);
    strait::datapath::load_xdp_lb(ebpf).unwrap();
    attach_lb_and_reals(ebpf, lb, reals);
    spreads_then_keeps_flows_when_a_node_joins(ebpf, client, vip, |ebpf| apply(ebpf, 3));
}

/// The addressing of a [`network`]: one subnet on the hub's bridge.
/// Hosts: the hub (gateway) `{prefix}1`, the balancer `{prefix}2`, the
/// client `{prefix}10`, real `k` (1-based) `{prefix}2k`.
pub struct Subnet {
    /// Tag in the namespace names (`hub{tag}`, `cli{tag}`, `lb{tag}`,
    /// `r{tag}{k}`), so both families' tests can run at once.
    pub tag: &'static str,
    /// The hub bridge's MAC (the balancer's gateway MAC).
    pub gw_mac: [u8; 6],
    /// Address text before the host part: `"10.77.0."`, `"fd77::"`.
    pub prefix: &'static str,
    /// Prefix length of the subnet.
    pub len: u8,
    /// Prefix length of one address (32, 128).
    pub host_len: u8,
    /// Appended to every `addr add` (IPv6: `" nodad"`, usable at once).
    pub addr_flags: &'static str,
    /// Sysctls set in the hub (forwarding, redirects), path and value.
    pub hub_sysctls: &'static [(&'static str, &'static str)],
    /// The VIP: the client's route to it goes through the balancer, every
    /// real holds it on its loopback.
    pub vip: IpAddr,
    /// The port the reals serve on (on the unspecified address of the
    /// VIP's family).
    pub port: u16,
}

/// The namespaces of one test (see [`network`]).
pub struct Net {
    /// Removes them all when dropped.
    pub topo: Topology,
    /// The gateway: a bridge every other namespace's `v0` is plugged into.
    pub hub: String,
    /// The client.
    pub client: String,
    /// The balancer node.
    pub lb: String,
    /// The real nodes, each serving its [`REAL_NAMES`] name.
    pub reals: [String; 3],
    /// Stops the reals' servers.
    pub stop: Arc<AtomicBool>,
}

/// Creates the hub (gateway), the client, the balancer node and three real
/// nodes on `subnet`, each real serving its name on the VIP's port with
/// the VIP on its loopback, and the client's route to the VIP through the
/// balancer.
///
/// Panics: a namespace, link, address or route cannot be set up (what was
/// created is removed when the returned [`Topology`] would have been).
pub fn network(subnet: &Subnet) -> Net {
    let id = names::new_node_id();
    let ns = |role: &str| format!("{}{id}-{role}{}", names::PREFIX, subnet.tag);
    let (hub, client, lb) = (ns("hub"), ns("cli"), ns("lb"));
    let reals = [1, 2, 3].map(|k| format!("{}{id}-r{}{k}", names::PREFIX, subnet.tag));
    let stop = Arc::new(AtomicBool::new(false));
    let mut topo = Topology {
        spaces: Vec::new(),
        stop: stop.clone(),
    };
    for n in [&hub, &client, &lb].into_iter().chain(reals.iter()) {
        netns::add(n).unwrap();
        topo.spaces.push(n.clone());
    }
    let Subnet {
        prefix,
        len,
        host_len,
        addr_flags: flags,
        vip,
        ..
    } = subnet;
    let mac = subnet
        .gw_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    ip_in(
        &hub,
        &[
            &format!("link add br0 address {mac} type bridge"),
            &format!("addr add {prefix}1/{len} dev br0{flags}"),
            "link set br0 up",
            "link set lo up",
        ],
    );
    for (path, value) in subnet.hub_sysctls {
        netns::sysctl(&hub, path, value).unwrap();
    }
    let plug = |n: &str, port: &str, host: &str| {
        ip_in(
            &hub,
            &[
                &format!("link add {port} type veth peer name v0 netns {n}"),
                &format!("link set {port} master br0"),
                &format!("link set {port} up"),
            ],
        );
        ip_in(
            n,
            &[
                &format!("addr add {prefix}{host}/{len} dev v0{flags}"),
                "link set v0 up",
                "link set lo up",
                &format!("route add default via {prefix}1"),
            ],
        );
    };
    plug(&client, "hc", "10");
    plug(&lb, "hl", "2");
    // The client reaches the VIP through the balancer node.
    ip_in(
        &client,
        &[&format!("route add {vip}/{host_len} via {prefix}2")],
    );
    let any: IpAddr = match vip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    for (k, r) in reals.iter().enumerate() {
        plug(r, &format!("hr{}", k + 1), &format!("2{}", k + 1));
        ip_in(r, &[&format!("addr add {vip}/{host_len} dev lo{flags}")]);
        serve(r, any, subnet.port, REAL_NAMES[k], stop.clone());
    }
    Net {
        topo,
        hub,
        client,
        lb,
        reals,
        stop,
    }
}
