//! Inbound capture in each meshed local pod's network namespace: the
//! `sk_lookup` program `inpod_lookup` (proxy-ebpf/src/inpod.rs) attached to
//! the namespace, its mode map (`INPOD_MODES`, from the snapshot's
//! `inbound` table) and socket map (`INPOD_SOCKETS`, the daemon's listening
//! sockets inside the pod). See `proxy_common::inpod` for what each action
//! does. The links are held by the daemon, not pinned: they detach when it
//! exits (and when the pod's namespace goes away).
use std::collections::{BTreeMap, HashMap as StdHashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};

use anyhow::Context;
use aya::maps::{HashMap, MapData, SockHash};
use aya::programs::{sk_lookup::SkLookupLinkId, SkLookup};
use aya::Ebpf;
use proxy_common::{inpod_action, Inpod6Key, InpodModeKey, InpodProbe, InpodSockKey};
use strait_config::snapshot::{InboundWorkload, MtlsMode};

/// The `sk_lookup` program's name in the eBPF object.
pub const INPOD_LOOKUP: &str = "inpod_lookup";

/// Which in-pod socket (`proxy_common::sock_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InpodSocket {
    /// The plaintext inbound listener (15006).
    Plaintext,
    /// The HBONE listener (15008).
    Hbone,
    /// The IPv6 plaintext inbound listener (`[::]:15006`).
    Plaintext6,
}

impl InpodSocket {
    fn kind(self) -> u32 {
        match self {
            InpodSocket::Plaintext => proxy_common::sock_kind::PLAINTEXT,
            InpodSocket::Hbone => proxy_common::sock_kind::HBONE,
            InpodSocket::Plaintext6 => proxy_common::sock_kind::PLAINTEXT6,
        }
    }
}

/// What the kernel does with a new plain-text connection to one pod port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundAction {
    /// Normal delivery to the pod.
    Pass,
    /// Refused in the kernel (STRICT).
    Drop,
    /// To the daemon's plaintext inbound listener (policy).
    Plaintext,
}

impl InboundAction {
    fn raw(self) -> u32 {
        match self {
            InboundAction::Pass => inpod_action::PASS,
            InboundAction::Drop => inpod_action::DROP,
            InboundAction::Plaintext => inpod_action::PLAINTEXT,
        }
    }

    /// Istio's meaning of a PeerAuthentication mode for plain text, with
    /// or without policy: STRICT refuses, anything else is accepted —
    /// through the policy listener when a policy applies.
    pub fn for_mode(mode: MtlsMode, policy: bool) -> Self {
        match (mode, policy) {
            (MtlsMode::Strict, _) => InboundAction::Drop,
            (_, true) => InboundAction::Plaintext,
            _ => InboundAction::Pass,
        }
    }
}

/// The mode entries of one pod: port 0 is the default.
pub fn mode_entries(w: &InboundWorkload) -> BTreeMap<u16, InboundAction> {
    let mut out = BTreeMap::new();
    out.insert(0, InboundAction::for_mode(w.mtls.mode, w.policy));
    for (port, m) in &w.mtls.ports {
        if *port != 0 {
            out.insert(*port, InboundAction::for_mode(*m, w.policy));
        }
    }
    out
}

/// One step of a pod's `INPOD_MODES` update ([`mode_writes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeWrite {
    /// Write (port, action); port 0 is the pod's default.
    Set(u16, InboundAction),
    /// Wait for an RCU grace period (every `sk_lookup` run that started
    /// before has finished).
    Grace,
    /// Remove the port's entry.
    Remove(u16),
}

/// The steps that take a pod's mode entries from `have` to `want` so that
/// a connection looked up meanwhile gets the old entries' action or the
/// new ones' (the program reads the port's entry, then the default's when
/// the port has none): the ports' own entries first, then — after a grace
/// period when a port gained an entry, so no lookup that found none is
/// still to read the default — the default, then the gone ports (their
/// lookups fall to the new default), the default last. Removed first (as
/// before this order), a port STRICT in both would briefly fall to an old
/// PERMISSIVE default and accept plain text.
pub fn mode_writes(
    have: &BTreeMap<u16, InboundAction>,
    want: &BTreeMap<u16, InboundAction>,
) -> Vec<ModeWrite> {
    let mut out: Vec<ModeWrite> = want
        .iter()
        .filter(|(p, a)| **p != 0 && have.get(p) != Some(a))
        .map(|(p, a)| ModeWrite::Set(*p, *a))
        .collect();
    if let Some(d) = want.get(&0).filter(|d| have.get(&0) != Some(d)) {
        if want.keys().any(|p| *p != 0 && !have.contains_key(p)) {
            out.push(ModeWrite::Grace);
        }
        out.push(ModeWrite::Set(0, *d));
    }
    out.extend(
        have.keys()
            .rev()
            .filter(|p| !want.contains_key(p))
            .map(|p| ModeWrite::Remove(*p)),
    );
    out
}

