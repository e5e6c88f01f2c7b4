//! Rendering the kubeconfig `peer --kubeconfig-out` writes: one cluster (the provider's API
//! server), one user (the issued client certificate and its key), one context pointing at the
//! provider's tenant namespace.
//!
//! The output is JSON, which is valid YAML: kubectl and kube-rs read it as a kubeconfig. Writing
//! the file (atomically, mode 0600) is left to the caller.

use std::fmt;

use base64::Engine as _;

/// What goes into the kubeconfig.
#[derive(Clone)]
pub struct KubeconfigParts<'a> {
    /// Name used for the cluster, user and context entries (e.g. `liqo-<provider name>`).
    pub name: &'a str,
    /// `apiServerUrl` from the provider.
    pub server: &'a str,
    /// `apiServerCA` (PEM) when the provider sent one; absent means system roots.
    pub ca_pem: Option<&'a str>,
    /// The issued client certificate (PEM).
    pub certificate_pem: &'a str,
    /// The client private key (PEM).
    pub private_key_pem: &'a str,
    /// The provider's tenant namespace for this cluster.
    pub namespace: &'a str,
}

impl KubeconfigParts<'_> {
    /// The kubeconfig document.
    pub fn render(&self) -> String {
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        let mut cluster = serde_json::json!({ "server": self.server });
        if let Some(ca) = self.ca_pem {
            cluster["certificate-authority-data"] = b64(ca).into();
        }
        let document = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": self.name, "cluster": cluster }],
            "users": [{
                "name": self.name,
                "user": {
                    "client-certificate-data": b64(self.certificate_pem),
                    "client-key-data": b64(self.private_key_pem),
                },
            }],
            "contexts": [{
                "name": self.name,
                "context": { "cluster": self.name, "user": self.name, "namespace": self.namespace },
            }],
            "current-context": self.name,
            "preferences": {},
        });
        serde_json::to_string_pretty(&document).expect("a JSON value always serialises") + "\n"
    }
}

impl fmt::Debug for KubeconfigParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeconfigParts")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(ca: Option<&'static str>) -> KubeconfigParts<'static> {
        KubeconfigParts {
            name: "liqo-provider",
            server: "https://10.0.0.5:6443",
            ca_pem: ca,
            certificate_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            private_key_pem: "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n",
            namespace: "liqo-tenant-consumer-abcdef",
        }
    }

    #[test]
    fn kubeconfig_points_the_current_context_at_the_tenant_namespace_with_embedded_credentials() {
        let text = parts(Some("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n")).render();
        let file: kube::config::Kubeconfig = serde_json::from_str(&text).expect("kube reads it");
        assert_eq!(file.current_context.as_deref(), Some("liqo-provider"));
        let cluster = file.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.5:6443"));
        let ca = base64::engine::general_purpose::STANDARD
            .decode(cluster.certificate_authority_data.as_deref().expect("ca data"))
            .expect("base64");
        assert!(String::from_utf8(ca).expect("utf-8").contains("CA"));
        let context = file.contexts[0].context.as_ref().expect("context");
        assert_eq!(context.namespace.as_deref(), Some("liqo-tenant-consumer-abcdef"));
        assert_eq!((context.cluster.as_str(), context.user.as_deref()), ("liqo-provider", Some("liqo-provider")));
        let user = file.auth_infos[0].auth_info.as_ref().expect("user");
        assert!(user.client_certificate_data.is_some() && user.client_key_data.is_some());
    }

    #[test]
    fn kubeconfig_without_a_ca_leaves_trust_to_the_system_roots() {
        let text = parts(None).render();
        assert!(!text.contains("certificate-authority") && !text.contains("insecure-skip-tls-verify"), "{text}");
    }

    #[test]
    fn debug_output_redacts_the_private_key() {
        let printed = format!("{:?}", parts(None));
        assert!(printed.contains("<redacted>") && !printed.contains("BBBB"), "{printed}");
    }
}
