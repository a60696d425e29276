//! Layouts of the pinned maps, and what a starting daemon does with pins
//! an earlier build left: reuse them, migrate them, or refuse to start —
//! decided for every map before anything is touched.
//!
//! A map's layout is what the kernel knows of it (type, key size, value
//! size, capacity, flags; `bpf_map_info`) plus the meaning of its entries,
//! a version per map kept by hand in [`proxy_common::layout`]. This build's
//! layouts are read from the embedded eBPF object's own map declarations,
//! so a changed declaration (e.g. a hash made per-CPU) is caught without
//! anyone remembering to bump anything. Versions are recorded beside the
//! pins as empty directories `<pin dir>/layout/<MAP>@<version>` (bpffs
//! holds only pins and directories); a pinned map without a record was
//! written by a build before versions existed and counts as version 1.
//!
//! Cilium refuses the same way when a pinned map's properties differ
//! (`bpf.OpenOrCreate` then `--bpf-*-map-max` mismatch handling) and, for
//! a capacity change, creates a new map and copies the old entries
//! (`pkg/maps/ctmap` migration); Strait does the copy for a grown capacity
//! only.
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// One map's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    /// `bpf_map_type` number.
    pub map_type: u32,
    /// Key size, bytes.
    pub key_size: u32,
    /// Value size, bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// Capacity, entries.
    pub max_entries: u32,
    /// `map_flags` (e.g. `BPF_F_NO_PREALLOC` = 1).
    pub flags: u32,
    /// Meaning of the entries ([`proxy_common::layout_version`]).
    pub version: u32,
}

/// `bpf_map_type` numbers of the types Strait pins.
mod ty {
    pub const HASH: u32 = 1;
    pub const ARRAY: u32 = 2;
    pub const PERCPU_HASH: u32 = 5;
    pub const PERCPU_ARRAY: u32 = 6;
    pub const LRU_HASH: u32 = 9;
    pub const LRU_PERCPU_HASH: u32 = 10;
    pub const LPM_TRIE: u32 = 11;
}

fn type_name(t: u32) -> String {
    match t {
        ty::HASH => "hash".into(),
        ty::ARRAY => "array".into(),
        ty::PERCPU_HASH => "percpu_hash".into(),
        ty::PERCPU_ARRAY => "percpu_array".into(),
        ty::LRU_HASH => "lru_hash".into(),
        ty::LRU_PERCPU_HASH => "lru_percpu_hash".into(),
        ty::LPM_TRIE => "lpm_trie".into(),
        n => format!("map type {n}"),
    }
}

impl Layout {
    /// Whether lookups return one value per CPU.
    pub fn per_cpu(&self) -> bool {
        matches!(
            self.map_type,
            ty::PERCPU_HASH | ty::PERCPU_ARRAY | ty::LRU_PERCPU_HASH
        )
    }

    /// Whether a map of layout `self` can be copied entry by entry into a
    /// map of layout `new`: everything equal but a larger capacity.
    fn migrates_to(&self, new: &Layout) -> bool {
        let same = Layout {
            max_entries: new.max_entries,
            ..*self
        };
        same == *new
            && new.max_entries > self.max_entries
            && matches!(
                self.map_type,
                ty::HASH
                    | ty::ARRAY
                    | ty::PERCPU_HASH
                    | ty::PERCPU_ARRAY
                    | ty::LRU_HASH
                    | ty::LRU_PERCPU_HASH
                    | ty::LPM_TRIE
            )
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, key {} B, value {} B, {} entries, flags {:#x}, layout version {}",
            type_name(self.map_type),
            self.key_size,
            self.value_size,
            self.max_entries,
            self.flags,
            self.version
        )
    }
}

/// Every map the loader pins: the socket data path's
/// ([`proxy_common::PINNED_MAPS`], [`proxy_common::PINNED_MAPS6`]) and the
/// uplink XDP program's
/// ([`proxy_common::PINNED_XDP_MAPS`]).
pub(super) fn pinned_maps() -> impl Iterator<Item = &'static str> {
    proxy_common::PINNED_MAPS
        .iter()
        .chain(proxy_common::PINNED_MAPS6.iter())
        .chain(proxy_common::PINNED_XDP_MAPS.iter())
        .copied()
}

/// This build's layout of every pinned map, from the eBPF object `object`.
///
/// Errors: the object cannot be parsed or lacks a pinned map.
pub(super) fn expected(object: &[u8]) -> anyhow::Result<BTreeMap<&'static str, Layout>> {
    let obj = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
    let mut out = BTreeMap::new();
    for name in pinned_maps() {
        let m = obj
            .maps
            .get(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))?;
        out.insert(
            name,
            Layout {
                map_type: m.map_type(),
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries: m.max_entries(),
                flags: m.map_flags(),
                version: proxy_common::layout_version(name),
            },
        );
    }
    Ok(out)
}

/// Where the version records live.
fn records(pin_dir: &Path) -> PathBuf {
    pin_dir.join("layout")
}

/// The version recorded for `name`, if any.
fn recorded_version(pin_dir: &Path, name: &str) -> Option<u32> {
    let prefix = format!("{name}@");
    std::fs::read_dir(records(pin_dir))
        .ok()?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse::<u32>()
                .ok()
        })
        .max()
}

/// The layout of the map pinned at `<pin_dir>/<name>`, or `None` when
/// nothing is pinned there.
///
/// Errors: the pin is not a map or cannot be read.
pub(super) fn pinned(pin_dir: &Path, name: &str) -> anyhow::Result<Option<Layout>> {
    let path = pin_dir.join(name);
    if !path.exists() {
        return Ok(None);
    }
    let info = aya::maps::MapInfo::from_pin(&path)
        .with_context(|| format!("reading the pinned map {}", path.display()))?;
    let map_type = info
        .map_type()
        .with_context(|| format!("reading the pinned map {}", path.display()))?;
    Ok(Some(Layout {
        map_type: map_type as u32,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
        version: recorded_version(pin_dir, name).unwrap_or(1),
    }))
}

