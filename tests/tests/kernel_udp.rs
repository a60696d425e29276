//! Tier 2: UDP through a VIP (`cgroup/sendmsg4`, `connect4`, `recvmsg4`):
//! datagrams are balanced and the replies come from the VIP.
use std::net::SocketAddrV4;

use strait::datapath::{L4LoadBalancer, L4Mode, L4Protocol};
use strait_tests::lb::{assert_udp_through_vip, probe, service, udp_backend, Fixture};
use strait_tests::privileged;

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");

#[test]
fn udp_request_reply_through_a_vip_comes_back_from_the_vip() {
    let Some(p) = privileged::require("udp_request_reply_through_a_vip_comes_back_from_the_vip")
    else {
        return;
    };
    let vip: SocketAddrV4 = "127.100.2.1:5353".parse().unwrap();
    let mut fx = Fixture::new(&p, "udp", "127.0.0.1:1".parse().unwrap());
    let mut svc = service(
        vip,
        L4LoadBalancer::Random,
        &[(udp_backend("u0"), 1, true), (udp_backend("u1"), 1, true)],
    );
    svc.protocol = L4Protocol::Udp;
    fx.dp().apply(&[svc]).unwrap();
    let cg = fx.cg.path().to_path_buf();

    // Unconnected socket: each datagram is balanced (P(a backend unseen in
    // 40) = 2·2^-40); every reply's source is the VIP. Connected socket:
    // one backend for the socket's life, still the VIP.
    assert_udp_through_vip(PROBE, &cg, vip.into(), &["u0", "u1"], 40, 10);
    assert_eq!(
        fx.dp().service_counters(vip, L4Protocol::Udp).connections,
        41
    );

    // An IPv6 socket sending to the IPv4-mapped VIP: balanced, and the
    // replies come from the mapped VIP.
    let mapped = format!("[::ffff:{}]:{}", vip.ip(), vip.port());
    let lines = probe(PROBE, Some(&cg), &["udp", &mapped, "4"]);
    for l in &lines {
        let name = l
            .strip_prefix(&format!("{mapped} "))
            .unwrap_or_else(|| panic!("reply not from the mapped VIP: {l}"));
        assert!(name == "u0" || name == "u1", "{l}");
    }

    // Outside the cgroup nothing is rewritten: the VIP has no listener.
    assert_eq!(
        probe(PROBE, None, &["udp", &vip.to_string(), "1", "--connect"]),
        ["error ConnectionRefused"]
    );
}

/// A UDP port of a service the proxy handles (REDIRECT mode: a
/// VirtualService or a policy selects it) is still balanced in the kernel:
/// the proxy listens for TCP only, and Istio leaves UDP to kube-proxy. It
/// used to pass through untranslated to a VIP nothing answers on.
#[test]
fn udp_port_of_a_redirect_mode_service_is_balanced_not_passed_through() {
    let Some(p) = privileged::require("udp_port_of_a_redirect_mode_service_is_balanced") else {
        return;
    };
    let vip: SocketAddrV4 = "127.100.2.2:5353".parse().unwrap();
    let mut fx = Fixture::new(&p, "udp-redirect", "127.0.0.1:1".parse().unwrap());
    let mut svc = service(
        vip,
        L4LoadBalancer::Random,
        &[(udp_backend("r0"), 1, true), (udp_backend("r1"), 1, true)],
    );
    svc.protocol = L4Protocol::Udp;
    svc.mode = L4Mode::Redirect;
    fx.dp().apply(&[svc]).unwrap();
    let cg = fx.cg.path().to_path_buf();

    assert_udp_through_vip(PROBE, &cg, vip.into(), &["r0", "r1"], 40, 3);
    assert_eq!(
        fx.dp().service_counters(vip, L4Protocol::Udp).connections,
        41
    );
}
