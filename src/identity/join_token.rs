//! Join tokens: per-peer, expiring, use-limited HS256 JWS, the alternative to the one shared
//! token, which never expires and, once leaked, lets anyone peer.
//!
//! This module owns the token format, minting, the staged verification of a presented token, and
//! the record transition that consumes one use. Where the key and the records live, and making
//! that transition atomic, is the business of the `JoinTokenStore` port and its backends.
//!
//! Verification runs in stages and keeps the `unverified_` prefix until the signature is checked:
//! shape, header `alg` pinned to HS256 (read before any key is used, so `none` and RS256/HS256
//! confusion never reach a verifier), signature, then the claims (`aud`, `iss`, `exp`/`nbf` with
//! at most 60 s of leeway, `sub` equal to the claimed cluster).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{AuthError, ClusterId};

/// The `aud` of every join token.
pub const AUDIENCE: &str = "liqo-auth";
/// Key length: 256 bits, the HS256 block of security.
pub const KEY_BYTES: usize = 32;
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;
/// Random bytes in a token ID (`jti`), rendered as lower-case hex.
const ID_BYTES: usize = 16;

/// The HS256 key that signs join tokens. Rotating it invalidates every outstanding token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinTokenKey([u8; KEY_BYTES]);

impl JoinTokenKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_BYTES];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes).expect("the operating system RNG is available");
        Self(bytes)
    }

    /// Wraps stored bytes; `None` unless exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The raw key, only for writing it to storage.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// A public name of this key generation (truncated SHA-256), kept in token records so
    /// `token list` can tell which tokens a rotation invalidated. Reveals nothing of the key.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }
}

impl fmt::Debug for JoinTokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinTokenKey(<redacted>)")
    }
}

/// The claims of a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenClaims {
    /// The issuing (local) cluster ID.
    pub iss: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// The remote cluster this token is bound to, when bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// The token ID, also the name of its record.
    pub jti: String,
}

/// What the provider remembers about a token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenRecord {
    pub id: String,
    /// The remote cluster the token is bound to (`sub`), if any.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds (`exp`).
    pub expires_at: i64,
    pub max_uses: u32,
    pub uses: u32,
    #[serde(default)]
    pub revoked: bool,
    /// [`JoinTokenKey::id`] of the key that signed the token.
    pub key_id: String,
    /// Fingerprints of the requests that consumed a use, so the retry of a request that
    /// consumed a use but crashed before storing its certificate does not consume another.
    #[serde(default)]
    pub consumed_by: Vec<String>,
}

/// Result of trying to consume one use of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// A use was taken for this request.
    Consumed,
    /// This request had already taken a use (a retry): nothing more is taken.
    AlreadyConsumed,
    /// No uses are left.
    Exhausted,
    /// The token was revoked.
    Revoked,
    /// No record of this token exists (deleted, or never created here).
    Unknown,
}

impl JoinTokenRecord {
    /// Uses still available.
    pub fn uses_left(&self) -> u32 {
        self.max_uses.saturating_sub(self.uses)
    }

    /// True when `fingerprint` already consumed a use of this token.
    pub fn consumed(&self, fingerprint: &str) -> bool {
        self.consumed_by.iter().any(|f| f == fingerprint)
    }

    /// The transition every backend applies inside its atomic update: take one use for
    /// `fingerprint` unless it already has one, the token is revoked, or none is left.
    pub fn consume(&mut self, fingerprint: &str) -> ConsumeOutcome {
        if self.revoked {
            ConsumeOutcome::Revoked
        } else if self.consumed(fingerprint) {
            ConsumeOutcome::AlreadyConsumed
        } else if self.uses >= self.max_uses {
            ConsumeOutcome::Exhausted
        } else {
            self.uses += 1;
            self.consumed_by.push(fingerprint.to_owned());
            ConsumeOutcome::Consumed
        }
    }

