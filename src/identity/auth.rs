//! `Authenticator`: decides whether a presented token lets a caller request an identity.
//!
//! Two kinds of token are accepted in `destinationClusterToken`, told apart by shape: the
//! provider's shared token (hex) and join tokens (compact JWS, see `join_token`). A join token
//! is checked in two steps: `authenticate` verifies it and its record before anything is
//! created, and `consume` takes one use right before a new certificate is signed, so an
//! idempotent repeat of an issuance never costs a use.

use std::sync::Arc;

use crate::identity::join_token::{self, ConsumeOutcome};
use crate::identity::port::{JoinTokenStore, SharedTokenSource, StoreError};
use crate::identity::{BearerToken, ClusterId};

/// Which kind of credential authenticated a request (for audit logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// The provider's shared token.
    Shared,
    /// A join token; `id` is its `jti`.
    Join { id: String },
    /// Authentication is disabled (`--enable-authentication=false`).
    Disabled,
}

impl TokenKind {
    /// A short label for logs.
    pub fn label(&self) -> &str {
        match self {
            Self::Shared => "shared",
            Self::Join { .. } => "join",
            Self::Disabled => "none",
        }
    }

    /// The join token's ID (`jti`); `None` for the other kinds.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Join { id } => Some(id),
            Self::Shared | Self::Disabled => None,
        }
    }
}

/// What a successful authentication grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub kind: TokenKind,
    /// The remote cluster a join token is bound to (`sub`): such a token may also rotate that
    /// cluster's identity.
    pub bound_cluster: Option<String>,
}

impl Grant {
    fn of(kind: TokenKind) -> Self {
        Self { kind, bound_cluster: None }
    }

    /// True when this grant may replace `cluster`'s stored identity with a new key.
    pub fn may_rotate(&self, cluster: &ClusterId) -> bool {
        matches!(self.kind, TokenKind::Join { .. }) && self.bound_cluster.as_deref() == Some(cluster.as_str())
    }
}

/// Why a token was refused. The caller only ever sees "invalid or expired token"; the reason
/// goes to the log, never the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token was sent")]
    Missing,
    #[error("the token does not match")]
    Mismatch,
    #[error("the provider has no usable shared token")]
    NoUsableToken,
    #[error("the shared token is disabled (--shared-token=disabled)")]
    SharedTokenDisabled,
    #[error("the join token is malformed")]
    Malformed,
    #[error("the join token is not signed with HS256")]
    BadAlgorithm,
    #[error("the join token's signature does not verify (wrong key, tampered, or the key was rotated)")]
    BadSignature,
    #[error("the join token has expired")]
    Expired,
    #[error("the join token is not valid yet")]
    NotYetValid,
    #[error("the join token is for another audience")]
    WrongAudience,
    #[error("the join token was issued by another cluster")]
    WrongIssuer,
    #[error("the join token is bound to another cluster")]
    WrongCluster,
    #[error("the join token was revoked")]
    Revoked,
    #[error("the join token has no uses left")]
    Exhausted,
}

impl AuthError {
    /// Stable reason label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Mismatch => "mismatch",
            Self::NoUsableToken => "no_usable_token",
            Self::SharedTokenDisabled => "shared_token_disabled",
            Self::Malformed => "malformed",
            Self::BadAlgorithm => "bad_algorithm",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongCluster => "wrong_cluster",
            Self::Revoked => "revoked",
            Self::Exhausted => "exhausted",
        }
    }
}

