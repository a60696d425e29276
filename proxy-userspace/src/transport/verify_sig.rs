//! The handshake-signature half that rustls' certificate verifiers repeat:
//! [`handshake_signatures!`] writes `verify_tls12_signature`,
//! `verify_tls13_signature` and `supported_verify_schemes` into an `impl`
//! of `rustls::client::danger::ServerCertVerifier` or
//! `rustls::server::danger::ClientCertVerifier` (both traits declare them
//! alike), so HBONE's ([`super::hbone::tls`]) and TLS origination's
//! (`super::origination::verify`) verifiers differ only where their
//! certificate checks do.

/// Writes the three handshake-signature methods of a rustls certificate
/// verifier inside its `impl` block (a macro, not a helper: the two traits
/// are distinct and the methods carry no logic of their own):
///
/// - `handshake_signatures!(delegate inner);` — as the verifier in field
///   `inner` (rustls' WebPki verifier the checker wraps) does them;
/// - `handshake_signatures!(algorithms algs);` — rustls'
///   `verify_tls12_signature` / `verify_tls13_signature` over the
///   `WebPkiSupportedAlgorithms` in field `algs` (a field path, e.g.
///   `0.signature_verification_algorithms`), and its schemes.
///
/// Neither checks which TLS version runs: that is the config's
/// (`protocol_versions`), as before.
macro_rules! handshake_signatures {
    (delegate $($field:tt).+) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.$($field).+.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.$($field).+.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.$($field).+.supported_verify_schemes()
        }
    };
    (algorithms $($field:tt).+) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.$($field).+)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.$($field).+)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.$($field).+.supported_schemes()
        }
    };
}

pub(crate) use handshake_signatures;