    /// Marks the record revoked; returns whether that changed it (a second revoke writes
    /// nothing). Every store applies revocation through this, so all backends agree.
    pub fn revoke(&mut self) -> bool {
        !std::mem::replace(&mut self.revoked, true)
    }

    /// A short status for `token list`.
    pub fn status(&self, now: i64, current_key_id: Option<&str>) -> &'static str {
        if self.revoked {
            "revoked"
        } else if current_key_id != Some(self.key_id.as_str()) {
            "key-rotated"
        } else if self.expires_at <= now {
            "expired"
        } else if self.uses_left() == 0 {
            "used-up"
        } else {
            "valid"
        }
    }
}

/// What `token create` asks for.
#[derive(Debug, Clone)]
pub struct JoinTokenSpec {
    pub ttl: Duration,
    /// Bind the token to this remote cluster (`sub`).
    pub cluster: Option<ClusterId>,
    pub max_uses: u32,
}

/// A freshly signed token and the record to store for it.
pub struct MintedJoinToken {
    token: String,
    pub record: JoinTokenRecord,
}

impl MintedJoinToken {
    /// The compact JWS, to hand to the remote operator once.
    pub fn expose(&self) -> &str {
        &self.token
    }
}

impl fmt::Debug for MintedJoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedJoinToken").field("token", &"<redacted>").field("record", &self.record).finish()
    }
}

/// Signs a new token for `spec`, issued by `issuer` at `now` (Unix seconds).
pub fn mint(key: &JoinTokenKey, issuer: &ClusterId, spec: &JoinTokenSpec, now: i64) -> MintedJoinToken {
    let mut id = [0u8; ID_BYTES];
    rand::rngs::OsRng.try_fill_bytes(&mut id).expect("the operating system RNG is available");
    let id = hex::encode(id);
    let exp = now.saturating_add(i64::try_from(spec.ttl.as_secs()).unwrap_or(i64::MAX));
    let claims = JoinTokenClaims {
        iss: issuer.to_string(),
        aud: AUDIENCE.to_owned(),
        sub: spec.cluster.as_ref().map(ToString::to_string),
        iat: now,
        nbf: now,
        exp,
        jti: id.clone(),
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&key.0))
        .expect("HS256 signing of plain claims with a 32-byte key cannot fail");
    let record = JoinTokenRecord {
        id,
        cluster_id: claims.sub,
        created_at: now,
        expires_at: exp,
        max_uses: spec.max_uses,
        uses: 0,
        revoked: false,
        key_id: key.id(),
        consumed_by: Vec::new(),
    };
    MintedJoinToken { token, record }
}

/// True when `presented` has the shape of a compact JWS: three base64url segments, the header
/// and payload non-empty (an empty signature is still a JWS, an unsigned one, and is refused as
/// such). The shared token (hex, no dots) never has this shape.
pub fn looks_like_jws(presented: &str) -> bool {
    let segments: Vec<&str> = presented.split('.').collect();
    let base64url = |s: &&str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    segments.len() == 3 && segments.iter().all(base64url) && !segments[0].is_empty() && !segments[1].is_empty()
}

/// True for a well-formed token ID (what `mint` produces), safe as a file or object name.
pub fn valid_id(id: &str) -> bool {
    id.len() == ID_BYTES * 2 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A token whose signature and claims were checked. Revocation and uses are checked against
/// its record by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJoinToken {
    pub id: String,
    pub bound_cluster: Option<String>,
    pub expires_at: i64,
}