/// The in-pod capture's program, maps and attachments.
pub struct InpodCapture {
    modes: HashMap<MapData, InpodModeKey, u32>,
    sockets: SockHash<MapData, InpodSockKey>,
    v6: HashMap<MapData, Inpod6Key, u32>,
    probes: HashMap<MapData, InpodModeKey, InpodProbe>,
    /// What `probes` holds, per pod key.
    written_probes: StdHashMap<Ipv4Addr, BTreeMap<u16, InpodProbe>>,
    /// What `v6` holds and which pod claims which address.
    v6book: super::inpod_v6::V6Book,
    /// Pod IP → (netns inode, link).
    links: StdHashMap<Ipv4Addr, (u64, SkLookupLinkId)>,
    /// What `modes` holds, per pod.
    written: StdHashMap<Ipv4Addr, BTreeMap<u16, InboundAction>>,
}

fn ip_key(ip: Ipv4Addr) -> u32 {
    proxy_common::ipv4_to_be(u32::from(ip))
}

impl InpodCapture {
    /// Takes the maps out of `ebpf` and loads the program (not attached).
    ///
    /// Errors: the object lacks them, the verifier refuses the program.
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let modes = ebpf
            .take_map(proxy_common::INPOD_MODES)
            .context("map INPOD_MODES missing from the eBPF object")?
            .try_into()?;
        let sockets = ebpf
            .take_map(proxy_common::INPOD_SOCKETS)
            .context("map INPOD_SOCKETS missing from the eBPF object")?
            .try_into()?;
        let v6 = ebpf
            .take_map(proxy_common::INPOD_V6)
            .context("map INPOD_V6 missing from the eBPF object")?
            .try_into()?;
        let probes = ebpf
            .take_map(proxy_common::INPOD_PROBES)
            .context("map INPOD_PROBES missing from the eBPF object")?
            .try_into()?;
        let prog: &mut SkLookup = ebpf
            .program_mut(INPOD_LOOKUP)
            .context("program inpod_lookup missing from the eBPF object")?
            .try_into()?;
        prog.load()
            .context("loading inpod_lookup (sk_lookup needs Linux 5.9)")?;
        Ok(Self {
            modes,
            sockets,
            v6,
            probes,
            written_probes: StdHashMap::new(),
            v6book: Default::default(),
            links: StdHashMap::new(),
            written: StdHashMap::new(),
        })
    }

    /// Attaches the program to the network namespace `netns` of pod `ip`
    /// (again when the pod's namespace changed; nothing when attached).
    ///
    /// Errors: the kernel refuses the link (no `CAP_NET_ADMIN`).
    pub fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        ip: Ipv4Addr,
        netns: &impl AsFd,
        inode: u64,
    ) -> anyhow::Result<()> {
        if self.links.get(&ip).is_some_and(|(i, _)| *i == inode) {
            return Ok(());
        }
        self.detach(ebpf, ip);
        let prog: &mut SkLookup = ebpf
            .program_mut(INPOD_LOOKUP)
            .context("program inpod_lookup missing")?
            .try_into()?;
        let id = prog.attach(netns.as_fd()).with_context(|| {
            format!("attaching inpod_lookup to the network namespace of pod {ip}")
        })?;
        self.links.insert(ip, (inode, id));
        Ok(())
    }

    /// Detaches from pod `ip`'s namespace and forgets its modes and
    /// sockets.
    pub fn detach(&mut self, ebpf: &mut Ebpf, ip: Ipv4Addr) {
        if let Some((_, id)) = self.links.remove(&ip) {
            if let Some(prog) = ebpf.program_mut(INPOD_LOOKUP) {
                if let Ok(p) = <&mut SkLookup>::try_from(prog) {
                    let _ = p.detach(id);
                }
            }
        }
        self.set_modes(ip, None);
        // Its IPv6 entries go at the next [`Self::sweep_v6`], unless
        // another pod claims them meanwhile.
        self.v6book.forget(ip);
        self.set_probes(ip, &BTreeMap::new());
        for kind in [
            InpodSocket::Plaintext,
            InpodSocket::Hbone,
            InpodSocket::Plaintext6,
        ] {
            self.remove_socket(ip, kind);
        }
    }

    /// Pods the program is attached to.
    pub fn attached(&self) -> Vec<Ipv4Addr> {
        self.links.keys().copied().collect()
    }

    /// Makes pod `ip`'s mode entries those of `w` (`None`: none, so every
    /// port passes). Only changed entries are written, in the fail-closed
    /// order of [`mode_writes`].
    pub fn set_modes(&mut self, ip: Ipv4Addr, w: Option<&InboundWorkload>) {
        let want = w.map(mode_entries).unwrap_or_default();
        let have = self.written.remove(&ip).unwrap_or_default();
        let key = |port: u16| InpodModeKey {
            ip: ip_key(ip),
            port: u32::from(port),
        };
        for step in mode_writes(&have, &want) {
            match step {
                ModeWrite::Set(port, a) => {
                    if let Err(e) = self.modes.insert(key(port), a.raw(), 0) {
                        tracing::error!(pod = %ip, port, "writing INPOD_MODES: {e}");
                    }
                }
                ModeWrite::Grace => {
                    super::grace::wait_before_removing();
                }
                ModeWrite::Remove(port) => {
                    let _ = self.modes.remove(&key(port));
                }
            }
        }
        if !want.is_empty() {
            self.written.insert(ip, want);
        }
    }

    /// Makes `v6` the IPv6 addresses of the pod keyed `ip` (a dual-stack
    /// pod's other `status.podIPs`, an IPv6-only pod's addresses):
    /// connections to them get the pod's modes, policy ports going to its
    /// IPv6 policy listener (see `proxy_common::inpod`). Only adds (or
    /// re-points) entries: addresses the pod no longer has stay until
    /// [`Self::sweep_v6`], which the caller runs once every pod is set, so
    /// an address that moves to another pod is never missing meanwhile.
    pub fn set_v6(&mut self, ip: Ipv4Addr, v6: &[Ipv6Addr]) {
        let writes = self.v6book.claim(ip, v6);
        self.write_v6(writes);
    }

    /// Removes the `INPOD_V6` entries no pod claims any more (and points an
    /// address whose pod dropped it at another pod that claims it): the
    /// last step of a sync, after every pod's [`Self::set_v6`] and
    /// [`Self::detach`].
    pub fn sweep_v6(&mut self) {
        let writes = self.v6book.sweep();
        self.write_v6(writes);
    }

    fn write_v6(&mut self, writes: Vec<super::inpod_v6::V6Write>) {
        use super::inpod_v6::V6Write;
        for w in writes {
            match w {
                V6Write::Set(a, pod) => {
                    let key = Inpod6Key {
                        ip: proxy_common::ipv6_words(a.octets()),
                    };
                    if let Err(e) = self.v6.insert(key, ip_key(pod), 0) {
                        tracing::error!(pod = %pod, ipv6 = %a, "writing INPOD_V6: {e}");
                    }
                }
                V6Write::Remove(a) => {
                    let _ = self.v6.remove(&Inpod6Key {
                        ip: proxy_common::ipv6_words(a.octets()),
                    });
                }
            }
        }
    }

    /// Makes `probes` (probe port → the node's sources towards the pod)
    /// pod `ip`'s kubelet-probe exemptions: plain text from such a source
    /// to such a port is delivered untouched (see `proxy_common::inpod`).
    /// Only changed entries are written.
    pub fn set_probes(&mut self, ip: Ipv4Addr, probes: &BTreeMap<u16, InpodProbe>) {
        let have = self.written_probes.remove(&ip).unwrap_or_default();
        let key = |port: u16| InpodModeKey {
            ip: ip_key(ip),
            port: u32::from(port),
        };
        for port in have.keys().filter(|p| !probes.contains_key(p)) {
            let _ = self.probes.remove(&key(*port));
        }
        for (port, p) in probes {
            if have.get(port) == Some(p) {
                continue;
            }
            if let Err(e) = self.probes.insert(key(*port), *p, 0) {
                tracing::error!(pod = %ip, port, "writing INPOD_PROBES: {e}");
            }
        }
        if !probes.is_empty() {
            self.written_probes.insert(ip, probes.clone());
        }
    }

    /// Registers the daemon's listening socket `kind` inside pod `ip`.
    ///
    /// Errors: the map refuses it (not a listening TCP socket, map full).
    pub fn set_socket(
        &mut self,
        ip: Ipv4Addr,
        kind: InpodSocket,
        listener: &impl AsRawFd,
    ) -> anyhow::Result<()> {
        let key = InpodSockKey {
            ip: ip_key(ip),
            kind: kind.kind(),
        };
        self.sockets
            .insert(key, listener.as_raw_fd(), 0)
            .with_context(|| format!("registering the {kind:?} socket of pod {ip}"))
    }

    /// Forgets pod `ip`'s socket `kind` (a closed socket leaves the map by
    /// itself).
    pub fn remove_socket(&mut self, ip: Ipv4Addr, kind: InpodSocket) {
        let _ = self.sockets.remove(&InpodSockKey {
            ip: ip_key(ip),
            kind: kind.kind(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::snapshot::PeerMtls;

    #[test]
    fn modes_follow_istio_peer_authentication_and_policy() {
        use InboundAction::*;
        let w = |mode, ports: &[(u16, MtlsMode)], policy| InboundWorkload {
            mtls: PeerMtls {
                mode,
                ports: ports.iter().copied().collect(),
            },
            policy,
            l7: false,
        };
        let e = mode_entries(&w(MtlsMode::Strict, &[(8080, MtlsMode::Disable)], false));
        assert_eq!(e, [(0, Drop), (8080, Pass)].into_iter().collect());
        let e = mode_entries(&w(MtlsMode::Strict, &[(8080, MtlsMode::Disable)], true));
        assert_eq!(e, [(0, Drop), (8080, Plaintext)].into_iter().collect());
        let e = mode_entries(&w(MtlsMode::Permissive, &[], true));
        assert_eq!(e, [(0, Plaintext)].into_iter().collect());
        let e = mode_entries(&w(MtlsMode::Disable, &[(9000, MtlsMode::Strict)], false));
        assert_eq!(e, [(0, Pass), (9000, Drop)].into_iter().collect());
    }

    /// Every verdict an `sk_lookup` run can reach while [`mode_writes`]
    /// rewrites a pod's entries — the port's entry read at one step, the
    /// default's at the same or a later one, never across a grace period
    /// — is the old entries' or the new ones', or refuses: a port both
    /// refuse (or send to the policy listener) never passes.
    #[test]
    fn mode_updates_never_pass_a_port_that_both_entry_sets_enforce() {
        use InboundAction::*;
        type Entries = BTreeMap<u16, InboundAction>;
        let lookup = |m: &Entries, at: &Entries, port: u16| {
            m.get(&port)
                .copied()
                .unwrap_or_else(|| at.get(&0).copied().unwrap_or(Pass))
        };
        let sets: [&[(u16, InboundAction)]; 7] = [
            &[],
            &[(0, Pass)],
            &[(0, Drop)],
            &[(0, Pass), (9000, Drop)],
            &[(0, Drop), (9000, Pass), (8080, Plaintext)],
            &[(0, Plaintext), (8080, Drop)],
            &[(0, Pass), (8080, Drop), (9000, Drop)],
        ];
        for have in sets {
            for want in sets {
                let have: Entries = have.iter().copied().collect();
                let want: Entries = want.iter().copied().collect();
                // The map after each step, and where grace periods fall.
                let mut states = vec![have.clone()];
                let mut grace_after = Vec::new();
                let mut cur = have.clone();
                for w in mode_writes(&have, &want) {
                    match w {
                        ModeWrite::Set(p, a) => {
                            cur.insert(p, a);
                        }
                        ModeWrite::Remove(p) => {
                            cur.remove(&p);
                        }
                        ModeWrite::Grace => {
                            grace_after.push(states.len() - 1);
                            continue;
                        }
                    }
                    states.push(cur.clone());
                }
                assert_eq!(cur, want);
                for port in [1u16, 8080, 9000] {
                    let old = lookup(&have, &have, port);
                    let new = lookup(&want, &want, port);
                    for i in 0..states.len() {
                        for j in i..states.len() {
                            if grace_after.iter().any(|g| i <= *g && *g < j) {
                                continue;
                            }
                            let got = match states[i].get(&port) {
                                Some(a) => *a,
                                None => lookup(&Entries::new(), &states[j], port),
                            };
                            assert!(
                                got == old || got == new || got != Pass,
                                "{have:?} -> {want:?}: port {port} got {got:?}"
                            );
                            if old != Pass && new != Pass {
                                assert_ne!(got, Pass, "{have:?} -> {want:?}: port {port}");
                            }
                        }
                    }
                }
            }
        }
    }
}
