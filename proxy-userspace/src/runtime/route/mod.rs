//! Compiled Istio routes (VirtualService `http`, `tcp`, `tls`), built once
//! per snapshot by [`super::compile`] and evaluated per request/connection.
pub mod actions;
pub mod matching;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

pub use actions::{CorsPolicy, Fault, FaultAbort, Mirror, Redirect, RetryOn, RetryPolicy, Rewrite};
pub use matching::{HttpMatch, MatchContext, StringMatch};

use super::ids::ClusterId;

/// What routes may match about the client workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceWorkload {
    /// Pod labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Namespace.
    pub namespace: String,
}

/// Routes of one service host and port, in Istio's rule order.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// `http` rules: first match wins; no match → 404 `NR`.
    pub http: Vec<HttpRoute>,
    /// `tcp` rules, first match wins.
    pub tcp: Vec<L4Route>,
    /// `tls` rules (passthrough), matched by SNI.
    pub tls: Vec<L4Route>,
}

impl RouteTable {
    /// Every cluster these routes send to (destinations and mirrors), for
    /// deciding at swap time whether the table can be reused.
    pub fn clusters(&self) -> impl Iterator<Item = ClusterId> + '_ {
        let http = self.http.iter().flat_map(|r| {
            let dests = match &r.action {
                RouteAction::Forward(w) => w.destinations.as_slice(),
                _ => &[],
            };
            dests
                .iter()
                .map(|d| d.cluster)
                .chain(r.mirrors.iter().map(|m| m.cluster))
        });
        let l4 = self
            .tcp
            .iter()
            .chain(&self.tls)
            .flat_map(|r| r.route.destinations.iter().map(|d| d.cluster));
        http.chain(l4)
    }

    /// The first HTTP rule with a matching condition, and the index of the
    /// condition that matched (`None` when the rule has no conditions).
    pub fn select_http(
        &self,
        req: &crate::proxy::head::ReqHead,
        ctx: &MatchContext<'_>,
    ) -> Option<(&HttpRoute, Option<usize>)> {
        self.http.iter().find_map(|r| {
            if r.matches.is_empty() {
                return Some((r, None));
            }
            r.matches
                .iter()
                .position(|m| m.matches(req, ctx))
                .map(|i| (r, Some(i)))
        })
    }
}

/// One VirtualService `http` rule.
#[derive(Debug)]
pub struct HttpRoute {
    /// Route name for logs (`%ROUTE_NAME%`): the rule's `name`; `default`
    /// for the generated route of a service without VirtualService.
    pub name: Option<Arc<str>>,
    /// Conditions, ORed; empty matches every request.
    pub matches: Vec<HttpMatch>,
    /// What to do with a matching request.
    pub action: RouteAction,
    /// `rewrite` before forwarding.
    pub rewrite: Option<Rewrite>,
    /// `headers.request`.
    pub request_headers: HeaderOps,
    /// `headers.response`.
    pub response_headers: HeaderOps,
    /// `fault`.
    pub fault: Option<Fault>,
    /// `mirror` / `mirrors`, each with its percentage.
    pub mirrors: Vec<Mirror>,
    /// `retries` (Istio's default policy when absent).
    pub retries: RetryPolicy,
    /// `timeout`; `None` = no timeout (Istio's default for HTTP).
    pub timeout: Option<Duration>,
    /// `corsPolicy`.
    pub cors: Option<CorsPolicy>,
}

/// What an HTTP rule does.
#[derive(Debug)]
pub enum RouteAction {
    /// Forward to one of the weighted destinations.
    Forward(WeightedClusters),
    /// `redirect`: answer with a 3xx `location`.
    Redirect(Redirect),
    /// `directResponse`: answer with this status and body.
    DirectResponse {
        /// Status code.
        status: http::StatusCode,
        /// Body (`body.string` / `body.bytes`), may be empty.
        body: Bytes,
    },
}

/// `route[]` of an HTTP rule with their weights.
#[derive(Debug)]
pub struct WeightedClusters {
    /// Destinations with weight > 0, in rule order.
    pub destinations: Vec<WeightedCluster>,
    /// Sum of the weights.
    pub total: u32,
}

impl WeightedClusters {
    /// Builds the set, dropping zero weights. A single destination without a
    /// weight gets 100, as in Istio.
    pub fn new(destinations: Vec<WeightedCluster>) -> Self {
        let destinations: Vec<_> = destinations.into_iter().filter(|d| d.weight > 0).collect();
        let total = destinations.iter().map(|d| d.weight).sum();
        Self {
            destinations,
            total,
        }
    }

