//! Finding the cgroups of the pods on this node, so the socket programs are
//! attached to meshed pods only.
//!
//! Below the pods cgroup (`--pods-cgroup`; under Kubernetes the kubelet's
//! `kubepods` tree) a pod's cgroup is recognised by its directory name:
//!
//! - `pod<uid>` — the kubelet's cgroupfs driver
//!   (`kubepods/burstable/pod1b4e…`);
//! - `kubepods[-<qos>]-pod<uid with '_' for '-'>.slice` — the systemd driver;
//! - `<namespace>_<name>` — a pod on a node without a kubelet (Strait's
//!   simulated node; namespaces and pod names cannot contain `_`).
//!
//! QoS sub-trees (`burstable`, `besteffort`, `kubepods-burstable.slice`)
//! are searched; the cgroups of a pod's containers (below the pod's) are
//! not. A pod's cgroup only exists on the node the pod runs on, so the
//! cgroups found are this node's pods.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strait_config::enroll::Enrollment;

/// How a pod's cgroup names its pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodKey {
    /// `metadata.uid`.
    Uid(String),
    /// `(namespace, name)`.
    Name(String, String),
}

/// Deepest level searched below the pods cgroup (`kubepods.slice /
/// kubepods-burstable.slice / kubepods-burstable-pod….slice` is 2).
const MAX_DEPTH: usize = 4;

/// What a cgroup directory name says about its pod, if it is a pod's.
pub fn pod_key(dir_name: &str) -> Option<PodKey> {
    if let Some(slice) = dir_name.strip_suffix(".slice") {
        let (_, uid) = slice.rsplit_once("-pod")?;
        return (!uid.is_empty()).then(|| PodKey::Uid(uid.replace('_', "-")));
    }
    if let Some(uid) = dir_name.strip_prefix("pod") {
        if uid.len() >= 8 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Some(PodKey::Uid(uid.to_string()));
        }
    }
    let (ns, name) = dir_name.split_once('_')?;
    let dns = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    (dns(ns) && dns(name)).then(|| PodKey::Name(ns.to_string(), name.to_string()))
}

/// Every pod cgroup below `root`, by what names its pod.
///
/// Errors: a directory of the tree could not be listed (descriptor
/// exhaustion, a cgroup removed mid-walk): the caller keeps what it has
/// rather than take the pods it did not see for gone, as a config
/// directory that cannot be listed keeps the last good config.
pub fn pod_cgroups(root: &Path) -> std::io::Result<BTreeMap<PodKey, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A pod's cgroup removed while walking is simply gone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != root => continue,
            Err(e) => return Err(e),
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            match pod_key(name) {
                Some(key) => {
                    out.insert(key, e.path());
                }
                None if depth + 1 < MAX_DEPTH => stack.push((e.path(), depth + 1)),
                None => {}
            }
        }
    }
    Ok(out)
}

/// The cgroups of the meshed pods among `found` (sorted): a pod's cgroup
/// is found by UID first, then by `namespace_name`.
pub fn meshed_cgroups(enrollment: &Enrollment, found: &BTreeMap<PodKey, PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = enrollment
        .pods
        .iter()
        .filter(|p| p.meshed())
        .filter_map(|p| {
            p.uid
                .as_ref()
                .and_then(|u| found.get(&PodKey::Uid(u.clone())))
                .or_else(|| found.get(&PodKey::Name(p.namespace.clone(), p.name.clone())))
                .cloned()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_and_simulated_pod_cgroup_names_are_recognised() {
        let uid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        assert_eq!(pod_key(&format!("pod{uid}")), Some(PodKey::Uid(uid.into())));
        assert_eq!(
            pod_key(&format!(
                "kubepods-burstable-pod{}.slice",
                uid.replace('-', "_")
            )),
            Some(PodKey::Uid(uid.into()))
        );
        assert_eq!(
            pod_key(&format!("kubepods-pod{}.slice", uid.replace('-', "_"))),
            Some(PodKey::Uid(uid.into()))
        );
        assert_eq!(
            pod_key("default_reviews-v1-0"),
            Some(PodKey::Name("default".into(), "reviews-v1-0".into()))
        );
        for not_a_pod in [
            "burstable",
            "besteffort",
            "kubepods.slice",
            "kubepods-burstable.slice",
            "cri-containerd-0123abcd.scope",
            "podman",
            "Default_x",
        ] {
            assert_eq!(pod_key(not_a_pod), None, "{not_a_pod}");
        }
    }

    #[test]
    fn meshed_pods_cgroups_are_found_in_qos_subtrees_and_others_left_out() {
        let root = std::env::temp_dir().join(format!("strait-pods-{}", std::process::id()));
        let uid = "0123abcd-0000-1111-2222-333344445555";
        let a = root.join("burstable").join(format!("pod{uid}"));
        let b = root.join("shop_b");
        let c = root.join("shop_c");
        for d in [&a, &b, &c] {
            std::fs::create_dir_all(d.join("container")).unwrap();
        }
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{istio.io/dataplane-mode: ambient}}}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: shop, uid: {uid}}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: b, namespace: shop}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: c, namespace: shop, labels: {{istio.io/dataplane-mode: none}}}}\n"
        );
        let loaded = strait_config::load::load_str(&yaml, "t.yaml");
        let e = Enrollment::from_resources(&loaded.resources);
        let found = pod_cgroups(&root).unwrap();
        let got = meshed_cgroups(&e, &found);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(got, want, "the opted-out pod c is not attached");
    }
}
