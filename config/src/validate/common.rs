//! Shared checks (Istio's `agent` validation helpers and label rules).
use std::collections::BTreeMap;

use crate::duration;

/// `port number N must be in the range 1..65535`.
pub fn validate_port(p: i64) -> Result<(), String> {
    if (1..=65535).contains(&p) {
        Ok(())
    } else {
        Err(format!("port number {p} must be in the range 1..65535"))
    }
}

/// RFC 1123 label: lower-case alphanumerics and `-`, ≤ 63, alnum at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_label_any_case(s: &str) -> bool {
    is_dns1123_label(&s.to_ascii_lowercase())
}

/// Istio's `ValidateWildcardDomain`: a DNS name whose first label may be
/// `*` or `*suffix`.
pub fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    let mut labels = domain.split('.');
    let first = labels.next().unwrap_or("");
    let first_ok = first == "*"
        || first
            .strip_prefix('*')
            .map(|rest| rest.is_empty() || is_dns_label_any_case(rest))
            .unwrap_or_else(|| is_dns_label_any_case(first));
    if !first_ok {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    for l in labels {
        // A trailing dot (FQDN) leaves an empty last label, which Istio allows.
        if l.is_empty() && domain.ends_with('.') {
            continue;
        }
        if !is_dns_label_any_case(l) {
            return Err(format!(
                "domain name {domain:?} invalid (label {l:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// Istio's `ValidateDuration`: parses, ≥ 1ms, millisecond precision.
pub fn validate_duration(s: &str) -> Result<(), String> {
    let d = duration::parse(s)?;
    if d < std::time::Duration::from_millis(1) {
        return Err("duration must be greater than 1ms".into());
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err("only durations to ms precision are supported".into());
    }
    Ok(())
}

/// RE2 syntax (the `regex` crate accepts the same language), max 1024 bytes.
pub fn validate_regex(re: &str, where_: &str) -> Result<(), String> {
    if re.len() > 1024 {
        return Err(format!(
            "{where_:?}: regex is too large, max length allowed is 1024"
        ));
    }
    regex::Regex::new(re).map(|_| ()).map_err(|e| {
        let first = e.to_string();
        let last = first.lines().last().unwrap_or("invalid regex").trim();
        let short = last.strip_prefix("error: ").unwrap_or(last).to_string();
        format!(
            "{where_:?}: error parsing regexp: {short}: `{re}`; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
        )
    })
}

/// Kubernetes label rules (Istio's `labels.Instance.Validate`).
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in labels {
        let name = k.rsplit('/').next().unwrap_or("");
        let key_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && name
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !key_ok {
            return Err(format!("invalid tag key: {k:?}"));
        }
        let val_ok = v.is_empty()
            || (v.len() <= 63
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()));
        if !val_ok {
            return Err(format!("invalid tag value: {v:?}"));
        }
    }
    Ok(())
}

/// `a.b.c.d/n` or a bare address.
pub fn validate_ip_subnet(s: &str) -> Result<(), String> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = ip.parse().map_err(|_| format!("{s:?} is not a valid IP"))?;
    if let Some(len) = len {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match len.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => return Err(format!("{s:?} is not a valid CIDR block")),
        }
    }
    Ok(())
}

/// Istio's `validHeaderRegex`: `^[-_A-Za-z0-9]+$`.
pub fn validate_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("header name {name} is not a valid header name"));
    }
    Ok(())
}

/// `exportTo` entries: `.`, `*`, or namespace names; no duplicates.
pub fn validate_export_to(
    ns: &str,
    export_to: &[String],
    service_entry: bool,
) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for e in export_to {
        let key = if e == "." { ns } else { e.as_str() };
        if !seen.insert(key.to_string()) {
            return Err(if key != e {
                format!("duplicate entries in exportTo: . and current namespace {ns}")
            } else {
                format!("duplicate entries in exportTo for entry {e}")
            });
        }
        let ok = e == "." || e == "*" || (service_entry && e == "~") || is_dns1123_label(e);
        if !ok {
            return Err(format!(
                "only . or * or a valid DNS 1123 label is allowed as exportTo entry, found {e:?}"
            ));
        }
    }
    if seen.contains("*") && export_to.len() > 1 {
        return Err(
            "cannot have both public (*) and non-public exportTo values for a resource".into(),
        );
    }
    if seen.contains("~") && export_to.len() > 1 {
        return Err("cannot export service entry to no one (~) and someone".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(validate_wildcard_domain("reviews").is_ok());
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("*").is_ok());
        assert_eq!(
            validate_wildcard_domain("foo..com").unwrap_err(),
            "domain name \"foo..com\" invalid (label \"\" invalid)"
        );
        assert!(validate_wildcard_domain("a.*.com").is_err());
    }

    #[test]
    fn durations() {
        assert!(validate_duration("1s").is_ok());
        assert_eq!(
            validate_duration("0s").unwrap_err(),
            "duration must be greater than 1ms"
        );
        assert_eq!(
            validate_duration("1.0005s").unwrap_err(),
            "only durations to ms precision are supported"
        );
    }
}
