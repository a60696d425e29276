//! Istio's CA API (`security/proto/istioca.proto`, package `istio.v1.auth`),
//! the fields istiod serves and ztunnel sends, as prost messages written by
//! hand (no `protoc` needed to build).
use prost_types::value::Kind;

/// The gRPC path of `IstioCertificateService.CreateCertificate`.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";
/// The gRPC service name.
pub const SERVICE_NAME: &str = "istio.v1.auth.IstioCertificateService";
/// Metadata key: the SPIFFE ID a node proxy asks for on behalf of a pod.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// `IstioCertificateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded certificate signing request.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds; 0 or negative: the CA's default.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// `ImpersonatedIdentity`, `WorkloadName`, `WorkloadIP`, `ClusterID`.
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<prost_types::Struct>,
}

/// `IstioCertificateResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// PEM certificates, leaf first, root last.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

impl IstioCertificateRequest {
    /// The string value of metadata field `key`, if set.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        match self.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
            Kind::StringValue(s) => Some(s),
            _ => None,
        }
    }
}

/// A `Struct` of string fields.
pub fn string_struct<'a>(
    fields: impl IntoIterator<Item = (&'a str, String)>,
) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    prost_types::Value {
                        kind: Some(Kind::StringValue(v)),
                    },
                )
            })
            .collect(),
    }
}
