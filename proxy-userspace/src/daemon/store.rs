//! The config directory with "last good" semantics, per file.
//!
//! A file whose new version has an error (YAML that does not parse, or a
//! resource Istio's validation rejects) keeps serving its last good version,
//! the way `kubectl apply` of a bad manifest leaves the cluster's objects as
//! they were. A new file with errors contributes only its valid resources.
//! Every error is reported with file, line, `Kind/namespace/name` and field.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
}

/// The config directory and each file's last good resources.
pub struct ConfigStore {
    dir: PathBuf,
    last_good: BTreeMap<PathBuf, Vec<Resource>>,
    /// Each file's text at the last reload and what reading it reported
    /// (diagnostics, whether its last good version was kept): a file whose
    /// text has not changed is not parsed or validated again.
    seen: BTreeMap<PathBuf, Seen>,
}

struct Seen {
    text: String,
    diagnostics: Vec<Diagnostic>,
    kept_last_good: bool,
}

impl ConfigStore {
    /// A store over `dir` (read on [`ConfigStore::reload`]).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            last_good: BTreeMap::new(),
            seen: BTreeMap::new(),
        }
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads every `*.yaml` / `*.yml` below the directory (sorted, like
    /// `kubectl apply -f DIR`) and returns the resources to serve.
    pub fn reload(&mut self) -> Reload {
        let mut out = Reload::default();
        let mut files = Vec::new();
        if let Err(e) = yaml_files(&self.dir, &mut files) {
            out.diagnostics
                .push(file_error(&self.dir, format!("cannot read: {e}")));
        }
        let mut next = BTreeMap::new();
        let mut seen = BTreeMap::new();
        for f in files {
            let name = f.display().to_string();
            let text = std::fs::read_to_string(&f);
            // Unchanged since the last reload: same resources, same report.
            if let (Ok(text), Some(prev)) = (&text, self.seen.remove(&f)) {
                if *text == prev.text {
                    if let Some(keep) = self.last_good.remove(&f) {
                        out.diagnostics.extend(prev.diagnostics.iter().cloned());
                        if prev.kept_last_good {
                            out.kept_last_good.push(f.clone());
                        }
                        next.insert(f.clone(), keep);
                        seen.insert(f, prev);
                        continue;
                    }
                }
            }
            let loaded = match text {
                Ok(ref text) => strait_config::load::load_str(text, &name),
                Err(e) => {
                    out.diagnostics
                        .push(file_error(&f, format!("cannot read: {e}")));
                    if let Some(prev) = self.last_good.remove(&f) {
                        out.kept_last_good.push(f.clone());
                        next.insert(f, prev);
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
                let errs: Vec<Diagnostic> = strait_config::validate::validate_resource(&r)
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
            } else if let Some(prev) = self.last_good.remove(&f) {
                out.kept_last_good.push(f.clone());
                kept_last_good = true;
                prev
            } else {
                valid
            };
            out.diagnostics.extend(errors);
            if let Ok(text) = text {
                let diagnostics = out.diagnostics[first..].to_vec();
                seen.insert(
                    f.clone(),
                    Seen {
                        text,
                        diagnostics,
                        kept_last_good,
                    },
                );
            }
            next.insert(f, keep);
        }
        self.last_good = next;
        self.seen = seen;
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
    fn unchanged_files_are_served_and_reported_as_before() {
        let d = tempdir("unchanged");
        std::fs::write(d.0.join("a.yaml"), GOOD_VS).unwrap();
        let mut store = ConfigStore::new(&d.0);
        store.reload();
        std::fs::write(d.0.join("a.yaml"), BAD_VS).unwrap();
        let bad = store.reload();
        // Nothing changed on disk: the same resources, the same error, the
        // same last good version.
        let again = store.reload();
        assert_eq!(subset(&again).as_deref(), Some("v1"));
        assert_eq!(again.kept_last_good, bad.kept_last_good);
        assert_eq!(
            again
                .diagnostics
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>(),
            bad.diagnostics
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
        );
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
