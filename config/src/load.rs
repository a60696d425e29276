//! Loading resources from multi-document YAML (files, directories, strings).
//!
//! Each document keeps its file and the line it starts on. Documents of
//! kinds Strait does not use (EnvoyFilter, Telemetry, ConfigMap, ...) are
//! reported once per kind as [`Level::Info`], not as errors. A document that
//! does not parse gives one [`Level::Error`] and is skipped; the others load.
//!
//! Input is bounded ([`Limits`]): only regular files are read (a FIFO or
//! device named `*.yaml` is reported and skipped, never opened for a
//! blocking read), a file larger than [`Limits::max_file_bytes`] or with more
//! than [`Limits::max_documents`] documents is rejected whole, and a document
//! nested deeper than [`Limits::max_depth`] is rejected before the YAML
//! parser sees it (libyaml's parse time grows quadratically with depth).
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::api::{Object, Origin, Resource};
use crate::diag::{Diagnostic, Level};

/// What a load produced.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// Resources in file order.
    pub resources: Vec<Resource>,
    /// Parse errors and ignored-kind notes.
    pub diagnostics: Vec<Diagnostic>,
    ignored: BTreeSet<String>,
}

impl Loaded {
    /// `true` when some document failed to parse.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Bounds on configuration input, so that a hostile or broken file cannot
/// wedge or exhaust the loader. `strait run` takes them from
/// `--max-config-file-bytes`, `--max-config-documents` and
/// `--max-yaml-depth`; `strait validate` uses the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file read, bytes (default 64 MiB; Kubernetes objects are at
    /// most 1.5 MiB each in etcd).
    pub max_file_bytes: u64,
    /// Most YAML documents in one file (default 100,000).
    pub max_documents: usize,
    /// Deepest nesting of mappings and sequences in one document (default
    /// 128, serde_yaml's own recursion limit; Istio and Kubernetes objects
    /// nest about 10 deep).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 64 << 20,
            max_documents: 100_000,
            max_depth: 128,
        }
    }
}

/// Why a config file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// `open`/`read`/`stat` failed.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// A FIFO, socket, device or other non-regular file.
    #[error("not a regular file ({0}): skipped")]
    NotRegular(&'static str),
    /// Larger than [`Limits::max_file_bytes`].
    #[error("file is larger than the limit of {limit} bytes (--max-config-file-bytes): skipped")]
    TooLarge {
        /// The limit, bytes.
        limit: u64,
    },
    /// Not UTF-8 text.
    #[error("file is not UTF-8 text: skipped")]
    NotUtf8,
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else if ft.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

/// Reads one config file: regular files only (symbolic links followed, as
/// in a Kubernetes ConfigMap mount), opened non-blocking so a FIFO swapped
/// in after the check cannot block, at most `limits.max_file_bytes`.
///
/// Errors: see [`ReadError`].
pub fn read_file(path: &Path, limits: &Limits) -> Result<String, ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind_of(meta.file_type())));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind_of(meta.file_type())));
    }
    if meta.len() > limits.max_file_bytes {
        return Err(ReadError::TooLarge {
            limit: limits.max_file_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limits.max_file_bytes + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(ReadError::TooLarge {
            limit: limits.max_file_bytes,
        });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

/// The first line (1-based, within `doc`) where the nesting of block and
/// flow collections exceeds `max`, found by a linear scan of the text
/// before any YAML parsing. Block nesting counts indentation levels and
/// `- ` entries; flow nesting counts `[`/`{` outside quotes. Block scalars
/// (`|`, `>`) and comments are skipped. An estimate on the safe side of
/// pathological input, exact enough for ordinary YAML.
pub fn too_deep(doc: &str, max: usize) -> Option<usize> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut scalar_parent: Option<usize> = None;
    for (n, line) in doc.lines().enumerate() {
        let content = line.trim_start_matches(' ');
        let indent = line.len() - content.len();
        if let Some(parent) = scalar_parent {
            if content.trim().is_empty() || indent > parent {
                continue;
            }
            scalar_parent = None;
        }
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut rest = content;
        let mut col = indent;
        if flow == 0 {
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            // `- - - x`: each dash opens a nested sequence entry.
            while let Some(r) = rest
                .strip_prefix("- ")
                .or_else(|| (rest == "-").then_some(""))
            {
                col += 2;
                indents.push(col);
                rest = r.trim_start_matches(' ');
            }
        }
        let mut value_start = true;
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if let Some(q) = quote {
                if c == '\\' && q == '"' {
                    chars.next();
                } else if c == q {
                    quote = None;
                }
                prev = c;
                continue;
            }
            match c {
                '#' if prev == ' ' || prev == '\t' => break,
                '"' | '\'' if value_start || flow > 0 => quote = Some(c),
                '[' | '{' if value_start || flow > 0 => {
                    flow += 1;
                    value_start = true;
                    if indents.len() + flow > max {
                        return Some(n + 1);
                    }
                }
                ']' | '}' if flow > 0 => flow -= 1,
                ':' if chars.peek().is_none_or(|n| *n == ' ') => value_start = true,
                ',' if flow > 0 => value_start = true,
                ' ' | '\t' => {}
                '|' | '>' if value_start && flow == 0 => {
                    scalar_parent = Some(indent);
                    value_start = false;
                }
                _ => value_start = false,
            }
            prev = c;
        }
        if indents.len() + flow > max {
            return Some(n + 1);
        }
    }
    None
}

/// The first two fields of every document.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<HeaderMeta>,
}

