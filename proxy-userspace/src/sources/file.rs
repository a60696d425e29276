//! The config directory with "last good" semantics, per file.
//!
//! A file whose new version has an error (YAML that does not parse, or a
//! resource Istio's validation rejects) keeps serving its last good version,
//! the way `kubectl apply` of a bad manifest leaves the cluster's objects as
//! they were. A new file with errors contributes only its valid resources.
//! Every error is reported with file, line, `Kind/namespace/name` and field.
//!
//! A directory that cannot be listed (file-descriptor exhaustion, the
//! directory removed or replaced) keeps the whole last good config, like a
//! parse failure. A reload whose inputs (file list and every file's bytes)
//! are identical to the previous one is skipped; otherwise only the files
//! whose bytes changed are parsed and validated again (one Service changed
//! among 10,000 files costs one file's parse).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strait_config::load::{read_file, Limits, ReadError};
use strait_config::{Diagnostic, Resource};

/// What one reload produced.
#[derive(Debug, Default)]
pub struct Reload {
    /// The resources to compile: every file's current or last good version
    /// (shared with the store: building it copies no resource).
    pub resources: Resources,
    /// Load and validation errors, and warnings/notes from loading.
    pub diagnostics: Vec<Diagnostic>,
    /// Files whose new version had errors and whose last good version is
    /// still in use.
    pub kept_last_good: Vec<PathBuf>,
    /// The inputs are byte-identical to the previous reload's: nothing was
    /// parsed and `resources` is empty; keep serving what is served.
    pub unchanged: bool,
    /// The directory could not be listed: `resources` is the whole last
    /// good config.
    pub listing_failed: bool,
    /// What differs from the previous reload's `resources`, when the
    /// source knows: the previous versions of the resources that changed
    /// or went (`removed`) and the new versions of those that changed or
    /// came (`added`). `None` on the first reload, after a listing failure
    /// and from sources that do not track it; then compile everything.
    /// Feeds `strait_config::compile::Incremental::apply`.
    pub changed: Option<Changed>,
}

/// A reload's resources, in file order: each file's list shared
/// (`Arc`) with the store that read it, so a reload of one changed file
/// among 10,000 copies no resource (issue 21). Iterate with
/// [`Resources::iter`]; a full compile, which wants one slice, takes
/// [`Resources::to_vec`].
#[derive(Clone, Debug, Default)]
pub struct Resources(Vec<Arc<Vec<Resource>>>);

impl Resources {
    /// Every resource, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> + Clone {
        self.0.iter().flat_map(|f| f.iter())
    }

    /// How many resources.
    pub fn len(&self) -> usize {
        self.0.iter().map(|f| f.len()).sum()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|f| f.is_empty())
    }

    /// A copy of every resource, in order, as one list.
    pub fn to_vec(&self) -> Vec<Resource> {
        self.iter().cloned().collect()
    }
}

impl From<Vec<Resource>> for Resources {
    fn from(all: Vec<Resource>) -> Self {
        Self(vec![Arc::new(all)])
    }
}

/// The resources one reload changed (see [`Reload::changed`]).
#[derive(Debug, Default)]
pub struct Changed {
    /// Previous versions of the files' resources that changed or went.
    pub removed: Vec<Resource>,
    /// New versions of the files' resources that changed or came.
    pub added: Vec<Resource>,
}

/// Where the daemon's resources come from: the config directory
/// ([`ConfigStore`]) or a Kubernetes API server
/// ([`crate::sources::kube::KubeStore`]).
pub trait Source: Send {
    /// The resources to serve now (each file's or object's current or last
    /// good version), with what was wrong.
    fn reload(&mut self) -> Reload;
}

impl Source for ConfigStore {
    fn reload(&mut self) -> Reload {
        ConfigStore::reload(self)
    }
}

/// One reload's raw inputs: each file's bytes or its read error, by path
/// (path order is the listing's: sorted, directories in place).
type Inputs = BTreeMap<PathBuf, Result<String, String>>;

/// The paths the config directory's watcher saw change since the last
/// reload, shared by the watcher (which notes them, see
/// [`ChangedPaths::note`]) and the store that follows them
/// ([`ConfigStore::follow`]), which then re-reads only those files.
#[derive(Clone, Default)]
pub struct ChangedPaths(Arc<Mutex<Pending>>);

