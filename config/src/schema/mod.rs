//! Istio's CRD schemas, applied as the Kubernetes API server applies them on
//! `kubectl apply`: types, `enum`, `minimum`/`maximum`, `minLength`/
//! `maxLength`, `pattern`, `minItems`/`maxItems`, `minProperties`/
//! `maxProperties`, `required`, `oneOf`/`anyOf`/`allOf`/`not`, and the CEL
//! rules of `x-kubernetes-validations` (hand-ported in [`cel`], with Istio's
//! messages). This runs before, and on top of, the `validation.go` rules in
//! [`crate::validate`].
//!
//! `istio-crds.json` (split per schema at build time by `config/build.rs`)
//! is the `openAPIV3Schema` of every kind and version of
//! Istio's `crd-all.gen.yaml` (descriptions dropped), keyed
//! `group/version/Kind`; `config/tests/schema.rs` checks it against the file
//! in `../shared/istio/crds/`. Not applied: `format` (`date-time`, `byte`,
//! `int32` — the API server does not check the latter either).
pub mod cel;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

/// One schema violation, in the API server's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaError {
    /// Field path, `spec.http[0].timeout`.
    pub field: String,
    /// `Invalid value: "string": must be a valid duration greater than 1ms`.
    pub message: String,
    /// `true` for a field the schema does not define (`unknown field`).
    pub unknown_field: bool,
}

// `TEXTS`: one JSON string per distinct schema; `SCHEMAS`:
// `(group/version/Kind, index into TEXTS)` sorted by key (config/build.rs
// splits `istio-crds.json`, so looking one kind up reads only its own
// schema's pages).
include!(concat!(env!("OUT_DIR"), "/crds.rs"));

/// Every schema, keyed `group/version/Kind` (`networking.istio.io/v1/VirtualService`).
///
/// Parses all of them (about 3.8 MB of `Value` trees, kept for the life of
/// the process): for tests and tools. The loader goes through
/// [`schema_for`], which parses only the kinds a configuration uses.
pub fn schemas() -> &'static BTreeMap<String, Value> {
    static S: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    S.get_or_init(|| {
        SCHEMAS
            .iter()
            .map(|(k, i)| (k.to_string(), parse(TEXTS[*i])))
            .collect()
    })
}

/// Which of [`TEXTS`] is the schema of `key` (`group/version/Kind`).
fn text_of(key: &str) -> Option<usize> {
    let i = SCHEMAS.binary_search_by(|(k, _)| (*k).cmp(key)).ok()?;
    Some(SCHEMAS[i].1)
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("embedded schema is JSON")
}

/// What one [`Scope`] shares: the parsed trees (versions of a kind with
/// the same schema share one) and the compiled `pattern`s.
#[derive(Default)]
struct Cache {
    /// Live [`Scope`]s; at 0 the cache is emptied.
    scopes: usize,
    /// Keyed by index into [`TEXTS`]: versions sharing a schema share
    /// its text and so its tree.
    trees: BTreeMap<usize, Arc<Value>>,
    patterns: BTreeMap<String, Option<regex::Regex>>,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    scopes: 0,
    trees: BTreeMap::new(),
    patterns: BTreeMap::new(),
});

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// While one is alive, parsed schema trees and compiled patterns are kept
/// and shared by every [`check`] (on any thread); when the last one is
/// dropped they are freed. Outside any scope each [`check`] parses the
/// schema it needs and drops it.
///
/// A configuration load or reload holds one for its duration: the trees
/// are large (DestinationRule's ~490 KB of `Value`s, VirtualService's
/// ~270 KB) and needed only while documents are checked, so a node's
/// daemon does not keep them between reloads (issue 20: RSS per node).
/// Scopes nest; hold them briefly (a long-lived scope keeps the trees).
#[must_use = "the cache is emptied when the scope is dropped"]
pub struct Scope(());

impl Scope {
    /// Opens a scope (see [`Scope`]).
    pub fn enter() -> Self {
        cache().scopes += 1;
        Scope(())
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let mut c = cache();
        c.scopes -= 1;
        if c.scopes == 0 {
            // Freed outside the lock.
            let trees = std::mem::take(&mut c.trees);
            let patterns = std::mem::take(&mut c.patterns);
            drop(c);
            drop((trees, patterns));
        }
    }
}

/// The schema for `apiVersion` + `kind`, if Istio defines that kind.
///
/// Parsed out of the embedded JSON the first time a document of its kind is
/// checked within a [`Scope`] and shared until the scope ends; versions of
/// a kind with the same schema (`v1`, `v1beta1`, `v1alpha3` of
/// `VirtualService`) share one tree. Outside a scope, parsed for this call
/// only. So a node's daemon holds no schema tree between reloads (issue 20:
/// RSS per node).
pub fn schema_for(api_version: &str, kind: &str) -> Option<Arc<Value>> {
    let id = text_of(&format!("{api_version}/{kind}"))?;
    if let Some(tree) = cache().trees.get(&id) {
        return Some(tree.clone());
    }
    // Parsed without the lock: another thread's check is not held up.
    let parsed = Arc::new(parse(TEXTS[id]));
    let mut c = cache();
    if c.scopes == 0 {
        return Some(parsed);
    }
    Some(c.trees.entry(id).or_insert(parsed).clone())
}