#[derive(Deserialize)]
struct HeaderMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// Splits multi-document YAML into `(first line, text)` pairs; the first
/// line is 1-based and skips blank and comment lines. Empty documents are
/// dropped.
pub fn split_documents(text: &str) -> Vec<(usize, usize, &str)> {
    fn push<'t>(
        text: &'t str,
        from: usize,
        to: usize,
        first: usize,
        docs: &mut Vec<(usize, usize, &'t str)>,
    ) {
        let body = &text[from..to];
        let content = body.lines().position(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if let Some(i) = content {
            docs.push((first, first + i, body));
        }
    }
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t == "..." {
            push(text, start_byte, offset, start_line, &mut docs);
            start_byte = offset + line.len();
            start_line = n + 2;
        }
        offset += line.len();
    }
    push(text, start_byte, text.len(), start_line, &mut docs);
    docs
}

/// Loads every document of `text`, labelled `file` in diagnostics, with
/// the default [`Limits`] on documents and nesting.
pub fn load_str(text: &str, file: &str) -> Loaded {
    load_str_with(text, file, &Limits::default())
}

/// [`load_str`] with explicit limits: more than `limits.max_documents`
/// documents is one error for the whole text (nothing loads); a document
/// nested deeper than `limits.max_depth` is an error for that document.
pub fn load_str_with(text: &str, file: &str, limits: &Limits) -> Loaded {
    // The text's documents share the schema trees they need.
    let _schemas = crate::schema::Scope::enter();
    let mut out = Loaded::default();
    // A `mesh.yaml` of plain MeshConfig (no apiVersion/kind), as
    // [`load_paths_with`] reads it (the daemon's file store reads here).
    if crate::mesh::is_mesh_file(Path::new(file)) && quick_header(text).is_none() {
        load_mesh_file(&mut out, text, file);
    } else {
        load_into(&mut out, text, file, limits);
    }
    out
}

/// Loads files and directories (directories recursively: `*.yaml` and
/// `*.yml`, in sorted path order, like `kubectl apply -f DIR`; a file named
/// explicitly is read whatever its extension, JSON included, since JSON is
/// YAML). A path that cannot be read is an error; so is a non-regular
/// file (FIFO, socket, device), which is never opened for reading.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Loaded {
    load_paths_with(paths, &Limits::default())
}

/// [`load_paths`] with explicit limits (see [`Limits`]).
pub fn load_paths_with<P: AsRef<Path>>(paths: &[P], limits: &Limits) -> Loaded {
    // Every file shares the schema trees it needs; freed on return.
    let _schemas = crate::schema::Scope::enter();
    let mut out = Loaded::default();
    for p in paths {
        let p = p.as_ref();
        let mut files = Vec::new();
        if let Err(e) = collect(p, &mut files) {
            out.diagnostics
                .push(file_error(p, format!("cannot read: {e}")));
            continue;
        }
        for f in files {
            match read_file(&f, limits) {
                // A `mesh.yaml` of plain MeshConfig (no apiVersion/kind).
                Ok(text) if crate::mesh::is_mesh_file(&f) && quick_header(&text).is_none() => {
                    load_mesh_file(&mut out, &text, &f.display().to_string())
                }
                Ok(text) => load_into(&mut out, &text, &f.display().to_string(), limits),
                Err(e) => out.diagnostics.push(file_error(&f, e.to_string())),
            }
        }
    }
    out
}

