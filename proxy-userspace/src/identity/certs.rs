//! Certificates as PEM and DER, what the admin API shows of them
//! ([`CertInfo`]), and the node's certificate for one identity
//! ([`WorkloadCert`]). Private keys never leave these types in text form:
//! `Debug` and `Serialize` show no key material.
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{IdentityError, SpiffeId};

/// A fresh ECDSA P-256 key and a PEM certificate signing request for `id`:
/// an empty subject and exactly one URI SAN, the SPIFFE ID, as ztunnel's
/// CSRs to Istio's CA. Errors: `IdentityError::Cert` when rcgen cannot
/// build it.
pub fn csr_for(id: &SpiffeId) -> Result<(rcgen::KeyPair, String), IdentityError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| IdentityError::Cert(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        id.to_string()
            .try_into()
            .map_err(|e| IdentityError::Cert(format!("{id}: {e}")))?,
    )];
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| IdentityError::Cert(e.to_string()))?;
    Ok((key, csr))
}

/// Every `CERTIFICATE` block of a PEM text, in order.
pub fn parse_pem_certs(text: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::Cert(format!("bad PEM certificate: {e}")))
}

/// One certificate as PEM.
pub fn cert_pem(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// A PEM block: base64 in 64-column lines (RFC 7468).
fn pem_block(tag: &str, der: &[u8]) -> String {
    use std::fmt::Write;
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {tag}-----\n");
    for line in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", std::str::from_utf8(line).unwrap_or_default());
    }
    let _ = writeln!(out, "-----END {tag}-----");
    out
}

/// A private key from PEM in any of the forms Istio's `cacerts` secret
/// holds: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
/// (`EC PRIVATE KEY`, P-256 or P-384), returned as PKCS#8 for ring.
pub fn parse_private_key(text: &str) -> Result<PrivatePkcs8KeyDer<'static>, IdentityError> {
    let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| IdentityError::Cert(format!("no usable private key in PEM: {e}")))?;
    Ok(match key {
        PrivateKeyDer::Pkcs8(k) => k,
        PrivateKeyDer::Pkcs1(k) => {
            // AlgorithmIdentifier { rsaEncryption, NULL }
            let alg = der_seq(&[
                &der_tlv(
                    0x06,
                    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
                ),
                &[0x05, 0x00],
            ]);
            pkcs8_wrap(&alg, k.secret_pkcs1_der())
        }
        PrivateKeyDer::Sec1(k) => {
            let sec1 = k.secret_sec1_der();
            // id-ecPublicKey with the curve named in the SEC1 parameters.
            let curve = sec1_curve(sec1).ok_or_else(|| {
                IdentityError::Cert("EC PRIVATE KEY without a named curve (P-256 or P-384)".into())
            })?;
            let alg = der_seq(&[
                &der_tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
                &der_tlv(0x06, &curve),
            ]);
            pkcs8_wrap(&alg, sec1)
        }
        _ => return Err(IdentityError::Cert("unsupported private key format".into())),
    })
}

fn pkcs8_wrap(alg: &[u8], key: &[u8]) -> PrivatePkcs8KeyDer<'static> {
    PrivatePkcs8KeyDer::from(der_seq(&[&[0x02, 0x01, 0x00], alg, &der_tlv(0x04, key)]))
}

/// The named-curve OID inside a SEC1 `ECPrivateKey` (`[0] parameters`).
fn sec1_curve(sec1: &[u8]) -> Option<Vec<u8>> {
    const P256: [u8; 8] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: [u8; 5] = [0x2b, 0x81, 0x04, 0x00, 0x22];
    for oid in [&P256[..], &P384[..]] {
        let needle = der_tlv(0x06, oid);
        if sec1.windows(needle.len()).any(|w| w == needle.as_slice()) {
            return Some(oid.to_vec());
        }
    }
    None
}

/// DER tag-length-value.
pub(crate) fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

fn der_seq(parts: &[&[u8]]) -> Vec<u8> {
    der_tlv(0x30, &parts.concat())
}

/// The DER value of a SubjectAltName extension holding one URI.
pub(crate) fn uri_san_value(uri: &str) -> Vec<u8> {
    der_tlv(0x30, &der_tlv(0x86, uri.as_bytes()))
}

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// RFC 3339 UTC, e.g. `2026-12-05T03:04:05Z`.
pub fn rfc3339(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_secs.to_string())
}

/// What the admin API and `strait ca inspect` show of one certificate:
/// no key material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// Serial number, lower-case hex with colons (as `openssl x509 -serial` groups it).
    pub serial: String,
    /// Subject DN (empty for Istio workload certificates).
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// URI SANs (the SPIFFE ID of a workload certificate).
    pub uri_sans: Vec<String>,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Whether it is a CA certificate.
    pub is_ca: bool,
    #[serde(skip)]
    pub(crate) not_before_unix: i64,
    #[serde(skip)]
    pub(crate) not_after_unix: i64,
}

