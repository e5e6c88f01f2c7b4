//! Keeps `openapi/liqo-auth.yaml` and the code in step: every documented route answers through
//! the router with a documented status, every example body deserialises into its wire type, and
//! the error codes match.

use crate::support::app::{certificate_body, TestApp};
use crate::support::pki::{self, KeyType};
use axum::body::Body;
use axum::http::{Method, Request};
use liqo_auth::http::wire::{
    CertificateRequest, CertificateResponse, ErrorBody, HealthResponse, IdsResponse, RenewalRequest,
};
use liqo_auth::identity::{ClusterIdentity, ParsedCsr};
use serde_yaml::Value;

fn spec() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/liqo-auth.yaml")).expect("openapi file");
    serde_yaml::from_str(&text).expect("valid YAML")
}

/// Follows a `$ref` inside the document.
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let mut node = spec;
            for part in reference.trim_start_matches("#/").split('/') {
                node = &node[part];
            }
            node
        }
        None => value,
    }
}

fn operations(spec: &Value) -> Vec<(String, Method, Value)> {
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_mapping().expect("paths") {
        for (method, operation) in item.as_mapping().expect("path item") {
            let method: Method = method.as_str().unwrap().to_uppercase().parse().expect("HTTP method");
            out.push((path.as_str().unwrap().to_owned(), method, operation.clone()));
        }
    }
    out
}

#[tokio::test]
async fn every_documented_route_answers_with_a_documented_status() {
    let spec = spec();
    let app = TestApp::new();
    let ops = operations(&spec);
    assert_eq!(ops.len(), 5, "ids, identity/certificate, identity/certificate/renew, healthz, readyz");
    for (path, method, operation) in ops {
        let body = if path == "/identity/certificate/renew" {
            // A proof that cannot verify: the documented refusal, through the whole route.
            serde_json::json!({"proof": "a.b.c", "certificateSigningRequest": ""}).to_string()
        } else if method == Method::POST {
            certificate_body(
                "peer-1",
                "rome",
                app.token.expose(),
                &pki::liqo_csr(&pki::key(KeyType::P256), "peer-1"),
                None,
            )
        } else {
            String::new()
        };
        let answer =
            app.send(Request::builder().method(method.clone()).uri(&path).body(Body::from(body)).unwrap()).await;
        let documented: Vec<String> =
            operation["responses"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_owned()).collect();
        assert!(
            documented.contains(&answer.status.as_u16().to_string()),
            "{method} {path} answered {} which is not documented ({documented:?})",
            answer.status
        );
        // A wrong method is documented as 405 where the route lists it.
        if documented.contains(&"405".to_owned()) {
            let wrong = if method == Method::GET { Method::DELETE } else { Method::GET };
            let answer = app.send(Request::builder().method(wrong).uri(&path).body(Body::empty()).unwrap()).await;
            assert_eq!(answer.status.as_u16(), 405);
        }
    }
}

