//! `POST /identity/certificate` bodies: the JSON parsing the handler does (`parse_body`, the
//! object-only rule, serde with its aliases), then the CSR inside, as the issuer decodes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liqo_auth::http::extract::parse_body;
use liqo_auth::http::wire::CertificateRequest;
use liqo_auth::identity::{ClusterIdentity, ParsedCsr};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = parse_body::<CertificateRequest>(data) else { return };
    if let Some(cluster) = &request.cluster {
        let _ = ClusterIdentity::parse_remote(&cluster.cluster_id, &cluster.cluster_name);
    }
    let _ = ParsedCsr::from_base64_pem(&request.certificate_signing_request);
});
