//! Authenticating a caller by its Kubernetes service-account token with a
//! TokenReview, for the CA (`strait ca serve`) under Kubernetes.
//!
//! Istio's CA does the same (istio/istio
//! `security/pkg/server/ca/authenticate/kubeauth`): the token is sent to the
//! API server's `authentication.k8s.io/v1` TokenReview, and the
//! authenticated user `system:serviceaccount:<namespace>:<name>` is the
//! identity. For a token bound to a pod, the API server also reports the
//! pod and (1.30+) its node in `user.extra`; the CA uses the node to allow
//! only identities of pods on the caller's node.
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

/// What a successful review says about the token's holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewedToken {
    /// `user.username`, e.g. `system:serviceaccount:istio-system:strait`.
    pub username: String,
    /// The service account's namespace (from the username).
    pub namespace: String,
    /// The service account's name (from the username).
    pub service_account: String,
    /// `authentication.kubernetes.io/pod-name`, for a pod-bound token.
    pub pod_name: Option<String>,
    /// `authentication.kubernetes.io/pod-uid`, for a pod-bound token.
    pub pod_uid: Option<String>,
    /// `authentication.kubernetes.io/node-name`, for a pod-bound token on
    /// API servers that record it (Kubernetes 1.30+).
    pub node_name: Option<String>,
    /// The audiences the API server accepted the token for.
    pub audiences: Vec<String>,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenReviewError {
    /// The API server could not be asked (network, RBAC: the caller needs
    /// `create` on `tokenreviews.authentication.k8s.io`).
    #[error("TokenReview request failed: {0}")]
    Request(#[from] kube::Error),
    /// The API server says the token is not valid (expired, revoked, wrong
    /// audience).
    #[error("token not authenticated: {0}")]
    Unauthenticated(String),
    /// The token is valid but not a service account's.
    #[error("token of {0:?} is not a service account's")]
    NotServiceAccount(String),
}

/// Sends TokenReviews with the daemon's (or the CA's) own client.
#[derive(Clone)]
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audiences: Vec<String>,
}

impl TokenReviewer {
    /// A reviewer using `client`; `audiences` are those the token must be
    /// valid for (Istio's CA asks for `istio-ca`; empty: the API server's
    /// own audience).
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        Self {
            api: Api::all(client),
            audiences,
        }
    }

    /// Reviews `token`. Errors: see [`TokenReviewError`].
    pub async fn review(&self, token: &str) -> Result<ReviewedToken, TokenReviewError> {
        let req = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let resp = self.api.create(&PostParams::default(), &req).await?;
        parse_status(resp)
    }
}

/// Reads a TokenReview answer.
pub fn parse_status(resp: TokenReview) -> Result<ReviewedToken, TokenReviewError> {
    let status = resp.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(TokenReviewError::Unauthenticated(
            status
                .error
                .unwrap_or_else(|| "authenticated: false".into()),
        ));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some(rest) = username.strip_prefix("system:serviceaccount:") else {
        return Err(TokenReviewError::NotServiceAccount(username));
    };
    let Some((namespace, service_account)) = rest.split_once(':') else {
        return Err(TokenReviewError::NotServiceAccount(username));
    };
    let extra = user.extra.unwrap_or_default();
    let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
    Ok(ReviewedToken {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod_name: first("authentication.kubernetes.io/pod-name"),
        pod_uid: first("authentication.kubernetes.io/pod-uid"),
        node_name: first("authentication.kubernetes.io/node-name"),
        audiences: status.audiences.unwrap_or_default(),
        username,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: serde_json::Value) -> TokenReview {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_pod_bound_service_account_token_names_namespace_account_pod_and_node() {
        let r = parse_status(answer(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {},
            "status": {"authenticated": true, "audiences": ["istio-ca"],
                "user": {"username": "system:serviceaccount:istio-system:strait",
                         "extra": {"authentication.kubernetes.io/pod-name": ["strait-x1"],
                                   "authentication.kubernetes.io/pod-uid": ["u-1"],
                                   "authentication.kubernetes.io/node-name": ["node-a"]}}}
        })))
        .unwrap();
        assert_eq!(r.namespace, "istio-system");
        assert_eq!(r.service_account, "strait");
        assert_eq!(r.pod_name.as_deref(), Some("strait-x1"));
        assert_eq!(r.node_name.as_deref(), Some("node-a"));
        assert_eq!(r.audiences, vec!["istio-ca".to_string()]);
    }

    #[test]
    fn unauthenticated_and_non_service_account_tokens_are_refused() {
        let e = parse_status(answer(serde_json::json!({
            "spec": {}, "status": {"authenticated": false, "error": "token has expired"}
        })))
        .unwrap_err();
        assert!(e.to_string().contains("token has expired"), "{e}");
        let e = parse_status(answer(serde_json::json!({
            "spec": {}, "status": {"authenticated": true, "user": {"username": "admin"}}
        })))
        .unwrap_err();
        assert!(matches!(e, TokenReviewError::NotServiceAccount(_)), "{e}");
    }
}
