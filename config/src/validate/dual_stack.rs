//! Dual-stack rules of Kubernetes' API server (`ValidateService`'s
//! `validateIPFamilies` / `validateClusterIPs`, `ValidateEndpointSlice`'s
//! address checks), with its wording, for Services and EndpointSlices
//! given as files: the API server would have refused these objects, so
//! Strait rejects them the same way (the resource alone; the rest loads).
use std::net::IpAddr;

use k8s_openapi::api::core::v1::ServiceSpec;

use super::Report;
use crate::api::EndpointSlice;

/// The address family of `ip` by Kubernetes' name.
fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// `spec.clusterIP`, `spec.clusterIPs`, `spec.ipFamilies` and
/// `spec.ipFamilyPolicy` of a Service.
pub(crate) fn service(r: &mut Report<'_>, spec: &ServiceSpec) {
    if let Some(p) = spec.ip_family_policy.as_deref() {
        if !matches!(p, "SingleStack" | "PreferDualStack" | "RequireDualStack") {
            r.err(
                "spec.ipFamilyPolicy",
                format!("Unsupported value: {p:?}: supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\""),
            );
        }
    }
    let families = spec.ip_families.as_deref().unwrap_or_default();
    for (i, f) in families.iter().enumerate() {
        if f != "IPv4" && f != "IPv6" {
            r.err(
                format!("spec.ipFamilies[{i}]"),
                format!("Unsupported value: {f:?}: supported values: \"IPv4\", \"IPv6\""),
            );
        }
    }
    if families.len() > 2 {
        r.err("spec.ipFamilies", "may specify no more than 2 ipFamilies");
    }
    if families.len() == 2 && families[0] == families[1] {
        r.err(
            "spec.ipFamilies[1]",
            format!("Duplicate value: {:?}", families[1]),
        );
    }
    let ips = spec.cluster_ips.as_deref().unwrap_or_default();
    if ips.is_empty() {
        return;
    }
    if let Some(primary) = spec.cluster_ip.as_deref().filter(|c| !c.is_empty()) {
        if ips[0] != primary {
            r.err(
                "spec.clusterIPs[0]",
                format!(
                    "Invalid value: {:?}: must be empty or the same value as 'spec.clusterIP'",
                    ips[0]
                ),
            );
        }
    }
    if ips.len() > 2 {
        r.err("spec.clusterIPs", "may specify no more than 2 clusterIPs");
    }
    let headless = ips[0] == "None";
    if headless && ips.len() > 1 {
        r.err(
            "spec.clusterIPs",
            "must be a single value 'None' for a headless service",
        );
        return;
    }
    let mut parsed: Vec<IpAddr> = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        if headless {
            break;
        }
        match ip.parse::<IpAddr>() {
            Ok(a) => parsed.push(a),
            Err(_) => r.err(
                format!("spec.clusterIPs[{i}]"),
                format!("Invalid value: {ip:?}: must be a valid IP address"),
            ),
        }
    }
    if parsed.len() == 2 && parsed[0].is_ipv4() == parsed[1].is_ipv4() {
        r.err(
            "spec.clusterIPs[1]",
            format!(
                "Invalid value: {:?}: may not have the same family as spec.clusterIPs[0] (dual-stack needs one IPv4 and one IPv6 address)",
                ips[1]
            ),
        );
    }
    if parsed.len() == 2 && spec.ip_family_policy.as_deref() == Some("SingleStack") {
        r.err(
            "spec.clusterIPs",
            "must have one value when spec.ipFamilyPolicy is \"SingleStack\"",
        );
    }
    for (i, (ip, f)) in parsed.iter().zip(families).enumerate() {
        if family(*ip) != f {
            r.err(
                format!("spec.clusterIPs[{i}]"),
                format!(
                    "Invalid value: {:?}: expected an {f} value as indicated by `ipFamilies[{i}]`",
                    ips[i]
                ),
            );
        }
    }
}

/// Each address of an `IPv4` / `IPv6` EndpointSlice must be of that
/// family.
pub(crate) fn endpoint_slice(r: &mut Report<'_>, s: &EndpointSlice) {
    // Other address types (`FQDN`, or one the schema let through) are
    // not checked here: the compiler uses only addresses that parse.
    let want = match s.address_type.as_str() {
        "IPv4" => "IPv4",
        "IPv6" => "IPv6",
        _ => return,
    };
    for (i, e) in s.endpoints.iter().enumerate() {
        for (j, a) in e.addresses.iter().enumerate() {
            if a.parse::<IpAddr>().ok().map(family) != Some(want) {
                r.err(
                    format!("endpoints[{i}].addresses[{j}]"),
                    format!("Invalid value: {a:?}: must be a valid {want} address"),
                );
            }
        }
    }
}
