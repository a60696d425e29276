//! `cargo xtask layers`: the import rule of `proxy-userspace`, checked.
//!
//! Reads the library crate's sources (`proxy-userspace/src/lib.rs` and every
//! module file it declares) with `syn`, resolves every `crate::…`,
//! `super::…` and `self::…` path (in `use` items, in code, and inside macro
//! invocations) to the module it names, and prints the dependency graph of
//! the top-level modules. It fails when
//!
//! - two or more top-level modules import each other (a cycle), or
//! - a module imports one that [`LAYERS`] puts at the same or a higher
//!   row (an import against the declared order), or
//! - a top-level module is missing from [`LAYERS`] (every new module gets
//!   a row, so the rule keeps covering the whole crate).
//!
//! [`LAYERS`] is the one place the order is declared; ARCHITECTURE.md
//! ("Module map and the import rule") mirrors it. `--under <module>` prints
//! the graph among that module's children instead (to untangle one layer),
//! and fails on its cycles.
//!
//! Needs no build: it parses the sources only (about 0.5 s of CPU).
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use syn::visit::Visit;

/// The declared order of `proxy-userspace`'s top-level modules, top row
/// first. A module may import modules of lower rows only: never its own
/// row, never a higher one. The crate root (`lib.rs`) is above every row.
/// Mirror any change in ARCHITECTURE.md.
pub const LAYERS: &[&[&str]] = &[
    // Wiring: the only module that puts sources, datapath, identity and
    // serving together.
    &["daemon"],
    // Node-level services the daemon starts.
    &["admin", "sources", "datapath"],
    // The proxy: listeners, connections, HTTP and TCP serving.
    &["serve"],
    // Clusters' live state: registry, load balancers, pools.
    &["upstream"],
    // Original destination, sniffing, TLS (HBONE, in-pod sockets).
    &["transport"],
    // Workload identity: the CA, certificates, the node's certificate store
    // (HBONE's TLS presents and verifies them).
    &["identity"],
    // Immutable tables compiled from the snapshot (routes hold cluster ids).
    &["runtime"],
    // Security decisions (AuthorizationPolicy, RequestAuthentication).
    &["policy"],
    // The HTTP/1.1 codec (h1, head, bodies) until it is its own crate.
    &["proxy"],
    // Envoy response flags and local-reply failures; telemetry; syscalls.
    &["failure"],
    &["telemetry", "sys"],
];

/// Imports the rule tolerates for now, as (from file, to module, why).
/// Each is excluded from the graph and printed on every run; delete the
/// row when the reason is gone.
pub const EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "proxy/h1/server.rs",
        "serve",
        "the HTTP/1.1 server loop calls serve's request handler; it leaves the codec when the codec becomes its own crate",
    ),
    (
        "proxy/h1/server.rs",
        "transport",
        "the server loop recognises the HTTP/2 preface (transport::sniff); as above",
    ),
];

