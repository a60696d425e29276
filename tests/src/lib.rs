//! Helpers for Strait's kernel (tier 2) and namespace (tier 3) tests:
//! privilege checks that skip with a reason, and guards that remove what a
//! test created (cgroups, namespaces, processes) even when it panics.
pub mod bpffs;
pub mod cgroup;
pub mod demo;
pub mod fake_apiserver;
pub mod foreign_cpu;
pub mod judged_pairs;
pub mod lb;
pub mod node;
pub mod privileged;
pub mod stall;
pub mod xdp;
pub mod xdp_deny;
pub mod xdp_net;
pub mod xdp_pass;
