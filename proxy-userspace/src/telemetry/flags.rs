//! Envoy response flags (`%RESPONSE_FLAGS%`), as a small bit set.
use std::fmt;

/// A set of Envoy response flags. Prints as Envoy does: the short names
/// joined by `,`, or `-` when empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseFlags(u16);

impl ResponseFlags {
    /// `UH`: no healthy upstream host in the cluster.
    pub const NO_HEALTHY_UPSTREAM: Self = Self(1);
    /// `UF`: upstream connection failure.
    pub const UPSTREAM_CONNECTION_FAILURE: Self = Self(1 << 1);
    /// `UO`: upstream overflow (circuit breaking).
    pub const UPSTREAM_OVERFLOW: Self = Self(1 << 2);
    /// `NR`: no route configured.
    pub const NO_ROUTE_FOUND: Self = Self(1 << 3);
    /// `URX`: retry limit or max connect attempts reached.
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: Self = Self(1 << 4);
    /// `UT`: upstream request timeout.
    pub const UPSTREAM_REQUEST_TIMEOUT: Self = Self(1 << 5);
    /// `DI`: the request was delayed by fault injection.
    pub const DELAY_INJECTED: Self = Self(1 << 6);
    /// `FI`: the request was aborted by fault injection.
    pub const FAULT_INJECTED: Self = Self(1 << 7);
    /// `UC`: upstream connection termination.
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 8);
    /// `DC`: downstream connection termination.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 9);
    /// `UR`: upstream remote reset.
    pub const UPSTREAM_REMOTE_RESET: Self = Self(1 << 10);
    /// `DPE`: the downstream request had an HTTP protocol error (a
    /// malformed head or body framing: the client's fault, never counted
    /// against an upstream).
    pub const DOWNSTREAM_PROTOCOL_ERROR: Self = Self(1 << 11);
    /// `OL`: refused by the overload manager (here: the downstream
    /// connection cap).
    pub const OVERLOAD_MANAGER: Self = Self(1 << 12);
    /// `RBAC`: denied by an AuthorizationPolicy (Envoy's RBAC filter).
    pub const RBAC_ACCESS_DENIED: Self = Self(1 << 13);
    /// `UAEX`: denied by an external authorization service (a CUSTOM
    /// AuthorizationPolicy's provider).
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: Self = Self(1 << 14);

    /// In Envoy's printing order (`ResponseFlagUtils`).
    const NAMES: [(Self, &'static str); 15] = [
        (Self::NO_HEALTHY_UPSTREAM, "UH"),
        (Self::UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (Self::UPSTREAM_REMOTE_RESET, "UR"),
        (Self::UPSTREAM_CONNECTION_FAILURE, "UF"),
        (Self::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Self::UPSTREAM_OVERFLOW, "UO"),
        (Self::NO_ROUTE_FOUND, "NR"),
        (Self::DELAY_INJECTED, "DI"),
        (Self::FAULT_INJECTED, "FI"),
        (Self::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (Self::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (Self::UNAUTHORIZED_EXTERNAL_SERVICE, "UAEX"),
        (Self::RBAC_ACCESS_DENIED, "RBAC"),
        (Self::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
        (Self::OVERLOAD_MANAGER, "OL"),
    ];

    /// No flag set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Adds `other`'s flags.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Whether no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_envoy_short_names() {
        assert_eq!(ResponseFlags::empty().to_string(), "-");
        let mut f = ResponseFlags::UPSTREAM_OVERFLOW;
        assert_eq!(f.to_string(), "UO");
        f.insert(ResponseFlags::DELAY_INJECTED);
        assert_eq!(f.to_string(), "UO,DI");
        f.insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
        f.insert(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
        assert_eq!(f.to_string(), "UT,UO,DI,URX");
    }
}
