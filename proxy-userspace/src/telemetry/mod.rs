//! Istio's standard metrics, served on the admin API's `/stats/prometheus`.
pub mod identity;
pub mod metrics;
pub mod peer;

pub use metrics::{Metrics, RequestLabels, TcpLabels};
pub use peer::{PeerInfo, Reporter, SecurityPolicy};