/// Records this build's version of every map in `want`, replacing older
/// records.
///
/// Errors: a record directory cannot be created.
pub(super) fn record_versions(
    pin_dir: &Path,
    want: &BTreeMap<&'static str, Layout>,
) -> anyhow::Result<()> {
    let dir = records(pin_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, layout) in want {
        let keep = format!("{name}@{}", layout.version);
        let prefix = format!("{name}@");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let f = e.file_name();
                let Some(f) = f.to_str() else { continue };
                if f.starts_with(&prefix) && f != keep {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let path = dir.join(&keep);
        if !path.exists() {
            std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        }
    }
    Ok(())
}

/// Pins directly under `pin_dir` that are no map of this build (left by a
/// build that had more maps): not used, not removed.
pub(super) fn unknown_pins(pin_dir: &Path) -> Vec<String> {
    let known: std::collections::HashSet<&str> = pinned_maps().collect();
    let mut out: Vec<String> = std::fs::read_dir(pin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !known.contains(n.as_str()))
        .collect();
    out.sort();
    out
}

/// What to do with one pinned map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Nothing pinned: the loader creates and pins it.
    Create,
    /// Same layout: reused as it is.
    Reuse,
    /// A grown capacity: a new map is created and the old entries copied.
    Migrate { old: Layout },
    /// A layout that cannot be migrated, replaced by an empty map
    /// (`--reset-maps`).
    Reset { old: Layout },
}

/// The decision for every pinned map, made before anything is touched.
#[derive(Debug)]
pub(super) struct Plan {
    /// Per map, in name order.
    pub actions: Vec<(&'static str, Layout, Action)>,
}

/// Decides what to do with each map pinned under `pin_dir` for a build
/// whose layouts are `want`: same layout → reuse; a grown capacity →
/// migrate; anything else → refuse, or with `reset` replace with an empty
/// map.
///
/// Errors (nothing changed): a pinned map cannot be read, or — without
/// `reset` — some layouts differ and cannot be migrated. The message names
/// every such map with its pinned and expected layout, and what to do.
pub(super) fn plan(
    pin_dir: &Path,
    want: &BTreeMap<&'static str, Layout>,
    reset: bool,
) -> anyhow::Result<Plan> {
    let mut actions = Vec::new();
    let mut refused = Vec::new();
    for (name, new) in want {
        let action = match pinned(pin_dir, name)? {
            None => Action::Create,
            Some(old) if old == *new => Action::Reuse,
            Some(old) if old.migrates_to(new) => Action::Migrate { old },
            Some(old) if reset => Action::Reset { old },
            Some(old) => {
                refused.push(format!(
                    "  {}\n    pinned:     {old}\n    this build: {new}",
                    pin_dir.join(name).display()
                ));
                continue;
            }
        };
        actions.push((*name, *new, action));
    }
    if !refused.is_empty() {
        bail!(
            "refusing to start: {} pinned map(s) in {} have a layout this build cannot use or migrate:\n{}\n\
             Nothing was changed; the running kernel data path keeps serving with the earlier build's programs. \
             To replace those maps with empty ones of this build's layout (the daemon refills them from the \
             configuration; kernel-balanced connections may fail until it has), start with `strait run --reset-maps`; \
             to remove the whole data path first, run `strait cleanup --node {}` (or delete {}).",
            refused.len(),
            pin_dir.display(),
            refused.join("\n"),
            pin_dir
                .file_name()
                .map_or_else(|| "<node>".into(), |n| n.to_string_lossy()),
            pin_dir.display()
        );
    }
    Ok(Plan { actions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(max_entries: u32) -> Layout {
        Layout {
            map_type: ty::HASH,
            key_size: 8,
            value_size: 16,
            max_entries,
            flags: 0,
            version: 1,
        }
    }

    #[test]
    fn only_a_grown_capacity_migrates() {
        assert!(l(10).migrates_to(&l(20)));
        assert!(!l(20).migrates_to(&l(10)), "shrinking may not fit");
        assert!(!l(10).migrates_to(&l(10)));
        let wider = Layout {
            value_size: 24,
            ..l(20)
        };
        assert!(!l(10).migrates_to(&wider));
        let per_cpu = Layout {
            map_type: ty::PERCPU_HASH,
            ..l(20)
        };
        assert!(!l(10).migrates_to(&per_cpu));
        let v2 = Layout {
            version: 2,
            ..l(20)
        };
        assert!(!l(10).migrates_to(&v2), "a new meaning is not copied");
    }

    #[test]
    fn layouts_print_every_field() {
        assert_eq!(
            l(65_536).to_string(),
            "hash, key 8 B, value 16 B, 65536 entries, flags 0x0, layout version 1"
        );
    }

    #[test]
    fn this_builds_layouts_come_from_the_object() {
        if super::super::EBPF_OBJECT.is_empty() {
            eprintln!("SKIP: built without the eBPF object");
            return;
        }
        let want = expected(super::super::EBPF_OBJECT).unwrap();
        let services = want[proxy_common::SERVICES];
        assert_eq!(services.map_type, ty::HASH);
        assert_eq!(
            services.key_size as usize,
            core::mem::size_of::<proxy_common::ServiceKey>()
        );
        assert_eq!(services.max_entries, proxy_common::MAX_SERVICES);
        assert_eq!(want[proxy_common::XLB_CONNS].map_type, ty::LRU_HASH);
        assert_eq!(want.len(), pinned_maps().count());
    }
}