#[derive(Default)]
struct Pending {
    /// Something changed that the paths do not describe (a watch error,
    /// an event without paths): read the whole directory.
    unknown: bool,
    paths: BTreeSet<PathBuf>,
}

impl ChangedPaths {
    /// Notes the paths of one event; an event naming none makes the next
    /// reload read the whole directory.
    pub fn note(&self, paths: &[PathBuf]) {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if paths.is_empty() {
            p.unknown = true;
        }
        p.paths.extend(paths.iter().cloned());
    }

    /// Notes that changes may have been missed (an overflowed queue): the
    /// next reload reads the whole directory.
    pub fn note_unknown(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).unknown = true;
    }

    /// The paths noted since the last call; `None` when the whole
    /// directory must be read.
    fn take(&self) -> Option<BTreeSet<PathBuf>> {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let taken = std::mem::take(&mut *p);
        (!taken.unknown).then_some(taken.paths)
    }
}

/// The config directory and each file's last good resources.
pub struct ConfigStore {
    dir: PathBuf,
    limits: Limits,
    last_good: BTreeMap<PathBuf, Arc<Vec<Resource>>>,
    last_inputs: Option<Inputs>,
    /// What reading each file reported at the last reload (diagnostics,
    /// whether its last good version was kept), reused with its resources
    /// while the file's bytes stay the same.
    reports: BTreeMap<PathBuf, FileReport>,
    node_ips: Vec<std::net::IpAddr>,
    /// The watcher's changed paths, when one is followed.
    changed_paths: Option<ChangedPaths>,
}

struct FileReport {
    diagnostics: Vec<Diagnostic>,
    kept_last_good: bool,
}

