//! What a successful `peer` reports, and how it is shown to people.

use std::path::PathBuf;

use serde::Serialize;

/// What `peer` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerOutcome {
    /// `issued`, `existing` or `renewed`.
    pub status: PeerStatus,
    /// The provider's cluster ID.
    pub provider_id: String,
    /// The provider's cluster name.
    pub provider_name: String,
    /// The provider's tenant namespace for this cluster (the kubeconfig's namespace).
    pub namespace: String,
    /// The provider's API server URL.
    pub api_server_url: String,
    /// Serial number of the certificate, lower-case hex.
    pub certificate_serial: String,
    /// notAfter of the certificate, Unix seconds (RFC 3339 in documents).
    #[serde(serialize_with = "crate::output::rfc3339")]
    pub certificate_not_after: i64,
    /// Where the identity is stored.
    pub stored_in: String,
    /// The kubeconfig written, if any.
    pub kubeconfig: Option<PathBuf>,
    /// Requests made to `/identity/certificate` (0 when an existing identity was reported).
    pub certificate_requests: u32,
    /// Warnings printed on the way.
    pub warnings: Vec<String>,
}

/// Whether a certificate was issued in this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerStatus {
    /// A new certificate was obtained and stored.
    Issued,
    /// A valid identity was already stored; nothing was requested.
    Existing,
    /// The stored identity was due for renewal and was renewed (proof of possession, no token).
    Renewed,
}

impl PeerOutcome {
    /// A short human summary.
    pub fn render_text(&self) -> String {
        let mut out = match self.status {
            PeerStatus::Issued => {
                format!("Obtained an identity from provider {} ({}).\n", self.provider_name, self.provider_id)
            }
            PeerStatus::Renewed => format!(
                "The identity from provider {} ({}) was due for renewal and was renewed.\n",
                self.provider_name, self.provider_id
            ),
            PeerStatus::Existing => format!(
                "A valid identity from provider {} ({}) is already stored; nothing requested (use --force for a new one).\n",
                self.provider_name, self.provider_id
            ),
        };
        out.push_str(&format!("  tenant namespace:  {}\n", self.namespace));
        out.push_str(&format!("  API server:        {}\n", self.api_server_url));
        out.push_str(&format!(
            "  certificate:       serial {}, expires {} (Unix {})\n",
            self.certificate_serial,
            crate::pki::format_unix(self.certificate_not_after),
            self.certificate_not_after
        ));
        out.push_str(&format!("  stored in:         {}\n", self.stored_in));
        if let Some(path) = &self.kubeconfig {
            out.push_str(&format!("  kubeconfig:        {}\n", path.display()));
        }
        out
    }

    /// The outcome as one line of JSON, for scripts.
    pub fn render_json(&self) -> String {
        serde_json::to_string(self).expect("a PeerOutcome always serialises")
    }
}
