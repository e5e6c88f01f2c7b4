//! `KubeCaches`: reflector stores of what rarely changes and is read on every issuance, so an
//! issuance costs only the requests that write (or read what a cache cannot know).
//!
//! Each cache is a kube-runtime reflector over a label- or name-selected watch:
//!
//! - tenant namespaces (label `discovery.liqo.io/tenant-namespace`), cluster-wide;
//! - the basic peering ClusterRoles (label `auth.liqo.io/remote-peering-permissions=basic`);
//! - control-plane nodes, one watch per label in order of preference;
//! - in `--namespace` only: the origin-token Secrets (label `discovery.liqo.io/auth-token`) and
//!   the ConfigMap `kube-root-ca.crt`. There is no cluster-wide Secret watch.
//!
//! A cache answers only after its first list completed ([`KubeCaches::synced`] feeds
//! `/readyz`), and kube's watcher lists again after any gap. A cache can still lag behind a
//! write of another replica by a moment, so callers treat a miss that may be staleness as a
//! hint and confirm it with one direct read, and every write keeps create-if-absent or
//! resourceVersion preconditions, so a stale view never overwrites a newer object.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::Api;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::adapter::kube::{
    KubeCtx, LABEL_AUTH_TOKEN, LABEL_CLUSTER_ID, LABEL_PEERING_PERMISSIONS, LABEL_TENANT_NAMESPACE,
};

/// Control-plane node labels, in order of preference.
pub const CONTROL_PLANE_LABELS: [&str; 3] =
    ["node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master", "node-role.kubernetes.io/controlplane"];

/// The reflector stores the Kubernetes store reads from.
#[derive(Clone)]
pub struct KubeCaches {
    pub namespaces: Store<Namespace>,
    pub cluster_roles: Store<ClusterRole>,
    /// One store per [`CONTROL_PLANE_LABELS`] entry, same order.
    pub control_plane_nodes: Vec<Store<Node>>,
    /// Origin-token Secrets (`remote-token-<id>`) in `--namespace`.
    pub origin_tokens: Store<Secret>,
    /// ConfigMap `kube-root-ca.crt` in `--namespace`.
    pub root_ca: Store<ConfigMap>,
    /// How many caches completed their first list (a channel so start-up can await it).
    synced: Arc<watch::Sender<usize>>,
    total: usize,
}

impl KubeCaches {
    /// Starts every reflector in the background.
    pub fn start(ctx: &KubeCtx, namespace: &str) -> Self {
        let synced = Arc::new(watch::Sender::new(0));
        let client = ctx.client.clone();
        let namespaces = reflect(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default().labels(LABEL_TENANT_NAMESPACE),
            "tenant namespaces",
            &synced,
        );
        let cluster_roles = reflect(
            Api::<ClusterRole>::all(client.clone()),
            watcher::Config::default().labels(&format!("{LABEL_PEERING_PERMISSIONS}=basic")),
            "basic peering ClusterRoles",
            &synced,
        );
        let control_plane_nodes = CONTROL_PLANE_LABELS
            .iter()
            .map(|label| {
                reflect(
                    Api::<Node>::all(client.clone()),
                    watcher::Config::default().labels(label),
                    "control-plane nodes",
                    &synced,
                )
            })
            .collect::<Vec<_>>();
        let origin_tokens = reflect(
            Api::<Secret>::namespaced(client.clone(), namespace),
            watcher::Config::default().labels(LABEL_AUTH_TOKEN),
            "origin-token Secrets",
            &synced,
        );
        let root_ca = reflect(
            Api::<ConfigMap>::namespaced(client, namespace),
            watcher::Config::default().fields("metadata.name=kube-root-ca.crt"),
            "ConfigMap kube-root-ca.crt",
            &synced,
        );
        let total = 4 + control_plane_nodes.len();
        Self { namespaces, cluster_roles, control_plane_nodes, origin_tokens, root_ca, synced, total }
    }

    /// True once every cache completed its first list.
    pub fn synced(&self) -> bool {
        *self.synced.borrow() >= self.total
    }

    /// Waits until every cache completed its first list, at most `timeout`.
    pub async fn wait_synced(&self, timeout: std::time::Duration) -> bool {
        // Not `Store::wait_until_ready` here: a store wakes one waiter only, the task in `reflect`.
        let mut synced = self.synced.subscribe();
        let total = self.total;
        let in_time = matches!(tokio::time::timeout(timeout, synced.wait_for(|n| *n >= total)).await, Ok(Ok(_)));
        in_time
    }

    /// Tenant namespaces labelled for `cluster_id`, as the cache sees them.
    pub fn tenant_namespaces_of(&self, cluster_id: &str) -> Vec<Arc<Namespace>> {
        self.namespaces
            .state()
            .into_iter()
            .filter(|ns| label(&ns.metadata, LABEL_CLUSTER_ID) == Some(cluster_id))
            .collect()
    }
}

/// The value of label `key`.
pub fn label<'a>(meta: &'a kube::api::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// Starts a reflector over `api` and returns its store; bumps `synced` once the first list
/// completed.
fn reflect<K>(api: Api<K>, config: watcher::Config, what: &'static str, synced: &Arc<watch::Sender<usize>>) -> Store<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(stream.for_each(move |event| async move {
        if let Err(error) = event {
            tracing::warn!(error = %error, "watching {what} failed; retrying");
        }
    }));
    let (ready, synced) = (reader.clone(), synced.clone());
    tokio::spawn(async move {
        if ready.wait_until_ready().await.is_ok() {
            synced.send_modify(|n| *n += 1);
        }
    });
    reader
}
