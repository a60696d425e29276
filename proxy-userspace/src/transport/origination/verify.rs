//! Server-certificate checks for TLS origination, as Envoy's
//! `CertificateValidationContext` that Istio builds from a DestinationRule:
//!
//! - no `subjectAltNames`: the chain must verify against the CA bundle and
//!   the certificate must be valid for the SNI name (webpki's host-name
//!   check, what Istio's `VERIFY_CERTIFICATE_AT_CLIENT` asks for);
//! - `subjectAltNames`: the chain must verify and one of the certificate's
//!   SANs (DNS, URI, IP, e-mail) must equal one of them (Envoy's
//!   `match_typed_subject_alt_names` with exact matchers; a DNS SAN
//!   `*.example.com` matches one label, as Envoy's `dnsNameMatch`); the
//!   host-name check is replaced, not added;
//! - `insecureSkipVerify`: no chain or name check at all (signatures of the
//!   handshake are still checked).
use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, Error};

use crate::transport::verify_sig::handshake_signatures;

/// Chain check with optional SAN allow-list (see the module doc).
#[derive(Debug)]
pub(super) struct SanVerifier {
    pub(super) inner: Arc<WebPkiServerVerifier>,
    /// Accepted SANs; empty: host-name check against the SNI.
    pub(super) sans: Vec<String>,
}

/// The certificate's SANs as strings (DNS names, URIs, e-mails, IPs).
fn cert_sans(der: &CertificateDer<'_>) -> Result<Vec<String>, Error> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Ok(Vec::new());
    };
    Ok(ext
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                Some(s.to_string())
            }
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

/// Whether the certificate SAN `have` satisfies the configured `want`.
fn san_matches(have: &str, want: &str) -> bool {
    if have.eq_ignore_ascii_case(want) {
        return true;
    }
    // A wildcard DNS SAN covers exactly one leftmost label.
    match (have.strip_prefix("*."), want.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && !suffix.is_empty() && rest.eq_ignore_ascii_case(suffix)
        }
        _ => false,
    }
}

impl SanVerifier {
    fn check_sans(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        let have = cert_sans(end_entity)?;
        if have
            .iter()
            .any(|h| self.sans.iter().any(|w| san_matches(h, w)))
        {
            Ok(())
        } else {
            Err(Error::General(format!(
                "certificate SAN mismatch: certificate has [{}], subjectAltNames want [{}]",
                have.join(", "),
                self.sans.join(", ")
            )))
        }
    }
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let r = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if self.sans.is_empty() {
            return r;
        }
        match r {
            Ok(_)
            | Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                self.check_sans(end_entity)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    handshake_signatures!(delegate inner);
}

/// `insecureSkipVerify: true`: any certificate.
#[derive(Debug)]
pub(super) struct NoVerify(pub(super) Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!(algorithms 0.signature_verification_algorithms);
}

#[cfg(test)]
mod tests {
    use super::san_matches;

    #[test]
    fn san_match_is_exact_or_one_wildcard_label() {
        assert!(san_matches("api.example.com", "api.example.com"));
        assert!(san_matches("API.example.com", "api.example.com"));
        assert!(san_matches("*.example.com", "api.example.com"));
        assert!(!san_matches("*.example.com", "a.b.example.com"));
        assert!(!san_matches("*.example.com", "example.com"));
        assert!(!san_matches("api.example.com", "web.example.com"));
        assert!(san_matches(
            "spiffe://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b"
        ));
    }
}
