//! Kubernetes Secrets holding TLS material, for `credentialName` (Gateway
//! servers, DestinationRule `trafficPolicy.tls`), read as istiod reads them
//! (istio/istio `pilot/pkg/credentials/kube/secrets.go`):
//!
//! - `kubernetes.io/tls`, or any type with `tls.crt` / `tls.key`
//!   (optional `ca.crt`, `ca.crl`);
//! - generic (`Opaque`): `cert` / `key` / `cacert` (optional `crl`);
//! - a Secret with only a CA (`ca.crt` or `cacert`) — what
//!   `<credentialName>-cacert` holds.
//!
//! Other Secrets (service-account tokens, Helm releases, application
//! passwords) are not loaded at all. The material is never printed:
//! [`SecretBytes`] shows only its length in `Debug` and is never
//! serialized.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Secret bytes: compared and cloned, never shown or serialized.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes redacted>", self.0.len())
    }
}

/// The TLS material of one Secret.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsSecret {
    /// Name and namespace (labels and annotations are dropped).
    pub metadata: ObjectMeta,
    /// `type` (`kubernetes.io/tls`, `Opaque`, ...).
    pub secret_type: String,
    /// PEM certificate chain (`tls.crt` or `cert`).
    pub cert_chain: Option<SecretBytes>,
    /// PEM private key (`tls.key` or `key`).
    pub private_key: Option<SecretBytes>,
    /// PEM CA bundle (`ca.crt` or `cacert`).
    pub ca_cert: Option<SecretBytes>,
    /// PEM CRL (`ca.crl` or `crl`).
    pub crl: Option<SecretBytes>,
}

/// Why a Secret's TLS material cannot be used: the field and the message.
pub type SecretError = (String, String);

impl TlsSecret {
    /// The TLS material of `secret` (`data` and `stringData` merged, as the
    /// API server does). `Ok(None)`: not a TLS Secret, not loaded. Errors
    /// name the key (`data.tls.key`) and never include its content.
    pub fn from_secret(secret: Secret) -> Result<Option<Self>, SecretError> {
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in secret.string_data.unwrap_or_default() {
            data.insert(k, v.into_bytes());
        }
        let secret_type = secret.type_.unwrap_or_else(|| "Opaque".into());
        let pick = |a: &str, b: &str| -> Option<(String, Vec<u8>)> {
            data.get(a)
                .map(|v| (a.to_string(), v.clone()))
                .or_else(|| data.get(b).map(|v| (b.to_string(), v.clone())))
        };
        let cert = pick("tls.crt", "cert");
        let key = pick("tls.key", "key");
        let ca = pick("ca.crt", "cacert");
        let crl = pick("ca.crl", "crl");
        if secret_type == "kubernetes.io/service-account-token"
            || secret_type.starts_with("helm.sh/")
            || (cert.is_none() && key.is_none() && ca.is_none())
        {
            return Ok(None);
        }
        match (&cert, &key) {
            (Some((f, _)), None) => {
                return Err((
                    format!("data.{f}"),
                    "a certificate without its private key (tls.key or key)".into(),
                ))
            }
            (None, Some((f, _))) => {
                return Err((
                    format!("data.{f}"),
                    "a private key without its certificate (tls.crt or cert)".into(),
                ))
            }
            _ => {}
        }
        for (label, found) in [
            ("CERTIFICATE", &cert),
            ("PRIVATE KEY", &key),
            ("CERTIFICATE", &ca),
            ("X509 CRL", &crl),
        ] {
            if let Some((f, v)) = found {
                let text = std::str::from_utf8(v).unwrap_or_default();
                if !text.contains("-----BEGIN ") || !text.contains(label) {
                    return Err((
                        format!("data.{f}"),
                        format!("not PEM ({label} block expected)"),
                    ));
                }
            }
        }
        let meta = secret.metadata;
        Ok(Some(TlsSecret {
            metadata: ObjectMeta {
                name: meta.name,
                namespace: meta.namespace,
                ..Default::default()
            },
            secret_type,
            cert_chain: cert.map(|(_, v)| SecretBytes(v)),
            private_key: key.map(|(_, v)| SecretBytes(v)),
            ca_cert: ca.map(|(_, v)| SecretBytes(v)),
            crl: crl.map(|(_, v)| SecretBytes(v)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::load::load_str;
    use crate::Object;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn tls_and_generic_secrets_load_and_others_are_ignored_and_never_printed() {
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: gw-cert, namespace: istio-system}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: client, namespace: shop}}\nstringData:\n  cert: |\n{}  key: |\n{}  cacert: |\n{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: db-password, namespace: shop}}\nstringData: {{password: hunter2}}\n",
            b64(CERT),
            b64(KEY),
            indent(CERT),
            indent(KEY),
            indent(CERT)
        );
        let l = load_str(&yaml, "secrets.yaml");
        assert!(
            l.diagnostics.iter().all(|d| !d.is_error()),
            "{:?}",
            l.diagnostics
        );
        let secrets: Vec<_> = l
            .resources
            .iter()
            .filter_map(|r| match &r.object {
                Object::Secret(s) => Some((r.key(), s.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(secrets.len(), 2, "the password Secret is not loaded");
        assert_eq!(secrets[0].0, "Secret/istio-system/gw-cert");
        assert_eq!(secrets[0].1.cert_chain.as_ref().unwrap().0, CERT.as_bytes());
        assert!(secrets[1].1.ca_cert.is_some());
        let shown = format!("{:?}", l.resources);
        assert!(
            !shown.contains("MIIE") && !shown.contains("hunter2"),
            "{shown}"
        );
        // The compiled snapshot has them for credentialName, and never
        // serializes them.
        let (snap, _) = crate::compile(&l.resources);
        assert!(snap.credential("shop", "client").is_some());
        assert!(snap.credential("default", "client").is_none());
        let json = serde_json::to_string(&snap).unwrap();
        assert!(
            !json.contains("MIIE") && !json.contains("gw-cert"),
            "{json}"
        );
    }

    fn indent(s: &str) -> String {
        s.lines().map(|l| format!("    {l}\n")).collect()
    }

    #[test]
    fn a_key_without_a_certificate_or_bad_pem_is_an_error_naming_the_field() {
        let l = load_str(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: half, namespace: shop}\nstringData: {tls.key: x}\n",
            "s.yaml",
        );
        let e = l
            .diagnostics
            .iter()
            .find(|d| d.is_error())
            .expect("an error");
        let text = e.to_string();
        assert!(
            text.contains("Secret/shop/half") && text.contains("data.tls.key"),
            "{text}"
        );
        let l = load_str(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: bad, namespace: shop}\ntype: kubernetes.io/tls\nstringData: {tls.crt: not-pem, tls.key: not-pem}\n",
            "s.yaml",
        );
        let text = l
            .diagnostics
            .iter()
            .find(|d| d.is_error())
            .expect("an error")
            .to_string();
        assert!(
            text.contains("data.tls.crt") && text.contains("not PEM"),
            "{text}"
        );
        assert!(!text.contains("not-pem"), "content in the message: {text}");
    }
}
