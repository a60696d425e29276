//! Strait's node daemon: the kernel data path loader (`datapath`), the L7
//! and TCP proxy (`proxy`), security policy (`policy`), workload identity
//! (`identity`), config sources (`daemon` for files, `sources` for
//! Kubernetes), telemetry and the admin API. The `strait` binary is a thin
//! CLI over this library. What runs where and the import rule:
//! `ARCHITECTURE.md` at the repository root.
pub mod admin;
pub mod daemon;
pub mod datapath;
pub mod identity;
pub mod policy;
pub mod proxy;
pub mod sources;
pub mod sys;
pub mod telemetry;
pub mod transport;

/// The global allocator the `strait` binary (and the L7 benchmark proxy)
/// installs: mimalloc, whose per-thread free lists suit the proxy's many
/// small per-request allocations better than glibc malloc.
pub use mimalloc::MiMalloc as Allocator;
