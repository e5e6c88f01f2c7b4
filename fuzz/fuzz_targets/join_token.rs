//! Join tokens (compact JWS, HS256) as presented in `destinationClusterToken`.
//!
//! The first byte picks the mode. Even: the rest is the presented token as is (shape, header
//! and signature checks). Odd: the rest is `header JSON 0xff claims JSON`, signed here with the
//! key the verifier uses, so the claim checks behind the signature are reached too.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use liqo_auth::identity::join_token::{self, JoinTokenKey};
use liqo_auth::identity::ClusterId;

const KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let key = JoinTokenKey::from_bytes(&KEY).expect("32 bytes");
    let issuer = ClusterId::parse("provider").expect("a DNS-1123 label");
    let token = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        }
    } else {
        let split = rest.iter().position(|b| *b == 0xff).unwrap_or(rest.len());
        let (header, claims) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message = format!("{}.{}", b64.encode(header), b64.encode(claims));
        let secret = jsonwebtoken::EncodingKey::from_secret(&KEY);
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &secret, jsonwebtoken::Algorithm::HS256)
            .expect("HS256 signs any message");
        format!("{message}.{signature}")
    };
    let _ = join_token::looks_like_jws(&token);
    if let Ok(verified) = join_token::verify(&token, Some(&key), &issuer, "peer-1") {
        assert!(join_token::valid_id(&verified.id));
    }
});
