//! The kubeconfig `peer --kubeconfig-out` writes, built with kube's own kubeconfig types: one
//! cluster (the provider's API server), one user (the issued client certificate and its key),
//! one context pointing at the provider's tenant namespace, all named alike.
//!
//! The output is JSON, which is valid YAML: kubectl and kube-rs read it as a kubeconfig (and no
//! YAML serialiser is needed in the build). Writing the file (atomically, mode 0600) is left to
//! the caller.

use base64::Engine as _;
use kube::config::{AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext, Preferences};

use crate::identity::port::KubeconfigParts;

/// The kubeconfig document for `parts`.
pub fn render(parts: &KubeconfigParts<'_>) -> String {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let name = parts.name.to_owned();
    let document = Kubeconfig {
        api_version: Some("v1".to_owned()),
        kind: Some("Config".to_owned()),
        clusters: vec![NamedCluster {
            name: name.clone(),
            cluster: Some(Cluster {
                server: Some(parts.server.to_owned()),
                // Absent means the system roots: never insecure-skip-tls-verify.
                certificate_authority_data: parts.ca_pem.map(b64),
                ..Cluster::default()
            }),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: name.clone(),
            auth_info: Some(AuthInfo {
                client_certificate_data: Some(b64(parts.certificate_pem)),
                client_key_data: Some(b64(parts.private_key_pem).into()),
                ..AuthInfo::default()
            }),
        }],
        contexts: vec![NamedContext {
            name: name.clone(),
            context: Some(Context {
                cluster: name.clone(),
                user: Some(name.clone()),
                namespace: Some(parts.namespace.to_owned()),
                extensions: None,
            }),
        }],
        current_context: Some(name),
        preferences: Some(Preferences { colors: None, extensions: None }),
        extensions: None,
    };
    serde_json::to_string_pretty(&document).expect("a kubeconfig always serialises") + "\n"
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
        let text = render(&parts(Some("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n")));
        let file: Kubeconfig = serde_json::from_str(&text).expect("kube reads it");
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
        let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!((json["apiVersion"].as_str(), json["kind"].as_str()), (Some("v1"), Some("Config")));
        let key = base64::engine::general_purpose::STANDARD
            .decode(json["users"][0]["user"]["client-key-data"].as_str().expect("key data"))
            .expect("base64");
        assert!(String::from_utf8(key).expect("utf-8").contains("BBBB"), "the key itself, not a redaction");
    }

    #[test]
    fn kubeconfig_without_a_ca_leaves_trust_to_the_system_roots() {
        let text = render(&parts(None));
        assert!(!text.contains("certificate-authority") && !text.contains("insecure-skip-tls-verify"), "{text}");
    }
}
