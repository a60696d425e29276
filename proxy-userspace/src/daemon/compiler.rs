//! The daemon's config compiler: turns each reload of the config source
//! into the snapshot to serve and the diff from the one served before.
//!
//! A change the source can name (`Reload::changed`: the file store names
//! the resources of the files the watcher saw change) that touches only
//! endpoints (EndpointSlices, Endpoints) goes through
//! [`Incremental::try_apply`]: only the changed services' clusters,
//! workloads and kernel entries are recompiled, in place, and the diff
//! comes out without comparing whole snapshots (Envoy's EDS makes the same
//! cut). Anything else — the first load, another kind, policies in the
//! mesh (see [`strait_config::compile::NotIncremental`]) — is a full
//! compile diffed against the snapshot in service; the reason is logged at
//! debug level.
//!
//! With mTLS (HBONE) the daemon turns L4 services with a meshed endpoint
//! to REDIRECT after compiling ([`super::hbone::redirect_meshed_services`]);
//! the compiler remembers which entries it turned, so an incremental
//! update re-decides only the entries it changed, and falls back to a full
//! compile when a workload's meshed status flips.
use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use strait_config::compile::{copy_changes, Incremental};
use strait_config::enroll::Enrollment;
use strait_config::snapshot::diff::L4Key;
use strait_config::snapshot::{L4Mode, MeshSnapshot, SnapshotDiff};
use strait_config::{CompileOptions, Diagnostic};

use super::hbone;
use crate::sources::{Reload, Source};

/// What one reload compiled.
#[derive(Debug)]
pub(crate) struct Step {
    /// What changed since the snapshot in service (`old` of
    /// [`Compiler::reload`]); `None` when there was none (the first
    /// compile).
    pub diff: Option<SnapshotDiff>,
    /// Whether the incremental path produced it.
    pub incremental: bool,
    /// Whether which pods are meshed changed.
    pub enrollment_changed: bool,
}

/// Keeps what the last reload compiled (see the module docs).
pub(crate) struct Compiler {
    opts: CompileOptions,
    /// HBONE is on: meshed L4 services are redirected.
    hbone: bool,
    /// `None` until the first compile, and after [`Compiler::invalidate`].
    inc: Option<Incremental>,
    /// The snapshot last compiled (HBONE redirects applied); incremental
    /// updates change it in place.
    current: MeshSnapshot,
    /// The kernel entries the HBONE redirect turned to REDIRECT.
    redirected: BTreeSet<L4Key>,
    enrollment: Enrollment,
}

impl Compiler {
    /// A compiler whose full compiles use `opts`; with `hbone`, L4
    /// services with a meshed endpoint are turned to REDIRECT.
    pub fn new(opts: CompileOptions, hbone: bool) -> Self {
        Self {
            opts,
            hbone,
            inc: None,
            current: MeshSnapshot::default(),
            redirected: BTreeSet::new(),
            enrollment: Enrollment::default(),
        }
    }

    /// The snapshot last compiled.
    pub fn snapshot(&self) -> &MeshSnapshot {
        &self.current
    }

    /// Which pods are meshed, as last compiled.
    pub fn enrollment(&self) -> &Enrollment {
        &self.enrollment
    }

    /// Forgets the incremental state: the next reload compiles in full
    /// (after a compiled snapshot was not put in service, so the next diff
    /// is taken against the one that is).
    pub fn invalidate(&mut self) {
        self.inc = None;
    }

    /// Puts the snapshot last compiled in service in `slot` and returns
    /// it. `diff` is what [`Compiler::reload`] returned with it.
    ///
    /// After an incremental step this copies nothing whole: the compiled
    /// snapshot itself is published, and the one it replaces (the previous
    /// step's, equal to it but for `diff`) becomes the compiler's own
    /// copy once [`copy_changes`] brought it up to date — so two copies of
    /// the snapshot take turns and publishing costs what the change costs.
    /// When a reader still holds the replaced snapshot, or after a full
    /// compile (whose diff does not name everything that may differ), the
    /// compiler keeps a deep copy instead.
    ///
    /// `slot` must hold the snapshot of the previous step (the daemon's
    /// `Live::snapshot`): after [`Compiler::invalidate`], the next step is
    /// a full compile, so a snapshot that was not published is never
    /// patched.
    pub fn publish(
        &mut self,
        incremental: bool,
        diff: &SnapshotDiff,
        slot: &ArcSwap<MeshSnapshot>,
    ) -> Arc<MeshSnapshot> {
        if !incremental {
            let new = Arc::new(self.current.clone());
            slot.store(new.clone());
            return new;
        }
        let new = Arc::new(std::mem::take(&mut self.current));
        let prev = slot.swap(new.clone());
        self.current = match Arc::try_unwrap(prev) {
            Ok(mut mine) => {
                copy_changes(&mut mine, &new, diff);
                mine
            }
            Err(_) => (*new).clone(),
        };
        new
    }

