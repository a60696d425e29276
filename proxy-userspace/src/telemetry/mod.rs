//! What the proxy reports: Istio's standard metrics, served on the admin
//! API's `/stats/prometheus` (`metrics`, `identity`), Envoy's access log
//! (`access_log`) and response flags (`flags`). Used from every layer;
//! imports nothing of the crate.
pub mod access_log;
pub mod flags;
pub mod identity;
pub mod metrics;

pub use metrics::{Metrics, RequestLabels, TcpLabels};
