//! Maps shared by the programs. Names and entry types come from
//! `proxy-common` so userspace opens them by the same names.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie},
};
use proxy_common::{Backend, BackendKey, ServiceKey, ServiceValue};

/// Service VIP:port:proto → mode and backend set.
#[map(name = "SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(proxy_common::MAX_SERVICES, 0);

/// (backend set, slot) → backend address.
#[map(name = "BACKENDS")]
pub static BACKENDS: HashMap<BackendKey, Backend> =
    HashMap::with_max_entries(proxy_common::MAX_BACKENDS, 0);

/// Source prefixes an AuthorizationPolicy DENY drops at XDP.
/// `BPF_F_NO_PREALLOC` (1) is mandatory for LPM tries.
#[map(name = "DENY_V4")]
pub static DENY_V4: LpmTrie<u32, u32> =
    LpmTrie::with_max_entries(proxy_common::MAX_DENY_PREFIXES, 1);
