//! Cluster identity values: `ClusterId`, `ClusterName`, and the tenant namespace derived from them.
//!
//! Both values are DNS-1123 labels, as Liqo itself requires since v0.4.0, so
//! they can be used in Kubernetes object names and label values without further escaping.

use std::fmt;

use sha2::{Digest, Sha256};

/// Why a cluster identity value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterValueError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is longer than 63 characters")]
    TooLong { field: &'static str },
    #[error("{field} must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit")]
    NotDns1123 { field: &'static str },
    #[error("cluster name is too long: the tenant namespace name 'liqo-tenant-<name>-<hash>' must fit 63 characters, so the name may have at most 44")]
    TenantNameTooLong,
}

/// Checks that `value` is a DNS-1123 label (RFC 1123, as Kubernetes validates it).
pub fn validate_dns1123_label(value: &str, field: &'static str) -> Result<(), ClusterValueError> {
    if value.is_empty() {
        return Err(ClusterValueError::Empty { field });
    }
    if value.len() > 63 {
        return Err(ClusterValueError::TooLong { field });
    }
    let bytes = value.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.iter().all(allowed) || !edge(&bytes[0]) || !edge(&bytes[bytes.len() - 1]) {
        return Err(ClusterValueError::NotDns1123 { field });
    }
    Ok(())
}

/// A cluster ID (in Liqo a UUID; any DNS-1123 label is accepted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(String);

impl ClusterId {
    /// Validates and wraps a cluster ID.
    pub fn parse(value: &str) -> Result<Self, ClusterValueError> {
        validate_dns1123_label(value, "cluster ID")?;
        Ok(Self(value.to_owned()))
    }

    /// The ID as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human-readable cluster name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterName(String);

impl ClusterName {
    /// Validates and wraps a cluster name.
    pub fn parse(value: &str) -> Result<Self, ClusterValueError> {
        validate_dns1123_label(value, "cluster name")?;
        Ok(Self(value.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity of a cluster: ID and name, both validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIdentity {
    pub id: ClusterId,
    pub name: ClusterName,
}

impl ClusterIdentity {
    /// Validates a consumer's identity, including that its tenant namespace name fits.
    pub fn parse_remote(id: &str, name: &str) -> Result<Self, ClusterValueError> {
        let identity = Self { id: ClusterId::parse(id)?, name: ClusterName::parse(name)? };
        if tenant_namespace_len(&identity.name) > 63 {
            return Err(ClusterValueError::TenantNameTooLong);
        }
        Ok(identity)
    }

    /// The tenant namespace this cluster gets on a provider (Liqo v0.4.0 and later).
    pub fn tenant_namespace(&self) -> TenantNamespace {
        TenantNamespace::for_cluster(&self.id, &self.name)
    }
}

/// The name of a tenant namespace: `liqo-tenant-<clusterName>-<first 3 bytes of sha256(id) in hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantNamespace(String);

impl TenantNamespace {
    /// Computes the name exactly as Liqo does, so both directions of a peering share it.
    pub fn for_cluster(id: &ClusterId, name: &ClusterName) -> Self {
        let digest = Sha256::digest(id.as_str().as_bytes());
        Self(format!("liqo-tenant-{}-{}", name.as_str(), hex::encode(&digest[..3])))
    }

    /// Wraps a namespace name read back from storage.
    pub fn from_stored(name: String) -> Self {
        Self(name)
    }

    /// The namespace name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn tenant_namespace_len(name: &ClusterName) -> usize {
    "liqo-tenant-".len() + name.as_str().len() + 1 + 6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_namespace_matches_liqo_naming() {
        let id = ClusterId::parse("cluster1").unwrap();
        let name = ClusterName::parse("milan").unwrap();
        let digest = Sha256::digest(b"cluster1");
        let expected = format!("liqo-tenant-milan-{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2]);
        assert_eq!(TenantNamespace::for_cluster(&id, &name).as_str(), expected);
    }

    #[test]
    fn accepts_uuid_cluster_ids() {
        assert!(ClusterId::parse("3f2a1c4e-9b7d-4e8a-8c1f-2d3e4f5a6b7c").is_ok());
    }

    #[test]
    fn rejects_values_that_are_not_dns1123_labels() {
        for bad in ["", "Upper", "-lead", "trail-", "under_score", "dot.ted", "sp ace", &"a".repeat(64)] {
            assert!(ClusterId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn rejects_names_whose_tenant_namespace_would_exceed_63_characters() {
        let long = "a".repeat(45);
        assert_eq!(ClusterIdentity::parse_remote("id", &long), Err(ClusterValueError::TenantNameTooLong));
        let fits = "a".repeat(44);
        let identity = ClusterIdentity::parse_remote("id", &fits).unwrap();
        assert_eq!(identity.tenant_namespace().as_str().len(), 63);
    }
}