    /// Picks a destination with probability weight / total. `None` when
    /// empty.
    pub fn pick(&self) -> Option<&WeightedCluster> {
        match self.destinations.len() {
            0 => None,
            1 => self.destinations.first(),
            _ => {
                let mut x = rand::random::<u32>() % self.total;
                for d in &self.destinations {
                    if x < d.weight {
                        return Some(d);
                    }
                    x -= d.weight;
                }
                self.destinations.last()
            }
        }
    }
}

/// One weighted destination.
#[derive(Debug)]
pub struct WeightedCluster {
    /// The upstream cluster (service, port, subset).
    pub cluster: ClusterId,
    /// Relative weight.
    pub weight: u32,
    /// Per-destination `headers.request`.
    pub request_headers: HeaderOps,
    /// Per-destination `headers.response`.
    pub response_headers: HeaderOps,
}

/// Istio `HeaderOperations`, applied in Envoy's order: remove, set, add.
#[derive(Clone, Debug, Default)]
pub struct HeaderOps {
    /// Replace (or create) these headers.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append these values.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove these headers.
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the operations to `headers`.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for k in &self.remove {
            headers.remove(k);
        }
        for (k, v) in &self.set {
            headers.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.add {
            headers.append(k.clone(), v.clone());
        }
    }
}

/// One compiled L4 match of a `tcp` or `tls` rule; all set conditions hold.
#[derive(Debug, Default)]
pub struct L4Match {
    /// `port`.
    pub port: Option<u16>,
    /// `destinationSubnets` as (network, prefix length); any when empty.
    pub destination_subnets: Vec<(std::net::IpAddr, u8)>,
    /// `sniHosts` (TLS): exact names or `*.suffix` wildcards, lower case.
    pub sni_hosts: Vec<String>,
    /// `sourceLabels`.
    pub source_labels: std::collections::BTreeMap<String, String>,
    /// `sourceNamespace`.
    pub source_namespace: Option<String>,
}

/// What an L4 match looks at.
#[derive(Clone, Copy, Debug)]
pub struct L4Context<'a> {
    /// Original destination.
    pub dst: std::net::SocketAddr,
    /// Service port.
    pub port: u16,
    /// SNI of a TLS connection.
    pub sni: Option<&'a str>,
    /// The client workload, when known.
    pub source: Option<&'a SourceWorkload>,
}

impl L4Match {
    /// Whether the connection satisfies every condition.
    pub fn matches(&self, ctx: &L4Context<'_>) -> bool {
        self.port.is_none_or(|p| p == ctx.port)
            && (self.destination_subnets.is_empty()
                || self
                    .destination_subnets
                    .iter()
                    .any(|(n, l)| in_subnet(ctx.dst.ip(), *n, *l)))
            && (self.sni_hosts.is_empty()
                || ctx.sni.is_some_and(|s| sni_matches(&self.sni_hosts, s)))
            && matching::source_matches(
                &self.source_labels,
                self.source_namespace.as_deref(),
                ctx.source,
            )
    }
}

/// Whether `ip` is inside `net/len`.
pub fn in_subnet(ip: std::net::IpAddr, net: std::net::IpAddr, len: u8) -> bool {
    use std::net::IpAddr::{V4, V6};
    match (ip, net) {
        (V4(a), V4(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (V6(a), V6(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128))
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// Whether `sni` matches one of `hosts` (`*` and `*.example.com`).
pub fn sni_matches(hosts: &[String], sni: &str) -> bool {
    hosts.iter().any(|h| {
        if h == "*" {
            true
        } else if let Some(suffix) = h.strip_prefix('*') {
            sni.len() > suffix.len() && sni.ends_with(suffix)
        } else {
            h == sni
        }
    })
}

/// One VirtualService `tcp` or `tls` rule.
#[derive(Debug)]
pub struct L4Route {
    /// Matches, ORed; empty matches every connection.
    pub matches: Vec<L4Match>,
    /// Weighted destinations.
    pub route: WeightedClusters,
}

impl L4Route {
    /// Whether any match holds (or there is none).
    pub fn matches(&self, ctx: &L4Context<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(ctx))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sni_wildcards_and_subnets() {
        let hosts = vec![
            "*.example.com".to_string(),
            "login.bookinfo.com".to_string(),
        ];
        assert!(super::sni_matches(&hosts, "a.example.com"));
        assert!(!super::sni_matches(&hosts, "example.com"));
        assert!(super::sni_matches(&hosts, "login.bookinfo.com"));
        let ip = |s: &str| s.parse().unwrap();
        assert!(super::in_subnet(ip("10.1.2.3"), ip("10.1.0.0"), 16));
        assert!(!super::in_subnet(ip("10.2.2.3"), ip("10.1.0.0"), 16));
        assert!(super::in_subnet(ip("10.2.2.3"), ip("0.0.0.0"), 0));
    }
}