fn file_error(p: &Path, message: String) -> Diagnostic {
    Diagnostic {
        level: Level::Error,
        code: None,
        origin: Some(Origin {
            file: p.display().to_string(),
            line: 0,
        }),
        resource: None,
        field: None,
        message,
    }
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if p.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for e in entries {
            if e.is_dir() {
                collect(&e, out)?;
            } else if matches!(e.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                out.push(e);
            }
        }
        Ok(())
    } else {
        std::fs::metadata(p)?;
        out.push(p.to_path_buf());
        Ok(())
    }
}

fn load_into(out: &mut Loaded, text: &str, file: &str, limits: &Limits) {
    let docs = split_documents(text);
    if docs.len() > limits.max_documents {
        out.diagnostics.push(file_error(
            Path::new(file),
            format!(
                "{} YAML documents, more than the limit of {} per file (--max-config-documents): file skipped",
                docs.len(),
                limits.max_documents
            ),
        ));
        return;
    }
    // Documents parse independently: spread them over the cores, keeping
    // file order in the result.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let parse = |chunk: &[(usize, usize, &str)]| -> Vec<(Origin, Result<Parsed, Box<Diagnostic>>)> {
        chunk
            .iter()
            .map(|(first, content_line, doc)| {
                let origin = Origin {
                    file: file.to_string(),
                    line: *content_line,
                };
                let parsed = match too_deep(doc, limits.max_depth) {
                    Some(line) => Err(Box::new(Diagnostic {
                        level: Level::Error,
                        code: None,
                        origin: Some(Origin {
                            file: file.to_string(),
                            line: first + line - 1,
                        }),
                        resource: None,
                        field: None,
                        message: format!(
                            "YAML nested deeper than the limit of {} levels (--max-yaml-depth): document skipped",
                            limits.max_depth
                        ),
                    })),
                    None => parse_document(doc, *first, &origin),
                };
                (origin, parsed)
            })
            .collect()
    };
    let results: Vec<_> = if threads > 1 && docs.len() >= 256 {
        let size = docs.len().div_ceil(threads);
        std::thread::scope(|sc| {
            let handles: Vec<_> = docs
                .chunks(size)
                .map(|c| sc.spawn(move || parse(c)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("YAML parsing does not panic"))
                .collect()
        })
    } else {
        parse(&docs)
    };
    for (origin, parsed) in results {
        match parsed {
            Ok(Parsed::Resource(r, warnings)) => {
                out.resources.push(*r);
                out.diagnostics.extend(warnings);
            }
            Ok(Parsed::Ignored(kind)) => {
                if out.ignored.insert(kind.clone()) {
                    out.diagnostics.push(Diagnostic {
                        level: Level::Info,
                        code: None,
                        origin: Some(origin),
                        resource: None,
                        field: None,
                        message: format!("kind {kind} is not used by Strait; ignored"),
                    });
                }
            }
            Ok(Parsed::Invalid(ds)) => out.diagnostics.extend(ds),
            Ok(Parsed::NotEnforced(key, kind)) => out.diagnostics.push(Diagnostic {
                level: Level::Warning,
                code: Some(crate::analyze::FIELD_NOT_ENFORCED.to_string()),
                origin: Some(origin),
                resource: Some(key),
                field: None,
                message: format!(
                    "{kind} is not yet enforced by Strait: the resource is accepted and has no effect"
                ),
            }),
            Ok(Parsed::Empty) => {}
            Err(d) => out.diagnostics.push(*d),
        }
    }
}

enum Parsed {
    /// A resource, with schema warnings (fields of older Istio versions).
    Resource(Box<Resource>, Vec<Diagnostic>),
    Ignored(String),
    /// Failed Istio's CRD schema: every violation.
    Invalid(Vec<Diagnostic>),
    /// An Istio kind Strait reads but does not act on (`Kind/ns/name`, kind).
    NotEnforced(String, String),
    Empty,
}

