//! The domain: who may get which identity. Imports neither axum nor kube.
//!
//! `Issuer` authorises a request, validates it, and drives the `Signer` and `CredentialStore`
//! ports in the order of spec 3.1 with the fixes of section 11: every step is idempotent, so a
//! request that failed half-way is completed by the next identical one. `join_token` holds the
//! per-peer expiring tokens that may replace the shared one.

mod auth;
mod cluster;
mod csr;
mod issuer;
pub mod join_token;
pub mod port;
mod token;

pub use auth::{AuthError, AuthenticateError, Authenticator, Grant, TokenKind};
pub use cluster::{
    validate_dns1123_label, ClusterId, ClusterIdentity, ClusterName, ClusterValueError, TenantNamespace,
};
pub use csr::{pem_encode, CsrError, KeyKind, ParsedCsr, LIQO_ORGANIZATION};
pub use issuer::{IssueError, IssuePolicy, IssueRequest, Issued, Issuer, Outcome};
pub use token::{BearerToken, SharedToken};
