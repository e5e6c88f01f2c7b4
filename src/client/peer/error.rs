//! Why `peer` failed, grouped by where it failed: the inputs, the provider's answers, the
//! connection, and this cluster's own state. Messages never contain tokens or keys.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::key::GenerateKeyError;
use crate::client::transport::{ConnectFailure, TlsFailure, TransportError};
use crate::client::verify::CertificateProblem;
use crate::identity::port::StoreError;
use crate::identity::ClusterValueError;

/// Why `peer` failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The provider's token could not be read, or is empty.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// `--cluster-id` or `--cluster-name` is not a DNS-1123 label.
    #[error("invalid local cluster identity")]
    InvalidLocalIdentity(#[source] ClusterValueError),
    /// The client could not be prepared (bad URL, unusable CA file).
    #[error("preparing the client for {url}")]
    Client {
        /// The auth URL.
        url: String,
        /// The transport's reason.
        #[source]
        source: TransportError,
    },
    /// A request failed in a way retrying cannot fix (TLS verification, plain HTTP...).
    #[error("{step} at {url} failed")]
    Request {
        /// `GET /ids` or `POST /identity/certificate`.
        step: Step,
        /// The auth URL.
        url: String,
        /// What went wrong.
        #[source]
        source: TransportError,
    },
    /// Retries did not succeed before `--timeout`.
    #[error("{step} at {url} did not succeed within {budget:?} ({attempts} attempts); last failure")]
    OutOfTime {
        /// The step.
        step: Step,
        /// The auth URL.
        url: String,
        /// `--timeout`.
        budget: Duration,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<AttemptFailure>,
    },
    /// `GET /ids` did not tell who the provider is.
    #[error(transparent)]
    Ids(#[from] IdsError),
    /// The auth URL leads back to this cluster.
    #[error("the provider's cluster ID {cluster_id} is this cluster's own ID: refusing to peer a cluster with itself")]
    PeeringWithSelf {
        /// The shared ID.
        cluster_id: String,
    },
    /// The provider refused the request (401, 403, 409 or another 4xx).
    #[error("the provider refused the request (HTTP {status}): {message}\nhint: {hint}")]
    Rejected {
        /// The status.
        status: u16,
        /// The server's message, with any token redacted.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// The success answer is not a certificate response.
    #[error("the provider's answer (HTTP {status}) is not a certificate response")]
    AnswerBody {
        /// The status.
        status: u16,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The certificate in the answer is unusable.
    #[error("the provider's certificate is unusable: {0}")]
    Certificate(CertificateProblem),
    /// The key could not be generated.
    #[error(transparent)]
    GenerateKey(#[from] GenerateKeyError),
    /// This cluster's own state could not be read or written.
    #[error(transparent)]
    Local(#[from] LocalError),
}

/// The provider's token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A token file could not be read.
    #[error("reading {flag} {path}")]
    Read {
        /// `--token-file` or `--origin-token-file`.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Standard input could not be read.
    #[error("reading the token from standard input")]
    ReadStdin(#[source] std::io::Error),
    /// The token given is empty.
    #[error("the token from {flag} is empty")]
    Empty {
        /// Where it came from.
        flag: &'static str,
    },
}

/// `GET /ids` answered something other than a usable cluster identity.
#[derive(Debug, thiserror::Error)]
pub enum IdsError {
    /// Not 200.
    #[error("GET /ids at {url} answered HTTP {status}: is this URL a liqo-auth service?")]
    Status {
        /// The auth URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// Not a cluster identity.
    #[error("GET /ids at {url} did not return a cluster identity")]
    Body {
        /// The auth URL.
        url: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// An identity that is not a pair of DNS-1123 labels.
    #[error("GET /ids at {url} returned an unusable cluster identity")]
    Identity {
        /// The auth URL.
        url: String,
        /// What is wrong with it.
        #[source]
        source: ClusterValueError,
    },
}

/// This cluster's side: its identity, its own token, the identity store, the kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// This cluster's identity could not be determined.
    #[error("determining this cluster's identity")]
    Identity(#[source] StoreError),
    /// This cluster's own token could not be read.
    #[error("reading this cluster's token for originClusterToken")]
    OriginToken(#[source] StoreError),
    /// Reading or writing the identity store failed.
    #[error("accessing the identity store")]
    Store(#[source] StoreError),
    /// The kubeconfig could not be written.
    #[error("writing the kubeconfig {path}")]
    WriteKubeconfig {
        /// `--kubeconfig-out`.
        path: PathBuf,
        /// The write error.
        #[source]
        source: StoreError,
    },
}

/// One failed attempt that was worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum AttemptFailure {
    /// The connection failed or timed out.
    #[error(transparent)]
    Transport(TransportError),
    /// The server answered 429 or 5xx.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The status.
        status: u16,
        /// The server's message, tokens redacted.
        message: String,
    },
    /// The overall deadline passed during the request.
    #[error("the request was still running at the deadline")]
    Deadline,
}

/// A step of the peering, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `GET /ids`.
    Ids,
    /// `POST /identity/certificate`.
    Certificate,
}

impl PeerError {
    /// What to do about a failure to reach or trust the provider (the 4xx refusals carry their
    /// own hint); `pinned` is the `--ca-hash` given, if any.
    pub fn hint(&self, pinned: &[String]) -> Option<String> {
        let (url, transport) = match self {
            Self::Request { url, source, .. } => (url, source),
            Self::OutOfTime { url, last, .. } => match last.as_ref() {
                AttemptFailure::Transport(source) => (url, source),
                AttemptFailure::Status { status: 429, .. } => {
                    return Some("the provider rate-limits this address after failed authentications: wait a minute, and check the token".into())
                }
                AttemptFailure::Status { .. } => {
                    return Some("the provider kept answering 5xx: its operator can see why in its logs (`kubectl -n liqo logs deploy/liqo-auth`); a longer --timeout waits more".into())
                }
                AttemptFailure::Deadline => return Some("raise --timeout if the provider's signer is slow".into()),
            },
            _ => return None,
        };
        let check =
            format!("`liqo-auth check --auth-url {url}` walks DNS, TCP, TLS and /ids and says which step fails");
        Some(match transport {
            TransportError::Connect { failure: ConnectFailure::Refused, addr, .. } => format!(
                "nothing listens on {addr}: check the port in --auth-url and that the provider's liqo-auth runs and is exposed there; {check}"
            ),
            TransportError::Connect { .. } | TransportError::Resolve { .. } | TransportError::Timeout { .. } => {
                format!("the provider is not reachable from here (address, firewall, NAT?); {check}")
            }
            TransportError::TlsHandshake { failure: TlsFailure::PinMismatch { presented }, .. } => format!(
                "the server presents {} but --ca-hash is {}: if the provider's serving certificate changed, ask its operator for a new command (`liqo-auth token create --print-peer-command`) or compare `liqo-auth ca-hash --url {url}` with them; if the URL reaches a proxy that terminates TLS, point it at liqo-auth itself",
                presented.first().map_or("no certificate", String::as_str),
                if pinned.is_empty() { "(none)".to_owned() } else { pinned.join(", ") },
            ),
            TransportError::TlsHandshake { failure: TlsFailure::UnknownIssuer, .. } => format!(
                "the certificate is not signed by a CA this machine trusts: pass the CA with --ca-file, or pin the certificate with --ca-hash (from the provider's `liqo-auth token create --print-peer-command`; `liqo-auth ca-hash --url {url}` shows the pin presented here, to compare with the provider's operator)"
            ),
            TransportError::TlsHandshake { failure: TlsFailure::NameMismatch, .. } => format!(
                "use a host name the certificate names in --auth-url, or pin it with --ca-hash (a pin does not depend on names); {check}"
            ),
            TransportError::TlsHandshake { failure: TlsFailure::Expired | TlsFailure::NotYetValid, .. } => {
                "check this machine's clock; if it is right, the provider must renew its serving certificate".into()
            }
            TransportError::TlsHandshake { failure: TlsFailure::NotTls, .. } => {
                "the server speaks plain HTTP on that port: use http:// if it runs without TLS, or the TLS port".into()
            }
            TransportError::TlsOnPlainPort { .. } => "the server speaks TLS: use https://".into(),
            _ => check,
        })
    }

    /// A stable code for `-o json` errors (`{"error":{"code","message"}}`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Token(_) => "token_unreadable",
            Self::InvalidLocalIdentity(_) => "invalid_local_identity",
            Self::Client { .. } => "invalid_client_setup",
            Self::Request { source, .. } => transport_code(source),
            Self::OutOfTime { last, .. } => match last.as_ref() {
                AttemptFailure::Transport(source) => transport_code(source),
                AttemptFailure::Status { .. } => "provider_unavailable",
                AttemptFailure::Deadline => "timeout",
            },
            Self::Ids(_) => "not_a_liqo_auth_service",
            Self::PeeringWithSelf { .. } => "peering_with_self",
            Self::Rejected { status: 401, .. } => "invalid_token",
            Self::Rejected { status: 403, .. } => "not_authorised",
            Self::Rejected { status: 409, .. } => "identity_exists",
            Self::Rejected { .. } => "rejected",
            Self::AnswerBody { .. } | Self::Certificate(_) => "bad_answer",
            Self::GenerateKey(_) => "key_generation",
            Self::Local(_) => "local_state",
        }
    }

    /// Reading or writing the identity store failed.
    pub(super) fn store(source: StoreError) -> Self {
        Self::Local(LocalError::Store(source))
    }
}

fn transport_code(error: &TransportError) -> &'static str {
    match error {
        TransportError::ParseUrl { .. } => "invalid_url",
        TransportError::LoadTrust { .. } => "invalid_trust",
        TransportError::Resolve { .. } => "dns",
        TransportError::Connect { .. } => "connect",
        TransportError::TlsHandshake { .. } | TransportError::TlsOnPlainPort { .. } => "tls",
        TransportError::Timeout { .. } => "timeout",
        TransportError::Http { .. } | TransportError::BodyTooLarge { .. } => "http",
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Ids => "GET /ids",
            Step::Certificate => "POST /identity/certificate",
        })
    }
}