/// Turns a serde_yaml error into a diagnostic with an absolute line.
fn yaml_error(
    e: serde_yaml::Error,
    first: usize,
    origin: &Origin,
    key: Option<String>,
) -> Box<Diagnostic> {
    let mut msg = e.to_string();
    let mut line = origin.line;
    if let Some(loc) = e.location() {
        line = first + loc.line() - 1;
        if let Some(i) = msg.rfind(" at line ") {
            msg.truncate(i);
        }
    }
    // serde_yaml prefixes the field path: "spec.http[0]: unknown field ...".
    let (field, msg) = match msg.split_once(": ") {
        Some((p, m)) if !p.contains(' ') && !p.is_empty() => (Some(p.to_string()), m.to_string()),
        _ => (None, msg),
    };
    Box::new(Diagnostic {
        level: Level::Error,
        code: None,
        origin: Some(Origin {
            file: origin.file.clone(),
            line,
        }),
        resource: key,
        field,
        message: msg,
    })
}

fn typed<T: DeserializeOwned>(
    doc: &str,
    first: usize,
    origin: &Origin,
    key: &dyn Fn() -> String,
) -> Result<T, Box<Diagnostic>> {
    serde_yaml::from_str(doc).map_err(|e| yaml_error(e, first, origin, Some(key())))
}

/// `apiVersion` and `kind` read straight from block-style YAML (top-level
/// `key: value` lines), avoiding a second full parse for the common case.
fn quick_header(doc: &str) -> Option<(String, String)> {
    let mut api = None;
    let mut kind = None;
    for line in doc.lines() {
        let val = |k: &str| {
            let v = line.strip_prefix(k)?.trim();
            let v = v.split(" #").next().unwrap_or(v).trim();
            let v = v.trim_matches('"').trim_matches('\'');
            (!v.is_empty() && !v.contains(['{', '[', '&', '*', '!'])).then(|| v.to_string())
        };
        if let Some(v) = val("apiVersion:") {
            api = Some(v);
        } else if let Some(v) = val("kind:") {
            kind = Some(v);
        }
        if api.is_some() && kind.is_some() {
            break;
        }
    }
    Some((api?, kind?))
}

/// `Kind/namespace/name` of a document, for error messages.
fn doc_key(doc: &str, kind: &str) -> String {
    let header: Option<Header> = serde_yaml::from_str(doc).ok().flatten();
    let (name, ns) = header
        .and_then(|h| h.metadata)
        .map(|m| (m.name.unwrap_or_default(), m.namespace))
        .unwrap_or_default();
    format!("{kind}/{}/{name}", ns.as_deref().unwrap_or("default"))
}

