//! Istio's CRD schemas against Strait's types: for every kind and version in
//! `crd-all.gen.yaml`, resources generated from the schema with every field
//! set (and every enum value, across variants) load, pass the schema checks
//! and keep every field through Strait's serde types; unknown fields are
//! still rejected; every CEL rule in the schema has a port.
mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use strait_config::load::load_str;
use strait_config::schema::{self, cel};
use strait_config::{Level, Object};

/// The embedded schema is Istio's file, descriptions dropped.
#[test]
fn embedded_schema_is_istios() {
    let Some(dir) = common::istio_dir("embedded_schema_is_istios") else {
        return;
    };
    let text = std::fs::read_to_string(dir.join("crds/crd-all.gen.yaml")).unwrap();
    fn strip(v: Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .filter(|(k, _)| k != "description")
                    .map(|(k, v)| (k, strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(strip).collect()),
            v => v,
        }
    }
    let mut want = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let Ok(v) = Value::deserialize_from(doc) else {
            continue;
        };
        let Some(spec) = v.get("spec") else { continue };
        let group = spec["group"].as_str().unwrap();
        let kind = spec["names"]["kind"].as_str().unwrap();
        for ver in spec["versions"].as_array().unwrap() {
            let name = ver["name"].as_str().unwrap();
            want.insert(
                format!("{group}/{name}/{kind}"),
                strip(ver["schema"]["openAPIV3Schema"].clone()),
            );
        }
    }
    assert!(want.len() > 30, "{}", want.len());
    assert_eq!(
        &want,
        schema::schemas(),
        "config/src/schema/istio-crds.json is stale: regenerate it from crd-all.gen.yaml"
    );
}

trait FromDoc {
    fn deserialize_from(d: serde_yaml::Deserializer) -> Result<Value, serde_yaml::Error>;
}
impl FromDoc for Value {
    fn deserialize_from(d: serde_yaml::Deserializer) -> Result<Value, serde_yaml::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// Every CEL rule of the schema is ported.
#[test]
fn every_cel_rule_has_a_port() {
    let mut rules = BTreeSet::new();
    fn collect(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for r in m
                    .get("x-kubernetes-validations")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    out.insert(r["rule"].as_str().unwrap().to_string());
                }
                m.values().for_each(|x| collect(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
            _ => {}
        }
    }
    for s in schema::schemas().values() {
        collect(s, &mut rules);
    }
    assert!(rules.len() >= 30, "{}", rules.len());
    let missing: Vec<_> = rules
        .iter()
        .filter(|r| cel::eval(r, &json!({})).is_none() && cel::eval(r, &json!("x")).is_none())
        .collect();
    assert!(missing.is_empty(), "CEL rules without a port: {missing:#?}");
}

/// Names of the fields in "at most one of" groups of an object schema.
fn exclusive_groups(s: &Map<String, Value>) -> Vec<Vec<String>> {
    let mut groups = Vec::new();
    let mut one_ofs: Vec<&Value> = s.get("oneOf").into_iter().collect();
    for a in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        one_ofs.extend(a.get("oneOf"));
    }
    for alts in one_ofs.into_iter().filter_map(Value::as_array) {
        let g: Vec<String> = alts
            .iter()
            .filter_map(|a| a.get("required")?.as_array()?.first()?.as_str())
            .map(str::to_string)
            .collect();
        if !g.is_empty() {
            groups.push(g);
        }
    }
    for r in s
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(g) = cel::exclusive_fields(r["rule"].as_str().unwrap()) {
            groups.push(g);
        }
    }
    groups
}