/// Verifies a presented token's header, signature and claims. `key` is `None` when no key was
/// ever created (then no token can be valid). `claimed_cluster` is the request's
/// `cluster.clusterID`.
pub fn verify(
    unverified_token: &str,
    key: Option<&JoinTokenKey>,
    issuer: &ClusterId,
    claimed_cluster: &str,
) -> Result<VerifiedJoinToken, AuthError> {
    if !looks_like_jws(unverified_token) {
        return Err(AuthError::Malformed);
    }
    check_header(unverified_token)?;
    let key = key.ok_or(AuthError::BadSignature)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECS;
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[issuer.as_str()]);
    // The library enforces exp/nbf/aud/iss; iat and jti are required by `JoinTokenClaims`.
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "aud", "iss", "jti"]);
    let claims =
        jsonwebtoken::decode::<JoinTokenClaims>(unverified_token, &DecodingKey::from_secret(&key.0), &validation)
            .map_err(|e| reason_of(e.kind()))?
            .claims;
    if !valid_id(&claims.jti) {
        return Err(AuthError::Malformed);
    }
    if claims.sub.as_deref().is_some_and(|sub| sub != claimed_cluster) {
        return Err(AuthError::WrongCluster);
    }
    Ok(VerifiedJoinToken { id: claims.jti, bound_cluster: claims.sub, expires_at: claims.exp })
}

/// Pins the algorithm before any key is involved: exactly `"alg": "HS256"`.
fn check_header(unverified_token: &str) -> Result<(), AuthError> {
    let segment = unverified_token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment).map_err(|_| AuthError::Malformed)?;
    let unverified_header: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    if !unverified_header.is_object() {
        return Err(AuthError::Malformed);
    }
    match unverified_header.get("alg").and_then(serde_json::Value::as_str) {
        Some("HS256") => Ok(()),
        _ => Err(AuthError::BadAlgorithm),
    }
}

