//! Error rendering for humans: one line with every cause, for logs and command output.
//!
//! Error types themselves live with the layer that fails (each layer has its own closed enum);
//! this module only renders them. Chains never reach an HTTP client: `http::ApiError` decides
//! what a peer sees.

/// Renders an error with its sources: `outer: middle: root cause`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chains_list_every_cause_in_order() {
        let error = Outer(std::io::Error::other("root cause"));
        assert_eq!(error_chain(&error), "outer: root cause");
    }
}