/// `cargo xtask layers [--under M] [--root DIR]`.
pub fn run(root: Option<PathBuf>, under: Option<String>) -> anyhow::Result<()> {
    let root = root.unwrap_or_else(crate_src);
    let tree = ModuleTree::read(&root)?;
    match under {
        None => {
            let report = check(&tree, LAYERS, EXCEPTIONS);
            print!("{}", report.text);
            if !report.errors.is_empty() {
                eprintln!(
                    "cargo xtask layers: {} layering error(s)",
                    report.errors.len()
                );
                std::process::exit(1);
            }
        }
        Some(m) => {
            let prefix: Vec<String> = m.split("::").map(str::to_owned).collect();
            let g = tree.graph(&prefix, &[]);
            let mut text = String::new();
            print_graph(&mut text, &g);
            let cycles = cycles(&g);
            for c in &cycles {
                let _ = writeln!(text, "error: import cycle: {c}");
            }
            print!("{text}");
            if !cycles.is_empty() {
                eprintln!("cargo xtask layers: {} cycle(s) under {m}", cycles.len());
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

/// The check `cargo xtask test` runs: prints the report, errors when the
/// rule is broken.
///
/// Errors: a module file cannot be read or parsed, or the rule is broken.
pub fn check_or_fail() -> anyhow::Result<()> {
    let tree = ModuleTree::read(&crate_src())?;
    let report = check(&tree, LAYERS, EXCEPTIONS);
    print!("{}", report.text);
    if !report.errors.is_empty() {
        anyhow::bail!(
            "{} layering error(s) in proxy-userspace (cargo xtask layers)",
            report.errors.len()
        );
    }
    Ok(())
}

fn crate_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .join("proxy-userspace/src")
}

/// What [`check`] found: the printed graph and the errors (also printed).
pub struct Report {
    /// Graph, exceptions and errors, as printed.
    pub text: String,
    /// One line per error.
    pub errors: Vec<String>,
}

/// Checks the top-level graph of `tree` against `layers`.
pub fn check(tree: &ModuleTree, layers: &[&[&str]], exceptions: &[(&str, &str, &str)]) -> Report {
    let g = tree.graph(&[], exceptions);
    let mut text = String::new();
    print_graph(&mut text, &g);
    for (file, to, why) in exceptions {
        let _ = writeln!(text, "exception: {file} -> {to}: {why}");
    }
    let rank = |m: &str| layers.iter().position(|row| row.contains(&m));
    let mut errors = Vec::new();
    for m in tree.top_level() {
        if rank(&m).is_none() {
            errors.push(format!(
                "module `{m}` has no row in LAYERS (xtask/src/layers.rs)"
            ));
        }
    }
    for c in cycles(&g) {
        errors.push(format!("import cycle: {c}"));
    }
    for ((from, to), sites) in &g.edges {
        if from == ROOT {
            continue;
        }
        let ok = match (rank(from), rank(to)) {
            (Some(f), Some(t)) => t > f,
            _ => to != ROOT,
        };
        if !ok {
            let site = sites.iter().next().map(String::as_str).unwrap_or("");
            errors.push(format!(
                "`{from}` imports `{to}` against the layer order ({site}{})",
                if sites.len() > 1 {
                    format!(" and {} more", sites.len() - 1)
                } else {
                    String::new()
                }
            ));
        }
    }
    for e in &errors {
        let _ = writeln!(text, "error: {e}");
    }
    if errors.is_empty() {
        let _ = writeln!(
            text,
            "ok: {} modules, {} imports between them, no cycle, all in layer order",
            g.nodes.len(),
            g.edges.len()
        );
    }
    Report { text, errors }
}

fn print_graph(out: &mut String, g: &Graph) {
    for n in &g.nodes {
        let to: Vec<&str> = g
            .edges
            .keys()
            .filter(|(f, _)| f == n)
            .map(|(_, t)| t.as_str())
            .collect();
        let _ = writeln!(
            out,
            "{n} -> {}",
            if to.is_empty() {
                "-".to_owned()
            } else {
                to.join(", ")
            }
        );
    }
}

/// The name the crate root (`lib.rs` / a layer's `mod.rs`) has in a graph.
pub const ROOT: &str = "(root)";

/// Module dependency graph at one depth.
#[derive(Debug, Default)]
pub struct Graph {
    /// Every module at that depth (and [`ROOT`] when something uses it).
    pub nodes: BTreeSet<String>,
    /// (from, to) → the `file:line` sites of the imports.
    pub edges: BTreeMap<(String, String), BTreeSet<String>>,
}

/// The import cycles of `g`, found by strongly connected components
/// (Tarjan): one per component with more than one module, as a cycle
/// through the component and the component's modules (every module that
/// is on some cycle with the others).
pub fn cycles(g: &Graph) -> Vec<Cycle> {
    let nodes: Vec<&String> = g.nodes.iter().collect();
    let index = |n: &str| nodes.iter().position(|m| m.as_str() == n);
    let mut adj = vec![Vec::new(); nodes.len()];
    for (f, t) in g.edges.keys() {
        if let (Some(a), Some(b)) = (index(f), index(t)) {
            adj[a].push(b);
        }
    }
    let sccs = tarjan(&adj);
    let mut out = Vec::new();
    for scc in sccs.into_iter().filter(|s| s.len() > 1) {
        // A cycle inside the component: walk from its first node along
        // edges that stay inside until a node repeats.
        let inside: BTreeSet<usize> = scc.iter().copied().collect();
        let start = *inside.iter().next().expect("non-empty");
        let mut path = vec![start];
        let mut cur = start;
        loop {
            let next = adj[cur]
                .iter()
                .copied()
                .filter(|n| inside.contains(n))
                .min()
                .expect("a strongly connected component has an edge out of each node");
            if let Some(pos) = path.iter().position(|&p| p == next) {
                let mut cycle: Vec<String> =
                    path[pos..].iter().map(|&i| nodes[i].clone()).collect();
                cycle.push(nodes[next].clone());
                let members = inside.iter().map(|&i| nodes[i].clone()).collect();
                out.push(Cycle {
                    path: cycle,
                    members,
                });
                break;
            }
            path.push(next);
            cur = next;
        }
    }
    out
}

/// One import cycle: a path that returns to its start, and every module
/// of the strongly connected component it was found in.
#[derive(Debug, PartialEq, Eq)]
pub struct Cycle {
    /// `a -> b -> a`.
    pub path: Vec<String>,
    /// Every module tangled with these.
    pub members: Vec<String>,
}

impl std::fmt::Display for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.join(" -> "))?;
        if self.members.len() + 1 > self.path.len() {
            write!(f, " (tangled: {})", self.members.join(", "))?;
        }
        Ok(())
    }
}

