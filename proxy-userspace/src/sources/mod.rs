//! Where the daemon's configuration comes from besides the config
//! directory ([`crate::daemon::store::ConfigStore`]): a Kubernetes API
//! server ([`kube`]).
pub mod kube;