    /// Reads `store` and compiles what changed; `old` is the snapshot in
    /// service (`None` before there is one). `None` when the source's
    /// inputs did not change. Load and compile diagnostics are logged.
    pub fn reload(&mut self, store: &mut dyn Source, old: Option<&MeshSnapshot>) -> Option<Step> {
        // The files read by this reload share the schema trees they need;
        // freed when it returns (issue 20: RSS per node).
        let schemas = strait_config::schema::Scope::enter();
        let reload = store.reload();
        drop(schemas);
        if reload.unchanged {
            return None;
        }
        super::log_diagnostics(&reload.diagnostics);
        if reload.listing_failed {
            tracing::warn!("config directory unreadable: still serving the last good config");
        }
        for f in &reload.kept_last_good {
            tracing::warn!(file = %f.display(), "file has errors: still serving its last good version");
        }
        if let Some(step) = self.try_incremental(&reload, old) {
            return Some(step);
        }
        Some(self.full(&reload, old))
    }

    fn try_incremental(&mut self, reload: &Reload, old: Option<&MeshSnapshot>) -> Option<Step> {
        let (Some(inc), Some(changed), Some(old)) =
            (self.inc.as_mut(), reload.changed.as_ref(), old)
        else {
            return None;
        };
        let diff = match inc.try_apply(
            &mut self.current,
            reload.resources.iter(),
            &changed.removed,
            &changed.added,
        ) {
            Ok(diff) => diff,
            Err(why) => {
                tracing::debug!(reason = %why, "config change compiled in full");
                return None;
            }
        };
        if self.hbone && !self.redirect_changed(&diff, old) {
            tracing::debug!(
                reason = "a workload's meshed status changes",
                "config change compiled in full"
            );
            return None;
        }
        self.log_enforced(&changed.added);
        Some(Step {
            diff: Some(diff),
            incremental: true,
            enrollment_changed: false,
        })
    }

    /// Re-decides the HBONE redirect of the kernel entries `diff` changed;
    /// `false` when a workload's meshed status changed (the full compile
    /// must decide every entry again).
    fn redirect_changed(&mut self, diff: &SnapshotDiff, old: &MeshSnapshot) -> bool {
        let w = &diff.workloads;
        let meshed = |s: &MeshSnapshot, ip| {
            s.workloads
                .get(ip)
                .is_some_and(|w| self.enrollment.ip_meshed(w.ip, &w.namespace))
        };
        for ip in w.added.iter().chain(&w.removed).chain(&w.changed) {
            if meshed(old, ip) != meshed(&self.current, ip) {
                return false;
            }
        }
        for k in diff.l4.added.iter().chain(&diff.l4.changed) {
            let Ok(i) = self
                .current
                .l4
                .binary_search_by(|e| (e.vip, e.port, e.protocol).cmp(k))
            else {
                continue;
            };
            let on = hbone::l4_meshed(
                &self.current.l4[i],
                &self.current.workloads,
                &self.enrollment,
            );
            let entry = &mut self.current.l4[i];
            if on && entry.mode == L4Mode::L4 {
                entry.mode = L4Mode::Redirect;
                self.redirected.insert(*k);
            } else if !on && self.redirected.remove(k) {
                entry.mode = L4Mode::L4;
            }
        }
        true
    }

