//! Measures Strait's XDP programs for `cargo xtask bench xdp`: time per
//! packet through `BPF_PROG_TEST_RUN`, pinned to one CPU, two ways:
//!
//! - `repeat_ns`: one call with `repeat` N, the kernel's mean per
//!   repetition (whole ns, preemption excluded) — exact for programs that
//!   leave the frame as it is (drop, deny);
//! - the load balancer rewrites the frame (it prepends the tunnel
//!   header), so its `repeat_ns` is timed on `xdp_lb_bench`: the same
//!   code followed by the tunnel header's removal (three loads, three
//!   stores and one `bpf_xdp_adjust_head`), so every repetition balances
//!   the same client packet (checked on the counters: every repetition
//!   tunnelled, none decapsulated, no new flow for an established one) —
//!   an upper bound of the balancer's own time per packet; the "flow
//!   cache miss" rows are timed on `xdp_lb_bench_miss`, which also clears
//!   the flow's per-CPU flow cache slot after each repetition, so every
//!   repetition is balanced from the connection table. Live-frame mode
//!   (`BPF_F_TEST_XDP_LIVE_FRAMES`) does not restore the bytes either
//!   (after the first batch the program would see its own output), and
//!   would add the kernel's transmit path to every figure;
//! - `single_ns`: the mean of many calls with repeat 1 on a fresh copy of
//!   the frame (caches colder, the kernel's timer overhead included; the
//!   floors show how much).
//!
//! `bench-xdp [--repeat N] [--runs R] [--cpu C] [--deny-prefixes N] [--only TEXT] [--single-calls N] [--deny6-trie] [--deny4-by-length] [--object PATH]`
//! (`--object`: load that eBPF object instead of the embedded one — an
//! earlier build's `strait-ebpf` with the same map layouts — for
//! interleaved A/B runs of two builds of the programs;
//! `--only`: run only the cases whose name contains TEXT; `--single-calls
//! 0`: no single runs; both for profiling one case with `perf`;
//! `--deny6-trie`: IPv6 sources walk the `DENY_V6` trie for every source
//! instead of their `DENY_V6_BUCKETS` and `DENY_V6_LEN`, for A/B runs;
//! `--deny4-by-length`: IPv4 sources take the length path of earlier
//! builds — the /16 summary, then `DENY_V4_LEN` — instead of their
//! `DENY_V4_DIR24` slot)
//!
//! Every case has an IPv4 and an IPv6 form where the program has both:
//! the IPv6 balancer (ip6ip6, 40-byte tunnel header, `XLB_*6` tables, the
//! IPv6 deny tables holding 1,000 /48 prefixes and one /128 in the first of
//! them) is measured the same
//! way as the IPv4 one.
//!
//! Prints one JSON object per case: `{"case", "family", "program",
//! "verdict", "repeat_ns": [per run], "single_ns": [per run],
//! "timed_with"}` (`family`: 4 or 6; `timed_with`: the program the repeat
//! figure was taken on).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use strait::datapath::{
    ExternalVip, ExternalVip6, ExternalVips, ExternalVips6, L4Protocol, UplinkConfig, UplinkConfig6,
};