fn reason_of(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
            AuthError::BadAlgorithm
        }
        _ => AuthError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> ClusterId {
        ClusterId::parse("provider").unwrap()
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn spec(cluster: Option<&str>) -> JoinTokenSpec {
        JoinTokenSpec {
            ttl: Duration::from_secs(3600),
            cluster: cluster.map(|c| ClusterId::parse(c).unwrap()),
            max_uses: 1,
        }
    }

    fn sign(key: &JoinTokenKey, claims: &JoinTokenClaims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(&key.0)).unwrap()
    }

    fn claims() -> JoinTokenClaims {
        let now = now();
        JoinTokenClaims {
            iss: "provider".into(),
            aud: AUDIENCE.into(),
            sub: None,
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    fn b64(value: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn a_minted_token_verifies_and_names_its_record() {
        let key = JoinTokenKey::generate();
        let minted = mint(&key, &issuer(), &spec(Some("peer-1")), now());
        assert!(looks_like_jws(minted.expose()));
        let verified = verify(minted.expose(), Some(&key), &issuer(), "peer-1").unwrap();
        assert_eq!(verified.id, minted.record.id);
        assert_eq!(verified.bound_cluster.as_deref(), Some("peer-1"));
        assert_eq!(minted.record.key_id, key.id());
        assert!(valid_id(&minted.record.id));
    }

    #[test]
    fn the_shared_token_is_never_mistaken_for_a_jws() {
        assert!(!looks_like_jws(crate::identity::SharedToken::generate().expose()));
        assert!(!looks_like_jws("a.b"));
        assert!(!looks_like_jws("a..c"));
        assert!(looks_like_jws("a.b."), "an unsigned JWS is still a JWS");
        assert!(!looks_like_jws("a.b.c d"));
    }

    #[test]
    fn each_failed_check_has_its_own_reason() {
        let key = JoinTokenKey::generate();
        let check = |token: &str| verify(token, Some(&key), &issuer(), "peer-1").unwrap_err();
        let mut expired = claims();
        expired.exp = now() - 2 * LEEWAY_SECS as i64;
        assert_eq!(check(&sign(&key, &expired)), AuthError::Expired);
        let mut early = claims();
        early.nbf = now() + 2 * LEEWAY_SECS as i64;
        assert_eq!(check(&sign(&key, &early)), AuthError::NotYetValid);
        let mut audience = claims();
        audience.aud = "kubernetes".into();
        assert_eq!(check(&sign(&key, &audience)), AuthError::WrongAudience);
        let mut issuer_claim = claims();
        issuer_claim.iss = "someone-else".into();
        assert_eq!(check(&sign(&key, &issuer_claim)), AuthError::WrongIssuer);
        let mut bound = claims();
        bound.sub = Some("peer-2".into());
        assert_eq!(check(&sign(&key, &bound)), AuthError::WrongCluster);
        assert_eq!(check(&sign(&JoinTokenKey::generate(), &claims())), AuthError::BadSignature);
        let mut bad_id = claims();
        bad_id.jti = "../../etc".into();
        assert_eq!(check(&sign(&key, &bad_id)), AuthError::Malformed);
    }

    #[test]
    fn a_token_within_the_leeway_is_still_accepted() {
        let key = JoinTokenKey::generate();
        let mut claims = claims();
        claims.exp = now() - 10;
        claims.nbf = now() + 10;
        assert!(verify(&sign(&key, &claims), Some(&key), &issuer(), "peer-1").is_ok());
    }

    #[test]
    fn tampering_with_the_payload_breaks_the_signature() {
        let key = JoinTokenKey::generate();
        let token = sign(&key, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims();
        forged.sub = Some("peer-1".into());
        forged.exp += 86_400;
        let tampered = format!("{}.{}.{}", parts[0], b64(&serde_json::to_value(&forged).unwrap()), parts[2]);
        assert_eq!(verify(&tampered, Some(&key), &issuer(), "peer-1"), Err(AuthError::BadSignature));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused_before_any_key_is_used() {
        let payload = b64(&serde_json::to_value(claims()).unwrap());
        for alg in ["none", "None", "RS256", "HS512", "ES256", "EdDSA"] {
            let header = b64(&serde_json::json!({"alg": alg, "typ": "JWT"}));
            let token = format!("{header}.{payload}.c2lnbmF0dXJl");
            assert_eq!(verify(&token, None, &issuer(), "peer-1"), Err(AuthError::BadAlgorithm), "{alg}");
        }
        let unsigned = format!("{}.{payload}.", b64(&serde_json::json!({"alg": "none"})));
        assert_eq!(verify(&unsigned, None, &issuer(), "peer-1"), Err(AuthError::BadAlgorithm));
        let no_alg = format!("{}.{payload}.c2ln", b64(&serde_json::json!({"typ": "JWT"})));
        assert_eq!(verify(&no_alg, None, &issuer(), "peer-1"), Err(AuthError::BadAlgorithm));
    }

    #[test]
    fn missing_claims_make_a_token_malformed() {
        let key = JoinTokenKey::generate();
        let mut value = serde_json::to_value(claims()).unwrap();
        value.as_object_mut().unwrap().remove("jti");
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &value, &EncodingKey::from_secret(&key.0)).unwrap();
        assert_eq!(verify(&token, Some(&key), &issuer(), "peer-1"), Err(AuthError::Malformed));
        assert_eq!(verify("x.y.z", Some(&key), &issuer(), "peer-1"), Err(AuthError::Malformed));
    }

    #[test]
    fn consuming_counts_each_request_once_and_stops_at_the_limit() {
        let key = JoinTokenKey::generate();
        let mut record = mint(&key, &issuer(), &JoinTokenSpec { max_uses: 2, ..spec(None) }, now()).record;
        assert_eq!(record.consume("a"), ConsumeOutcome::Consumed);
        assert_eq!(record.consume("a"), ConsumeOutcome::AlreadyConsumed);
        assert_eq!(record.consume("b"), ConsumeOutcome::Consumed);
        assert_eq!(record.consume("c"), ConsumeOutcome::Exhausted);
        assert_eq!((record.uses, record.uses_left()), (2, 0));
        record.revoked = true;
        assert_eq!(record.consume("a"), ConsumeOutcome::Revoked);
    }

    #[test]
    fn debug_output_redacts_keys_and_tokens() {
        let key = JoinTokenKey::generate();
        assert!(!format!("{key:?}").contains(&hex::encode(key.expose())));
        let minted = mint(&key, &issuer(), &spec(None), now());
        assert!(!format!("{minted:?}").contains(minted.expose()));
    }
}