    fn full(&mut self, reload: &Reload, old: Option<&MeshSnapshot>) -> Step {
        // One slice for the full compile (the reload shares its files'
        // lists with the store).
        let resources = reload.resources.to_vec();
        let (inc, mut snap, diags) = Incremental::compile_with(&resources, &self.opts);
        // Validation errors were reported by the store; report the rest.
        let rest: Vec<Diagnostic> = diags.into_iter().filter(|d| !d.is_error()).collect();
        super::log_diagnostics(&rest);
        self.log_enforced(&resources);
        for (ip, why) in &snap.deny {
            tracing::warn!(workload = %ip, "{why}");
        }
        let enrollment = Enrollment::from_resources(&resources);
        self.redirected.clear();
        if self.hbone {
            let was_l4: Vec<bool> = snap.l4.iter().map(|e| e.mode == L4Mode::L4).collect();
            hbone::redirect_meshed_services(&mut snap, &enrollment);
            self.redirected = snap
                .l4
                .iter()
                .zip(was_l4)
                .filter(|(e, was)| *was && e.mode == L4Mode::Redirect)
                .map(|(e, _)| (e.vip, e.port, e.protocol))
                .collect();
        }
        let diff = old.map(|o| strait_config::snapshot::diff(o, &snap));
        let enrollment_changed = enrollment != self.enrollment;
        self.inc = Some(inc);
        self.current = snap;
        self.enrollment = enrollment;
        Step {
            diff,
            incremental: false,
            enrollment_changed,
        }
    }

