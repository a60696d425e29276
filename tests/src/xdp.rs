//! Fixtures of the XDP program tests (tier 2, `BPF_PROG_TEST_RUN`) both
//! address families share: the verdicts, the Ethernet addresses of the
//! frames, TCP/UDP headers, the uplink program of a loaded object and one
//! test run of it.
use aya::programs::{TestRun, TestRunOptions, Xdp};

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;

/// The uplink gateway's MAC (the destination of tunnelled frames).
pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
/// The balancer's MAC: the destination of test frames.
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The sender's MAC: the source of test frames.
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// An Ethernet header from [`SRC_MAC`] to [`DST_MAC`] with `ether_type`
/// (`[0x08, 0x00]` IPv4, `[0x86, 0xdd]` IPv6).
pub fn eth(ether_type: [u8; 2]) -> Vec<u8> {
    let mut f = DST_MAC.to_vec();
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&ether_type);
    f
}

/// A TCP segment header (sequence 1, data offset 5, window 0xffff,
/// checksum 0) with `flags` (SYN = 0x02, ACK = 0x10) and payload.
pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// A UDP datagram (checksum 0) with `payload`.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// The loaded `xdp_lb` program of `ebpf` (see
/// `strait::datapath::load_xdp_lb`).
///
/// Panics: the program is missing or not an XDP program.
pub fn prog(ebpf: &aya::Ebpf) -> &Xdp {
    ebpf.program("xdp_lb").unwrap().try_into().unwrap()
}

/// Runs `prog` once on `frame`: its verdict and the frame it leaves
/// (room for 256 added bytes).
///
/// Panics: `BPF_PROG_TEST_RUN` fails.
pub fn run(prog: &Xdp, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}