/// A value for `schema`; `variant` picks enum values and which member of each
/// exclusive group is kept.
fn generate(schema: &Value, variant: usize) -> Value {
    let s = schema.as_object().unwrap();
    let rules: Vec<String> = s
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| cel::normalize(r["rule"].as_str().unwrap()))
        .collect();
    let rule = |needle: &str| rules.iter().any(|r| r.contains(needle));
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e[variant % e.len()].clone();
    }
    if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return json!(8080);
    }
    match s.get("type").and_then(Value::as_str) {
        Some("object") => {
            let mut m = Map::new();
            for (k, p) in s
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                m.insert(k.clone(), generate(p, variant));
            }
            if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
                m.insert("8080".to_string(), generate(a, variant));
            }
            let groups = exclusive_groups(s);
            let union: BTreeSet<&String> = groups.iter().flatten().collect();
            let preferred = union
                .iter()
                .nth(mix(variant, &union) % union.len().max(1))
                .copied()
                .cloned();
            for g in &groups {
                let keep = match &preferred {
                    Some(p) if g.contains(p) => p,
                    _ => &g[variant % g.len()],
                };
                for f in g {
                    if f != keep {
                        m.remove(f);
                    }
                }
            }
            let mut v = Value::Object(m);
            repair(s, &mut v, variant);
            v
        }
        Some("array") => json!([generate(&s["items"], variant)]),
        Some("integer") => {
            if rule("65535") {
                json!(8080)
            } else {
                let min = s.get("minimum").and_then(Value::as_i64).unwrap_or(1).max(1);
                json!(min)
            }
        }
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("string") => {
            let pattern = s.get("pattern").and_then(Value::as_str).unwrap_or("");
            if rule("duration(self)") {
                json!("1s")
            } else if rule("size() == 0") {
                json!("")
            } else if rule("getScheme()") {
                json!("https://example.com/x")
            } else if rule(r#"self in ["", "HTTP", "HTTPS"]"#) {
                json!("HTTP")
            } else if pattern.contains("a-f0-9]{64}") {
                json!("a".repeat(64))
            } else if s.get("format").and_then(Value::as_str) == Some("date-time") {
                json!("2025-01-01T00:00:00Z")
            } else if s.get("format").and_then(Value::as_str) == Some("byte") {
                json!("YQ==")
            } else {
                json!("a")
            }
        }
        _ => json!({}),
    }
}

/// Drops fields until the object's CEL rules hold (cross-field rules such
/// as "NONE mode cannot set endpoints"): only fields the failing rule names,
/// starting at a point that depends on `variant`.
fn repair(s: &Map<String, Value>, v: &mut Value, variant: usize) {
    let rules: Vec<&str> = s
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    for rule in rules {
        let mut guard = 0;
        while cel::eval(rule, v) != Some(true) {
            let named: Vec<String> = v
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| rule.contains(&format!("self.{k}")))
                .cloned()
                .collect();
            assert!(
                !named.is_empty() && guard < 16,
                "cannot satisfy {rule} with {v}"
            );
            let drop = &named[mix(variant + guard, &named) % named.len()];
            v.as_object_mut().unwrap().remove(drop);
            guard += 1;
        }
    }
}

/// A deterministic choice depending on `variant` and the candidates.
fn mix<T: std::hash::Hash>(variant: usize, with: &T) -> usize {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    with.hash(&mut h);
    h.write_usize(variant);
    h.finish() as usize
}

/// Leaf paths of a value, array indexes and map keys normalised.
fn paths(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                // Map keys, and the spellings Strait reads as one field.
                let k = match k.as_str() {
                    _ if k.parse::<u32>().is_ok() => "*",
                    "labels" if at.ends_with("workloadSelector") => "matchLabels",
                    "jwks_uri" => "jwksUri",
                    k => k,
                };
                paths(x, &format!("{at}.{k}"), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            a.iter().for_each(|x| paths(x, &format!("{at}[]"), out))
        }
        Value::Null => {}
        _ => {
            out.insert(at.to_string());
        }
    }
}

fn spec_json(o: &Object) -> Option<Value> {
    Some(
        match o {
            Object::VirtualService(o) => serde_json::to_value(&o.spec),
            Object::DestinationRule(o) => serde_json::to_value(&o.spec),
            Object::Gateway(o) => serde_json::to_value(&o.spec),
            Object::ServiceEntry(o) => serde_json::to_value(&o.spec),
            Object::Sidecar(o) => serde_json::to_value(&o.spec),
            Object::WorkloadEntry(o) => serde_json::to_value(&o.spec),
            Object::PeerAuthentication(o) => serde_json::to_value(&o.spec),
            Object::RequestAuthentication(o) => serde_json::to_value(&o.spec),
            Object::AuthorizationPolicy(o) => serde_json::to_value(&o.spec),
            _ => return None,
        }
        .unwrap(),
    )
}

fn doc(key: &str, spec: Value) -> (String, String, Value) {
    let (api, kind) = key.rsplit_once('/').unwrap();
    let v = json!({"apiVersion": api, "kind": kind, "metadata": {"name": "gen", "namespace": "ns"}, "spec": spec});
    (api.to_string(), kind.to_string(), v)
}

