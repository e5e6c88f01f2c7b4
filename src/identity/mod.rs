//! The domain: who may get which identity. Imports neither axum nor kube.
//!
//! `Issuer` authorises a request, validates it, and drives the ports of `port` (signer,
//! credential store, tokens): every step is idempotent, so a request that failed half-way is
//! completed by the next identical one instead of being stuck. `join_token` holds the per-peer
//! expiring tokens that may replace the shared one. Adapters implement the ports
//! (`crate::adapter`); this module never sees which.

mod auth;
mod cluster;
mod csr;
mod issuer;
pub mod join_token;
pub mod port;
pub mod renew;
mod token;

pub use auth::{AuthError, AuthenticateError, Authenticator, Grant, TokenKind};
pub use cluster::{
    validate_dns1123_label, ClusterId, ClusterIdentity, ClusterName, ClusterValueError, TenantNamespace,
};
pub use csr::{pem_encode, CsrError, KeyKind, ParsedCsr, LIQO_ORGANIZATION};
pub use issuer::{IssueError, IssuePolicy, IssueRequest, Issued, Issuer, Outcome};
pub use renew::{RenewError, RenewKind, RenewPolicy, RenewRequest, Renewed, Renewer};
pub use token::{BearerToken, OriginTokenDigest, SharedToken};