/// `true` when Istio's schema defines `apiVersion` + `kind` (parses nothing).
pub fn has_schema(api_version: &str, kind: &str) -> bool {
    text_of(&format!("{api_version}/{kind}")).is_some()
}

/// Checks `doc` (a whole resource) against the schema of its kind. `None`
/// when Istio has no such kind/version.
pub fn check(api_version: &str, kind: &str, doc: &Value) -> Option<Vec<SchemaError>> {
    let schema = schema_for(api_version, kind)?;
    let mut out = Vec::new();
    let mut root = doc.clone();
    // metadata is the API server's, not the CRD's.
    if let Some(o) = root.as_object_mut() {
        o.remove("metadata");
    }
    walk(&schema, &root, "", &mut out);
    Some(out)
}

/// A YAML value as JSON; map keys that are not strings (`80:`) become their
/// text, as the API server sees JSON.
pub fn yaml_to_json(v: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(a) => Value::Array(a.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let k = match k {
                        Y::String(s) => s,
                        Y::Number(n) => n.to_string(),
                        Y::Bool(b) => b.to_string(),
                        other => serde_yaml::to_string(&other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    (k, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => yaml_to_json(t.value),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) | Value::Array(_) => format!("\"{}\"", type_name(v)),
        other => other.to_string(),
    }
}

/// `true` when `v` satisfies `schema` (for `oneOf`/`anyOf`/`not`).
fn matches(schema: &Value, v: &Value) -> bool {
    let mut scratch = Vec::new();
    walk(schema, v, "", &mut scratch);
    scratch.is_empty()
}

fn walk(schema: &Value, v: &Value, path: &str, out: &mut Vec<SchemaError>) {
    let Some(s) = schema.as_object() else { return };
    // The API server prunes nulls of non-nullable fields before validating.
    if v.is_null() {
        return;
    }
    macro_rules! err {
        ($field:expr, $msg:expr $(,)?) => {
            out.push(SchemaError {
                field: $field.to_string(),
                message: $msg,
                unknown_field: false,
            })
        };
    }
    let int_or_string = s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let ty = s.get("type").and_then(Value::as_str);
    if let Some(ty) = ty {
        let found = type_name(v);
        let ok = found == ty
            || (ty == "number" && found == "integer")
            || (ty == "integer" && v.as_f64().is_some_and(|f| f.fract() == 0.0));
        if !ok && !int_or_string {
            err!(
                path,
                format!(
                    "Invalid value: \"{found}\": {path} in body must be of type {ty}: \"{found}\""
                ),
            );
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(render).collect();
            err!(
                path,
                format!(
                    "Unsupported value: {}: supported values: {}",
                    render(v),
                    list.join(", ")
                ),
            );
        }
    }
    let num = |k: &str| s.get(k).and_then(Value::as_f64);
    if let Some(n) = v.as_f64() {
        if let Some(min) = num("minimum") {
            if n < min {
                err!(path, format!("Invalid value: {v}: {path} in body should be greater than or equal to {min}"));
            }
        }
        if let Some(max) = num("maximum") {
            if n > max {
                err!(
                    path,
                    format!(
                        "Invalid value: {v}: {path} in body should be less than or equal to {max}"
                    )
                );
            }
        }
    }
    let count = |k: &str| s.get(k).and_then(Value::as_u64).map(|n| n as usize);
    match v {
        Value::String(text) => {
            let len = text.chars().count();
            if let Some(max) = count("maxLength") {
                if len > max {
                    err!(path, format!("Too long: may not be more than {max} bytes"));
                }
            }
            if let Some(min) = count("minLength") {
                if len < min {
                    err!(
                        path,
                        format!(
                            "Invalid value: {}: {path} in body should be at least {min} chars long",
                            render(v)
                        )
                    );
                }
            }
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                if !pattern(p).is_some_and(|re| re.is_match(text)) {
                    err!(
                        path,
                        format!(
                            "Invalid value: {}: {path} in body should match '{p}'",
                            render(v)
                        )
                    );
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = count("maxItems") {
                if items.len() > max {
                    err!(
                        path,
                        format!("Too many: {}: must have at most {max} items", items.len())
                    );
                }
            }
            if let Some(min) = count("minItems") {
                if items.len() < min {
                    err!(
                        path,
                        format!(
                            "Invalid value: {}: {path} in body should have at least {min} items",
                            items.len()
                        )
                    );
                }
            }
            if let Some(item) = s.get("items") {
                for (i, x) in items.iter().enumerate() {
                    walk(item, x, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            if let Some(max) = count("maxProperties") {
                if map.len() > max {
                    err!(
                        path,
                        format!("Too many: {}: must have at most {max} items", map.len())
                    );
                }
            }
            if let Some(min) = count("minProperties") {
                if map.len() < min {
                    err!(path, format!("Invalid value: {}: {path} in body should have at least {min} properties", map.len()));
                }
            }
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = r.as_str() {
                    if map.get(r).is_none_or(Value::is_null) {
                        err!(&join(path, r), "Required value".to_string());
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties");
            let preserve =
                s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            for (k, x) in map {
                let field = join(path, k);
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(ps), _) => walk(ps, x, &field, out),
                    (None, Some(a)) if a.is_object() => walk(a, x, &field, out),
                    (None, Some(Value::Bool(true))) => {}
                    // apiVersion and kind belong to every object.
                    // Subschemas of oneOf/anyOf/not carry no type and constrain only what they name.
                    _ if ty != Some("object")
                        || preserve
                        || (path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind")) => {}
                    _ => out.push(SchemaError {
                        message: format!("unknown field \"{field}\""),
                        field,
                        unknown_field: true,
                    }),
                }
            }
        }
        _ => {}
    }
    if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
        let n = alts.iter().filter(|a| matches(a, v)).count();
        if n != 1 {
            out.push(SchemaError {
                unknown_field: false,
                field: path.to_string(),
                message: format!("Invalid value: {}: {path} in body must validate one and only one schema (oneOf){}", render(v), exclusive_hint(alts, v)),
            });
        }
    }
    if let Some(alts) = s.get("anyOf").and_then(Value::as_array) {
        if !int_or_string && !alts.iter().any(|a| matches(a, v)) {
            out.push(SchemaError {
                unknown_field: false,
                field: path.to_string(),
                message: format!(
                    "Invalid value: {}: {path} in body must validate at least one schema (anyOf)",
                    render(v)
                ),
            });
        }
    }
    for a in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        walk(a, v, path, out);
    }
    if let Some(n) = s.get("not") {
        if matches(n, v) {
            out.push(SchemaError {
                unknown_field: false,
                field: path.to_string(),
                message: format!(
                    "Invalid value: {}: {path} in body must not validate the schema (not)",
                    render(v)
                ),
            });
        }
    }
    for rule in s
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or("");
        let message = rule
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| format!("failed rule: {text}"), str::to_string);
        match cel::eval(text, v) {
            Some(true) => {}
            Some(false) => out.push(SchemaError {
                unknown_field: false,
                field: path.to_string(),
                message: format!("Invalid value: \"{}\": {message}", type_name(v)),
            }),
            None => out.push(SchemaError {
                unknown_field: false,
                field: path.to_string(),
                message: format!(
                    "Strait cannot evaluate the schema rule {text:?} ({message}); rejected"
                ),
            }),
        }
    }
}

/// For Istio's "at most one of" `oneOf` (`not anyOf required` + one
/// `required` per field): which of the fields are set.
fn exclusive_hint(alts: &[Value], v: &Value) -> String {
    let set: Vec<&str> = alts
        .iter()
        .filter_map(|a| a.get("required")?.as_array()?.first()?.as_str())
        .filter(|f| v.get(*f).is_some_and(|x| !x.is_null()))
        .collect();
    if set.len() > 1 {
        format!(": only one of {} may be set", set.join(", "))
    } else {
        String::new()
    }
}

/// A schema `pattern`, compiled once per [`Scope`] (outside one, per
/// call). Go's RE2 syntax; Rust's `regex` is RE2-compatible for the
/// patterns Istio uses.
fn pattern(p: &str) -> Option<regex::Regex> {
    if let Some(r) = cache().patterns.get(p) {
        return r.clone();
    }
    let r = regex::Regex::new(p).ok();
    let mut c = cache();
    if c.scopes > 0 {
        c.patterns.insert(p.to_string(), r.clone());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the loader checks against is what `istio-crds.json` holds, for
    /// every key; within a scope versions with one schema share one tree,
    /// and a kind Istio does not define has none.
    #[test]
    fn schema_for_is_each_keys_schema_parsed_once_per_scope() {
        let _scope = Scope::enter();
        for (key, want) in schemas() {
            let (api, kind) = key.rsplit_once('/').unwrap();
            assert!(has_schema(api, kind), "{key}");
            assert_eq!(schema_for(api, kind).as_deref(), Some(want), "{key}");
        }
        let v1 = schema_for("networking.istio.io/v1", "VirtualService").unwrap();
        let beta = schema_for("networking.istio.io/v1beta1", "VirtualService").unwrap();
        assert!(Arc::ptr_eq(&v1, &beta), "one tree for identical versions");
        let dr = schema_for("networking.istio.io/v1", "DestinationRule").unwrap();
        assert!(!Arc::ptr_eq(&v1, &dr));
        assert_eq!(schema_for("networking.istio.io/v1", "NoSuchKind"), None);
        assert!(!has_schema("v1", "Service"));
    }
}