/// Every kind and version: generated resources load without error (types
/// accept every field; the schema checks pass), Strait's types keep every
/// field, every enum value is accepted.
#[test]
fn generated_resources_with_every_field_load() {
    // One parse of each schema for all the loads below, as a reload shares it.
    let _schemas = schema::Scope::enter();
    let mut failures = Vec::new();
    for (key, s) in schema::schemas() {
        let spec_schema = &s["properties"]["spec"];
        let mut all = BTreeSet::new();
        paths(&generate_all(spec_schema), "spec", &mut all);
        let mut covered = BTreeSet::new();
        for variant in 0..VARIANTS {
            let (api, kind, v) = doc(key, generate(spec_schema, variant));
            let yaml = serde_yaml::to_string(&v).unwrap();
            let loaded = load_str(&yaml, "gen.yaml");
            let errors: Vec<String> = loaded
                .diagnostics
                .iter()
                .filter(|d| d.level == Level::Error)
                .map(|d| d.to_string())
                .collect();
            if !errors.is_empty() {
                failures.push(format!("{key} variant {variant}: {errors:#?}"));
                continue;
            }
            let mut got = BTreeSet::new();
            paths(&v["spec"], "spec", &mut got);
            covered.extend(got.iter().cloned());
            if let Some(r) = loaded.resources.first() {
                // Typed kinds keep what they parsed.
                let back = spec_json(&r.object).unwrap();
                let mut kept = BTreeSet::new();
                paths(&back, "spec", &mut kept);
                let lost: Vec<_> = got.difference(&kept).collect();
                if !lost.is_empty() {
                    failures.push(format!(
                        "{key} variant {variant}: fields dropped by Strait's types: {lost:?}"
                    ));
                }
            } else {
                assert!(
                    strait_config::load::recognised_kind(&api, &kind),
                    "{key}: not loaded and not recognised"
                );
            }
        }
        let uncovered: Vec<_> = all.difference(&covered).collect();
        if !uncovered.is_empty() {
            failures.push(format!("{key}: generator never set {uncovered:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Variants per kind: enough for every enum value (at most 12) and every
/// combination the cross-field rules need (EnvoyFilter's `WAYPOINT` context
/// with a `waypoint` match).
const VARIANTS: usize = 64;

/// Every field at once, exclusive groups ignored (for the path inventory).
fn generate_all(schema: &Value) -> Value {
    let s = schema.as_object().unwrap();
    match s.get("type").and_then(Value::as_str) {
        Some("object") => {
            let mut m = Map::new();
            for (k, p) in s
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                m.insert(k.clone(), generate_all(p));
            }
            if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
                m.insert("8080".to_string(), generate_all(a));
            }
            Value::Object(m)
        }
        Some("array") => json!([generate_all(&s["items"])]),
        _ => generate(schema, 0),
    }
}

/// Unknown fields are rejected in every kind and version, at the top of the
/// spec and nested.
#[test]
fn unknown_fields_are_rejected() {
    let _schemas = schema::Scope::enter();
    for key in schema::schemas().keys() {
        let spec = json!({"straitUnknownField": 1});
        let (_, _, v) = doc(key, spec);
        let loaded = load_str(&serde_yaml::to_string(&v).unwrap(), "u.yaml");
        assert!(
            loaded.has_errors(),
            "{key}: unknown field accepted: {:?}",
            loaded.diagnostics
        );
        assert!(loaded.resources.is_empty(), "{key}");
    }
}

/// The schema's rules reject what `kubectl apply` rejects, with Istio's messages.
#[test]
fn schema_rules_reject_with_istios_messages() {
    let cases = [
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: ns}\nspec:\n  hosts: [r]\n  http:\n  - timeout: 0.5ms\n    route:\n    - destination: {host: r}\n",
            "spec.http[0].timeout: Invalid value: \"string\": must be a valid duration greater than 1ms",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: ns}\nspec:\n  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Service, group: \"\", name: a}]\n",
            "spec: Invalid value: \"object\": only one of targetRefs or selector can be set",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s, namespace: ns}\nspec:\n  hosts: [a.example]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 1.2.3.4}]\n",
            "spec: Invalid value: \"object\": NONE mode cannot set endpoints",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: ns}\nspec:\n  host: r\n  trafficPolicy:\n    loadBalancer: {simple: FASTEST}\n",
            "spec.trafficPolicy.loadBalancer.simple: Unsupported value: \"FASTEST\": supported values:",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: ns}\nspec:\n  portLevelMtls:\n    \"8080\": {mode: STRICT}\n",
            "spec: Invalid value: \"object\": portLevelMtls requires selector",
        ),
        (
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: ns}\nspec:\n  tracing: [{randomSamplingPercentage: 101}]\n",
            "spec.tracing[0].randomSamplingPercentage: Invalid value: 101: spec.tracing[0].randomSamplingPercentage in body should be less than or equal to 100",
        ),
    ];
    for (yaml, want) in cases {
        let loaded = load_str(yaml, "c.yaml");
        let got: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| format!("{}: {}", d.field.clone().unwrap_or_default(), d.message))
            .collect();
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "want {want}\ngot {got:#?}"
        );
        assert!(
            loaded.resources.is_empty(),
            "{want}: the resource is rejected"
        );
    }
}
