//! `ApiJson<T>`: a JSON body extractor that ignores Content-Type (the reference client sends
//! `text/plain`) and answers every rejection with the API's error envelope.
//!
//! Every body of this API is a JSON object. serde's derived structs would also take a JSON
//! array as their fields in order (`[cluster, token, null, csr]`); Go's decoder refuses that, and
//! so do we, before deserialising.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::http::error::{ApiError, BodyReadTimeout};

/// Maximum accepted body: a CSR with an RSA-8192 key and two tokens fit with room to spare.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body of type `T`, whatever its Content-Type.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else if caused_by_body_timeout(&rejection) {
                ApiError::BodyTimeout
            } else {
                ApiError::InvalidJson { detail: "the body could not be read".into() }
            }
        })?;
        parse_body(&bytes).map(ApiJson)
    }
}

/// Parses a whole request body as the JSON object `T` (what `ApiJson` does once the body is read;
/// also the entry point of the request-JSON fuzz target).
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|first| *first != b'{') {
        return Err(ApiError::InvalidJson { detail: "the body must be a JSON object".into() });
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson { detail: describe(&e) })
}

/// Whether reading the body failed because the listener's body read deadline passed.
fn caused_by_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<BodyReadTimeout>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Describes a JSON error by category and position only: serde's own messages can quote the
/// offending value, which may be a token.
fn describe(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Eof if error.line() == 1 && error.column() == 0 => return "the body is empty".into(),
        Category::Eof => "unexpected end of input",
        Category::Syntax => "syntax error",
        Category::Data => "a field has the wrong type",
        Category::Io => "read error",
    };
    format!("{what} at line {} column {}", error.line(), error.column())
}