fn tarjan(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct St<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut St<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for &w in &s.adj[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(i) if s.on[w] => s.low[v] = s.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on[w] = false;
                scc.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(scc);
        }
    }
    let n = adj.len();
    let mut s = St {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

/// A crate's modules and the module paths each one refers to.
#[derive(Debug, Default)]
pub struct ModuleTree {
    /// Every module path (the root is `[]`).
    pub modules: BTreeSet<Vec<String>>,
    /// (module, resolved absolute path, `file:line`) for every reference.
    pub refs: Vec<(Vec<String>, Vec<String>, String)>,
}

impl ModuleTree {
    /// Reads the crate whose root is `src/lib.rs`.
    ///
    /// Errors: a declared module file is missing or does not parse.
    pub fn read(src: &Path) -> anyhow::Result<Self> {
        let mut tree = Self::default();
        tree.read_file(&src.join("lib.rs"), src, Vec::new(), src)?;
        Ok(tree)
    }

    fn read_file(
        &mut self,
        file: &Path,
        dir: &Path,
        module: Vec<String>,
        src: &Path,
    ) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let ast =
            syn::parse_file(&text).with_context(|| format!("cannot parse {}", file.display()))?;
        let rel = file.strip_prefix(src).unwrap_or(file).display().to_string();
        self.items(&ast.items, dir, module, src, &rel)
    }

    fn items(
        &mut self,
        items: &[syn::Item],
        dir: &Path,
        module: Vec<String>,
        src: &Path,
        rel: &str,
    ) -> anyhow::Result<()> {
        self.modules.insert(module.clone());
        for item in items {
            if let syn::Item::Mod(m) = item {
                let mut child = module.clone();
                child.push(m.ident.to_string());
                // `a.rs` and `a/mod.rs` both keep their children in `a/`.
                let child_dir = dir.join(m.ident.to_string());
                match &m.content {
                    Some((_, inner)) => {
                        self.items(inner, &child_dir, child, src, rel)?;
                    }
                    None => {
                        let flat = dir.join(format!("{}.rs", m.ident));
                        let nested = child_dir.join("mod.rs");
                        let path = if flat.exists() { flat } else { nested };
                        self.read_file(&path, &child_dir, child, src)?;
                    }
                }
                continue;
            }
            let mut v = Refs {
                module: &module,
                rel,
                out: Vec::new(),
            };
            v.visit_item(item);
            self.refs.extend(v.out);
        }
        Ok(())
    }

    /// The crate's top-level modules.
    pub fn top_level(&self) -> Vec<String> {
        self.modules
            .iter()
            .filter(|m| m.len() == 1)
            .map(|m| m[0].clone())
            .collect()
    }

    /// The graph among the children of `prefix` (`[]`: the top-level
    /// modules). A reference to an item of `prefix` itself is to [`ROOT`].
    /// References from a file listed in `exceptions` to the module it
    /// names are left out.
    pub fn graph(&self, prefix: &[String], exceptions: &[(&str, &str, &str)]) -> Graph {
        let depth = prefix.len();
        let mut g = Graph::default();
        let child_of = |path: &[String]| -> Option<String> {
            if !path.starts_with(prefix) {
                return None;
            }
            let name = path.get(depth)?;
            let mut m = prefix.to_vec();
            m.push(name.clone());
            Some(if self.modules.contains(&m) {
                name.clone()
            } else {
                ROOT.to_owned()
            })
        };
        for m in &self.modules {
            if m.len() == depth + 1 && m.starts_with(prefix) {
                g.nodes.insert(m[depth].clone());
            }
        }
        for (from, to, site) in &self.refs {
            let Some(f) = child_of(from) else { continue };
            let Some(t) = child_of(to).or_else(|| {
                // A reference to `prefix` itself or above it, from inside.
                (to.len() <= depth && prefix.starts_with(to)).then(|| ROOT.to_owned())
            }) else {
                continue;
            };
            if f == t {
                continue;
            }
            let file = site.split(':').next().unwrap_or("");
            if exceptions.iter().any(|(ef, et, _)| *ef == file && *et == t) {
                continue;
            }
            g.nodes.insert(f.clone());
            g.nodes.insert(t.clone());
            g.edges.entry((f, t)).or_default().insert(site.clone());
        }
        g
    }
}