    /// Accepted but not enforced (STR0001): once per resource per load.
    fn log_enforced(&self, resources: &[strait_config::Resource]) {
        for r in resources {
            // Enforced by this daemon (in-pod capture with a CA).
            if self.opts.peer_authn_enforced
                && matches!(r.object, strait_config::Object::PeerAuthentication(_))
            {
                continue;
            }
            super::log_diagnostics(&strait_config::enforced::diagnostics(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{ChangedPaths, ConfigStore};
    use std::path::{Path, PathBuf};

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tempdir(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("strait-compiler-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    const MESH_NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n";

    fn pod(ns: &str, name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: api}}}}\nspec: {{nodeName: n1, containers: [{{name: c, image: i}}]}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
        )
    }

    /// Service `api` in `plain` with its endpoints at `ips` (pods in
    /// `plain` or `mesh` by address: 10.1.0.x plain, 10.2.0.x meshed).
    fn api(ips: &[&str]) -> String {
        let mut y = "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: plain}\nspec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: 8080}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: api-1, namespace: plain, labels: {kubernetes.io/service-name: api}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n".to_string();
        for ip in ips {
            y.push_str(&format!("- {{addresses: [\"{ip}\"]}}\n"));
        }
        y
    }

    fn write(dir: &Path, file: &str, text: &str, paths: &ChangedPaths) {
        std::fs::write(dir.join(file), text).unwrap();
        paths.note(&[dir.join(file)]);
    }

    /// What a fresh daemon would compile from the directory.
    fn full(dir: &Path, hbone: bool) -> MeshSnapshot {
        let mut c = Compiler::new(CompileOptions::default(), hbone);
        c.reload(&mut ConfigStore::new(dir), None).unwrap();
        c.current
    }

    fn setup(name: &str, hbone: bool) -> (TempDir, ChangedPaths, ConfigStore, Compiler) {
        let d = tempdir(name);
        let pods = [
            pod("plain", "a", "10.1.0.1"),
            pod("plain", "b", "10.1.0.2"),
            pod("mesh", "m", "10.2.0.1"),
        ]
        .join("---\n");
        std::fs::write(d.0.join("ns.yaml"), MESH_NS).unwrap();
        std::fs::write(d.0.join("pods.yaml"), pods).unwrap();
        std::fs::write(d.0.join("api.yaml"), api(&["10.1.0.1"])).unwrap();
        let paths = ChangedPaths::default();
        let mut store = ConfigStore::new(&d.0);
        store.follow(paths.clone());
        let mut c = Compiler::new(CompileOptions::default(), hbone);
        let first = c.reload(&mut store, None).unwrap();
        assert!(!first.incremental && first.diff.is_none());
        (d, paths, store, c)
    }

    #[test]
    fn an_endpoint_change_is_applied_incrementally_and_equals_a_full_compile() {
        let (d, paths, mut store, mut c) = setup("endpoints", false);
        let old = c.current.clone();
        write(&d.0, "api.yaml", &api(&["10.1.0.1", "10.1.0.2"]), &paths);
        let step = c.reload(&mut store, Some(&old)).unwrap();
        assert!(step.incremental, "{step:?}");
        let diff = step.diff.unwrap();
        assert_eq!(
            diff.clusters.changed,
            ["outbound|80||api.plain.svc.cluster.local"]
        );
        assert_eq!(diff.l4.changed.len(), 1);
        assert!(diff.routes.is_empty() && diff.services.is_empty());
        assert_eq!(c.current, full(&d.0, false));
        assert_eq!(diff, strait_config::snapshot::diff(&old, &c.current));

        // Another kind: compiled in full, still diffed against the old.
        let old = c.current.clone();
        write(
            &d.0,
            "vs.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: plain}\nspec:\n  hosts: [api]\n  http:\n  - route: [{destination: {host: api}}]\n    timeout: 2s\n",
            &paths,
        );
        let step = c.reload(&mut store, Some(&old)).unwrap();
        assert!(!step.incremental);
        assert!(!step.diff.unwrap().routes.is_empty());
        assert_eq!(c.current, full(&d.0, false));
    }

    /// What the daemon does per reload: compile, then publish. The
    /// published snapshot and the compiler's own copy (the previous
    /// published one, patched) both equal a full compile after every
    /// change, whether or not a reader still held the replaced snapshot.
    #[test]
    fn published_snapshots_take_turns_and_equal_a_full_compile() {
        let (d, paths, mut store, mut c) = setup("publish", false);
        let slot = ArcSwap::from_pointee(MeshSnapshot::default());
        let first = c.publish(false, &SnapshotDiff::default(), &slot);
        assert_eq!(*first, c.current);
        drop(first);
        let sets: [&[&str]; 5] = [
            &["10.1.0.1", "10.1.0.2"],
            &["10.1.0.2"],
            &["10.1.0.2", "10.2.0.1"],
            &["10.1.0.1"],
            &["10.1.0.1", "10.1.0.2", "10.2.0.1"],
        ];
        for (i, ips) in sets.iter().enumerate() {
            write(&d.0, "api.yaml", &api(ips), &paths);
            let served = slot.load_full();
            let step = c.reload(&mut store, Some(&*served)).unwrap();
            assert!(step.incremental, "change {i}: {step:?}");
            // Every other change, a reader holds the snapshot replaced.
            let reader = (i % 2 == 1).then_some(served);
            let published = c.publish(true, &step.diff.unwrap(), &slot);
            let want = full(&d.0, false);
            assert_eq!(*published, want, "published after change {i}");
            assert_eq!(**slot.load(), want, "in the slot after change {i}");
            assert_eq!(c.current, want, "the compiler's copy after change {i}");
            drop(reader);
        }
    }

    #[test]
    fn after_invalidate_the_next_change_is_compiled_in_full_against_the_served_snapshot() {
        let (d, paths, mut store, mut c) = setup("invalidate", false);
        let served = c.current.clone();
        write(&d.0, "api.yaml", &api(&["10.1.0.2"]), &paths);
        assert!(c.reload(&mut store, Some(&served)).unwrap().incremental);
        // That snapshot was not put in service.
        c.invalidate();
        write(&d.0, "api.yaml", &api(&["10.1.0.2", "10.1.0.1"]), &paths);
        let step = c.reload(&mut store, Some(&served)).unwrap();
        assert!(!step.incremental);
        assert_eq!(
            step.diff.unwrap(),
            strait_config::snapshot::diff(&served, &full(&d.0, false))
        );
    }

    #[test]
    fn with_hbone_a_meshed_endpoint_redirects_its_service_incrementally_and_back() {
        use strait_config::snapshot::L4Mode;
        let (d, paths, mut store, mut c) = setup("hbone", true);
        assert_eq!(c.current.l4[0].mode, L4Mode::L4);
        // The meshed pod joins the service: the kernel entry redirects.
        let old = c.current.clone();
        write(&d.0, "api.yaml", &api(&["10.1.0.1", "10.2.0.1"]), &paths);
        let step = c.reload(&mut store, Some(&old)).unwrap();
        assert!(step.incremental, "{step:?}");
        assert_eq!(step.diff.unwrap().l4.changed.len(), 1);
        assert_eq!(c.current.l4[0].mode, L4Mode::Redirect);
        assert_eq!(c.current, full(&d.0, true));
        // It leaves: back to the kernel path.
        let old = c.current.clone();
        write(&d.0, "api.yaml", &api(&["10.1.0.2"]), &paths);
        let step = c.reload(&mut store, Some(&old)).unwrap();
        assert!(step.incremental, "{step:?}");
        assert_eq!(c.current.l4[0].mode, L4Mode::L4);
        assert_eq!(c.current, full(&d.0, true));
    }
}
