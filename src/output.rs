//! The one output convention of every command: `-o table|json|yaml`, RFC 3339 times in
//! documents, errors as `{"error":{"code","message"}}` on stdout when a document was asked
//! for, and stable exit codes.
//!
//! Commands build a `Serialize` value and a table; this module only renders them. What a
//! command prints, and its exit code, stay with the command.

use std::io::Write;
use std::process::ExitCode;

use serde::{Serialize, Serializer};

/// Exit status: everything worked.
pub const EXIT_OK: u8 = 0;
/// Exit status: the command failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: partly done, or done with warnings (`check`: the auth service passed and the
/// API server did not).
pub const EXIT_PARTIAL: u8 = 2;
/// Exit status: bad usage (unknown flag, a value that does not parse), as sysexits' EX_USAGE.
pub const EXIT_USAGE: u8 = 64;

/// How a command prints its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Aligned text for people (`-o table`).
    #[default]
    Text,
    /// One JSON document, for scripts (`-o json`).
    Json,
    /// One YAML document (`-o yaml`).
    Yaml,
}

impl Output {
    /// True for JSON and YAML: errors then go to stdout as a document too.
    pub fn is_document(self) -> bool {
        !matches!(self, Self::Text)
    }
}

/// `value` as a JSON (pretty) or YAML document, newline-terminated; `None` for `Output::Text`.
pub fn document<T: Serialize>(output: Output, value: &T) -> Option<String> {
    match output {
        Output::Text => None,
        Output::Json => Some(format!("{}\n", serde_json::to_string_pretty(value).expect("command results serialise"))),
        Output::Yaml => Some(serde_yaml::to_string(value).expect("command results serialise")),
    }
}

/// Writes `value` as the document `output` asks for, or `table` for people.
pub fn print<T: Serialize>(
    out: &mut dyn Write,
    output: Output,
    value: &T,
    table: impl FnOnce() -> String,
) -> std::io::Result<()> {
    match document(output, value) {
        Some(text) => out.write_all(text.as_bytes()),
        None => out.write_all(table().as_bytes()),
    }
}

/// A failed command's error, as the document `output` asks for (`{"error":{"code","message"}}`).
pub fn error_document(output: Output, code: &str, message: &str) -> Option<String> {
    #[derive(Serialize)]
    struct Body<'a> {
        error: Detail<'a>,
    }
    #[derive(Serialize)]
    struct Detail<'a> {
        code: &'a str,
        message: &'a str,
    }
    document(output, &Body { error: Detail { code, message } })
}

/// Prints a failed command's error once: as a document on stdout with `-o json|yaml`, else as
/// `error: ...` on stderr. Returns the exit code.
pub fn fail(output: Output, code: &str, message: &str) -> ExitCode {
    match error_document(output, code, message) {
        Some(text) => print!("{text}"),
        None => eprintln!("error: {message}"),
    }
    ExitCode::from(EXIT_FAILURE)
}

/// Serialises Unix seconds as RFC 3339 (`2027-11-24T20:30:45Z`), for `#[serde(serialize_with)]`.
pub fn rfc3339<S: Serializer>(seconds: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::pki::format_unix(*seconds))
}

/// Like [`rfc3339`], for optional times.
pub fn rfc3339_opt<S: Serializer>(seconds: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
    match seconds {
        Some(seconds) => rfc3339(seconds, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Sample {
        #[serde(serialize_with = "rfc3339")]
        expires: i64,
    }

    #[test]
    fn documents_carry_rfc3339_times() {
        let json = document(Output::Json, &Sample { expires: 1_700_000_000 }).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&json).unwrap()["expires"], "2023-11-14T22:13:20Z");
        let yaml = document(Output::Yaml, &Sample { expires: 0 }).unwrap();
        assert_eq!(yaml, "expires: 1970-01-01T00:00:00Z\n");
        assert!(document(Output::Text, &Sample { expires: 0 }).is_none());
    }

    #[test]
    fn errors_are_an_error_object_with_code_and_message() {
        let json = error_document(Output::Json, "not_found", "no join token with ID x").unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["error"]["code"], "not_found");
        assert_eq!(value["error"]["message"], "no join token with ID x");
        assert!(error_document(Output::Text, "x", "y").is_none());
    }
}
