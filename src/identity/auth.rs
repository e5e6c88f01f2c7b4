//! `Authenticator`: decides whether a presented token lets a caller request an identity.

use std::sync::Arc;

use crate::identity::BearerToken;
use crate::store::TokenStore;

/// Which kind of credential authenticated a request (for audit logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// The provider's shared token.
    Shared,
    /// Authentication is disabled (`--enable-authentication=false`).
    Disabled,
}

impl TokenKind {
    /// A short label for logs.
    pub fn label(&self) -> &str {
        match self {
            Self::Shared => "shared",
            Self::Disabled => "none",
        }
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
}

impl AuthError {
    /// Stable reason label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Mismatch => "mismatch",
            Self::NoUsableToken => "no_usable_token",
        }
    }
}

/// Checks presented tokens against the token store.
#[derive(Clone)]
pub struct Authenticator {
    enabled: bool,
    tokens: Arc<dyn TokenStore>,
}

impl Authenticator {
    /// `enabled = false` accepts every caller (the reference's `--enable-authentication=false`).
    pub fn new(enabled: bool, tokens: Arc<dyn TokenStore>) -> Self {
        Self { enabled, tokens }
    }

    /// Authenticates a presented token.
    pub fn authenticate(&self, presented: &BearerToken) -> Result<TokenKind, AuthError> {
        if !self.enabled {
            return Ok(TokenKind::Disabled);
        }
        let stored = self.tokens.shared_token().ok_or(AuthError::NoUsableToken)?;
        if presented.is_empty() {
            return Err(AuthError::Missing);
        }
        if stored.matches(presented) {
            Ok(TokenKind::Shared)
        } else {
            Err(AuthError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SharedToken;

    struct Fixed(Option<SharedToken>);
    impl TokenStore for Fixed {
        fn shared_token(&self) -> Option<SharedToken> {
            self.0.clone()
        }
    }

    #[test]
    fn accepts_the_shared_token_and_refuses_others() {
        let token = SharedToken::generate();
        let auth = Authenticator::new(true, Arc::new(Fixed(Some(token.clone()))));
        assert_eq!(auth.authenticate(&BearerToken::new(token.expose().into())), Ok(TokenKind::Shared));
        assert_eq!(auth.authenticate(&BearerToken::new("nope".into())), Err(AuthError::Mismatch));
        assert_eq!(auth.authenticate(&BearerToken::default()), Err(AuthError::Missing));
    }

    #[test]
    fn without_a_usable_stored_token_nobody_authenticates() {
        let auth = Authenticator::new(true, Arc::new(Fixed(SharedToken::from_stored(""))));
        assert_eq!(auth.authenticate(&BearerToken::default()), Err(AuthError::NoUsableToken));
    }

    #[test]
    fn disabled_authentication_accepts_everyone() {
        let auth = Authenticator::new(false, Arc::new(Fixed(None)));
        assert_eq!(auth.authenticate(&BearerToken::default()), Ok(TokenKind::Disabled));
    }
}