const VIP: [u8; 4] = [198, 51, 100, 10];
/// An IPv4 VIP on IPv6 nodes (4in6).
const VIP46: [u8; 4] = [198, 51, 100, 46];
/// The IPv6 VIP, `2001:db8:7::10`.
const VIP6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in bytes.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A 64-byte-class TCP frame (Ethernet + IPv4 + TCP + 6 bytes).
fn tcp_frame(src: [u8; 4], dst: [u8; 4], flags: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
    let payload = b"strait";
    let tot = (20 + 20 + payload.len()) as u16;
    let mut ip = vec![
        0x45,
        0,
        (tot >> 8) as u8,
        tot as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    f.extend_from_slice(&[
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// An 80-byte TCP frame (Ethernet + IPv6 + TCP + 6 bytes), hop limit 64.
fn tcp_frame6(src: [u8; 16], dst: [u8; 16], flags: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    let payload = b"strait";
    let len = (20 + payload.len()) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0, (len >> 8) as u8, len as u8, 6, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// `inner` (an Ethernet frame) behind an ip6ip6 header from `src` to `dst`.
fn ip6ip6(inner: &[u8], src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let mut f = inner[..12].to_vec();
    f.extend_from_slice(&[0x86, 0xdd]);
    let len = (inner.len() - 14) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0, (len >> 8) as u8, len as u8, 41, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&inner[14..]);
    f
}

/// Kernel-measured mean time per repetition (whole nanoseconds) of
/// `repeat` runs on one copy of `frame`: exact for programs that do not
/// change the frame (every repetition sees the same bytes).
fn time(prog: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<u64> {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat;
    let res = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    Ok(res.duration.as_nanos() as u64)
}

/// Mean kernel-measured time of `calls` single runs (repeat 1), each on a
/// fresh copy of `frame`, in nanoseconds.
fn time_single(prog: &Xdp, frame: &[u8], calls: u32) -> anyhow::Result<f64> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut total = 0u128;
    for _ in 0..calls {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        total += prog
            .test_run(opts)
            .context("BPF_PROG_TEST_RUN")?
            .duration
            .as_nanos();
    }
    Ok(total as f64 / calls as f64)
}

fn verdict(prog: &Xdp, frame: &[u8]) -> anyhow::Result<u32> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    Ok(prog
        .test_run(opts)
        .context("BPF_PROG_TEST_RUN")?
        .return_value)
}

fn pin(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut repeat = 5_000_000u32;
    let mut runs = 5usize;
    let mut cpu = None;
    let mut deny_prefixes = 1000u32;
    let mut only = String::new();
    let mut single_calls = None;
    let mut deny6_trie = false;
    let mut deny4_by_length = false;
    let mut object = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--repeat" => repeat = val()?.parse()?,
            "--runs" => runs = val()?.parse()?,
            "--cpu" => cpu = Some(val()?.parse()?),
            "--deny-prefixes" => deny_prefixes = val()?.parse()?,
            "--only" => only = val()?,
            "--single-calls" => single_calls = Some(val()?.parse::<u32>()?),
            "--deny6-trie" => deny6_trie = true,
            "--deny4-by-length" => deny4_by_length = true,
            "--object" => object = Some(val()?),
            _ => bail!("unknown argument {a}"),
        }
    }
    if let Some(c) = cpu {
        pin(c)?;
    }
    let mut ebpf = match &object {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
            // The ELF parser wants the object 8-byte aligned: copy it into
            // u64 words.
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            // SAFETY: `words` holds at least `bytes.len()` bytes; u8 has no
            // alignment requirement.
            let aligned = unsafe {
                std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), bytes.len())
            };
            aligned.copy_from_slice(&bytes);
            strait::datapath::load_object(aligned)?
        }
        None => strait::datapath::load()?,
    };
    strait::datapath::configure_uplink(
        &mut ebpf,
        &UplinkConfig {
            source: Ipv4Addr::new(10, 0, 0, 1),
            gateway_mac: [2, 0, 0, 0, 0, 0xfe],
        },
    )?;
    strait::datapath::configure_uplink6(
        &mut ebpf,
        Some(&UplinkConfig6 {
            source: "fd00::1".parse()?,
            gateway_mac: [2, 0, 0, 0, 0, 0xfd],
        }),
    )?;
    // 100 reals behind each VIP; 1,000 deny prefixes per family (so the
    // LB's deny check is a miss in a populated table).
    let reals = (0..100u32)
        .map(|i| (Ipv4Addr::from(0x0a01_0000 + i + 1).into(), 1))
        .collect();
    // And 100 IPv6 reals behind the 4in6 VIP.
    let reals46 = (0..100u128)
        .map(|i| {
            let a = Ipv6Addr::from(0xfd00_0000_0000_0000_0000_0000_0002_0000 + i + 1);
            (a.into(), 1)
        })
        .collect();
    ExternalVips::new().apply(
        &mut ebpf,
        &[
            ExternalVip {
                vip: Ipv4Addr::from(VIP),
                port: 80,
                protocol: L4Protocol::Tcp,
                reals,
            },
            ExternalVip {
                vip: Ipv4Addr::from(VIP46),
                port: 80,
                protocol: L4Protocol::Tcp,
                reals: reals46,
            },
        ],
    )?;
    let reals6 = (0..100u128)
        .map(|i| {
            (
                Ipv6Addr::from(0xfd00_0000_0000_0000_0000_0000_0001_0000 + i + 1),
                1,
            )
        })
        .collect();
    ExternalVips6::new().apply(
        &mut ebpf,
        &[ExternalVip6 {
            vip: Ipv6Addr::from(VIP6),
            port: 80,
            protocol: L4Protocol::Tcp,
            reals: reals6,
        }],
    )?;
    strait::datapath::load_xdp_lb(&mut ebpf)?;
    strait::datapath::load_xdp_deny(&mut ebpf)?;
    strait::datapath::load_xdp_drop(&mut ebpf)?;
    for name in ["xdp_tx", "xdp_lb_bench", "xdp_lb_bench_miss"] {
        let p: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?;
        p.load()?;
    }
    let mut deny = strait::datapath::DenyTries::take(&mut ebpf)?;
    // IPv4: /24s from 100.0.0.0; IPv6: /48s from 2001:db8:100::.
    let prefixes: Vec<_> = (0..deny_prefixes.max(1))
        .flat_map(|i| {
            [
                (IpAddr::V4(Ipv4Addr::from(0x6400_0000 + (i << 8))), 24),
                (
                    IpAddr::V6(Ipv6Addr::from((0x2001_0db8_0100u128 + u128::from(i)) << 80)),
                    48,
                ),
            ]
        })
        .chain([(IpAddr::V6("2001:db8:100::1".parse()?), 128)])
        .collect();
    deny.sync(&prefixes)?;
    if deny6_trie {
        deny.walk_v6_trie_always()?;
    }
    if deny4_by_length {
        deny.v4_by_length_always()?;
    }

    let denied_src = [100, 0, 0, 9];
    let client = [192, 0, 2, 1];
    // IPIP to a node, inner destination not a VIP: the decapsulation path
    // up to the VIP check, without rewriting (so repeat is exact).
    let ipip_other = {
        let inner = tcp_frame(client, [203, 0, 113, 9], 0x10);
        let mut f = inner[..14].to_vec();
        let tot = (inner.len() - 14 + 20) as u16;
        let mut ip = vec![
            0x45,
            0,
            (tot >> 8) as u8,
            tot as u8,
            0,
            0,
            0,
            0,
            64,
            4,
            0,
            0,
        ];
        ip.extend_from_slice(&[10, 0, 0, 1, 10, 1, 0, 1]);
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend(ip);
        f.extend_from_slice(&inner[14..]);
        f
    };
    let denied6: [u8; 16] = Ipv6Addr::from((0x2001_0db8_0100u128 + 9) << 80 | 9).octets();
    // In the /48 whose bucket's slot holds the /128 2001:db8:100::1: the
    // slot misses, the /48 is found in `DENY_V6_LEN`.
    let denied6_listed: [u8; 16] = "2001:db8:100::9".parse::<Ipv6Addr>()?.octets();
    let client6: [u8; 16] = "2001:db8:99::1".parse::<Ipv6Addr>()?.octets();
    // ip6ip6 to this node, inner destination not a VIP: the IPv6
    // decapsulation path up to the VIP check, without rewriting.
    let ip6ip6_other = ip6ip6(
        &tcp_frame6(
            client6,
            "2001:db8:113::9".parse::<Ipv6Addr>()?.octets(),
            0x10,
        ),
        "fd00::1".parse::<Ipv6Addr>()?.octets(),
        "fd00::1:1".parse::<Ipv6Addr>()?.octets(),
    );
    let cases: [(&str, &str, Vec<u8>, u32); 18] = [
        (
            "uplink: IPIP, inner not a VIP (decapsulation checks)",
            "xdp_lb",
            ipip_other,
            2,
        ),
        (
            "XDP_DROP only (floor)",
            "xdp_drop",
            tcp_frame(client, VIP, 0x10),
            1,
        ),
        (
            "XDP_TX only (floor)",
            "xdp_tx",
            tcp_frame(client, VIP, 0x10),
            3,
        ),
        (
            "deny: source in one of 1,000 prefixes",
            "xdp_deny",
            tcp_frame(denied_src, VIP, 0x10),
            1,
        ),
        (
            "uplink: deny via xdp_lb",
            "xdp_lb",
            tcp_frame(denied_src, VIP, 0x10),
            1,
        ),
        (
            "LB: established flow (flow cache hit)",
            "xdp_lb",
            tcp_frame(client, VIP, 0x10),
            3,
        ),
        (
            "LB: established flow, flow cache miss (flow table hit)",
            "xdp_lb",
            tcp_frame(client, VIP, 0x10),
            3,
        ),
        (
            "LB: new flow (SYN: Maglev ring + flow table update)",
            "xdp_lb",
            tcp_frame(client, VIP, 0x02),
            3,
        ),
        (
            "4in6 LB (IPv4 VIP, IPv6 reals): established flow",
            "xdp_lb",
            tcp_frame(client, VIP46, 0x10),
            3,
        ),
        (
            "4in6 LB (IPv4 VIP, IPv6 reals): established flow, flow cache miss",
            "xdp_lb",
            tcp_frame(client, VIP46, 0x10),
            3,
        ),
        (
            "4in6 LB (IPv4 VIP, IPv6 reals): new flow (SYN)",
            "xdp_lb",
            tcp_frame(client, VIP46, 0x02),
            3,
        ),
        (
            "IPv6 uplink: ip6ip6, inner not a VIP (decapsulation checks)",
            "xdp_lb",
            ip6ip6_other,
            2,
        ),
        (
            "IPv6 deny: source in one of 1,000 /48 prefixes",
            "xdp_deny",
            tcp_frame6(denied6, VIP6, 0x10),
            1,
        ),
        (
            "IPv6 deny: source in a /48 beside a /128 (slot miss, one hash lookup)",
            "xdp_deny",
            tcp_frame6(denied6_listed, VIP6, 0x10),
            1,
        ),
        (
            "IPv6 uplink: deny via xdp_lb",
            "xdp_lb",
            tcp_frame6(denied6, VIP6, 0x10),
            1,
        ),
        (
            "IPv6 LB: established flow (flow cache hit)",
            "xdp_lb",
            tcp_frame6(client6, VIP6, 0x10),
            3,
        ),
        (
            "IPv6 LB: established flow, flow cache miss (flow table hit)",
            "xdp_lb",
            tcp_frame6(client6, VIP6, 0x10),
            3,
        ),
        (
            "IPv6 LB: new flow (SYN: Maglev ring + flow table update)",
            "xdp_lb",
            tcp_frame6(client6, VIP6, 0x02),
            3,
        ),
    ];
    for (name, program, frame, want) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let prog: &Xdp = ebpf
            .program(program)
            .with_context(|| format!("{program} missing"))?
            .try_into()?;
        let v = verdict(prog, &frame)?;
        if v != want {
            bail!("{name}: verdict {v}, expected {want}");
        }
        // A tunnelled frame is rewritten in place, so repetitions after the
        // first would see the IPIP packet: the repeat figure is taken on
        // `xdp_lb_bench`, which takes the tunnel header off again.
        let rewrites = program == "xdp_lb" && v == 3;
        let timed_with = match (rewrites, name.contains("flow cache miss")) {
            (true, true) => "xdp_lb_bench_miss",
            (true, false) => "xdp_lb_bench",
            (false, _) => program,
        };
        let timed: &Xdp = ebpf
            .program(timed_with)
            .with_context(|| format!("{timed_with} missing"))?
            .try_into()?;
        let v6 = frame[12..14] == [0x86, 0xdd];
        let l4 = 14 + if v6 { 40 } else { 20 };
        let syn = frame.get(l4 + 13).is_some_and(|f| f & 0x12 == 0x02);
        let mut same = Vec::new();
        let mut single = Vec::new();
        for _ in 0..runs {
            let before = strait::datapath::xlb_stats(&ebpf)?;
            same.push(time(timed, &frame, repeat)?);
            let after = strait::datapath::xlb_stats(&ebpf)?;
            if rewrites {
                let (lb, decap, new) = (
                    after.packets - before.packets,
                    after.decapsulated - before.decapsulated,
                    after.new_flows - before.new_flows,
                );
                let want_new = if syn { repeat as u64 } else { 0 };
                if lb != repeat as u64 || decap != 0 || new != want_new {
                    bail!("{name}: of {repeat} repetitions {lb} tunnelled, {decap} decapsulated, {new} new flows (want {repeat}, 0, {want_new})");
                }
            }
            let calls = single_calls.unwrap_or((repeat / 50).max(1000));
            if calls > 0 {
                single.push(time_single(prog, &frame, calls)?);
            }
        }
        println!(
            "{}",
            serde_json::json!({"case": name, "family": if v6 { 6 } else { 4 }, "program": program,
                "verdict": v, "repeat_ns": same,
                "single_ns": single, "timed_with": timed_with})
        );
    }
    Ok(())
}
