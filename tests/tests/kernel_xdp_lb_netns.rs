//! Tier 3: the XDP external-VIP balancer on a veth in network namespaces,
//! with real TCP connections. A client reaches the VIP through the
//! balancer node, whose `xdp_lb` tunnels each connection (IPIP) through the
//! gateway to one of the real nodes; the real's `xdp_lb` decapsulates and
//! the real answers the client directly from the VIP (direct server
//! return). Connections spread
//! over the reals, and established ones stay on their real when a real is
//! added — also while the balancer node's data path restarts (the pinned
//! uplink link keeps the program, the next run swaps its own in over the
//! same pinned connection table).
//!
//! ```text
//!  client 10.77.0.10 ─┐
//!  lb     10.77.0.2  ─┼─ br0 10.77.0.1 (gateway, netns "hub", forwarding)
//!  real-k 10.77.0.2k ─┘
//! ```
use std::collections::BTreeSet;
use std::io::BufReader;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::programs::{Xdp, XdpMode};
use strait::datapath::{
    Datapath, DatapathConfig, ExternalVip, ExternalVips, L4Protocol, UplinkConfig,
};
use strait_tests::node::{names, netns, Daemon, Node};
use strait_tests::privileged;
use strait_tests::xdp;
use strait_tests::xdp_net::{
    self, ask, balance_then_a_node_joins, network, spread_over_two_reals, tally, try_ask, Net,
    Subnet, Topology,
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);
const PORT: u16 = 8080;
const GW_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x01];

/// The IPv4 subnet of the test's namespaces.
const SUBNET: Subnet = Subnet {
    tag: "",
    gw_mac: GW_MAC,
    prefix: "10.77.0.",
    len: 24,
    host_len: 32,
    addr_flags: "",
    hub_sysctls: &[
        ("ipv4/ip_forward", "1"),
        ("ipv4/conf/all/send_redirects", "0"),
        ("ipv4/conf/br0/send_redirects", "0"),
    ],
    vip: IpAddr::V4(VIP),
    port: PORT,
};

/// Real node `k` (1-based) with weight 1.
fn real(k: u8) -> (Ipv4Addr, u32) {
    (Ipv4Addr::new(10, 77, 0, 20 + k), 1)
}

fn vip(reals: Vec<(Ipv4Addr, u32)>) -> ExternalVip {
    ExternalVip {
        vip: VIP,
        port: PORT,
        protocol: L4Protocol::Tcp,
        reals: reals.into_iter().map(|(a, w)| (a.into(), w)).collect(),
    }
}

/// A new connection from the client to the VIP.
fn connect(client: &str) -> std::io::Result<TcpStream> {
    xdp_net::connect(client, SocketAddr::from((VIP, PORT)))
}

#[test]
fn xdp_lb_spreads_real_connections_over_nodes_and_keeps_them_when_a_node_joins() {
    let Some(_p) = privileged::require(
        "xdp_lb_spreads_real_connections_over_nodes_and_keeps_them_when_a_node_joins",
    ) else {
        return;
    };
    let Net {
        topo,
        client,
        lb,
        reals,
        ..
    } = network(&SUBNET);
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::configure_uplink(
        &mut ebpf,
        &UplinkConfig {
            source: Ipv4Addr::new(10, 77, 0, 2),
            gateway_mac: GW_MAC,
        },
    )
    .unwrap();
    let mut vips = ExternalVips::new();
    balance_then_a_node_joins(
        &mut ebpf,
        (&lb, &reals, &client),
        SocketAddr::from((VIP, PORT)),
        |ebpf, n| {
            vips.apply(ebpf, &[vip((1..=n).map(real).collect())])
                .unwrap();
        },
    );
    drop(ebpf);
    drop(topo);
}

/// The uplink link pinned by the balancer node's data path: (link id,
/// program id).
fn uplink_link(pins: &std::path::Path) -> (u32, u32) {
    use aya::programs::links::{FdLink, PinnedLink};
    let link = FdLink::from(PinnedLink::from_pin(pins.join("uplink").join("xdp_lb@v0")).unwrap());
    let info = link.info().unwrap();
    (info.id(), info.program_id())
}

