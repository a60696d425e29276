//! The node's own clients of control services (the external authorizer of
//! CUSTOM policies) through the mesh's one outbound decision
//! ([`super::mesh::route`]): to a meshed authorizer a check request goes
//! through an HBONE tunnel presenting the identity of the local workload
//! the check is made for (as Envoy's `ext_authz` cluster is reached with
//! the sidecar's identity and auto mTLS), never in plain text; a refusal
//! (`ISTIO_MUTUAL` without identities or to a destination outside the
//! mesh, a source that is not a meshed workload of this node) fails the
//! check with its reason.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use strait_config::snapshot::MeshTlsPolicy;

use super::mesh::{self, MeshOutbound, Route};
use crate::policy::ext_authz::{DialFuture, Dialed, Dialer};

/// The daemon's [`Dialer`] for check requests: the node's HBONE outbound,
/// if it has workload identities.
pub struct MeshDialer(pub Option<Arc<MeshOutbound>>);

impl Dialer for MeshDialer {
    fn dial<'a>(
        &'a self,
        source: IpAddr,
        dst: SocketAddr,
        tls: MeshTlsPolicy,
        host: &'a str,
    ) -> DialFuture<'a> {
        Box::pin(async move {
            let m = self.0.as_deref();
            match mesh::route(m, tls, source, dst) {
                Route::Plain => Ok(Dialed::Plain),
                r @ Route::Tunnel(_) => {
                    let from = SocketAddr::new(source, 0);
                    let up = mesh::connect(m, &r, from, dst, Some(host)).await?;
                    Ok(Dialed::Stream(Box::new(up)))
                }
                Route::Refuse(reason) => Err(std::io::Error::other(reason)),
            }
        })
    }
}
