//! CSR text: the strict PEM reader and everything `ParsedCsr` checks, from PEM and from the
//! wire's base64 of PEM.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liqo_auth::identity::ParsedCsr;
use liqo_auth::pki::pem_blocks;

fuzz_target!(|data: &[u8]| {
    let _ = pem_blocks(data);
    if let Ok(csr) = ParsedCsr::from_pem(data) {
        // A parsed CSR re-encodes to PEM that parses to the same request.
        let again = ParsedCsr::from_pem(csr.to_pem().as_bytes()).expect("a parsed CSR round-trips");
        assert_eq!(again.der(), csr.der());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ParsedCsr::from_base64_pem(text);
    }
});
