//! Where the daemon's configuration comes from: the config directory
//! ([`file::ConfigStore`]) or a Kubernetes API server ([`kube`]), both
//! behind the [`Source`] trait the daemon reloads through.
pub(crate) mod file;
pub mod kube;

pub use file::{Changed, ChangedPaths, ConfigStore, Reload, Resources, Source};
