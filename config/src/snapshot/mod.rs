//! The compiled mesh: what the daemon and the kernel maps consume.
//!
//! Nothing downstream of this module re-parses YAML.
pub mod l4;

pub use l4::{L4Backend, L4LoadBalancer, L4Mode, L4Protocol, L4Service};