/// Turns transmit checksum offload off on `iface` in `ns` (`ethtool -K
/// IFACE tx off`, through the `SIOCETHTOOL` ioctl), so the client's
/// segments carry full checksums as frames from a wire do. A veth hands
/// its peer segments whose TCP checksum is left for offload
/// (`CHECKSUM_PARTIAL`); native XDP turns a frame it transmits into a bare
/// `xdp_frame` without that note, so on a veth uplink a tunnelled segment
/// of an offloading sender would reach the real with an unfinished
/// checksum (a NIC uplink never receives such frames).
fn tx_checksum_off(ns: &str, iface: &str) {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        pad: [u8; 16],
    }
    const ETHTOOL_STXCSUM: u32 = 0x17;
    let r = netns::run_in(ns, || {
        let mut value = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: 0,
        };
        let mut req = IfReq {
            name: [0; 16],
            data: &mut value,
            pad: [0; 16],
        };
        req.name[..iface.len()].copy_from_slice(iface.as_bytes());
        // SAFETY: plain syscalls on a socket this closure owns; `req` and
        // `value` outlive the ioctl.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let r = libc::ioctl(fd, libc::SIOCETHTOOL, &mut req);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            (r == 0).then_some(()).ok_or(err)
        }
    })
    .unwrap();
    r.unwrap_or_else(|e| panic!("ethtool -K {iface} tx off in {ns}: {e}"));
}

/// What the client saw while the balancer node's data path restarted.
#[derive(Debug, Default)]
struct Watch {
    /// Rounds over every established connection.
    rounds: usize,
    /// (connection, what answered instead of its real).
    moved: Vec<(usize, String)>,
    /// New connections answered / failed.
    new_ok: usize,
    new_failed: Vec<String>,
    /// Reals that answered new connections.
    new_reals: BTreeSet<String>,
}

