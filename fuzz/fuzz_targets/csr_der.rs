//! CSR DER: PKCS#10 decoding, the key and subject checks, and the self-signature policy
//! (ECDSA with every SHA-2 digest through RustCrypto, RSA and Ed25519 through ring).
#![no_main]

use libfuzzer_sys::fuzz_target;
use liqo_auth::identity::ParsedCsr;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = ParsedCsr::from_der(data.to_vec()) {
        assert_eq!(csr.der(), data);
        assert!(!csr.common_name().is_empty());
    }
});
