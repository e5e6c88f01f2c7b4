//! Error rendering for humans: one line with every cause, for logs and command output.
//!
//! Error types themselves live with the layer that fails (each layer has its own closed enum);
//! this module only renders them. Chains never reach an HTTP client: `http::ApiError` decides
//! what a peer sees.

/// Renders an error with its sources: `outer: middle: root cause`. A cause whose text is
/// already part of the line is skipped: some libraries (kube's config errors) put their sources
/// in their own message, which would otherwise print the same cause two or three times.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
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

    #[derive(Debug, thiserror::Error)]
    #[error("reading config: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let error = Outer(std::io::Error::other(Repeats(std::io::Error::other("No such file or directory"))));
        assert_eq!(error_chain(&error), "outer: reading config: No such file or directory");
    }

    #[test]
    fn chains_list_every_cause_in_order() {
        let error = Outer(std::io::Error::other("root cause"));
        assert_eq!(error_chain(&error), "outer: root cause");
    }
}