#[test]
fn xdp_lb_connections_keep_their_real_while_the_node_data_path_restarts() {
    let name = "xdp_lb_connections_keep_their_real_while_the_node_data_path_restarts";
    let Some(_p) = privileged::require(name) else {
        return;
    };
    let Net {
        topo,
        hub,
        client,
        lb,
        reals,
        stop,
    } = network(&SUBNET);
    let bpffs = strait_tests::bpffs::TestBpffs::new().unwrap();
    let mut config = DatapathConfig::new(format!("{}-lb", names::new_node_id()));
    config.bpffs = bpffs.path().to_path_buf();
    let pins = config.pin_dir();
    let uplink = UplinkConfig {
        source: Ipv4Addr::new(10, 77, 0, 2),
        gateway_mac: GW_MAC,
    };

    // The other nodes (they do not restart): each real decapsulates with
    // its own `xdp_lb` (generic mode) and its own VIP table.
    let mut others = strait::datapath::load().unwrap();
    ExternalVips::new()
        .apply(&mut others, &[vip(vec![real(1), real(2), real(3)])])
        .unwrap();
    strait::datapath::load_xdp_lb(&mut others).unwrap();
    strait::datapath::load_xdp_deny(&mut others).unwrap();
    {
        let prog: &mut Xdp = others.program_mut("xdp_lb").unwrap().try_into().unwrap();
        for r in &reals {
            netns::run_in(r, || prog.attach("v0", XdpMode::Skb))
                .unwrap()
                .expect("attach xdp_lb to a real's veth");
        }
        // The balancer node's data path attaches natively to its veth (as
        // to a NIC), and a native veth transmits `XDP_TX` frames only when
        // its peer runs XDP: the hub's end runs `xdp_deny`, with no
        // prefixes (it passes everything).
        let prog: &mut Xdp = others.program_mut("xdp_deny").unwrap().try_into().unwrap();
        netns::run_in(&hub, || prog.attach("hl", XdpMode::Driver))
            .unwrap()
            .expect("attach xdp_deny to the hub's end of the balancer's veth");
    }

    tx_checksum_off(&client, "v0");

    // The balancer node's first run: what `strait run --xdp-uplink v0` does.
    let start = |reals: Vec<(Ipv4Addr, u32)>| {
        let mut dp = Datapath::new(&config).unwrap();
        netns::run_in(&lb, || dp.attach_uplink("v0", &uplink))
            .unwrap()
            .expect("attach the uplink program");
        dp.set_external_vips(&[vip(reals)]).unwrap();
        dp
    };
    let dp = start(vec![real(1), real(2)]);
    let (link, first_prog) = uplink_link(&pins);

    const N: usize = 24;
    let open = || BufReader::new(connect(&client).expect("connect to the VIP"));
    let first = spread_over_two_reals(
        &client,
        SocketAddr::from((VIP, PORT)),
        N,
        "before the restart",
    );

    // The client keeps talking on every connection and opening new ones
    // throughout the restart and the backend change.
    let watching = Arc::new(AtomicBool::new(true));
    let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = {
        let (watching, client, rounds) = (watching.clone(), client.clone(), rounds.clone());
        std::thread::spawn(move || {
            let mut first = first;
            let mut w = Watch::default();
            while watching.load(Ordering::SeqCst) {
                for (i, (s, who)) in first.iter_mut().enumerate() {
                    match try_ask(s) {
                        Ok(got) if got == *who => {}
                        Ok(got) => w.moved.push((i, got)),
                        Err(e) => w.moved.push((i, e.to_string())),
                    }
                }
                match connect(&client).and_then(|s| try_ask(&mut BufReader::new(s))) {
                    Ok(got) => {
                        w.new_ok += 1;
                        w.new_reals.insert(got);
                    }
                    Err(e) => w.new_failed.push(e.to_string()),
                }
                w.rounds += 1;
                rounds.fetch_add(1, Ordering::SeqCst);
            }
            (first, w)
        })
    };
    // Waits until the client has made two more full rounds (each one
    // connection per established flow plus a new connection), so each
    // phase below sees traffic however slow the machine is.
    let settle = || {
        let start = rounds.load(Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while rounds.load(Ordering::SeqCst) < start + 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the client made no progress in 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    settle();
    // The daemon exits: only the pinned link holds the program and maps,
    // and the client makes full rounds with no daemon at all.
    drop(dp);
    settle();
    // The next run: the same pinned maps (connection table included), its
    // own program swapped into the same link, then a real joins.
    let mut dp = Datapath::new(&config).unwrap();
    netns::run_in(&lb, || dp.attach_uplink("v0", &uplink))
        .unwrap()
        .expect("swap the uplink program");
    let (link2, second_prog) = uplink_link(&pins);
    assert_eq!(link2, link, "the restart replaced the link");
    assert_ne!(
        second_prog, first_prog,
        "the new program was not swapped in"
    );
    dp.set_external_vips(&[vip(vec![real(1), real(2)])])
        .unwrap();
    settle();
    dp.set_external_vips(&[vip(vec![real(1), real(2), real(3)])])
        .unwrap();
    settle();
    watching.store(false, Ordering::SeqCst);
    let (mut first, w) = watcher.join().unwrap();
    eprintln!(
        "during the restart: {} rounds, {} new connections answered by {:?}",
        w.rounds, w.new_ok, w.new_reals
    );
    assert!(
        w.moved.is_empty(),
        "established connections lost their real: {:?}",
        w.moved
    );
    assert!(
        w.new_failed.is_empty(),
        "new connections failed during the restart: {:?}",
        w.new_failed
    );

    // After the change: established connections are still on their real
    // (their flows were kept across the restart although the ring now
    // sends about a third of all flows to real-3), new ones reach real-3.
    for (i, (s, who)) in first.iter_mut().enumerate() {
        assert_eq!(&ask(s), who, "connection {i} moved to another real");
    }
    let later: Vec<String> = (0..N).map(|_| ask(&mut open())).collect();
    let later = tally(later.iter());
    eprintln!("after the change, new connections: {later:?}");
    assert!(
        later.contains_key("real-3"),
        "new connections reach the new real: {later:?}"
    );
    let stats = dp.xlb_stats().unwrap();
    assert!(stats.packets >= 4 * N as u64, "{stats:?}");
    assert_eq!(
        stats.malformed_dropped + stats.no_real_dropped,
        0,
        "{stats:?}"
    );
    drop(first);
    stop.store(true, Ordering::SeqCst);
    dp.cleanup().unwrap();
    drop(others);
    drop(topo);
}

/// The too-big threshold follows the uplink's MTU after attach: the
/// balancer node's data path attached to a veth whose MTU is 1,500 answers
/// VIP packets over 1,480 bytes with "fragmentation needed"; after `ip link
/// set v0 mtu 1400` (and 2000) and [`Datapath::follow_uplink_mtu`] — what
/// the daemon runs on every pod rescan — the threshold is the new MTU minus
/// IPIP's 20 bytes, exact bytes; with the MTU unchanged nothing is written.
#[test]
fn xdp_lb_too_big_threshold_follows_the_uplink_mtu() {
    let Some(_p) = privileged::require("xdp_lb_too_big_threshold_follows_the_uplink_mtu") else {
        return;
    };
    let id = names::new_node_id();
    let ns = format!("{}{id}-mtu", names::PREFIX);
    let topo = Topology::create(&[&ns]);
    xdp_net::ip_in(
        &ns,
        &[
            "link add v0 type veth peer name v1",
            "link set v0 up",
            "link set v1 up",
        ],
    );
    let bpffs = strait_tests::bpffs::TestBpffs::new().unwrap();
    let mut config = DatapathConfig::new(format!("{id}-mtu"));
    config.bpffs = bpffs.path().to_path_buf();
    let source = [10, 77, 0, 2];
    let mut dp = Datapath::new(&config).unwrap();
    netns::run_in(&ns, || {
        dp.attach_uplink(
            "v0",
            &UplinkConfig {
                source: source.into(),
                gateway_mac: xdp::GW_MAC,
            },
        )
    })
    .unwrap()
    .expect("attach the uplink program");
    let node = [10, 1, 0, 2];
    dp.set_external_vips(&[ExternalVip {
        vip: VIP,
        port: 80,
        protocol: L4Protocol::Tcp,
        reals: vec![(Ipv4Addr::from(node).into(), 1)],
    }])
    .unwrap();
    let threshold = |dp: &mut Datapath, mtu: usize| {
        let prog = xdp::prog(dp.ebpf_mut());
        xdp::frag_needed_threshold(prog, ([192, 0, 2, 1], VIP.octets()), 20, mtu, &|f| {
            xdp::ipip(f, source, node)
        });
    };
    threshold(&mut dp, 1500);
    let follow = |dp: &mut Datapath| netns::run_in(&ns, || dp.follow_uplink_mtu()).unwrap();
    assert_eq!(follow(&mut dp).unwrap(), None, "the MTU did not change");
    for (old, new) in [(1500, 1400), (1400, 2000)] {
        xdp_net::ip_in(&ns, &[&format!("link set v0 mtu {new}")]);
        assert_eq!(follow(&mut dp).unwrap(), Some((old, new)));
        threshold(&mut dp, new as usize);
    }
    dp.cleanup().unwrap();
    drop(topo);
}

/// `strait run --xdp-uplink` follows its uplink's MTU: changed with `ip
/// link set`, the daemon logs it and writes it to the pinned `XLB_CONFIG`
/// (the value the program's too-big check reads, see the test above) as
/// the kernel announces it (`RTM_NEWLINK`), each of five changes within
/// [`LATE`], not at its next 500 ms re-read.
#[test]
fn strait_run_writes_a_changed_uplink_mtu_to_the_xdp_balancer() {
    let Some(p) = privileged::require("strait_run_writes_a_changed_uplink_mtu_to_the_xdp_balancer")
    else {
        return;
    };
    let node = Node::new(&p.cgroup2, "uplink-mtu", 192).unwrap();
    xdp_net::ip_in(
        node.netns(),
        &[
            "link add up0 type veth peer name up1",
            "addr add 10.82.0.2/24 dev up0",
            "link set up0 up",
            "link set up1 up",
        ],
    );
    let config_dir = node.tmp_dir().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    node.write_config(&config_dir).unwrap();
    let mut daemon = Daemon::on(&node, &config_dir)
        .quick("info")
        .args([
            "--xdp-uplink",
            "up0",
            "--xdp-source",
            "10.82.0.2",
            "--xdp-gateway-mac",
            "02:00:00:00:00:01",
        ])
        .spawn()
        .unwrap();
    daemon.wait_ready(
        &node,
        "127.0.0.1:15000".parse().unwrap(),
        Duration::from_secs(30),
    );
    let mut config = DatapathConfig::new(node.name());
    config.bpffs = node.bpffs_dir();
    let pinned = config.pin_dir().join(proxy_common::XLB_CONFIG);
    let mtu = || {
        let map = aya::maps::Map::Array(aya::maps::MapData::from_pin(&pinned).unwrap());
        let a: aya::maps::Array<_, proxy_common::XlbConfig> =
            aya::maps::Array::try_from(map).unwrap();
        a.get(&0, 0).unwrap().mtu
    };
    assert_eq!(mtu(), 1500, "the MTU at attach");
    // Each change is in the map well before the 500 ms re-read would
    // write it: the RTM_NEWLINK announcement did. A fallback write alone
    // lands uniformly over 0–500 ms, so it passes the bound with odds
    // LATE / 500 ms per change, (LATE / 500)^5 for all five.
    let mut took = Vec::new();
    for new in [1400, 1300, 1450, 1280, 1500] {
        xdp_net::ip_in(node.netns(), &[&format!("link set up0 mtu {new}")]);
        let set = Instant::now();
        while mtu() != new && set.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_micros(500));
        }
        took.push(set.elapsed());
        assert_eq!(mtu(), new, "{}", daemon.log());
    }
    eprintln!("MTU changes applied after {took:?}");
    assert!(
        took.iter().all(|t| *t < LATE),
        "an MTU change took over {LATE:?} ({took:?}): not from the netlink announcement\n{}",
        daemon.log()
    );
    // (A change may also be caught by a re-read that ran first.)
    assert!(daemon.log().contains("via=\"netlink\""), "{}", daemon.log());
    assert!(daemon.terminate(Duration::from_secs(15)).success());
}

/// Longest an uplink MTU change may take to reach the XDP balancer's
/// config map once `ip link set` returned: measured 16–30 µs idle and at
/// most 10 ms (50 changes; most under 1 ms) with two busy loops on the
/// 2-core machine at load 5; ten times that for a loaded CI, a fifth of
/// the 500 ms re-read (a re-read alone passes five changes with odds
/// 0.2^5 = 0.03%; it failed every one when the watch was off).
const LATE: Duration = Duration::from_millis(100);
