//! Wire DTOs, exactly as `openapi/liqo-auth.yaml` describes them.
//!
//! Spellings follow the reference byte for byte (`clusterId` in `/ids`, `clusterID` in requests,
//! `apiServerUrl` next to `apiServerCA`, an `aws` object that is always present) because real
//! Liqo clusters decode them; a few aliases stand in for Go's case-insensitive key matching.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `GET /ids` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdsResponse {
    #[serde(rename = "clusterId")]
    pub cluster_id: String,
    #[serde(rename = "clusterName", default, skip_serializing_if = "String::is_empty")]
    pub cluster_name: String,
}

/// The consumer's identity inside a certificate request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterRef {
    #[serde(rename = "clusterID", default, alias = "clusterId", alias = "ClusterID", alias = "clusterid")]
    pub cluster_id: String,
    #[serde(rename = "clusterName", default, alias = "ClusterName", alias = "clustername")]
    pub cluster_name: String,
}

/// `POST /identity/certificate` body.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct CertificateRequest {
    #[serde(default, alias = "Cluster", deserialize_with = "object_or_null")]
    pub cluster: Option<ClusterRef>,
    #[serde(rename = "destinationClusterToken", default, alias = "DestinationClusterToken")]
    pub destination_cluster_token: Option<String>,
    #[serde(
        rename = "originClusterToken",
        default,
        alias = "OriginClusterToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub origin_cluster_token: Option<String>,
    #[serde(rename = "certificateSigningRequest", default, alias = "CertificateSigningRequest")]
    pub certificate_signing_request: String,
    /// Liqo v0.3 sent a top-level `clusterID` instead of `cluster`; recognised only to refuse it
    /// clearly instead of issuing for an empty identity.
    #[serde(rename = "clusterID", default, skip_serializing_if = "Option::is_none")]
    pub legacy_cluster_id: Option<String>,
}

impl fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateRequest").field("cluster", &self.cluster).field("tokens", &"<redacted>").finish()
    }
}

/// An object (or `null`), never an array: serde's derived structs would take an array's elements
/// as the fields in order, which Go's decoder (and the contract) refuses.
fn object_or_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectOrNull<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOrNull<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    deserializer.deserialize_any(ObjectOrNull(std::marker::PhantomData))
}

/// `POST /identity/certificate` answer (202).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertificateResponse {
    pub namespace: String,
    /// base64 of the PEM certificate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate: String,
    #[serde(rename = "apiServerUrl")]
    pub api_server_url: String,
    /// base64 of the PEM CA bundle; absent with `--advertise-api-server-trusted-ca`.
    #[serde(rename = "apiServerCA", default, skip_serializing_if = "Option::is_none")]
    pub api_server_ca: Option<String>,
    /// Always present with empty fields: the reference consumer expects the object.
    #[serde(default)]
    pub aws: AwsIdentity,
}

impl fmt::Debug for CertificateResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateResponse")
            .field("namespace", &self.namespace)
            .field("api_server_url", &self.api_server_url)
            .field("certificate", &"<redacted>")
            .finish()
    }
}

/// `POST /identity/certificate/renew` body: a proof of possession of the current identity
/// (compact JWS, see `identity::renew`) and the new CSR (base64 of PEM, as for issuance). The
/// answer is a [`CertificateResponse`] with status 200.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct RenewalRequest {
    #[serde(default)]
    pub proof: String,
    #[serde(rename = "certificateSigningRequest", default)]
    pub certificate_signing_request: String,
}

impl fmt::Debug for RenewalRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RenewalRequest(<redacted>)")
    }
}

/// The reference's IAM fields; always empty here (IAM mode is not supported).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AwsIdentity {
    #[serde(rename = "accessKeyID", default)]
    pub access_key_id: String,
    #[serde(rename = "secretAccessKey", default)]
    pub secret_access_key: String,
    #[serde(default)]
    pub region: String,
    #[serde(rename = "eksClusterID", default)]
    pub eks_cluster_id: String,
    #[serde(rename = "iamUserArn", default)]
    pub iam_user_arn: String,
}

/// Every error body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: String,
    /// Short human explanation; never contains tokens, keys or PEM.
    pub message: String,
}

/// `/healthz` and `/readyz` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealthResponse {
    pub status: String,
}
