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
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strait_config::load::{read_file, Limits, ReadError};
use strait_config::{Diagnostic, Resource};

/// What one reload produced.
#[derive(Debug, Default)]
pub struct Reload {
    /// The resources to compile: every file's current or last good version.
    pub resources: Vec<Resource>,
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

/// One reload's raw inputs: each file's bytes or its read error.
type Inputs = Vec<(PathBuf, Result<String, String>)>;

/// The config directory and each file's last good resources.
pub struct ConfigStore {
    dir: PathBuf,
    limits: Limits,
    last_good: BTreeMap<PathBuf, Vec<Resource>>,
    last_inputs: Option<Inputs>,
    /// What reading each file reported at the last reload (diagnostics,
    /// whether its last good version was kept), reused with its resources
    /// while the file's bytes stay the same.
    reports: BTreeMap<PathBuf, FileReport>,
    node_ips: Vec<std::net::IpAddr>,
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

    /// Reads every `*.yaml` / `*.yml` below the directory (sorted, like
    /// `kubectl apply -f DIR`; regular files only, within the limits) and
    /// returns the resources to serve. See [`Reload::unchanged`] and
    /// [`Reload::listing_failed`].
    pub fn reload(&mut self) -> Reload {
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
            out.resources = self.last_good.values().flatten().cloned().collect();
            // Read everything again on the next change, even if identical.
            self.last_inputs = None;
            return out;
        }
        let inputs: Inputs = files
            .into_iter()
            .map(|f| {
                let text = read_file(&f, &self.limits).map_err(|e| match e {
                    ReadError::Io(e) => format!("cannot read: {e}"),
                    e => e.to_string(),
                });
                (f, text)
            })
            .collect();
        if self.last_inputs.as_ref() == Some(&inputs) {
            out.unchanged = true;
            return out;
        }
        let mut next = BTreeMap::new();
        let mut reports = BTreeMap::new();
        let previous: std::collections::HashMap<&PathBuf, &String> = self
            .last_inputs
            .iter()
            .flatten()
            .filter_map(|(f, t)| Some((f, t.as_ref().ok()?)))
            .collect();
        for (f, text) in &inputs {
            let name = f.display().to_string();
            // Same bytes as last time: same resources, same report.
            if let Ok(t) = text {
                if previous.get(f).is_some_and(|p| *p == t) {
                    if let (Some(keep), Some(report)) =
                        (self.last_good.remove(f), self.reports.remove(f))
                    {
                        out.diagnostics.extend(report.diagnostics.iter().cloned());
                        if report.kept_last_good {
                            out.kept_last_good.push(f.clone());
                        }
                        next.insert(f.clone(), keep);
                        reports.insert(f.clone(), report);
                        continue;
                    }
                }
            }
            let loaded = match text {
                Ok(text) => strait_config::load::load_str_with(text, &name, &self.limits),
                Err(e) => {
                    out.diagnostics.push(file_error(f, e.clone()));
                    if let Some(prev) = self.last_good.remove(f) {
                        out.kept_last_good.push(f.clone());
                        next.insert(f.clone(), prev);
                    }
                    continue;
                }
            };
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
            let first = out.diagnostics.len();
            out.diagnostics
                .extend(loaded.diagnostics.into_iter().filter(|d| !d.is_error()));
            let mut kept_last_good = false;
            let keep = if errors.is_empty() {
                valid
            } else if let Some(prev) = self.last_good.remove(f) {
                out.kept_last_good.push(f.clone());
                kept_last_good = true;
                prev
            } else {
                valid
            };
            out.diagnostics.extend(errors);
            reports.insert(
                f.clone(),
                FileReport {
                    diagnostics: out.diagnostics[first..].to_vec(),
                    kept_last_good,
                },
            );
            next.insert(f.clone(), keep);
        }
        self.last_good = next;
        self.reports = reports;
        self.last_inputs = Some(inputs);
        out.resources = self.last_good.values().flatten().cloned().collect();
        out
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            yaml_files(&p, out)?;
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
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
