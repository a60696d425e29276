//! The CEL rules (`x-kubernetes-validations`) of Istio's CRDs, ported by
//! hand: each distinct rule text in `crd-all.gen.yaml` maps to a Rust
//! function with the same meaning, and the rule's own `message` is what the
//! user sees (the API server's wording: `Invalid value: "object": only one of
//! targetRefs or selector can be set`).
//!
//! Rules are matched on their text with whitespace collapsed. [`eval`]
//! returns `None` for a rule with no port; `config/tests/schema.rs` fails when
//! Istio's schema carries such a rule, so a new rule is caught by the tests,
//! not by users.
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

/// `has(self.f)`: the field is present (Kubernetes prunes nulls first).
fn has(v: &Value, f: &str) -> bool {
    v.get(f).is_some_and(|x| !x.is_null())
}

fn str_of<'v>(v: &'v Value, f: &str) -> Option<&'v str> {
    v.get(f).and_then(Value::as_str)
}

/// CEL's `size()`: characters of a string, items of a list, entries of a map.
fn size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        _ => 0,
    }
}

/// `(has(self.a) ? 1 : 0) + (has(self.b) ? 1 : 0) + ... <= 1`: the field names,
/// when `rule` has exactly that shape.
fn at_most_one_of(rule: &str) -> Option<Vec<String>> {
    static SHAPE: OnceLock<Regex> = OnceLock::new();
    static TERM: OnceLock<Regex> = OnceLock::new();
    let shape = SHAPE.get_or_init(|| {
        Regex::new(r"^\(has\(self\.\w+\) \? 1 : 0\)( \+ \(has\(self\.\w+\) \? 1 : 0\))+ <= 1$")
            .expect("static regex")
    });
    let term = TERM.get_or_init(|| Regex::new(r"has\(self\.(\w+)\)").expect("static regex"));
    shape.is_match(rule).then(|| {
        term.captures_iter(rule)
            .map(|c| c[1].to_string())
            .collect()
    })
}

/// The fields an "at most one of" rule names (for test generators), or
/// `None` when `rule` is not of that shape.
pub fn exclusive_fields(rule: &str) -> Option<Vec<String>> {
    at_most_one_of(&normalize(rule))
}

