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
use yasna::models::ObjectIdentifier;
use yasna::Tag;

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

/// One certificate as PEM (RFC 7468: base64 in 64-column lines, `\n` line
/// ends, as Istio's CA returns them).
pub fn cert_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// rsaEncryption (RFC 8017).
const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
/// id-ecPublicKey (RFC 5480).
const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
/// The named curves a SEC1 key may use: P-256 and P-384 (RFC 5480).
const EC_CURVES: [&[u64]; 2] = [&[1, 2, 840, 10045, 3, 1, 7], &[1, 3, 132, 0, 34]];

/// A private key from PEM in any of the forms Istio's `cacerts` secret
/// holds: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
/// (`EC PRIVATE KEY`, P-256 or P-384), returned as PKCS#8 for ring.
pub fn parse_private_key(text: &str) -> Result<PrivatePkcs8KeyDer<'static>, IdentityError> {
    let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| IdentityError::Cert(format!("no usable private key in PEM: {e}")))?;
    Ok(match key {
        PrivateKeyDer::Pkcs8(k) => k,
        // AlgorithmIdentifier { rsaEncryption, NULL }
        PrivateKeyDer::Pkcs1(k) => pkcs8_wrap(RSA_ENCRYPTION, None, k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => {
            let sec1 = k.secret_sec1_der();
            // id-ecPublicKey with the curve named in the SEC1 parameters.
            let curve = sec1_curve(sec1).ok_or_else(|| {
                IdentityError::Cert("EC PRIVATE KEY without a named curve (P-256 or P-384)".into())
            })?;
            pkcs8_wrap(EC_PUBLIC_KEY, Some(&curve), sec1)
        }
        _ => return Err(IdentityError::Cert("unsupported private key format".into())),
    })
}

/// PKCS#8 `PrivateKeyInfo` (RFC 5208) around `key`: version 0, the
/// algorithm `alg` with `curve` as its parameter (NULL when none).
fn pkcs8_wrap(alg: &[u64], curve: Option<&[u64]>, key: &[u8]) -> PrivatePkcs8KeyDer<'static> {
    PrivatePkcs8KeyDer::from(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(0);
            w.next().write_sequence(|w| {
                w.next().write_oid(&ObjectIdentifier::from_slice(alg));
                match curve {
                    Some(c) => w.next().write_oid(&ObjectIdentifier::from_slice(c)),
                    None => w.next().write_null(),
                }
            });
            w.next().write_bytes(key);
        })
    }))
}

/// The named curve of a SEC1 `ECPrivateKey` (RFC 5915: `[0] parameters`)
/// when it is one of [`EC_CURVES`].
fn sec1_curve(sec1: &[u8]) -> Option<Vec<u64>> {
    let curve = yasna::parse_der(sec1, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            r.next().read_bytes()?;
            let curve = r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_oid()))?;
            r.read_optional(|r| r.read_tagged_der())?;
            Ok(curve)
        })
    })
    .ok()??;
    let components = curve.components();
    EC_CURVES
        .iter()
        .find(|c| components.as_slice() == **c)
        .map(|c| c.to_vec())
}

/// The DER value of a SubjectAltName extension holding one URI
/// (RFC 5280: `GeneralNames` with one `uniformResourceIdentifier [6]`).
pub(crate) fn uri_san_value(uri: &str) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next()
                .write_tagged_implicit(Tag::context(6), |w| w.write_ia5_string(uri))
        })
    })
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

/// The URI SANs of a parsed certificate, in order (empty when it has
/// none or its SubjectAltName does not parse).
pub fn uri_sans(c: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = c.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
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
        let uri_sans = uri_sans(&c);
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
    fn long_uri_sans_parse_back_with_x509_parser() {
        // A SAN value over 127 and over 255 bytes needs DER's long length form.
        for len in [10, 200, 300] {
            let uri = format!("spiffe://cluster.local/ns/default/sa/{}", "a".repeat(len));
            let der = uri_san_value(&uri);
            let (rest, san) =
                x509_parser::extensions::SubjectAlternativeName::from_der(&der).unwrap();
            assert!(rest.is_empty());
            assert_eq!(
                san.general_names,
                vec![GeneralName::URI(uri.as_str())],
                "{len}"
            );
        }
    }

    /// Runs `openssl` in a fresh directory; returns the files it asked for.
    fn openssl(name: &str, runs: &[&[&str]], files: &[&str]) -> Vec<Vec<u8>> {
        let dir = std::env::temp_dir().join(format!("strait-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for args in runs {
            let out = std::process::Command::new("openssl")
                .current_dir(&dir)
                .args(*args)
                .output()
                .expect("openssl (cargo xtask setup installs it)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let got = files
            .iter()
            .map(|f| std::fs::read(dir.join(f)).unwrap())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        got
    }

    #[test]
    fn sec1_keys_from_openssl_become_pkcs8_that_ring_loads() {
        for curve in ["prime256v1", "secp384r1"] {
            let got = openssl(
                curve,
                &[
                    &[
                        "ecparam", "-name", curve, "-genkey", "-noout", "-out", "k.pem",
                    ],
                    &[
                        "ec", "-in", "k.pem", "-pubout", "-outform", "DER", "-out", "pub.der",
                    ],
                ],
                &["k.pem", "pub.der"],
            );
            let sec1 = String::from_utf8(got[0].clone()).unwrap();
            assert!(sec1.contains("BEGIN EC PRIVATE KEY"), "{sec1}");
            let pkcs8 = parse_private_key(&sec1).unwrap();
            let key = rcgen::KeyPair::try_from(&PrivateKeyDer::Pkcs8(pkcs8)).unwrap();
            assert_eq!(key.public_key_der(), got[1], "{curve}");
        }
        // P-521 (ring does not take it) and a key without parameters: no curve.
        let p521 = [
            0x30, 0x0f, 0x02, 0x01, 0x01, 0x04, 0x01, 0x07, 0xa0, 0x07, 0x06, 0x05, 0x2b, 0x81,
            0x04, 0x00, 0x23,
        ];
        assert_eq!(sec1_curve(&p521), None);
        assert_eq!(
            sec1_curve(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x04, 0x01, 0x07]),
            None
        );
    }

    #[test]
    fn a_pkcs1_rsa_key_becomes_the_pkcs8_openssl_writes() {
        let got = openssl(
            "pkcs1",
            &[
                &["genrsa", "-traditional", "-out", "k1.pem", "2048"],
                &[
                    "pkcs8", "-topk8", "-nocrypt", "-in", "k1.pem", "-outform", "DER", "-out",
                    "k8.der",
                ],
            ],
            &["k1.pem", "k8.der"],
        );
        let pkcs1 = String::from_utf8(got[0].clone()).unwrap();
        assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"));
        assert_eq!(
            parse_private_key(&pkcs1).unwrap().secret_pkcs8_der(),
            got[1].as_slice()
        );
    }
}