impl ConfigStore {
    /// A store over `dir` (read on [`ConfigStore::reload`]) with the
    /// default [`Limits`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_limits(dir, Limits::default())
    }

    /// A store over `dir` whose files are read within `limits`.
    pub fn with_limits(dir: impl Into<PathBuf>, limits: Limits) -> Self {
        Self {
            dir: dir.into(),
            limits,
            last_good: BTreeMap::new(),
            last_inputs: None,
            reports: BTreeMap::new(),
            node_ips: Vec::new(),
            changed_paths: None,
        }
    }

    /// The node's own addresses: an endpoint at one of them is rejected
    /// like a loopback one (see `strait_config::validate::special_ip`).
    pub fn with_node_addresses(mut self, ips: Vec<std::net::IpAddr>) -> Self {
        self.node_ips = ips;
        self
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Follows a watcher's changed paths: from now on a reload re-reads
    /// only the files the watcher named since the previous reload (the
    /// whole directory when it named a directory — a hidden one too, such
    /// as a ConfigMap volume's `..data` link — or lost events; hidden
    /// files, such as an atomic writer's temporary file, and other
    /// non-YAML files are not read). Call it before the watch starts noting; changes
    /// between the last reload and then are not seen.
    pub fn follow(&mut self, changed: ChangedPaths) {
        self.changed_paths = Some(changed);
    }

    /// Reads the directory's `*.yaml` / `*.yml` files (sorted, like
    /// `kubectl apply -f DIR`; regular files only, within the limits) and
    /// returns the resources to serve: every file without a followed
    /// watcher ([`ConfigStore::follow`]), else only the files it named.
    /// See [`Reload::unchanged`] and [`Reload::listing_failed`].
    pub fn reload(&mut self) -> Reload {
        if let Some(paths) = self.changed_paths.as_ref().and_then(ChangedPaths::take) {
            if self.last_inputs.is_some() {
                if let Some(r) = self.reload_paths(&paths) {
                    return r;
                }
                tracing::debug!(
                    "a changed path is not a YAML file: reading the whole config directory"
                );
            }
        }
        self.reload_all()
    }

    /// Re-reads only `paths` (the watcher's); `None` when one of them is
    /// not a plain YAML file path below the directory (then the whole
    /// directory is read).
    fn reload_paths(&mut self, paths: &BTreeSet<PathBuf>) -> Option<Reload> {
        let known = self.last_inputs.as_ref()?;
        // Each file's new bytes; `None`: the file is gone.
        let mut files: Vec<(PathBuf, Option<Result<String, String>>)> = Vec::new();
        for p in paths {
            let rel = p.strip_prefix(&self.dir).ok()?;
            if rel.as_os_str().is_empty() {
                return None;
            }
            // Below a hidden name: not read by a listing either, unless it
            // is a directory (a ConfigMap volume's `..data` link swap).
            let mut under = self.dir.clone();
            let below_hidden = rel.components().any(|c| {
                under.push(c);
                hidden(c.as_os_str())
            });
            if below_hidden {
                match std::fs::metadata(&under) {
                    Ok(m) if m.is_dir() => return None,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(_) => return None,
                }
            }
            let yaml = is_yaml(p);
            match std::fs::symlink_metadata(p) {
                Ok(_) if p.is_dir() => return None,
                Ok(_) if !yaml => {}
                Ok(_) => files.push((p.clone(), Some(self.read(p)))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if yaml {
                        files.push((p.clone(), None));
                    } else if known.keys().any(|k| k.starts_with(p)) {
                        // A directory that went.
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
        let same = |f: &PathBuf, new: &Option<Result<String, String>>| match (known.get(f), new) {
            (None, None) => true,
            (Some(Ok(a)), Some(Ok(b))) => a == b,
            _ => false,
        };
        let mut out = Reload::default();
        if files.iter().all(|(f, new)| same(f, new)) {
            out.unchanged = true;
            return Some(out);
        }
        let mut changed = Changed::default();
        let changed_files: Vec<_> = files.into_iter().filter(|(f, new)| !same(f, new)).collect();
        for (f, new) in changed_files {
            match new {
                None => {
                    if let Some(known) = self.last_inputs.as_mut() {
                        known.remove(&f);
                    }
                    self.reports.remove(&f);
                    if let Some(gone) = self.last_good.remove(&f) {
                        changed.removed.extend(gone.iter().cloned());
                    }
                }
                Some(text) => {
                    let prev = self.last_good.remove(&f);
                    let (keep, report) = self.load_file(&f, &text, prev.as_ref());
                    resource_changes(
                        prev.as_deref().map_or(&[], Vec::as_slice),
                        keep.as_deref().map_or(&[], Vec::as_slice),
                        &mut changed,
                    );
                    if let Some(known) = self.last_inputs.as_mut() {
                        known.insert(f.clone(), text);
                    }
                    self.reports.insert(f.clone(), report);
                    if let Some(keep) = keep {
                        self.last_good.insert(f, keep);
                    }
                }
            }
        }
        self.report_into(&mut out);
        out.changed = Some(changed);
        out.resources = self.resources();
        Some(out)
    }

    /// Reads one file within the limits.
    fn read(&self, f: &Path) -> Result<String, String> {
        read_file(f, &self.limits).map_err(|e| match e {
            ReadError::Io(e) => format!("cannot read: {e}"),
            e => e.to_string(),
        })
    }

    /// The resources to serve: every file's last good list, shared.
    fn resources(&self) -> Resources {
        Resources(self.last_good.values().cloned().collect())
    }

    /// Every file's report (diagnostics, last good kept), in path order.
    fn report_into(&self, out: &mut Reload) {
        for (f, r) in &self.reports {
            out.diagnostics.extend(r.diagnostics.iter().cloned());
            if r.kept_last_good {
                out.kept_last_good.push(f.clone());
            }
        }
    }

    /// Loads and validates one file's new version (`text`); returns the
    /// resources to serve for it (its valid ones, or `prev` when the new
    /// version has errors and a last good one exists; `None`: nothing)
    /// and what to report.
    fn load_file(
        &self,
        f: &Path,
        text: &Result<String, String>,
        prev: Option<&Arc<Vec<Resource>>>,
    ) -> (Option<Arc<Vec<Resource>>>, FileReport) {
        let name = f.display().to_string();
        let text = match text {
            Ok(text) => text,
            Err(e) => {
                let report = FileReport {
                    diagnostics: vec![file_error(f, e.clone())],
                    kept_last_good: prev.is_some(),
                };
                return (prev.cloned(), report);
            }
        };
        let loaded = strait_config::load::load_str_with(text, &name, &self.limits);
        let mut errors: Vec<Diagnostic> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .cloned()
            .collect();
        let mut valid = Vec::new();
        for r in loaded.resources {
            let errs: Vec<Diagnostic> =
                strait_config::validate::validate_resource_on_node(&r, &self.node_ips)
                    .into_iter()
                    .filter(Diagnostic::is_error)
                    .collect();
            if errs.is_empty() {
                valid.push(r);
            } else {
                errors.extend(errs);
            }
        }
        let mut diagnostics: Vec<Diagnostic> = loaded
            .diagnostics
            .into_iter()
            .filter(|d| !d.is_error())
            .collect();
        let mut kept_last_good = false;
        let keep = if errors.is_empty() {
            Arc::new(valid)
        } else if let Some(prev) = prev {
            kept_last_good = true;
            prev.clone()
        } else {
            Arc::new(valid)
        };
        diagnostics.extend(errors);
        (
            Some(keep),
            FileReport {
                diagnostics,
                kept_last_good,
            },
        )
    }

    /// Lists and reads every file (see [`ConfigStore::reload`]).
    fn reload_all(&mut self) -> Reload {
        let mut out = Reload::default();
        let mut files = Vec::new();
        if let Err(e) = yaml_files(&self.dir, &mut files) {
            out.diagnostics.push(file_error(
                &self.dir,
                format!(
                    "cannot list the config directory: {e}; the last good config keeps serving"
                ),
            ));
            out.listing_failed = true;
            out.kept_last_good = self.last_good.keys().cloned().collect();
            out.resources = self.resources();
            // Read everything again on the next change, even if identical.
            self.last_inputs = None;
            return out;
        }
        let inputs: Inputs = files
            .into_iter()
            .map(|f| {
                let text = self.read(&f);
                (f, text)
            })
            .collect();
        if self.last_inputs.as_ref() == Some(&inputs) {
            out.unchanged = true;
            return out;
        }
        let mut next = BTreeMap::new();
        let mut reports = BTreeMap::new();
        let mut changed = self.last_inputs.is_some().then(Changed::default);
        let previous = self.last_inputs.take().unwrap_or_default();
        for (f, text) in &inputs {
            // Same bytes as last time: same resources, same report.
            if let (Ok(t), Some(Ok(p))) = (text, previous.get(f)) {
                if p == t {
                    if let (Some(keep), Some(report)) =
                        (self.last_good.remove(f), self.reports.remove(f))
                    {
                        next.insert(f.clone(), keep);
                        reports.insert(f.clone(), report);
                        continue;
                    }
                }
            }
            let prev = self.last_good.remove(f);
            let (keep, report) = self.load_file(f, text, prev.as_ref());
            if let Some(c) = changed.as_mut() {
                resource_changes(
                    prev.as_deref().map_or(&[], Vec::as_slice),
                    keep.as_deref().map_or(&[], Vec::as_slice),
                    c,
                );
            }
            reports.insert(f.clone(), report);
            if let Some(keep) = keep {
                next.insert(f.clone(), keep);
            }
        }
        if let Some(c) = changed.as_mut() {
            // Files that went, with their resources.
            for (f, gone) in std::mem::take(&mut self.last_good) {
                if !next.contains_key(&f) {
                    c.removed.extend(gone.iter().cloned());
                }
            }
        }
        out.changed = changed;
        self.last_good = next;
        self.reports = reports;
        self.last_inputs = Some(inputs);
        self.report_into(&mut out);
        out.resources = self.resources();
        out
    }
}

fn hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Adds to `out` the resources of one file that differ between its
/// `before` and `after` versions (compared by content: a document that only
/// moved to another line is unchanged).
fn resource_changes(before: &[Resource], after: &[Resource], out: &mut Changed) {
    let mut old: std::collections::HashMap<String, Vec<&Resource>> =
        std::collections::HashMap::new();
    for r in before {
        old.entry(r.key()).or_default().push(r);
    }
    for r in after {
        let same = old.get_mut(&r.key()).and_then(|list| {
            let i = list.iter().position(|o| o.object == r.object)?;
            Some(list.swap_remove(i))
        });
        if same.is_none() {
            out.added.push(r.clone());
        }
    }
    out.removed.extend(old.into_values().flatten().cloned());
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.file_name().is_some_and(hidden) {
            continue;
        }
        if p.is_dir() {
            yaml_files(&p, out)?;
        } else if is_yaml(&p) {
            out.push(p);
        }
    }
    Ok(())
}

fn file_error(p: &Path, message: String) -> Diagnostic {
    Diagnostic {
        level: strait_config::Level::Error,
        code: None,
        origin: Some(strait_config::Origin {
            file: p.display().to_string(),
            line: 0,
        }),
        resource: None,
        field: None,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n";
    const BAD_VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1.0}\n";

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tempdir(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("strait-store-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn subset(r: &Reload) -> Option<String> {
        r.resources.iter().find_map(|r| match &r.object {
            strait_config::Object::VirtualService(vs) => {
                vs.spec.http[0].route[0].destination.subset.clone()
            }
            _ => None,
        })
    }

    #[test]
    fn a_broken_edit_keeps_the_files_last_good_version() {
        let d = tempdir("edit");
        std::fs::write(d.0.join("vs.yaml"), GOOD_VS).unwrap();
        let mut store = ConfigStore::new(&d.0);
        let first = store.reload();
        assert!(
            first.diagnostics.iter().all(|d| !d.is_error()),
            "{:?}",
            first.diagnostics
        );
        assert_eq!(subset(&first).as_deref(), Some("v1"));

        std::fs::write(d.0.join("vs.yaml"), BAD_VS).unwrap();
        let second = store.reload();
        let err = second
            .diagnostics
            .iter()
            .find(|d| d.is_error())
            .expect("an error");
        let text = err.to_string();
        assert!(
            text.contains("vs.yaml") && text.contains("VirtualService/default/reviews"),
            "{text}"
        );
        assert!(text.contains("subset name is invalid: v1.0"), "{text}");
        assert_eq!(second.kept_last_good, vec![d.0.join("vs.yaml")]);
        assert_eq!(
            subset(&second).as_deref(),
            Some("v1"),
            "last good version no longer served"
        );
    }

    #[test]
    fn a_new_invalid_file_is_reported_and_the_rest_still_loads() {
        let d = tempdir("new");
        std::fs::write(d.0.join("a.yaml"), GOOD_VS).unwrap();
        std::fs::write(d.0.join("b.yaml"), "kind: [unclosed\n").unwrap();
        let mut store = ConfigStore::new(&d.0);
        let r = store.reload();
        assert!(r
            .diagnostics
            .iter()
            .any(|d| d.is_error() && d.to_string().contains("b.yaml")));
        assert_eq!(subset(&r).as_deref(), Some("v1"));
        assert!(r.kept_last_good.is_empty());
    }

    #[test]
    fn identical_inputs_are_not_parsed_again() {
        let d = tempdir("same");
        std::fs::write(d.0.join("vs.yaml"), GOOD_VS).unwrap();
        let mut store = ConfigStore::new(&d.0);
        assert!(!store.reload().unchanged);
        // Rewritten with the same bytes (an editor's save, a touch).
        std::fs::write(d.0.join("vs.yaml"), GOOD_VS).unwrap();
        let again = store.reload();
        assert!(again.unchanged && again.resources.is_empty());
        std::fs::write(
            d.0.join("vs.yaml"),
            GOOD_VS.replace("subset: v1", "subset: v2"),
        )
        .unwrap();
        let changed = store.reload();
        assert!(!changed.unchanged);
        assert_eq!(subset(&changed).as_deref(), Some("v2"));
    }

    #[test]
    fn a_reload_names_the_resources_that_changed() {
        let d = tempdir("changed");
        let svc = |ip: &str| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: default}}\nspec: {{clusterIP: 10.96.0.10, ports: [{{port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: api-1, namespace: default, labels: {{kubernetes.io/service-name: api}}}}\naddressType: IPv4\nendpoints: [{{addresses: [\"{ip}\"]}}]\n")
        };
        std::fs::write(d.0.join("api.yaml"), svc("10.1.0.1")).unwrap();
        std::fs::write(d.0.join("vs.yaml"), GOOD_VS).unwrap();
        let mut store = ConfigStore::new(&d.0);
        assert!(store.reload().changed.is_none(), "first load: unknown");
        std::fs::write(d.0.join("api.yaml"), svc("10.1.0.2")).unwrap();
        let r = store.reload();
        let c = r.changed.expect("known after the first load");
        let keys = |v: &[Resource]| v.iter().map(Resource::key).collect::<Vec<_>>();
        // Only the slice: the Service in the same file and the other file
        // are unchanged.
        assert_eq!(keys(&c.removed), ["EndpointSlice/default/api-1"]);
        assert_eq!(keys(&c.added), ["EndpointSlice/default/api-1"]);
        assert_eq!(r.resources.len(), 3);
        std::fs::remove_file(d.0.join("vs.yaml")).unwrap();
        let c = store.reload().changed.unwrap();
        assert_eq!(keys(&c.removed), ["VirtualService/default/reviews"]);
        assert!(c.added.is_empty());
    }

    #[test]
    fn a_followed_store_reads_only_the_files_the_watcher_named() {
        let d = tempdir("follow");
        std::fs::write(d.0.join("a.yaml"), GOOD_VS).unwrap();
        std::fs::write(d.0.join("b.yaml"), GOOD_VS.replace("reviews", "ratings")).unwrap();
        let paths = ChangedPaths::default();
        let mut store = ConfigStore::new(&d.0);
        store.follow(paths.clone());
        assert_eq!(store.reload().resources.len(), 2);
        // b.yaml changes on disk, but the watcher named only a.yaml: b's
        // new version is not read (proof that only named files are).
        std::fs::write(
            d.0.join("a.yaml"),
            GOOD_VS.replace("subset: v1", "subset: v2"),
        )
        .unwrap();
        std::fs::write(d.0.join("b.yaml"), BAD_VS.replace("reviews", "ratings")).unwrap();
        paths.note(&[d.0.join("a.yaml")]);
        let r = store.reload();
        assert_eq!(subset(&r).as_deref(), Some("v2"));
        assert!(
            r.diagnostics.iter().all(|d| !d.is_error()),
            "{:?}",
            r.diagnostics
        );
        let c = r.changed.expect("named");
        let keys = |v: &[Resource]| v.iter().map(Resource::key).collect::<Vec<_>>();
        assert_eq!(keys(&c.added), ["VirtualService/default/reviews"]);
        // Nothing named: nothing read, nothing changed.
        assert!(store.reload().unchanged);
        // Named with the same bytes: unchanged.
        paths.note(&[d.0.join("a.yaml")]);
        assert!(store.reload().unchanged);
        // b.yaml named now: its error is reported with the file and
        // resource, its last good version kept.
        paths.note(&[d.0.join("b.yaml")]);
        let r = store.reload();
        let err = r
            .diagnostics
            .iter()
            .find(|d| d.is_error())
            .expect("an error");
        assert!(
            err.to_string().contains("b.yaml")
                && err.to_string().contains("VirtualService/default/ratings"),
            "{err}"
        );
        assert_eq!(r.kept_last_good, vec![d.0.join("b.yaml")]);
        assert_eq!(r.resources.len(), 2);
        // A removed file, and a new one.
        std::fs::remove_file(d.0.join("a.yaml")).unwrap();
        std::fs::write(d.0.join("c.yml"), GOOD_VS.replace("reviews", "details")).unwrap();
        paths.note(&[d.0.join("a.yaml"), d.0.join("c.yml")]);
        let r = store.reload();
        let c = r.changed.expect("named");
        assert_eq!(keys(&c.removed), ["VirtualService/default/reviews"]);
        assert_eq!(keys(&c.added), ["VirtualService/default/details"]);
        assert_eq!(r.resources.len(), 2);
        // The error of b.yaml, which was not named, is still reported.
        assert_eq!(r.kept_last_good, vec![d.0.join("b.yaml")]);
    }

    #[test]
    fn a_named_directory_hidden_path_or_lost_events_read_everything() {
        let d = tempdir("follow-full");
        std::fs::write(d.0.join("a.yaml"), GOOD_VS).unwrap();
        let paths = ChangedPaths::default();
        let mut store = ConfigStore::new(&d.0);
        store.follow(paths.clone());
        store.reload();
        let v = |n: usize| GOOD_VS.replace("subset: v1", &format!("subset: v{n}"));
        // A new directory with a file (the watch may miss the file's own
        // events): the whole directory is read.
        std::fs::create_dir(d.0.join("sub")).unwrap();
        std::fs::write(
            d.0.join("sub/b.yaml"),
            GOOD_VS.replace("reviews", "ratings"),
        )
        .unwrap();
        std::fs::write(d.0.join("a.yaml"), v(2)).unwrap();
        paths.note(&[d.0.join("sub")]);
        let r = store.reload();
        assert_eq!((r.resources.len(), subset(&r).as_deref()), (2, Some("v2")));
        // A ConfigMap volume swaps its hidden `..data` link (a directory).
        std::fs::create_dir(d.0.join("..2026_12_05")).unwrap();
        std::os::unix::fs::symlink("..2026_12_05", d.0.join("..data")).unwrap();
        std::fs::write(d.0.join("a.yaml"), v(3)).unwrap();
        paths.note(&[d.0.join("..data")]);
        assert_eq!(subset(&store.reload()).as_deref(), Some("v3"));
        // An atomic writer's hidden temporary file, renamed into place:
        // only the file it became is read.
        std::fs::write(d.0.join(".a.yaml.tmp"), v(6)).unwrap();
        std::fs::rename(d.0.join(".a.yaml.tmp"), d.0.join("a.yaml")).unwrap();
        paths.note(&[d.0.join(".a.yaml.tmp"), d.0.join("a.yaml")]);
        let r = store.reload();
        assert_eq!(subset(&r).as_deref(), Some("v6"));
        assert_eq!(r.changed.expect("named").added.len(), 1);
        // Lost events (queue overflow).
        std::fs::write(d.0.join("a.yaml"), v(4)).unwrap();
        paths.note_unknown();
        assert_eq!(subset(&store.reload()).as_deref(), Some("v4"));
        // A non-YAML file: ignored, nothing read.
        std::fs::write(d.0.join("a.yaml"), v(5)).unwrap();
        std::fs::write(d.0.join("notes.txt"), "x").unwrap();
        paths.note(&[d.0.join("notes.txt")]);
        assert!(store.reload().unchanged);
    }

    #[test]
    fn a_directory_that_cannot_be_listed_keeps_the_last_good_config() {
        let d = tempdir("listing");
        std::fs::write(d.0.join("vs.yaml"), GOOD_VS).unwrap();
        let mut store = ConfigStore::new(&d.0);
        assert_eq!(subset(&store.reload()).as_deref(), Some("v1"));
        // The directory replaced by a file: listing fails with ENOTDIR.
        std::fs::remove_dir_all(&d.0).unwrap();
        std::fs::write(&d.0, "not a directory").unwrap();
        let r = store.reload();
        std::fs::remove_file(&d.0).unwrap();
        std::fs::create_dir_all(&d.0).unwrap();
        assert!(r.listing_failed);
        assert_eq!(
            subset(&r).as_deref(),
            Some("v1"),
            "last good config dropped"
        );
        let err = r
            .diagnostics
            .iter()
            .find(|d| d.is_error())
            .expect("an error");
        assert!(
            err.to_string().contains("cannot list the config directory"),
            "{err}"
        );
        // Listing works again: the directory (now empty) is served.
        let r = store.reload();
        assert!(!r.listing_failed && r.resources.is_empty());
    }

    #[test]
    fn a_fifo_is_reported_and_a_reload_does_not_block() {
        let d = tempdir("fifo");
        std::fs::write(d.0.join("a.yaml"), GOOD_VS).unwrap();
        let c = std::ffi::CString::new(d.0.join("b.yaml").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = d.0.clone();
        std::thread::spawn(move || tx.send(ConfigStore::new(dir).reload()).unwrap());
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the reload blocked on a FIFO");
        assert_eq!(subset(&r).as_deref(), Some("v1"));
        assert!(r
            .diagnostics
            .iter()
            .any(|e| e.to_string().contains("b.yaml") && e.to_string().contains("FIFO")));
    }

    #[test]
    fn unchanged_files_are_served_and_reported_as_before() {
        let d = tempdir("unchanged");
        std::fs::write(d.0.join("a.yaml"), GOOD_VS).unwrap();
        std::fs::write(d.0.join("b.yaml"), GOOD_VS.replace("reviews", "ratings")).unwrap();
        let mut store = ConfigStore::new(&d.0);
        store.reload();
        std::fs::write(d.0.join("a.yaml"), BAD_VS).unwrap();
        let bad = store.reload();
        // Another file changes, a.yaml does not: a.yaml's resources, error
        // and last good version are as before.
        std::fs::write(d.0.join("b.yaml"), GOOD_VS.replace("reviews", "details")).unwrap();
        let again = store.reload();
        assert!(!again.unchanged);
        assert_eq!(subset(&again).as_deref(), Some("v1"));
        assert_eq!(again.kept_last_good, bad.kept_last_good);
        let errors = |r: &Reload| {
            r.diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(errors(&again), errors(&bad));
        assert_eq!(again.resources.len(), 2);
        // Fixed on disk: read again.
        std::fs::write(
            d.0.join("a.yaml"),
            GOOD_VS.replace("subset: v1", "subset: v2"),
        )
        .unwrap();
        let fixed = store.reload();
        assert_eq!(subset(&fixed).as_deref(), Some("v2"));
        assert!(fixed.kept_last_good.is_empty());
    }
}
