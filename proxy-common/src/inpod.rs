//! Inbound capture inside a meshed pod's network namespace: the
//! `sk_lookup` program `inpod_lookup` (proxy-ebpf/src/inpod.rs), its mode
//! map [`INPOD_MODES`] and socket map [`INPOD_SOCKETS`].
//!
//! The daemon attaches the program to each meshed local pod's network
//! namespace (ztunnel's "in-pod" model) and writes, per (pod IP, port),
//! what the kernel does with a new TCP connection to that port:
//! [`inpod_action::PASS`] (the pod's own listener, untouched),
//! [`inpod_action::DROP`] (PeerAuthentication `STRICT`: plain text is
//! refused by the kernel, the client sees a reset) or
//! [`inpod_action::PLAINTEXT`] (the daemon's plaintext inbound listener,
//! Istio's 15006, which enforces AuthorizationPolicy). The entry with port
//! 0 is the pod's default for ports without an entry of their own.
//! Connections to port 15008 go to the daemon's HBONE socket when one is
//! registered; connections from `127.0.0.6` (the daemon's own deliveries)
//! are never touched.
//!
//! IPv6: [`INPOD_V6`] maps each of a captured pod's IPv6 addresses to
//! its key of [`INPOD_MODES`] — the pod's IPv4 address for a dual-stack
//! pod, a synthetic key from [`V6_ONLY_KEY_BASE`] for an IPv6-only pod —
//! so a connection to `[pod IPv6]:port` gets the same [`INPOD_MODES`]
//! answer as one to the IPv4 address. [`inpod_action::PLAINTEXT`] goes to
//! the daemon's IPv6 policy listener ([`sock_kind::PLAINTEXT6`], `[::]:15006`
//! in the pod), refused when it is missing (fail closed). Connections from
//! `::6` ([`INBOUND_PASSTHROUGH_SOURCE6`], the daemon's IPv6 deliveries) and
//! to port 15008 pass untouched; an IPv6 address not in [`INPOD_V6`]
//! passes (not a captured pod's).
//!
//! Kubelet probes: [`INPOD_PROBES`] names, per (pod key, probe port), the
//! node's own source addresses towards the pod (what kubelet's probe
//! connections come from); a plain-text connection from one of them to
//! that port is delivered untouched even when the port is STRICT or
//! policy-covered (Istio ambient's probe exemption, which istio-cni makes
//! by SNAT to `169.254.7.127`).

/// `(pod IP, port)` → [`inpod_action`] (`u32`).
pub const INPOD_MODES: &str = "INPOD_MODES";
/// [`InpodSockKey`] → the daemon's listening socket in the pod's netns.
pub const INPOD_SOCKETS: &str = "INPOD_SOCKETS";

/// A captured pod's IPv6 address ([`Inpod6Key`]) → its key of
/// [`INPOD_MODES`] (`u32`, network byte order). Not pinned, like the other
/// in-pod maps: the daemon refills it when it attaches.
pub const INPOD_V6: &str = "INPOD_V6";
/// Maximum entries of [`INPOD_V6`] (one or two IPv6 addresses per pod).
pub const MAX_INPOD_V6: u32 = 16_384;

/// First synthetic [`INPOD_MODES`] key of an IPv6-only pod, as an IPv4
/// address's octets (`224.0.0.0`; keys go up from it): a multicast address, which a
/// TCP connection never has as its local address (the kernel drops TCP to
/// multicast before the listener lookup), so the key never meets a real
/// IPv4 connection.
pub const V6_ONLY_KEY_BASE: [u8; 4] = [224, 0, 0, 0];

/// `(pod key, probe port)` ([`InpodModeKey`]) → [`InpodProbe`]: the
/// sources whose plain text to that port is a kubelet probe.
pub const INPOD_PROBES: &str = "INPOD_PROBES";
/// Maximum entries of [`INPOD_PROBES`] (pods × probe ports).
pub const MAX_INPOD_PROBES: u32 = 16_384;

/// Maximum entries of [`INPOD_MODES`] (pods × ports with a mode of their own).
pub const MAX_INPOD_MODES: u32 = 65_536;
/// Maximum entries of [`INPOD_SOCKETS`] (two per meshed local pod).
pub const MAX_INPOD_SOCKETS: u32 = 16_384;

/// `127.0.0.6`, Istio's inbound passthrough source, as a network-byte-order
/// `u32`: the daemon delivers to pods from this address, and the program
/// leaves such connections alone (no capture loop).
pub const INBOUND_PASSTHROUGH_SOURCE: u32 = u32::from_be_bytes([127, 0, 0, 6]).to_be();

/// `::6`, Istio's IPv6 inbound passthrough source, as the four words of
/// `bpf_sk_lookup.remote_ip6` (see [`crate::ipv6_words`]).
pub const INBOUND_PASSTHROUGH_SOURCE6: [u32; 4] =
    crate::ipv6_words([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6]);

/// What `inpod_lookup` does with a new connection.
pub mod inpod_action {
    /// Normal delivery to the pod's listener.
    pub const PASS: u32 = 0;
    /// Refused in the kernel (`SK_DROP`: the client gets a reset).
    pub const DROP: u32 = 1;
    /// To the daemon's plaintext inbound socket ([`super::sock_kind::PLAINTEXT`]);
    /// refused when that socket is missing (fail closed).
    pub const PLAINTEXT: u32 = 2;
}

/// Which of the daemon's in-pod sockets.
pub mod sock_kind {
    /// Plaintext inbound listener (Istio's 15006).
    pub const PLAINTEXT: u32 = 0;
    /// HBONE listener (15008).
    pub const HBONE: u32 = 1;
    /// IPv6 plaintext inbound listener (`[::]:15006`, IPv6 only).
    pub const PLAINTEXT6: u32 = 2;
}

/// Key of [`INPOD_MODES`] (and [`INPOD_PROBES`]): the pod key — its IPv4
/// address, or for an IPv6-only pod its synthetic key — (network byte
/// order) and the local
/// port in host byte order (as `bpf_sk_lookup.local_port` has it); port 0
/// is the pod's default.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InpodModeKey {
    /// Pod key (its IPv4 address or IPv6-only key), network byte order.
    pub ip: u32,
    /// Local (destination) port, host byte order; 0: the pod's default.
    pub port: u32,
}

/// Key of [`INPOD_SOCKETS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InpodSockKey {
    /// Pod key (its IPv4 address or IPv6-only key), network byte order.
    pub ip: u32,
    /// [`sock_kind`].
    pub kind: u32,
}

/// Key of [`INPOD_V6`]: a pod IPv6 address as the four words of
/// `bpf_sk_lookup.local_ip6` (see [`crate::ipv6_words`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Inpod6Key {
    /// The address words.
    pub ip: [u32; 4],
}

/// Value of [`INPOD_PROBES`]: the node's source addresses towards the pod
/// (0 / all zero: none of that family).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InpodProbe {
    /// IPv4 source, network byte order.
    pub src4: u32,
    /// IPv6 source as the four words of `bpf_sk_lookup.remote_ip6`.
    pub src6: [u32; 4],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` integers without padding.
    unsafe impl aya::Pod for super::InpodProbe {}
    // SAFETY: plain `repr(C)` integers without padding.
    unsafe impl aya::Pod for super::Inpod6Key {}
    // SAFETY: plain `repr(C)` integers without padding.
    unsafe impl aya::Pod for super::InpodModeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InpodSockKey {}
}