#[test]
fn every_example_body_deserialises_into_its_wire_type() {
    let spec = spec();
    let mut checked = 0;
    for (path, method, operation) in operations(&spec) {
        if let Some(body) = operation.get("requestBody") {
            for (_, media) in body["content"].as_mapping().unwrap() {
                for (_, example) in media.get("examples").and_then(Value::as_mapping).into_iter().flatten() {
                    let json = serde_json::to_value(&example["value"]).unwrap();
                    if path == "/identity/certificate/renew" {
                        let request: RenewalRequest = serde_json::from_value(json)
                            .unwrap_or_else(|e| panic!("{method} {path} request example: {e}"));
                        assert!(!request.proof.is_empty() && !request.certificate_signing_request.is_empty());
                    } else {
                        let request = serde_json::from_value::<CertificateRequest>(json)
                            .unwrap_or_else(|e| panic!("{method} {path} request example: {e}"));
                        // The example CSR is complete and valid, for the example's cluster.
                        let csr = ParsedCsr::from_base64_pem(&request.certificate_signing_request)
                            .unwrap_or_else(|e| panic!("{method} {path} request example CSR: {e}"));
                        assert_eq!(Some(csr.common_name()), request.cluster.as_ref().map(|c| c.cluster_id.as_str()));
                    }
                    checked += 1;
                }
            }
        }
        for (status, response) in operation["responses"].as_mapping().unwrap() {
            let response = resolve(&spec, response);
            let status = status.as_str().unwrap();
            for (_, media) in response["content"].as_mapping().into_iter().flatten() {
                for (_, example) in media.get("examples").and_then(Value::as_mapping).into_iter().flatten() {
                    let json = serde_json::to_value(&example["value"]).unwrap();
                    let what = format!("{method} {path} {status} example");
                    match (path.as_str(), status) {
                        (_, s) if !s.starts_with('2') => {
                            let error: ErrorBody =
                                serde_json::from_value(json).unwrap_or_else(|e| panic!("{what}: {e}"));
                            assert!(
                                liqo_auth::http::error::ERROR_CODES.contains(&error.code.as_str()),
                                "{what}: unknown code"
                            );
                        }
                        ("/ids", _) => {
                            drop(serde_json::from_value::<IdsResponse>(json).unwrap_or_else(|e| panic!("{what}: {e}")))
                        }
                        ("/identity/certificate" | "/identity/certificate/renew", _) => drop(
                            serde_json::from_value::<CertificateResponse>(json)
                                .unwrap_or_else(|e| panic!("{what}: {e}")),
                        ),
                        _ => drop(
                            serde_json::from_value::<HealthResponse>(json).unwrap_or_else(|e| panic!("{what}: {e}")),
                        ),
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 12, "only {checked} examples checked");
}

#[tokio::test]
async fn the_request_example_with_a_real_token_is_issued() {
    let spec = spec();
    let app = TestApp::new();
    let example = &spec["paths"]["/identity/certificate"]["post"]["requestBody"]["content"]["application/json"]
        ["examples"]["request"]["value"];
    let mut body = serde_json::to_value(example).unwrap();
    body["destinationClusterToken"] = app.token.expose().into();
    let answer = app
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/identity/certificate")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.text());
}

#[test]
fn schemas_state_the_constraints_the_code_enforces() {
    let spec = spec();
    let cluster = &spec["components"]["schemas"]["ClusterRef"]["properties"];
    let label = |field: &str| {
        let pattern = cluster[field]["pattern"].as_str().unwrap_or_else(|| panic!("{field} has a pattern"));
        let max = cluster[field]["maxLength"].as_u64().unwrap_or_else(|| panic!("{field} has a maxLength"));
        (pattern.to_owned(), max as usize)
    };
    // The documented pattern and lengths accept exactly what the validation accepts.
    for (field, (pattern, max)) in [("clusterID", label("clusterID")), ("clusterName", label("clusterName"))] {
        assert_eq!(pattern, "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "{field}");
        let longest = "a".repeat(max);
        let too_long = "a".repeat(max + 1);
        let ok = |id: &str, name: &str| ClusterIdentity::parse_remote(id, name).is_ok();
        let (accepts, refuses) = match field {
            "clusterID" => (ok(&longest, "n"), ok(&too_long, "n")),
            _ => (ok("id", &longest), ok("id", &too_long)),
        };
        assert!(accepts && !refuses, "{field}: maxLength {max} is the enforced bound");
    }
    let csr = &spec["components"]["schemas"]["CertificateRequest"]["properties"]["certificateSigningRequest"];
    assert_eq!(csr["maxLength"].as_u64(), Some(32768));
    let oversized = "A".repeat(32769);
    assert_eq!(ParsedCsr::from_base64_pem(&oversized).unwrap_err(), liqo_auth::identity::CsrError::TooLarge);
}

#[test]
fn the_error_code_enum_matches_the_code() {
    let spec = spec();
    let documented: Vec<String> = spec["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut in_code: Vec<String> = liqo_auth::http::error::ERROR_CODES.iter().map(|s| s.to_string()).collect();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort();
    in_code.sort();
    assert_eq!(documented_sorted, in_code);
}
