//! Redirects from a path that only cleans to a route, as the reference router does.
//!
//! The reference serves its routes with julienschmidt/httprouter and its defaults
//! (`RedirectTrailingSlash`, `RedirectFixedPath`): a request whose path is not a route but
//! becomes one once cleaned (percent-escapes decoded as Go's `URL.Path` holds them, doubled
//! slashes collapsed, `.` and `..` segments resolved, a trailing slash removed, letter case
//! ignored) is redirected to that route, `301` for GET and `307` for every other method (a 307
//! repeats method and body), with the query kept. Go's client follows both, which is how a Liqo
//! consumer configured with the auth URL `https://host:port/` peers: it requests `//ids` and
//! `POST //identity/certificate`.
//!
//! The `Location` is always one of the fixed routes (never anything taken from the request but
//! its query), so this is no open redirect. Routing, and the metrics label (`unmatched`, never
//! the raw path), stay the router's.

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// The redirect to the route among `routes` that `uri`'s path cleans to; `None` when it cleans to
/// none or already is one.
pub fn to_route(method: &Method, uri: &Uri, routes: &[&'static str]) -> Option<Response> {
    // Go's server answers CONNECT itself, and httprouter never redirects it or "/".
    if method == Method::CONNECT || uri.path() == "/" {
        return None;
    }
    let route = canonical_route(uri.path(), routes)?;
    let status = if method == Method::GET { StatusCode::MOVED_PERMANENTLY } else { StatusCode::TEMPORARY_REDIRECT };
    let location = match uri.query() {
        Some(query) => format!("{route}?{query}"),
        None => route.to_owned(),
    };
    let mut response = status.into_response();
    // The query comes from a parsed URI, so it is always a valid header value; a request whose
    // query were not would simply get the redirect without it.
    let location = HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static(route));
    response.headers_mut().insert(header::LOCATION, location);
    Some(response)
}

/// The route `path` cleans to, when that differs from `path` itself.
fn canonical_route(path: &str, routes: &[&'static str]) -> Option<&'static str> {
    let decoded = percent_decode(path)?;
    let cleaned = clean(&decoded);
    routes.iter().copied().find(|route| route.as_bytes().eq_ignore_ascii_case(&cleaned) && *route != path)
}

/// `/` followed by the segments of `path` with empty and `.` segments dropped and each `..`
/// removing the segment before it (never above the root): Go's `path.Clean` without the trailing
/// slash, which httprouter's trailing-slash fix removes anyway.
fn clean(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in path.split(|byte| *byte == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut cleaned = Vec::with_capacity(path.len());
    for segment in segments {
        cleaned.push(b'/');
        cleaned.extend_from_slice(segment);
    }
    if cleaned.is_empty() {
        cleaned.push(b'/');
    }
    cleaned
}

/// Decodes `%XX` escapes as Go does for `URL.Path`; `None` for a malformed escape (Go's server
/// refuses such a request-target outright).
fn percent_decode(path: &str) -> Option<Vec<u8>> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            decoded.push(u8::from_str_radix(text, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &[&str] = &["/ids", "/identity/certificate", "/healthz"];

    fn location(method: Method, target: &str) -> Option<(StatusCode, String)> {
        let uri: Uri = target.parse().expect("a request-target");
        to_route(&method, &uri, ROUTES).map(|response| {
            let location = response.headers()[header::LOCATION].to_str().expect("ASCII").to_owned();
            (response.status(), location)
        })
    }

    #[test]
    fn paths_that_clean_to_a_route_redirect_to_it() {
        for target in [
            "//ids",
            "/ids/",
            "//ids//",
            "/./ids",
            "/x/../ids",
            "/../../ids",
            "/IDS",
            "/%69ds",
            "/identity//certificate/",
            "/identity%2Fcertificate",
        ] {
            let expected = if target.to_ascii_lowercase().contains("cert") { "/identity/certificate" } else { "/ids" };
            assert_eq!(
                location(Method::GET, target),
                Some((StatusCode::MOVED_PERMANENTLY, expected.into())),
                "{target}"
            );
        }
    }

    #[test]
    fn methods_other_than_get_get_307_so_the_body_is_sent_again() {
        assert_eq!(
            location(Method::POST, "//identity/certificate"),
            Some((StatusCode::TEMPORARY_REDIRECT, "/identity/certificate".into()))
        );
        assert_eq!(location(Method::HEAD, "/ids/"), Some((StatusCode::TEMPORARY_REDIRECT, "/ids".into())));
        assert_eq!(location(Method::CONNECT, "/ids/"), None);
    }

    #[test]
    fn the_query_is_kept() {
        assert_eq!(location(Method::GET, "//ids?x=1"), Some((StatusCode::MOVED_PERMANENTLY, "/ids?x=1".into())));
    }

    #[test]
    fn routes_themselves_and_paths_that_clean_to_no_route_are_not_redirected() {
        for target in ["/ids", "/", "//", "/identity", "/idsx", "/ids/x", "/%zz", "/%6", "/identity/certificate/.."] {
            assert_eq!(location(Method::GET, target), None, "{target}");
        }
    }
}