fn parse_document(doc: &str, first: usize, origin: &Origin) -> Result<Parsed, Box<Diagnostic>> {
    let (api, kind) = match quick_header(doc) {
        Some(h) => h,
        None => {
            let header: Option<Header> =
                serde_yaml::from_str(doc).map_err(|e| yaml_error(e, first, origin, None))?;
            let Some(header) = header else {
                return Ok(Parsed::Empty);
            };
            (
                header.api_version.unwrap_or_default(),
                header.kind.unwrap_or_default(),
            )
        }
    };
    let key = || doc_key(doc, &kind);
    let missing = |what: &str| {
        Box::new(Diagnostic {
            level: Level::Error,
            code: None,
            origin: Some(origin.clone()),
            resource: (!kind.is_empty()).then(key),
            field: Some(what.to_string()),
            message: format!("{what} is required"),
        })
    };
    if api.is_empty() {
        return Err(missing("apiVersion"));
    }
    if kind.is_empty() {
        return Err(missing("kind"));
    }
    let group = api.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let version = api.rsplit('/').next().unwrap_or("");
    let istio_net =
        group == "networking.istio.io" && matches!(version, "v1" | "v1beta1" | "v1alpha3");
    let istio_sec = group == "security.istio.io" && matches!(version, "v1" | "v1beta1");
    let object = match (kind.as_str(), istio_net, istio_sec, api.as_str()) {
        ("VirtualService", true, _, _) => Object::VirtualService(typed(doc, first, origin, &key)?),
        ("DestinationRule", true, _, _) => {
            Object::DestinationRule(typed(doc, first, origin, &key)?)
        }
        ("Gateway", true, _, _) => Object::Gateway(typed(doc, first, origin, &key)?),
        ("ServiceEntry", true, _, _) => Object::ServiceEntry(typed(doc, first, origin, &key)?),
        ("Sidecar", true, _, _) => Object::Sidecar(typed(doc, first, origin, &key)?),
        ("WorkloadEntry", true, _, _) => Object::WorkloadEntry(typed(doc, first, origin, &key)?),
        ("PeerAuthentication", _, true, _) => {
            Object::PeerAuthentication(typed(doc, first, origin, &key)?)
        }
        ("RequestAuthentication", _, true, _) => {
            Object::RequestAuthentication(typed(doc, first, origin, &key)?)
        }
        ("AuthorizationPolicy", _, true, _) => {
            Object::AuthorizationPolicy(typed(doc, first, origin, &key)?)
        }
        ("Namespace", _, _, "v1") => Object::Namespace(typed(doc, first, origin, &key)?),
        ("Service", _, _, "v1") => Object::Service(typed(doc, first, origin, &key)?),
        ("Endpoints", _, _, "v1") => Object::Endpoints(typed(doc, first, origin, &key)?),
        ("Pod", _, _, "v1") => Object::Pod(typed(doc, first, origin, &key)?),
        ("ServiceAccount", _, _, "v1") => Object::ServiceAccount(typed(doc, first, origin, &key)?),
        ("ConfigMap", _, _, "v1") => match crate::mesh::from_config_map(doc) {
            Ok(Some(m)) => Object::MeshConfig(Box::new(m)),
            Ok(None) => return Ok(Parsed::Ignored(format!("{kind} ({api})"))),
            Err(message) => return Err(mesh_error(origin, Some(key()), message)),
        },
        ("Secret", _, _, "v1") => {
            let full: k8s_openapi::api::core::v1::Secret = typed(doc, first, origin, &key)?;
            match crate::api::secret::TlsSecret::from_secret(full) {
                Ok(Some(t)) => Object::Secret(Box::new(t)),
                Ok(None) => {
                    return Ok(Parsed::Ignored(format!(
                        "{kind} ({api}) without TLS material"
                    )))
                }
                Err((field, message)) => {
                    return Err(Box::new(Diagnostic {
                        level: Level::Error,
                        code: None,
                        origin: Some(origin.clone()),
                        resource: Some(key()),
                        field: Some(field),
                        message,
                    }))
                }
            }
        }
        ("Deployment", _, _, "apps/v1") => {
            let full: k8s_openapi::api::apps::v1::Deployment = typed(doc, first, origin, &key)?;
            Object::Deployment(Box::new(full.into()))
        }
        ("EndpointSlice", _, _, "discovery.k8s.io/v1") => {
            let full: k8s_openapi::api::discovery::v1::EndpointSlice =
                typed(doc, first, origin, &key)?;
            Object::EndpointSlice(Box::new(full.into()))
        }
        _ if recognised_kind(&api, &kind) => {
            let (errors, _) = schema_errors(doc, &api, &kind, origin, &key, false);
            return Ok(errors.unwrap_or_else(|| Parsed::NotEnforced(key(), kind.clone())));
        }
        _ => return Ok(Parsed::Ignored(format!("{kind} ({api})"))),
    };
    let (errors, warnings) = schema_errors(doc, &api, &kind, origin, &key, true);
    if let Some(errors) = errors {
        return Ok(errors);
    }
    let mut object = object;
    object.shrink_to_fit();
    if !matches!(object, Object::Namespace(_)) {
        let meta = object.metadata_mut();
        if meta.namespace.as_deref().unwrap_or("").is_empty() {
            meta.namespace = Some("default".to_string());
        }
    }
    Ok(Parsed::Resource(
        Box::new(Resource {
            origin: origin.clone(),
            object,
        }),
        warnings,
    ))
}

/// A `mesh.yaml`: one MeshConfig document (see [`crate::mesh`]).
fn load_mesh_file(out: &mut Loaded, text: &str, file: &str) {
    let origin = Origin {
        file: file.to_string(),
        line: 1,
    };
    match crate::mesh::from_file(text) {
        Ok(m) => out.resources.push(Resource {
            origin,
            object: Object::MeshConfig(Box::new(m)),
        }),
        Err(message) => out.diagnostics.push(*mesh_error(
            &origin,
            Some("MeshConfig/istio-system/mesh".to_string()),
            message,
        )),
    }
}

