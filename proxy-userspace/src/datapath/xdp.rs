//! The XDP deny filter from userspace: AuthorizationPolicy DENY source
//! prefixes dropped at the driver, before any socket sees them.
use anyhow::Context;
use aya::{
    maps::{lpm_trie::Key, LpmTrie},
    programs::Xdp,
    Ebpf,
};

/// Loads the XDP deny program of an object from [`super::load`] (not
/// attached) and returns it, e.g. for `BPF_PROG_TEST_RUN`.
pub fn load_xdp_deny(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(super::programs::XDP_DENY)
        .context("xdp_deny program missing from the eBPF object")?
        .try_into()?;
    prog.load()?;
    Ok(prog)
}

/// Adds an IPv4 source prefix (`addr`, `prefix_len` bits) with the id of
/// the policy that denies it to the XDP deny list.
pub fn deny_source(
    ebpf: &mut Ebpf,
    addr: std::net::Ipv4Addr,
    prefix_len: u32,
    policy_id: u32,
) -> anyhow::Result<()> {
    let mut trie: LpmTrie<_, u32, u32> =
        LpmTrie::try_from(ebpf.map_mut(proxy_common::DENY_V4).context("DENY_V4 map")?)?;
    trie.insert(&Key::new(prefix_len, u32::from(addr).to_be()), policy_id, 0)?;
    Ok(())
}