/// Authentication failed: the token was refused, or the backend could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AuthenticateError {
    #[error("{0}")]
    Refused(#[source] AuthError),
    #[error("reading join-token state")]
    Store(#[source] StoreError),
}

/// Checks presented tokens against the token stores.
#[derive(Clone)]
pub struct Authenticator {
    enabled: bool,
    shared_token: bool,
    tokens: Arc<dyn SharedTokenSource>,
    join: Option<JoinTokens>,
}

#[derive(Clone)]
struct JoinTokens {
    issuer: ClusterId,
    store: Arc<dyn JoinTokenStore>,
}

impl Authenticator {
    /// `enabled = false` accepts every caller (the reference's `--enable-authentication=false`).
    /// The shared token is accepted; join tokens only after `with_join_tokens`.
    pub fn new(enabled: bool, tokens: Arc<dyn SharedTokenSource>) -> Self {
        Self { enabled, shared_token: true, tokens, join: None }
    }

    /// Accepts join tokens issued by `issuer` (this cluster) and recorded in `store`.
    pub fn with_join_tokens(mut self, issuer: ClusterId, store: Arc<dyn JoinTokenStore>) -> Self {
        self.join = Some(JoinTokens { issuer, store });
        self
    }

    /// `false` refuses the shared token (`--shared-token=disabled`).
    pub fn with_shared_token(mut self, accepted: bool) -> Self {
        self.shared_token = accepted;
        self
    }

    /// Authenticates a presented token for a request claiming `claimed_cluster`;
    /// `fingerprint` identifies the request so its retries are recognised.
    pub async fn authenticate(
        &self,
        presented: &BearerToken,
        claimed_cluster: &str,
        fingerprint: &str,
    ) -> Result<Grant, AuthenticateError> {
        if !self.enabled {
            return Ok(Grant::of(TokenKind::Disabled));
        }
        if let Some(join) = self.join.as_ref().filter(|_| join_token::looks_like_jws(presented.expose())) {
            return join.authenticate(presented, claimed_cluster, fingerprint).await;
        }
        if !self.shared_token {
            return Err(AuthenticateError::Refused(if presented.is_empty() {
                AuthError::Missing
            } else {
                AuthError::SharedTokenDisabled
            }));
        }
        let stored = self.tokens.shared_token().ok_or(AuthenticateError::Refused(AuthError::NoUsableToken))?;
        if presented.is_empty() {
            return Err(AuthenticateError::Refused(AuthError::Missing));
        }
        if stored.matches(presented) {
            Ok(Grant::of(TokenKind::Shared))
        } else {
            Err(AuthenticateError::Refused(AuthError::Mismatch))
        }
    }

    /// Takes one use of a join token for the request `fingerprint`, right before a new
    /// certificate is signed. A no-op for the other kinds and for a request that already took
    /// its use (a retry). Fails when no use is left or the token was revoked meanwhile.
    pub async fn consume(&self, grant: &Grant, fingerprint: &str) -> Result<(), AuthenticateError> {
        let (TokenKind::Join { id }, Some(join)) = (&grant.kind, &self.join) else {
            return Ok(());
        };
        match join.store.consume(id, fingerprint).await.map_err(AuthenticateError::Store)? {
            ConsumeOutcome::Consumed | ConsumeOutcome::AlreadyConsumed => Ok(()),
            ConsumeOutcome::Exhausted => Err(AuthenticateError::Refused(AuthError::Exhausted)),
            ConsumeOutcome::Revoked | ConsumeOutcome::Unknown => Err(AuthenticateError::Refused(AuthError::Revoked)),
        }
    }
}

impl JoinTokens {
    async fn authenticate(
        &self,
        presented: &BearerToken,
        claimed_cluster: &str,
        fingerprint: &str,
    ) -> Result<Grant, AuthenticateError> {
        let refused = AuthenticateError::Refused;
        let key = self.store.key().await.map_err(AuthenticateError::Store)?;
        let verified =
            join_token::verify(presented.expose(), key.as_ref(), &self.issuer, claimed_cluster).map_err(refused)?;
        // A token without a record was deleted (or never recorded): treat it as revoked.
        let record = self.store.record(&verified.id).await.map_err(AuthenticateError::Store)?;
        let record = record.ok_or(refused(AuthError::Revoked))?;
        if record.revoked {
            return Err(refused(AuthError::Revoked));
        }
        // Early refusal of a used-up token, except for the request that used it: its retry may
        // still get the stored certificate back. The authoritative check is `consume`.
        if record.uses_left() == 0 && !record.consumed(fingerprint) {
            return Err(refused(AuthError::Exhausted));
        }
        Ok(Grant { kind: TokenKind::Join { id: verified.id }, bound_cluster: verified.bound_cluster })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::adapter::memory::MemoryJoinTokens;
    use crate::identity::join_token::{mint, JoinTokenSpec};
    use crate::identity::SharedToken;

    struct Fixed(Option<SharedToken>);
    impl SharedTokenSource for Fixed {
        fn shared_token(&self) -> Option<SharedToken> {
            self.0.clone()
        }
    }

    fn bearer(text: &str) -> BearerToken {
        BearerToken::new(text.into())
    }

    async fn refused(auth: &Authenticator, token: &BearerToken) -> AuthError {
        match auth.authenticate(token, "peer-1", "fp").await {
            Err(AuthenticateError::Refused(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn accepts_the_shared_token_and_refuses_others() {
        let token = SharedToken::generate();
        let auth = Authenticator::new(true, Arc::new(Fixed(Some(token.clone()))));
        let grant = auth.authenticate(&bearer(token.expose()), "peer-1", "fp").await.unwrap();
        assert_eq!(grant.kind, TokenKind::Shared);
        assert_eq!(refused(&auth, &bearer("nope")).await, AuthError::Mismatch);
        assert_eq!(refused(&auth, &BearerToken::default()).await, AuthError::Missing);
    }

    #[tokio::test]
    async fn without_a_usable_stored_token_nobody_authenticates() {
        let auth = Authenticator::new(true, Arc::new(Fixed(SharedToken::from_stored(""))));
        assert_eq!(refused(&auth, &BearerToken::default()).await, AuthError::NoUsableToken);
    }

    #[tokio::test]
    async fn disabled_authentication_accepts_everyone() {
        let auth = Authenticator::new(false, Arc::new(Fixed(None)));
        assert_eq!(auth.authenticate(&BearerToken::default(), "x", "fp").await.unwrap().kind, TokenKind::Disabled);
    }

    #[tokio::test]
    async fn a_disabled_shared_token_is_refused_but_join_tokens_work() {
        let shared = SharedToken::generate();
        let store = Arc::new(MemoryJoinTokens::default());
        let issuer = ClusterId::parse("provider").unwrap();
        let auth = Authenticator::new(true, Arc::new(Fixed(Some(shared.clone()))))
            .with_shared_token(false)
            .with_join_tokens(issuer.clone(), store.clone());
        assert_eq!(refused(&auth, &bearer(shared.expose())).await, AuthError::SharedTokenDisabled);
        let key = store.ensure_key().await.unwrap();
        let spec = JoinTokenSpec { ttl: Duration::from_secs(60), cluster: None, max_uses: 1 };
        let minted = mint(&key, &issuer, &spec, jsonwebtoken::get_current_timestamp() as i64);
        store.create_record(&minted.record).await.unwrap();
        let grant = auth.authenticate(&bearer(minted.expose()), "peer-1", "fp").await.unwrap();
        assert_eq!(grant.kind.id(), Some(minted.record.id.as_str()));
        assert_eq!(grant.kind.label(), "join");
    }

    #[tokio::test]
    async fn a_used_up_token_still_serves_the_request_that_used_it() {
        let store = Arc::new(MemoryJoinTokens::default());
        let issuer = ClusterId::parse("provider").unwrap();
        let auth = Authenticator::new(true, Arc::new(Fixed(None))).with_join_tokens(issuer.clone(), store.clone());
        let key = store.ensure_key().await.unwrap();
        let spec = JoinTokenSpec { ttl: Duration::from_secs(60), cluster: None, max_uses: 1 };
        let minted = mint(&key, &issuer, &spec, jsonwebtoken::get_current_timestamp() as i64);
        store.create_record(&minted.record).await.unwrap();
        let token = bearer(minted.expose());
        let grant = auth.authenticate(&token, "peer-1", "first").await.unwrap();
        auth.consume(&grant, "first").await.unwrap();
        auth.consume(&grant, "first").await.unwrap();
        assert!(auth.authenticate(&token, "peer-1", "first").await.is_ok());
        assert_eq!(refused(&auth, &token).await, AuthError::Exhausted);
        let other = Grant { kind: grant.kind.clone(), bound_cluster: None };
        assert!(matches!(auth.consume(&other, "second").await, Err(AuthenticateError::Refused(AuthError::Exhausted))));
    }
}