/// Rule text with runs of whitespace collapsed to one space.
pub fn normalize(rule: &str) -> String {
    rule.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `isURL(s)` then `url(s).getScheme()` as CEL's Kubernetes URL library
/// (Go's `url.ParseRequestURI`): a leading `scheme:` is the scheme; a path
/// starting with `/` has none; anything else is not a URL.
fn url_scheme(s: &str) -> Option<String> {
    static SCHEME: OnceLock<Regex> = OnceLock::new();
    let re = SCHEME.get_or_init(|| Regex::new(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):").expect("static regex"));
    if let Some(c) = re.captures(s) {
        return Some(c[1].to_ascii_lowercase());
    }
    if s.starts_with('/') {
        return Some(String::new());
    }
    None
}

/// The WasmPlugin/TrafficExtension `url` rule: scheme one of `allowed`, or no
/// scheme at all (then `http://` is assumed, as Istio does).
fn url_rule(s: &str, allowed: &[&str]) -> bool {
    match url_scheme(s) {
        Some(scheme) => allowed.contains(&scheme.as_str()),
        None => url_scheme(&format!("http://{s}")).is_some_and(|x| allowed.contains(&x.as_str())),
    }
}

fn port_name_ok(key: &str) -> bool {
    static NAME: OnceLock<Regex> = OnceLock::new();
    let re = NAME.get_or_init(|| {
        Regex::new(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$").expect("static regex")
    });
    key.chars().count() < 63 && re.is_match(key)
}

fn int_of(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_u64().map(|u| u.min(i64::MAX as u64) as i64))
}

/// Evaluates the rule `rule` (as written in the schema) with `self` = `v`.
/// `Some(true)`: satisfied; `Some(false)`: violated (an evaluation error —
/// a wrong type, `int("x")`, an out-of-range `substring` — counts as violated,
/// as the API server rejects the object then too); `None`: Strait has no
/// port of this rule.
pub fn eval(rule: &str, v: &Value) -> Option<bool> {
    let rule = normalize(rule);
    if let Some(fields) = at_most_one_of(&rule) {
        return Some(fields.iter().filter(|f| has(v, f)).count() <= 1);
    }
    let keys = || v.as_object().into_iter().flat_map(|o| o.keys());
    let s = v.as_str().unwrap_or("");
    Some(match rule.as_str() {
        "has(self.wasm) != has(self.lua)" => has(v, "wasm") != has(v, "lua"),
        r#"self.all(key, !key.contains("*"))"# => keys().all(|k| !k.contains('*')),
        "self.all(key, key.size() != 0)" => keys().all(|k| !k.is_empty()),
        r#"!self.contains("*")"# => v.is_string() && !s.contains('*'),
        "self.size() == 0" => size(v) == 0,
        r#"isURL(self) ? (url(self).getScheme() in ["", "http", "https", "file", "oci"]) : (isURL("http://" + self) && url("http://" + self).getScheme() in ["", "http", "https", "file", "oci"])"#
        | r#"isURL(self) ? (url(self).getScheme() in ["", "http", "https", "oci", "file"]) : (isURL("http://" + self) && url("http://" + self).getScheme() in ["", "http", "https", "oci", "file"])"# => {
            url_rule(s, &["", "http", "https", "file", "oci"])
        }
        r#"(has(self.valueFrom) ? self.valueFrom : "") != "HOST" || !has(self.value)"# => {
            str_of(v, "valueFrom").unwrap_or("") != "HOST" || !has(v, "value")
        }
        "duration(self) >= duration('1ms')" => v
            .as_str()
            .and_then(|s| crate::duration::parse(s).ok())
            .is_some_and(|d| d >= std::time::Duration::from_millis(1)),
        r#"has(self.context) ? ((self.context == "WAYPOINT") ? has(self.waypoint) : !has(self.waypoint)) : !has(self.waypoint)"# => {
            if has(v, "context") && str_of(v, "context") == Some("WAYPOINT") {
                has(v, "waypoint")
            } else {
                !has(v, "waypoint")
            }
        }
        "0 < self && self <= 65535" => int_of(v).is_some_and(|p| 0 < p && p <= 65535),
        r#"!((has(self.addresses) ? self.addresses : []).exists(k, k.contains("/")) && !((has(self.resolution) ? self.resolution : "NONE") in ["STATIC", "NONE"]))"# => {
            let cidr = v
                .get("addresses")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|k| k.as_str().is_some_and(|k| k.contains('/'))));
            let res = str_of(v, "resolution").unwrap_or("NONE");
            !(cidr && !matches!(res, "STATIC" | "NONE"))
        }
        r#"((has(self.resolution) ? self.resolution : "NONE") == "NONE") ? !has(self.endpoints) : true"# => {
            str_of(v, "resolution").unwrap_or("NONE") != "NONE" || !has(v, "endpoints")
        }
        r#"((has(self.resolution) ? self.resolution : "") == "DNS_ROUND_ROBIN") ? ((has(self.endpoints) ? self.endpoints : []).size() <= 1) : true"# => {
            str_of(v, "resolution") != Some("DNS_ROUND_ROBIN")
                || v.get("endpoints").map_or(0, size) <= 1
        }
        "has(self.address) || has(self.network)" => has(v, "address") || has(v, "network"),
        r#"(has(self.address) ? self.address : "").startsWith("unix://") ? !has(self.ports) : true"# => {
            !str_of(v, "address").unwrap_or("").starts_with("unix://") || !has(v, "ports")
        }
        r#"self.startsWith("unix://") ? (self.substring(7, 8) == "/" || self.substring(7, 8) == "@") : true"# => {
            match s.strip_prefix("unix://") {
                Some(rest) => rest.starts_with('/') || rest.starts_with('@'),
                None => true,
            }
        }
        r#"self.startsWith("unix://") ? !self.endsWith("/") : true"# => {
            !s.starts_with("unix://") || !s.ends_with('/')
        }
        r#"self.all(key, size(key) < 63 && key.matches("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"))"# => {
            keys().all(|k| port_name_ok(k))
        }
        r#"self != "*""# => s != "*",
        "self.all(l1, self.exists_one(l2, l1.number == l2.number))" => {
            let nums: Vec<Option<&Value>> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p.get("number"))
                .collect();
            nums.iter()
                .all(|n| nums.iter().filter(|m| *m == n).count() == 1)
        }
        r#"self in ["", "HTTP", "HTTPS"]"# => matches!(s, "" | "HTTP" | "HTTPS"),
        "(has(self.serviceAccounts) || has(self.notServiceAccounts)) ? (!has(self.principals) && !has(self.notPrincipals) && !has(self.namespaces) && !has(self.notNamespaces)) : true" => {
            !(has(v, "serviceAccounts") || has(v, "notServiceAccounts"))
                || ["principals", "notPrincipals", "namespaces", "notNamespaces"]
                    .iter()
                    .all(|f| !has(v, f))
        }
        "has(self.portLevelMtls) ? (((has(self.selector) && has(self.selector.matchLabels)) ? self.selector.matchLabels : {}).size() > 0) : true" => {
            !has(v, "portLevelMtls")
                || v
                    .get("selector")
                    .and_then(|s| s.get("matchLabels"))
                    .map_or(0, size)
                    > 0
        }
        "self.all(key, 0 < int(key) && int(key) <= 65535)" => {
            keys().all(|k| k.parse::<i64>().is_ok_and(|p| 0 < p && p <= 65535))
        }
        r#"url(self).getScheme() in ["http", "https"]"# => {
            matches!(url_scheme(s).as_deref(), Some("http" | "https"))
        }
        r#"((has(self.operation) ? self.operation : "") == "UPSERT") ? (self.value != "") : true"# => {
            str_of(v, "operation") != Some("UPSERT") || str_of(v, "value").is_some_and(|x| !x.is_empty())
        }
        r#"((has(self.operation) ? self.operation : "") == "REMOVE") ? !has(self.value) : true"# => {
            str_of(v, "operation") != Some("REMOVE") || !has(v, "value")
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_behave_as_their_cel() {
        let one = "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1";
        assert_eq!(eval(one, &json!({"selector": {}})), Some(true));
        assert_eq!(eval(one, &json!({"selector": {}, "targetRefs": []})), Some(false));
        let d = "duration(self) >= duration('1ms')";
        assert_eq!(eval(d, &json!("1ms")), Some(true));
        assert_eq!(eval(d, &json!("0.5ms")), Some(false));
        assert_eq!(eval(d, &json!("5")), Some(false));
        let p = "0 < self && self <= 65535";
        assert_eq!(eval(p, &json!(0)), Some(false));
        assert_eq!(eval(p, &json!(65535)), Some(true));
        let uds = "self.startsWith(\"unix://\") ? (self.substring(7, 8) == \"/\" || self.substring(7, 8) == \"@\") : true";
        assert_eq!(eval(uds, &json!("unix://")), Some(false));
        assert_eq!(eval(uds, &json!("unix:///a")), Some(true));
        let url = "isURL(self) ? (url(self).getScheme() in [\"\", \"http\", \"https\", \"file\", \"oci\"]) : (isURL(\"http://\" + self) &&\nurl(\"http://\" + self).getScheme() in [\"\", \"http\", \"https\", \"file\", \"oci\"])";
        assert_eq!(eval(url, &json!("oci://r/x:1")), Some(true));
        assert_eq!(eval(url, &json!("ftp://r/x")), Some(false));
        assert_eq!(eval(url, &json!("r.io/x")), Some(true));
        assert_eq!(eval("self.all(key, 0 < int(key) && int(key) <= 65535)", &json!({"80": 1, "x": 1})), Some(false));
        assert_eq!(eval("self == 1", &json!(1)), None);
    }
}
