//! `sk_lookup` program `inpod_lookup`, attached by the daemon to each meshed
//! local pod's network namespace: inbound capture without iptables (see
//! `proxy_common::inpod` for the maps and actions). It runs once per new
//! TCP connection (the SYN's listener lookup), never per packet.
use aya_ebpf::{
    bindings::{sk_action, bpf_sk_lookup},
    macros::{map, sk_lookup},
    maps::{HashMap, SockHash},
    programs::SkLookupContext,
};
use proxy_common::{inpod_action, sock_kind, InpodModeKey, InpodSockKey};

/// `(pod IP, port)` → action.
#[map(name = "INPOD_MODES")]
pub static INPOD_MODES: HashMap<InpodModeKey, u32> =
    HashMap::with_max_entries(proxy_common::MAX_INPOD_MODES, 0);

/// `(pod IP, kind)` → the daemon's listening socket in the pod's netns.
#[map(name = "INPOD_SOCKETS")]
pub static INPOD_SOCKETS: SockHash<InpodSockKey> =
    SockHash::with_max_entries(proxy_common::MAX_INPOD_SOCKETS, 0);

const AF_INET: u32 = 2;
const IPPROTO_TCP: u32 = 6;

/// The sk_lookup hook of a meshed pod's network namespace.
#[sk_lookup]
pub fn inpod_lookup(ctx: SkLookupContext) -> u32 {
    // SAFETY: the kernel hands a valid `bpf_sk_lookup` to this hook.
    let l: &bpf_sk_lookup = unsafe { &*ctx.lookup };
    if l.family != AF_INET || l.protocol != IPPROTO_TCP {
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
    // SAFETY: plain reads of `Copy` values; the map is not written by the
    // program.
    let action = unsafe {
        match INPOD_MODES.get(&InpodModeKey { ip, port }) {
            Some(a) => *a,
            None => match INPOD_MODES.get(&InpodModeKey { ip, port: 0 }) {
                Some(a) => *a,
                None => inpod_action::PASS,
            },
        }
    };
    match action {
        inpod_action::DROP => sk_action::SK_DROP,
        inpod_action::PLAINTEXT => {
            let key = InpodSockKey {
                ip,
                kind: sock_kind::PLAINTEXT,
            };
            match INPOD_SOCKETS.redirect_sk_lookup(&ctx, key, 0) {
                Ok(()) => sk_action::SK_PASS,
                // The policy listener is not there (daemon restarting):
                // fail closed rather than skip the policy check.
                Err(_) => sk_action::SK_DROP,
            }
        }
        _ => sk_action::SK_PASS,
    }
}
