//! `sk_lookup` program `inpod_lookup`, attached by the daemon to each meshed
//! local pod's network namespace: inbound capture without iptables (see
//! `proxy_common::inpod` for the maps and actions). It runs once per new
//! TCP connection (the SYN's listener lookup), never per packet.
use aya_ebpf::{
    bindings::{bpf_sk_lookup, sk_action},
    macros::{map, sk_lookup},
    maps::{HashMap, SockHash},
    programs::SkLookupContext,
};
use proxy_common::{inpod_action, sock_kind, Inpod6Key, InpodModeKey, InpodProbe, InpodSockKey};

/// `(pod IP, port)` → action.
#[map(name = "INPOD_MODES")]
pub static INPOD_MODES: HashMap<InpodModeKey, u32> =
    HashMap::with_max_entries(proxy_common::MAX_INPOD_MODES, 0);

/// `(pod IP, kind)` → the daemon's listening socket in the pod's netns.
#[map(name = "INPOD_SOCKETS")]
pub static INPOD_SOCKETS: SockHash<InpodSockKey> =
    SockHash::with_max_entries(proxy_common::MAX_INPOD_SOCKETS, 0);

/// Pod IPv6 address → the pod's IPv4 key of `INPOD_MODES`.
#[map(name = "INPOD_V6")]
pub static INPOD_V6: HashMap<Inpod6Key, u32> =
    HashMap::with_max_entries(proxy_common::MAX_INPOD_V6, 0);

/// `(pod key, probe port)` → the node's sources of kubelet probes.
#[map(name = "INPOD_PROBES")]
pub static INPOD_PROBES: HashMap<InpodModeKey, InpodProbe> =
    HashMap::with_max_entries(proxy_common::MAX_INPOD_PROBES, 0);

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const IPPROTO_TCP: u32 = 6;

/// The sk_lookup hook of a meshed pod's network namespace.
#[sk_lookup]
pub fn inpod_lookup(ctx: SkLookupContext) -> u32 {
    // SAFETY: the kernel hands a valid `bpf_sk_lookup` to this hook.
    let l: &bpf_sk_lookup = unsafe { &*ctx.lookup };
    if l.protocol != IPPROTO_TCP {
        return sk_action::SK_PASS;
    }
    if l.family == AF_INET6 {
        return lookup6(&ctx, l);
    }
    if l.family != AF_INET {
        return sk_action::SK_PASS;
    }
    // The daemon's own delivery to the pod: never captured again.
    if l.remote_ip4 == proxy_common::INBOUND_PASSTHROUGH_SOURCE {
        return sk_action::SK_PASS;
    }
    let ip = l.local_ip4;
    let port = l.local_port;
    if port == proxy_common::ports::HBONE as u32 {
        let key = InpodSockKey {
            ip,
            kind: sock_kind::HBONE,
        };
        // No HBONE socket registered: normal delivery.
        let _ = INPOD_SOCKETS.redirect_sk_lookup(&ctx, key, 0);
        return sk_action::SK_PASS;
    }
    let a = action(ip, port);
    if a == inpod_action::PASS {
        return sk_action::SK_PASS;
    }
    // A kubelet probe: the node's own source towards the pod, to a port a
    // container probe names.
    // SAFETY: plain read of a `Copy` value.
    if let Some(p) = unsafe { INPOD_PROBES.get(&InpodModeKey { ip, port }) } {
        if p.src4 != 0 && p.src4 == l.remote_ip4 {
            return sk_action::SK_PASS;
        }
    }
    steer(&ctx, ip, a, sock_kind::PLAINTEXT)
}

/// DROP, or PLAINTEXT: to the pod's policy listener `kind`.
#[inline(always)]
fn steer(ctx: &SkLookupContext, ip: u32, a: u32, kind: u32) -> u32 {
    match a {
        inpod_action::PLAINTEXT => {
            match INPOD_SOCKETS.redirect_sk_lookup(ctx, InpodSockKey { ip, kind }, 0) {
                Ok(()) => sk_action::SK_PASS,
                // The policy listener is not there (daemon restarting):
                // fail closed rather than skip the policy check.
                Err(_) => sk_action::SK_DROP,
            }
        }
        // DROP (STRICT), and any action this build does not know.
        _ => sk_action::SK_DROP,
    }
}

/// The `INPOD_MODES` action of (pod IPv4 key, port), the pod's default
/// (port 0) when the port has none, PASS when the pod has none.
#[inline(always)]
fn action(ip: u32, port: u32) -> u32 {
    // SAFETY: plain reads of `Copy` values; the map is not written by the
    // program.
    unsafe {
        match INPOD_MODES.get(&InpodModeKey { ip, port }) {
            Some(a) => *a,
            None => match INPOD_MODES.get(&InpodModeKey { ip, port: 0 }) {
                Some(a) => *a,
                None => inpod_action::PASS,
            },
        }
    }
}

/// IPv6 TCP: the pod's answer through `INPOD_V6` (its key), PLAINTEXT to
/// the pod's IPv6 policy listener.
#[inline(always)]
fn lookup6(ctx: &SkLookupContext, l: &bpf_sk_lookup) -> u32 {
    // Word-sized reads of the context (the verifier allows 4-byte loads).
    // SAFETY: `l` is the kernel's context; fields are read in place.
    let (remote, local) = unsafe {
        (
            [
                core::ptr::read_volatile(&raw const l.remote_ip6[0]),
                core::ptr::read_volatile(&raw const l.remote_ip6[1]),
                core::ptr::read_volatile(&raw const l.remote_ip6[2]),
                core::ptr::read_volatile(&raw const l.remote_ip6[3]),
            ],
            [
                core::ptr::read_volatile(&raw const l.local_ip6[0]),
                core::ptr::read_volatile(&raw const l.local_ip6[1]),
                core::ptr::read_volatile(&raw const l.local_ip6[2]),
                core::ptr::read_volatile(&raw const l.local_ip6[3]),
            ],
        )
    };
    // The daemon's own delivery from `::6`.
    if remote == proxy_common::INBOUND_PASSTHROUGH_SOURCE6 {
        return sk_action::SK_PASS;
    }
    let port = l.local_port;
    // The daemon's HBONE listener on `[pod IPv6]:15008` in the pod.
    if port == proxy_common::ports::HBONE as u32 {
        return sk_action::SK_PASS;
    }
    // SAFETY: plain read of a `Copy` value.
    let ip = match unsafe { INPOD_V6.get(&Inpod6Key { ip: local }) } {
        Some(ip) => *ip,
        None => return sk_action::SK_PASS,
    };
    let a = action(ip, port);
    if a == inpod_action::PASS {
        return sk_action::SK_PASS;
    }
    // SAFETY: plain read of a `Copy` value.
    if let Some(p) = unsafe { INPOD_PROBES.get(&InpodModeKey { ip, port }) } {
        if p.src6 != [0; 4] && p.src6 == remote {
            return sk_action::SK_PASS;
        }
    }
    steer(ctx, ip, a, sock_kind::PLAINTEXT6)
}
