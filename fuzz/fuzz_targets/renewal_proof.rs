//! Renewal proofs (compact JWS with an `x5c` certificate) as sent to
//! `POST /identity/certificate/renew`: `UnverifiedProof::parse` and `verify`.
//!
//! The first byte picks the mode. Even: the rest is the proof as is (header, x5c, algorithm and
//! signature checks). Odd: the rest is the claims JSON, signed here under a valid header with the
//! key of its x5c certificate, so the claim checks behind the signature are reached too.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use liqo_auth::identity::renew::{sign_proof, ProofClaims, ProofExpectation, UnverifiedProof};
use liqo_auth::identity::ClusterId;

const NOW: i64 = 1_900_000_000;

struct Signer {
    header_segment: String,
    key: jsonwebtoken::EncodingKey,
}

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "peer-1");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        let claims = ProofClaims {
            sub: "peer-1".into(),
            aud: "provider".into(),
            iat: NOW,
            exp: NOW + 60,
            jti: "seed".into(),
            csr_sha256: String::new(),
        };
        let proof = sign_proof(&key.serialize_pem(), &cert.pem(), &claims).expect("a valid proof");
        let header_segment = proof.split('.').next().expect("three parts").to_owned();
        Signer { header_segment, key: jsonwebtoken::EncodingKey::from_ed_der(&key.serialize_der()) }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let token = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        }
    } else {
        let signer = signer();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rest);
        let message = format!("{}.{claims}", signer.header_segment);
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &signer.key, jsonwebtoken::Algorithm::EdDSA)
            .expect("EdDSA signs any message");
        format!("{message}.{signature}")
    };
    let Ok(proof) = UnverifiedProof::parse(&token) else { return };
    let audience = ClusterId::parse("provider").expect("a DNS-1123 label");
    let digest = [0u8; 32];
    let expected = ProofExpectation { audience: &audience, csr_sha256: &digest, now: NOW };
    if let Ok(verified) = proof.verify(&expected) {
        assert_eq!(verified.cluster.as_str(), "peer-1");
    }
});