/// Collects the absolute module paths one item refers to.
struct Refs<'a> {
    module: &'a [String],
    rel: &'a str,
    out: Vec<(Vec<String>, Vec<String>, String)>,
}

impl Refs<'_> {
    /// Resolves `segments` (starting with `crate`, `super` or `self`) from
    /// the current module; other paths (extern crates, locals, std) are
    /// not this crate's modules and are ignored.
    fn add(&mut self, segments: &[String], line: usize) {
        let Some(first) = segments.first() else {
            return;
        };
        if segments.len() < 2 {
            return;
        }
        let mut abs: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "super" | "self" => self.module.to_vec(),
            _ => return,
        };
        let mut rest = segments;
        if first == "crate" {
            rest = &segments[1..];
        }
        for s in rest {
            match s.as_str() {
                "super" => {
                    abs.pop();
                }
                "self" => {}
                _ => abs.push(s.clone()),
            }
        }
        self.out
            .push((self.module.to_vec(), abs, format!("{}:{line}", self.rel)));
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, t: &syn::UseTree, line: usize) {
        match t {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, line);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut p = prefix.clone();
                p.push(n.ident.to_string());
                self.add(&p, line);
            }
            syn::UseTree::Rename(r) => {
                let mut p = prefix.clone();
                p.push(r.ident.to_string());
                self.add(&p, line);
            }
            syn::UseTree::Glob(_) => self.add(prefix, line),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, line);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let line = u.use_token.span.start().line;
        self.use_tree(&mut Vec::new(), &u.tree, line);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = p
            .segments
            .first()
            .map_or(0, |s| s.ident.span().start().line);
        self.add(&segs, line);
        syn::visit::visit_path(self, p);
    }

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {
        // `pub(crate)`, `pub(super)`: who may see an item, not an import.
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // Macro bodies are tokens to syn: find `crate :: a :: b` and
        // `super :: …` runs in them.
        let line = m
            .path
            .segments
            .first()
            .map_or(0, |s| s.ident.span().start().line);
        scan_tokens(m.tokens.clone(), &mut |segs| self.add(segs, line));
        syn::visit::visit_macro(self, m);
    }
}

