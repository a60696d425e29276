//! Tier 2: mode REDIRECT and meshed pod IPs. `connect4` sends the
//! connection to the node proxy's outbound listener; the sockops program
//! files the original destination under the client's address, and the
//! proxy reads it back from the peer address `accept()` gives it.
use std::io::Write;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, TcpListener};

use strait::datapath::{L4LoadBalancer, L4Mode, OriginalDestinations};
use strait_tests::lb::{deep_backlog, probe, raise_nofile, service, tcp_backend, Fixture};
use strait_tests::privileged;

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");
const CONNECTIONS: usize = 1000;

#[test]
fn redirect_gives_the_proxy_each_original_destination() {
    let Some(p) = privileged::require("redirect_gives_the_proxy_each_original_destination") else {
        return;
    };
    raise_nofile();
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    deep_backlog(&proxy);
    let SocketAddr::V4(outbound) = proxy.local_addr().unwrap() else {
        unreachable!()
    };
    let mut fx = Fixture::new(&p, "redirect", outbound);
    // Four REDIRECT services (their backends must never be reached) and one
    // meshed pod IP.
    let never = tcp_backend("bypassed-the-proxy");
    let mut dests: Vec<SocketAddrV4> = (1..=4)
        .map(|i| format!("127.100.3.{i}:{}", 8000 + i).parse().unwrap())
        .collect();
    let services: Vec<_> = dests
        .iter()
        .map(|&d| {
            let mut s = service(d, L4LoadBalancer::Random, &[(never, 1, true)]);
            s.mode = L4Mode::Redirect;
            s
        })
        .collect();
    fx.dp().apply(&services).unwrap();
    let pod: SocketAddrV4 = "127.100.4.1:9080".parse().unwrap();
    fx.dp().set_workloads(&[IpAddr::V4(*pod.ip())]).unwrap();
    dests.push(pod);

    // The "proxy": a separate handle on the pinned map, as the daemon's
    // outbound listener would hold. It keeps every connection open, so all
    // 1,000 are established at once.
    let table = OriginalDestinations::open(fx.dp().pin_dir()).unwrap();
    let accepting = std::thread::spawn(move || {
        let mut held = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let (mut s, peer) = proxy.accept().unwrap();
            let orig = table
                .get(peer)
                .map_or_else(|| "none".to_string(), |a| a.to_string());
            writeln!(s, "{orig}").unwrap();
            held.push(s);
        }
        held.len()
    });

    let mut args = vec!["hold".to_string(), CONNECTIONS.to_string()];
    args.extend(dests.iter().map(|d| d.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lines = probe(PROBE, Some(fx.cg.path()), &args);
    assert_eq!(accepting.join().unwrap(), CONNECTIONS);
    assert_eq!(lines.len(), CONNECTIONS);
    for (i, l) in lines.iter().enumerate() {
        let want = dests[i % dests.len()].to_string();
        let mut f = l.split(' ');
        let (_local, peer, seen) = (f.next(), f.next(), f.next());
        // The proxy saw the original destination; the client's
        // getpeername() still shows it too.
        assert_eq!(seen, Some(want.as_str()), "connection {i}: {l}");
        assert_eq!(peer, Some(want.as_str()), "connection {i}: {l}");
    }
    // Every redirect was counted on its service.
    assert_eq!(
        fx.dp()
            .service_counters(dests[0], strait::datapath::L4Protocol::Tcp)
            .connections,
        (CONNECTIONS / dests.len()) as u64
    );
}
