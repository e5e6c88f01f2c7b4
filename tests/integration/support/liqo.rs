//! A fake provider cluster as Liqo installs it: the Liqo namespace, the cluster-ID ConfigMap and
//! the basic peering ClusterRole, plus a kubeconfig file pointing at the fake for CLI tests.

use std::path::{Path, PathBuf};

use super::fake_apiserver::FakeApiServer;

pub const NS: &str = "liqo";
pub const PROVIDER_ID: &str = "8c1f2d3e-4f5a-4b7c-9d8e-aaaaaaaaaaaa";

/// Seeds what a Liqo installation has before liqo-auth starts.
pub fn seed_liqo_cluster(fake: &FakeApiServer) {
    fake.insert_json("/api/v1/namespaces", serde_json::json!({"metadata": {"name": NS}}));
    fake.insert_json(
        "/api/v1/namespaces/liqo/configmaps",
        serde_json::json!({"metadata": {"name": "liqo-clusterid-configmap"}, "data": {"CLUSTER_ID": PROVIDER_ID, "CLUSTER_NAME": "provider"}}),
    );
    fake.insert_json(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        serde_json::json!({
            "metadata": {"name": "liqo-remote-peering-basic", "labels": {"auth.liqo.io/remote-peering-permissions": "basic"}},
            "rules": [{"apiGroups": ["discovery.liqo.io"], "resources": ["resourcerequests"], "verbs": ["*"]}]
        }),
    );
}

/// Writes a kubeconfig for the fake (plain HTTP, admin) into `dir` and returns its path.
pub fn write_kubeconfig(fake: &FakeApiServer, dir: &Path) -> PathBuf {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url()}}],
        "users": [{"name": "admin", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "admin"}}],
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kubeconfig.to_string()).expect("kubeconfig written");
    path
}