fn scan_tokens(tokens: proc_macro2::TokenStream, found: &mut dyn FnMut(&[String])) {
    use proc_macro2::TokenTree;
    let tts: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tts.len() {
        match &tts[i] {
            TokenTree::Group(g) => scan_tokens(g.stream(), found),
            TokenTree::Ident(id)
                if matches!(id.to_string().as_str(), "crate" | "super" | "self") =>
            {
                let start_ok =
                    i == 0 || !matches!(&tts[i - 1], TokenTree::Punct(p) if p.as_char() == ':');
                if start_ok {
                    let mut segs = vec![id.to_string()];
                    let mut j = i + 1;
                    loop {
                        let colons = matches!((tts.get(j), tts.get(j + 1)),
                            (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                                if a.as_char() == ':' && b.as_char() == ':');
                        match (colons, tts.get(j + 2)) {
                            (true, Some(TokenTree::Ident(next))) => {
                                segs.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    if segs.len() > 1 {
                        found(&segs);
                    }
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a tiny crate: `lib.rs` declaring `a`, `b`, `c`; `a` uses `b`
    /// through `crate::`, `b` uses `c` through `super::` inside a group,
    /// and `c` uses `a` inside a macro body (a cycle a -> b -> c -> a).
    fn fixture(dir: &Path, c_body: &str) {
        std::fs::create_dir_all(dir.join("b")).unwrap();
        std::fs::write(
            dir.join("lib.rs"),
            "pub mod a;\npub mod b;\nmod c;\npub struct Top;\n",
        )
        .unwrap();
        // `pub(crate)` / `pub(super)` are visibility, not imports.
        std::fs::write(
            dir.join("a.rs"),
            "use crate::b::inner::Thing;\npub fn f() {}\npub(crate) fn g() {}\npub(super) struct S;\n",
        )
        .unwrap();
        std::fs::write(dir.join("b/mod.rs"), "pub mod inner;\n").unwrap();
        std::fs::write(
            dir.join("b/inner.rs"),
            "use super::super::{c::g, Top};\npub struct Thing;\nmod tests { use super::*; }\n",
        )
        .unwrap();
        std::fs::write(dir.join("c.rs"), c_body).unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-layers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_cycle_through_a_macro_fails_and_is_named() {
        let d = tmp("cycle");
        fixture(&d, "pub fn g() { println!(\"{:?}\", crate::a::f()); }\n");
        let tree = ModuleTree::read(&d).unwrap();
        let g = tree.graph(&[], &[]);
        assert!(g.edges.contains_key(&("a".into(), "b".into())));
        assert!(g.edges.contains_key(&("b".into(), "c".into())));
        assert!(g.edges.contains_key(&("c".into(), "a".into())));
        assert!(g.edges.contains_key(&("b".into(), ROOT.into())));
        assert!(!g.edges.contains_key(&("a".into(), ROOT.into())), "{g:?}");
        let found = cycles(&g);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, ["a", "b", "c", "a"]);
        assert_eq!(found[0].members, ["a", "b", "c"]);
        let r = check(&tree, &[&["a"], &["b"], &["c"]], &[]);
        assert!(
            r.errors
                .iter()
                .any(|e| e == "import cycle: a -> b -> c -> a"),
            "{:?}",
            r.errors
        );
        // c -> a goes up; b -> (root) goes up too.
        assert!(
            r.errors
                .iter()
                .any(|e| e.starts_with("`c` imports `a`") && e.contains("c.rs:1")),
            "{:?}",
            r.errors
        );
        assert!(
            r.errors
                .iter()
                .any(|e| e.starts_with("`b` imports `(root)`")),
            "{:?}",
            r.errors
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_graph_in_layer_order_passes_and_missing_rows_fail() {
        let d = tmp("ok");
        fixture(&d, "pub fn g() { let _ = std::mem::size_of::<u8>(); }\n");
        let tree = ModuleTree::read(&d).unwrap();
        // b -> (root) is an exception here; a -> b -> c is in order.
        let exc: &[(&str, &str, &str)] = &[("b/inner.rs", ROOT, "fixture")];
        let r = check(&tree, &[&["a"], &["b"], &["c"]], exc);
        assert!(r.errors.is_empty(), "{:?}\n{}", r.errors, r.text);
        assert!(r.text.contains("a -> b\n"), "{}", r.text);
        assert!(r.text.contains("b -> c\n"), "{}", r.text);
        // Same row: a peer import is against the order.
        let r = check(&tree, &[&["a", "b"], &["c"]], exc);
        assert!(
            r.errors.iter().any(|e| e.starts_with("`a` imports `b`")),
            "{:?}",
            r.errors
        );
        // A module with no row.
        let r = check(&tree, &[&["a"], &["b"]], exc);
        assert!(
            r.errors.iter().any(|e| e.contains("`c` has no row")),
            "{:?}",
            r.errors
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_strait_crate_follows_its_layers() {
        let tree = ModuleTree::read(&crate_src()).unwrap();
        let r = check(&tree, LAYERS, EXCEPTIONS);
        assert!(r.errors.is_empty(), "{}", r.text);
    }
}