impl CertInfo {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, c) = X509Certificate::from_der(der)
            .map_err(|e| IdentityError::Cert(format!("cannot parse certificate: {e}")))?;
        let uri_sans = c
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|g| match g {
                        GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let nb = c.validity().not_before.timestamp();
        let na = c.validity().not_after.timestamp();
        Ok(CertInfo {
            serial: c
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            uri_sans,
            not_before: rfc3339(nb),
            not_after: rfc3339(na),
            is_ca: c.is_ca(),
            not_before_unix: nb,
            not_after_unix: na,
        })
    }

    /// Start of validity.
    pub fn not_before(&self) -> SystemTime {
        from_unix(self.not_before_unix)
    }

    /// End of validity.
    pub fn not_after(&self) -> SystemTime {
        from_unix(self.not_after_unix)
    }

    /// `not_after - not_before`.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs((self.not_after_unix - self.not_before_unix).max(0) as u64)
    }
}

fn from_unix(s: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::from_secs(s as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
    }
}

/// The node's certificate for one workload identity, as the CA issued it.
/// Immutable: renewal builds a new one and swaps it in the
/// [`CertStore`](super::CertStore), so connections holding the old `Arc`
/// keep it. `Debug` shows no key material.
pub struct WorkloadCert {
    /// The identity (the leaf's only URI SAN).
    pub id: SpiffeId,
    /// What a peer is shown: leaf first, then intermediates; never the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// The trust bundle: the root(s) the CA returned last in its chain.
    pub roots: Vec<CertificateDer<'static>>,
    /// The leaf's ECDSA P-256 key (PKCS#8).
    key: PrivatePkcs8KeyDer<'static>,
    /// Parsed leaf.
    pub leaf: CertInfo,
    /// Parsed intermediates and root, in chain order.
    pub issuers: Vec<CertInfo>,
    /// When the node renews it: half the lifetime (Istio's grace ratio 0.5)
    /// with up to ±1% jitter.
    pub renew_at: SystemTime,
}

impl std::fmt::Debug for WorkloadCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCert")
            .field("id", &self.id.to_string())
            .field("serial", &self.leaf.serial)
            .field("not_after", &self.leaf.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadCert {
    /// Builds it from the CA's response (`chain_pem`: leaf first, root last)
    /// and the key the CSR was made with. Checks that the leaf carries
    /// exactly `id` and the key's public half.
    pub fn from_response(
        id: SpiffeId,
        chain_pem: &[String],
        key: PrivatePkcs8KeyDer<'static>,
        public_key_der: &[u8],
        jitter: f64,
    ) -> Result<Self, IdentityError> {
        let mut ders = Vec::new();
        for p in chain_pem {
            ders.extend(parse_pem_certs(p)?);
        }
        if ders.len() < 2 {
            return Err(IdentityError::Cert(format!(
                "the CA returned {} certificate(s); want leaf ... root",
                ders.len()
            )));
        }
        let leaf = CertInfo::from_der(&ders[0])?;
        if leaf.uri_sans != [id.to_string()] {
            return Err(IdentityError::Cert(format!(
                "the CA issued URI SANs {:?}, asked for {id}",
                leaf.uri_sans
            )));
        }
        let (_, parsed) = X509Certificate::from_der(&ders[0])
            .map_err(|e| IdentityError::Cert(format!("cannot parse leaf: {e}")))?;
        if parsed.public_key().raw != public_key_der {
            return Err(IdentityError::Cert(
                "the CA's leaf does not carry the key of our CSR".into(),
            ));
        }
        let issuers = ders[1..]
            .iter()
            .map(|d| CertInfo::from_der(d))
            .collect::<Result<Vec<_>, _>>()?;
        let root = ders.pop().expect("len >= 2");
        let life = leaf.lifetime().as_secs_f64();
        let ratio = 0.5 + jitter.clamp(-0.01, 0.01);
        let renew_at = leaf.not_before() + Duration::from_secs_f64(life * ratio);
        Ok(WorkloadCert {
            id,
            chain: ders,
            roots: vec![root],
            key,
            leaf,
            issuers,
            renew_at,
        })
    }

    /// The leaf's private key (for a rustls config). Never log it.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// A rustls [`CertifiedKey`](rustls::sign::CertifiedKey): chain + key,
    /// for a server's or client's certificate resolver.
    pub fn certified_key(&self) -> Result<Arc<rustls::sign::CertifiedKey>, IdentityError> {
        let signer = rustls::crypto::ring::sign::any_supported_type(&self.private_key())
            .map_err(|e| IdentityError::Cert(format!("unusable key: {e}")))?;
        Ok(Arc::new(rustls::sign::CertifiedKey::new(
            self.chain.clone(),
            signer,
        )))
    }

    /// Whether `now` is past `not_after`.
    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.leaf.not_after()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_through_rustls_parser() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pem = cert_pem(&der);
        let back = parse_pem_certs(&pem).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].as_ref(), der.as_slice());
        for n in 1..5 {
            let pem = cert_pem(&der[..n]);
            assert_eq!(parse_pem_certs(&pem).unwrap()[0].as_ref(), &der[..n]);
        }
    }

    #[test]
    fn long_der_lengths_use_the_long_form() {
        assert_eq!(der_tlv(0x04, &[0; 3])[..2], [0x04, 3]);
        assert_eq!(der_tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(der_tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }
}
