//! Strait's node daemon: the kernel data path loader, and (as they land) the
//! L7 proxy, policy, telemetry and admin API. The `strait` binary is a thin
//! CLI over this library.
pub mod admin;
pub mod daemon;
pub mod datapath;
pub mod identity;
pub mod policy;
pub mod proxy;
pub mod sys;
pub mod telemetry;

/// The global allocator the `strait` binary (and the L7 benchmark proxy)
/// installs: mimalloc, whose per-thread free lists suit the proxy's many
/// small per-request allocations better than glibc malloc.
pub use mimalloc::MiMalloc as Allocator;
