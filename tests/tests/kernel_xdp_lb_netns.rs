//! Tier 3: the XDP external-VIP balancer on a veth in network namespaces,
//! with real TCP connections. A client reaches the VIP through the
//! balancer node, whose `xdp_lb` tunnels each connection (IPIP) through the
//! gateway to one of the real nodes; the real's `xdp_lb` decapsulates and
//! the real answers the client directly from the VIP (direct server
//! return). Connections spread
//! over the reals, and established ones stay on their real when a real is
//! added.
//!
//! ```text
//!  client 10.77.0.10 ─┐
//!  lb     10.77.0.2  ─┼─ br0 10.77.0.1 (gateway, netns "hub", forwarding)
//!  real-k 10.77.0.2k ─┘
//! ```
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aya::programs::{Xdp, XdpMode};
use strait::datapath::{ExternalVip, ExternalVips, L4Protocol, UplinkConfig};
use strait_tests::node::{names, netns};
use strait_tests::privileged;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);
const PORT: u16 = 8080;
const GW_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x01];

/// Deletes the namespaces (and so every veth) when dropped, pass or fail.
struct Topology {
    spaces: Vec<String>,
    stop: Arc<AtomicBool>,
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

fn ip_in(ns: &str, cmds: &[&str]) {
    let cmds: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
    netns::ip_batch(ns, &cmds).unwrap();
}

/// Serves "who are you" lines: every line read is answered with `name`.
fn serve(ns: &str, name: &'static str, stop: Arc<AtomicBool>) {
    let listener = netns::run_in(ns, || {
        TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], PORT))).unwrap()
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

fn ask(s: &mut BufReader<TcpStream>) -> String {
    writeln!(s.get_mut(), "who").unwrap();
    let mut line = String::new();
    s.read_line(&mut line).expect("reply from a real");
    line.trim().to_string()
}

#[test]
fn xdp_lb_spreads_real_connections_over_nodes_and_keeps_them_when_a_node_joins() {
    let Some(_p) = privileged::require(
        "xdp_lb_spreads_real_connections_over_nodes_and_keeps_them_when_a_node_joins",
    ) else {
        return;
    };
    let id = names::new_node_id();
    let ns = |role: &str| format!("{}{id}-{role}", names::PREFIX);
    let (hub, client, lb) = (ns("hub"), ns("cli"), ns("lb"));
    let reals = [ns("r1"), ns("r2"), ns("r3")];
    let stop = Arc::new(AtomicBool::new(false));
    let mut topo = Topology {
        spaces: Vec::new(),
        stop: stop.clone(),
    };
    for n in [&hub, &client, &lb].into_iter().chain(reals.iter()) {
        netns::add(n).unwrap();
        topo.spaces.push(n.clone());
    }
    let mac = GW_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    ip_in(
        &hub,
        &[
            &format!("link add br0 address {mac} type bridge"),
            "addr add 10.77.0.1/24 dev br0",
            "link set br0 up",
            "link set lo up",
        ],
    );
    netns::sysctl(&hub, "ipv4/ip_forward", "1").unwrap();
    netns::sysctl(&hub, "ipv4/conf/all/send_redirects", "0").unwrap();
    netns::sysctl(&hub, "ipv4/conf/br0/send_redirects", "0").unwrap();
    let plug = |n: &str, port: &str, addr: &str| {
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
                &format!("addr add {addr}/24 dev v0"),
                "link set v0 up",
                "link set lo up",
                "route add default via 10.77.0.1",
            ],
        );
    };
    plug(&client, "hc", "10.77.0.10");
    plug(&lb, "hl", "10.77.0.2");
    // The client reaches the VIP through the balancer node.
    ip_in(&client, &[&format!("route add {VIP}/32 via 10.77.0.2")]);
    let names: [&'static str; 3] = ["real-1", "real-2", "real-3"];
    for (k, r) in reals.iter().enumerate() {
        let addr = format!("10.77.0.2{}", k + 1);
        plug(r, &format!("hr{}", k + 1), &addr);
        ip_in(r, &[&format!("addr add {VIP}/32 dev lo")]);
        serve(r, names[k], stop.clone());
    }

    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::configure_uplink(
        &mut ebpf,
        &UplinkConfig {
            source: Ipv4Addr::new(10, 77, 0, 2),
            gateway_mac: GW_MAC,
        },
    )
    .unwrap();
    let real = |k: u8| (Ipv4Addr::new(10, 77, 0, 20 + k), 1);
    let vip = |reals: Vec<(Ipv4Addr, u32)>| ExternalVip {
        vip: VIP,
        port: PORT,
        protocol: L4Protocol::Tcp,
        reals,
    };
    let mut vips = ExternalVips::new();
    vips.apply(&mut ebpf, &[vip(vec![real(1), real(2)])])
        .unwrap();
    strait::datapath::load_xdp_lb(&mut ebpf).unwrap();
    {
        let prog: &mut Xdp = ebpf.program_mut("xdp_lb").unwrap().try_into().unwrap();
        // Generic mode: a veth in native mode only transmits XDP_TX frames
        // when its peer runs XDP or GRO; a NIC uplink uses native mode.
        netns::run_in(&lb, || prog.attach("v0", XdpMode::Skb))
            .unwrap()
            .expect("attach xdp_lb to the balancer's veth");
        // The reals run the same program, which strips the IPIP header of
        // packets to a VIP (no ipip module needed).
        for r in &reals {
            netns::run_in(r, || prog.attach("v0", XdpMode::Skb))
                .unwrap()
                .expect("attach xdp_lb to a real's veth");
        }
    }

    const N: usize = 24;
    let connect = || {
        netns::run_in(&client, || {
            TcpStream::connect_timeout(&SocketAddr::from((VIP, PORT)), Duration::from_secs(10))
        })
        .unwrap()
        .expect("connect to the VIP")
    };
    let mut first: Vec<(BufReader<TcpStream>, String)> = (0..N)
        .map(|_| {
            let s = connect();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut s = BufReader::new(s);
            let who = ask(&mut s);
            (s, who)
        })
        .collect();
    let spread: BTreeMap<&str, usize> = first.iter().fold(BTreeMap::new(), |mut m, (_, w)| {
        *m.entry(w.as_str()).or_default() += 1;
        m
    });
    eprintln!("two reals: {spread:?}");
    assert_eq!(
        spread.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["real-1", "real-2"]),
        "connections spread over both reals"
    );

    // A third node joins: established connections stay on their real.
    vips.apply(&mut ebpf, &[vip(vec![real(1), real(2), real(3)])])
        .unwrap();
    for (i, (s, who)) in first.iter_mut().enumerate() {
        assert_eq!(&ask(s), who, "connection {i} moved to another real");
    }
    let later: BTreeMap<String, usize> = (0..N).fold(BTreeMap::new(), |mut m, _| {
        let s = connect();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        *m.entry(ask(&mut BufReader::new(s))).or_default() += 1;
        m
    });
    eprintln!("three reals, new connections: {later:?}");
    assert!(
        later.contains_key("real-3"),
        "new connections reach the new real: {later:?}"
    );
    let stats = strait::datapath::xlb_stats(&ebpf).unwrap();
    assert!(stats.packets >= 4 * N as u64, "{stats:?}");
    assert_eq!(stats.malformed_dropped + stats.no_real_dropped, 0);
    assert!(stats.decapsulated >= stats.packets, "{stats:?}");
    drop(first);
    drop(ebpf);
    drop(topo);
}