fn mesh_error(origin: &Origin, resource: Option<String>, message: String) -> Box<Diagnostic> {
    Box::new(Diagnostic {
        level: Level::Error,
        code: None,
        origin: Some(origin.clone()),
        resource,
        field: None,
        message: format!("invalid MeshConfig: {message}"),
    })
}

/// `true` for an Istio kind (in Istio's CRD schema) that Strait reads but
/// does not act on: Telemetry, WorkloadGroup, ProxyConfig, WasmPlugin,
/// EnvoyFilter, TrafficExtension. They are checked against the schema and
/// reported as not enforced (`STR0001`).
pub fn recognised_kind(api: &str, kind: &str) -> bool {
    crate::schema::has_schema(api, kind)
}

/// Istio's CRD schema applied to an Istio document ([`crate::schema`]):
/// `Some(Parsed::Invalid)` when it fails, `None` when it passes or the kind
/// has no schema. With `typed` (Strait's serde types already rejected
/// unknown fields), a field the types know but Istio's current schema does
/// not (`websocketUpgrade`, from older Istio versions) is a warning, not an
/// error: the resource loads.
fn schema_errors(
    doc: &str,
    api: &str,
    kind: &str,
    origin: &Origin,
    key: &dyn Fn() -> String,
    typed: bool,
) -> (Option<Parsed>, Vec<Diagnostic>) {
    if !crate::schema::has_schema(api, kind) {
        return (None, Vec::new());
    }
    let value = match serde_yaml::from_str::<serde_yaml::Value>(doc) {
        Ok(v) => crate::schema::yaml_to_json(v),
        Err(e) => {
            let d = yaml_error(e, origin.line, origin, Some(key()));
            return (Some(Parsed::Invalid(vec![*d])), Vec::new());
        }
    };
    let diag = |level: Level, e: crate::schema::SchemaError| Diagnostic {
        level,
        code: None,
        origin: Some(origin.clone()),
        resource: Some(key()),
        field: (!e.field.is_empty()).then_some(e.field),
        message: e.message,
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for e in crate::schema::check(api, kind, &value).unwrap_or_default() {
        if typed && e.unknown_field {
            let mut d = diag(Level::Warning, e);
            d.message
                .push_str(" (not in Istio's current API; accepted as older Istio versions did)");
            warnings.push(d);
        } else {
            errors.push(diag(Level::Error, e));
        }
    }
    (
        (!errors.is_empty()).then_some(Parsed::Invalid(errors)),
        warnings,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_lines() {
        let text = "# c\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\n---\n# x\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].1, 2);
        assert_eq!(docs[1].1, 9);
        let l = load_str(text, "t.yaml");
        assert_eq!(l.resources.len(), 2);
        assert_eq!(l.resources[1].origin.line, 9);
        assert_eq!(l.resources[1].name(), "b");
    }

    #[test]
    fn ignored_kinds_are_reported_once() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n";
        let l = load_str(text, "t.yaml");
        assert!(l.resources.is_empty());
        assert_eq!(l.diagnostics.len(), 1);
        assert_eq!(l.diagnostics[0].level, Level::Info);
        assert!(l.diagnostics[0].message.contains("ConfigMap"));
    }

    #[test]
    fn istio_kinds_strait_does_not_enforce_are_reported_per_resource() {
        let text = "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: a}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: b}\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: n}\nspec: {bogus: 1}\n";
        let l = load_str(text, "t.yaml");
        assert!(l.resources.is_empty());
        let warnings: Vec<_> = l
            .diagnostics
            .iter()
            .filter(|d| d.level == Level::Warning)
            .collect();
        assert_eq!(warnings.len(), 2, "{:?}", l.diagnostics);
        assert_eq!(
            warnings[1].resource.as_deref(),
            Some("EnvoyFilter/default/b")
        );
        assert_eq!(warnings[1].code.as_deref(), Some("STR0001"));
        let err = l
            .diagnostics
            .iter()
            .find(|d| d.is_error())
            .expect("schema error");
        assert_eq!(err.resource.as_deref(), Some("Telemetry/n/t"));
        assert_eq!(err.message, "unknown field \"spec.bogus\"");
    }

    #[test]
    fn parse_errors_name_file_line_resource_and_field() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: ns\nspec:\n  hosts: [r]\n  http:\n  - rout: []\n";
        let l = load_str(text, "t.yaml");
        assert_eq!(l.resources.len(), 1, "the valid document still loads");
        let d = &l.diagnostics[0];
        assert_eq!(d.resource.as_deref(), Some("VirtualService/ns/r"));
        assert_eq!(d.origin.as_ref().unwrap().line, 13);
        assert_eq!(d.field.as_deref(), Some("spec.http[0]"));
        assert!(d.message.contains("unknown field `rout`"), "{}", d.message);
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("strait-load-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";

    #[test]
    fn a_fifo_named_yaml_is_reported_and_skipped_without_blocking() {
        let d = scratch("fifo");
        std::fs::write(d.join("a.yaml"), NS).unwrap();
        let fifo = d.join("b.yaml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = d.clone();
        std::thread::spawn(move || tx.send(load_paths(&[dir])).unwrap());
        let l = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("loading a directory with a FIFO blocked");
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!(l.resources.len(), 1, "the regular file still loads");
        let e = l
            .diagnostics
            .iter()
            .find(|d| d.is_error())
            .expect("an error");
        let text = e.to_string();
        assert!(
            text.contains("b.yaml") && text.contains("not a regular file (a FIFO)"),
            "{text}"
        );
    }

    #[test]
    fn files_over_the_size_limit_are_rejected_with_the_flag_named() {
        let d = scratch("size");
        std::fs::write(d.join("a.yaml"), NS.repeat(100)).unwrap();
        let limits = Limits {
            max_file_bytes: 1000,
            ..Limits::default()
        };
        let l = load_paths_with(std::slice::from_ref(&d), &limits);
        std::fs::remove_dir_all(&d).unwrap();
        assert!(l.resources.is_empty());
        let text = l.diagnostics[0].to_string();
        assert!(
            text.contains("a.yaml") && text.contains("--max-config-file-bytes"),
            "{text}"
        );
    }

    #[test]
    fn too_many_documents_reject_the_file() {
        let text = format!("{NS}---\n").repeat(11);
        let limits = Limits {
            max_documents: 10,
            ..Limits::default()
        };
        let l = load_str_with(&text, "many.yaml", &limits);
        assert!(l.resources.is_empty());
        let msg = l.diagnostics[0].to_string();
        assert!(
            msg.contains("many.yaml")
                && msg.contains("11 YAML documents")
                && msg.contains("--max-config-documents"),
            "{msg}"
        );
        assert_eq!(load_str(&text, "many.yaml").resources.len(), 11);
    }

    #[test]
    fn deep_nesting_is_rejected_fast_and_ordinary_yaml_is_not() {
        for (name, doc) in [
            (
                "flow",
                format!("{NS}spec: {}{}\n", "[".repeat(40_000), "]".repeat(40_000)),
            ),
            ("block", {
                let mut d = String::from(NS);
                d.push_str("spec:\n");
                for i in 1..40_000 {
                    d.push_str(&" ".repeat(i));
                    d.push_str("a:\n");
                }
                d
            }),
            ("dashes", format!("{NS}spec:\n{}x\n", "- ".repeat(40_000))),
        ] {
            let t0 = std::time::Instant::now();
            let l = load_str(&doc, "deep.yaml");
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(5),
                "{name}: {:?}",
                t0.elapsed()
            );
            assert!(l.resources.is_empty(), "{name}");
            let msg = l.diagnostics[0].to_string();
            assert!(
                msg.contains("deep.yaml") && msg.contains("--max-yaml-depth"),
                "{name}: {msg}"
            );
        }
        let ok = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: ns}\nspec:\n  rules:\n  - from:\n    - source:\n        principals: [\"a/[b\", 'c{']\n    to:\n    - operation: {methods: [GET], paths: ['/x[', \"/y{\"]}\n    when:\n    - key: request.headers[x]\n      values: |\n        [[[[[[\n";
        assert_eq!(too_deep(ok, 7), None);
        assert_eq!(too_deep(ok, 4), Some(8));
    }
}
