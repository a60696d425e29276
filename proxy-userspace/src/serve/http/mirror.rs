//! Request mirroring (Istio `mirror` / `mirrors`, Envoy
//! `request_mirror_policies`): a fire-and-forget copy whose response is
//! dropped. As in Envoy the copy's host gets `-shadow` appended.
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Version};
use http_body_util::BodyExt;

use crate::proxy::body::full;
use crate::transport::hbone::mesh::{route, Route};
use crate::transport::hbone::MeshOutbound;
use crate::upstream::cluster::{Cluster, PickContext};

/// `ratings:9080` → `ratings-shadow:9080`, `ratings` → `ratings-shadow`.
pub fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            format!("{h}-shadow:{p}")
        }
        _ => format!("{host}-shadow"),
    }
}

/// Sends a copy of the request to `cluster` in the background, leaving
/// the node as the request itself would (`mesh::route`; `mesh`: the
/// node's HBONE and the client's address, when mTLS is on): through the
/// HBONE tunnel to a meshed endpoint; a refused route sends no copy.
pub fn spawn_mirror(
    cluster: Arc<Cluster>,
    mesh: Option<(Arc<MeshOutbound>, IpAddr)>,
    method: Method,
    path_and_query: http::uri::PathAndQuery,
    mut headers: HeaderMap,
    body: Bytes,
    authority: &str,
) {
    let shadow = shadow_host(authority);
    if let Ok(v) = HeaderValue::from_str(&shadow) {
        headers.insert(http::header::HOST, v);
    }
    tokio::spawn(async move {
        let Some(ep) = cluster.pick(&PickContext::default()) else {
            return;
        };
        let http2 = cluster.protocol == crate::upstream::cluster::UpstreamProtocol::Http2;
        let authority = http::uri::Authority::try_from(shadow.as_str())
            .unwrap_or_else(|_| ep.authority.clone());
        let Ok(uri) = http::Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
        else {
            return;
        };
        if http2 {
            headers.remove(http::header::HOST);
        }
        let mut req = Request::new(full(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *req.headers_mut() = headers;
        let (m, source) = match &mesh {
            Some((m, ip)) => (Some(m), *ip),
            None => (None, IpAddr::from([0, 0, 0, 0])),
        };
        let tunnel_pool = match route(m.map(|m| &**m), cluster.pool.mesh_tls, source, ep.addr) {
            Route::Plain => None,
            Route::Refuse(_) => return,
            Route::Tunnel(t) => match m {
                Some(m) => Some(crate::upstream::pool::tunnel_pool(m, t, &cluster.pool)),
                None => return,
            },
        };
        let pool = match &tunnel_pool {
            Some(p) => p,
            None => ep.clients(&cluster.pool),
        };
        if let Ok(sent) = pool.send(http2, req).await {
            // Drain so the connection goes back to the pool.
            let _ = sent.response.into_body().collect().await;
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn shadow_host_keeps_port() {
        assert_eq!(super::shadow_host("ratings:9080"), "ratings-shadow:9080");
        assert_eq!(super::shadow_host("ratings"), "ratings-shadow");
    }
}
