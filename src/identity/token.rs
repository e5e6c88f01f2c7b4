//! Tokens: the provider's shared token and the bearer value a peer presents.
//!
//! The comparison hashes both sides with SHA-256 and compares the digests in constant time, so
//! neither the content nor the length of the stored token leaks through timing. An empty stored
//! token never matches anything, so a Secret emptied by mistake locks everyone out instead of
//! letting everyone in.
//!
//! `OriginTokenDigest` is what the provider keeps beside a peer's identity to recognise that
//! peer's `originClusterToken` later (lost-response recovery): a SHA-256 digest, compared in
//! constant time, so the identity record never holds the token itself.

use std::fmt;

use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of the shared token in bytes before hex encoding (the reference uses 64).
const SHARED_TOKEN_BYTES: usize = 64;

/// A token as presented by a caller. Unverified until compared; never printed.
#[derive(Clone, Default)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps a presented token.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The raw value: only for comparison and for storing an origin token.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when nothing was sent.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// The provider's shared token: 128 lower-case hex characters from a CSPRNG.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedToken(String);

impl SharedToken {
    /// Generates a fresh token from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SHARED_TOKEN_BYTES];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes).expect("the operating system RNG is available");
        Self(hex::encode(bytes))
    }

    /// Wraps a stored value. Returns `None` for an unusable (empty or blank) value, which must
    /// never authenticate anyone.
    pub fn from_stored(value: &str) -> Option<Self> {
        let trimmed = value.trim();
        (!trimmed.is_empty()).then(|| Self(trimmed.to_owned()))
    }

    /// The raw value, for writing it to storage and for `token show`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &BearerToken) -> bool {
        let stored = Sha256::digest(self.0.as_bytes());
        let given = Sha256::digest(presented.expose().as_bytes());
        bool::from(stored.ct_eq(&given)) && !self.0.is_empty()
    }
}

/// The SHA-256 digest of a peer's non-empty `originClusterToken`, stored with its identity.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OriginTokenDigest([u8; 32]);

impl OriginTokenDigest {
    /// The digest of `token`; `None` for an empty token, which must never prove anything.
    pub fn of(token: &BearerToken) -> Option<Self> {
        (!token.is_empty()).then(|| Self(Self::hash(token.expose())))
    }

    /// Constant-time check that `presented` is the token this digest was made from (an empty
    /// token never matches).
    pub fn matches(&self, presented: &BearerToken) -> bool {
        let given = Self::hash(presented.expose());
        bool::from(self.0.ct_eq(&given)) && !presented.is_empty()
    }

    /// Lower-case hex, for storage.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses what [`to_hex`](Self::to_hex) wrote; `None` when it is not 64 hex characters.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    fn hash(token: &str) -> [u8; 32] {
        let mut digest = Sha256::new();
        digest.update(b"liqo-auth origin token\n");
        digest.update(token.as_bytes());
        digest.finalize().into()
    }
}

impl fmt::Debug for OriginTokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OriginTokenDigest(<redacted>)")
    }
}

impl fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_128_lower_case_hex_characters() {
        let token = SharedToken::generate();
        assert_eq!(token.expose().len(), 128);
        assert!(token.expose().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(token, SharedToken::generate());
    }

    #[test]
    fn matches_only_the_exact_token() {
        let token = SharedToken::generate();
        assert!(token.matches(&BearerToken::new(token.expose().to_owned())));
        assert!(!token.matches(&BearerToken::new(token.expose()[..127].to_owned())));
        assert!(!token.matches(&BearerToken::default()));
    }

    #[test]
    fn an_empty_stored_value_is_unusable() {
        assert!(SharedToken::from_stored("").is_none());
        assert!(SharedToken::from_stored(" \n").is_none());
    }

    #[test]
    fn an_origin_digest_matches_only_the_non_empty_token_it_was_made_from() {
        assert!(OriginTokenDigest::of(&BearerToken::default()).is_none());
        let token = BearerToken::new("origin-secret".into());
        let digest = OriginTokenDigest::of(&token).unwrap();
        assert!(digest.matches(&token));
        assert!(!digest.matches(&BearerToken::new("origin-secreT".into())));
        assert!(!digest.matches(&BearerToken::default()));
        assert_eq!(OriginTokenDigest::from_hex(&digest.to_hex()), Some(digest));
        assert!(OriginTokenDigest::from_hex("abcd").is_none());
        assert!(!digest.to_hex().contains("origin") && !format!("{digest:?}").contains(&digest.to_hex()));
    }

    #[test]
    fn debug_output_redacts_tokens() {
        let token = SharedToken::generate();
        assert!(!format!("{token:?}").contains(token.expose()));
        let bearer = BearerToken::new("secret-value".into());
        assert!(!format!("{bearer:?}").contains("secret-value"));
    }
}
