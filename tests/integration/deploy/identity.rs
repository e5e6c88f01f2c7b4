//! The cluster identity of a standalone install (src/adapter/kube/kube_cluster.rs): Liqo's
//! ConfigMap when it exists, else the flags, else created once by `serve` and kept, so the
//! Deployment needs no configMapKeyRef and never sits in CreateContainerConfigError.

use liqo_auth::config::Access;
use serde_json::json;

use crate::support::app::{get, send};
use crate::support::fake_apiserver::FakeApiServer;
use crate::support::liqo::{seed_liqo_cluster, PROVIDER_ID};
use crate::support::server;

const NS: &str = "liqo";

async fn ids(fake: &FakeApiServer, extra: &[&str]) -> serde_json::Value {
    let mut argv = vec!["liqo-auth", "serve", "--namespace", NS, "--kube-request-timeout", "2s"];
    argv.extend_from_slice(extra);
    let router = server::router(&server::serve_config_over(fake, &argv)).await;
    send(&router, get("/ids")).await.json()
}

/// A cluster without Liqo: only the namespace.
async fn bare_cluster_fake() -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    fake.insert_json("/api/v1/namespaces", json!({"metadata": {"name": NS}}));
    fake
}

#[tokio::test]
async fn a_standalone_start_creates_the_identity_once_and_every_replica_and_restart_keeps_it() {
    let fake = bare_cluster_fake().await;
    let first = ids(&fake, &[]).await;
    let stored = fake.get_json("configmaps", Some(NS), "liqo-clusterid-configmap").expect("created");
    let id = stored["data"]["CLUSTER_ID"].as_str().expect("Liqo's key CLUSTER_ID").to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "a UUID, as Liqo makes: {id}");
    let name = stored["data"]["CLUSTER_NAME"].as_str().expect("Liqo's key CLUSTER_NAME");
    assert_eq!(first, json!({"clusterId": id, "clusterName": name}));
    assert_eq!(stored["metadata"]["labels"]["app.kubernetes.io/managed-by"], "liqo-auth");

    let version = stored["metadata"]["resourceVersion"].clone();
    for _ in 0..2 {
        assert_eq!(ids(&fake, &[]).await, first, "a second replica or a restart keeps the identity");
    }
    let again = fake.get_json("configmaps", Some(NS), "liqo-clusterid-configmap").unwrap();
    assert_eq!(again["metadata"]["resourceVersion"], version, "never rewritten");
}

#[tokio::test]
async fn replicas_starting_together_agree_on_one_identity() {
    let fake = bare_cluster_fake().await;
    let (a, b, c) = tokio::join!(ids(&fake, &[]), ids(&fake, &[]), ids(&fake, &[]));
    assert_eq!(a, b);
    assert_eq!(b, c);
}

#[tokio::test]
async fn a_new_identity_takes_the_name_flag() {
    let fake = bare_cluster_fake().await;
    assert_eq!(ids(&fake, &["--cluster-name", "edge-1"]).await["clusterName"], "edge-1");
}

#[tokio::test]
async fn liqo_configmap_wins_over_the_flags() {
    let fake = FakeApiServer::start().await;
    seed_liqo_cluster(&fake);
    let answer = ids(&fake, &["--cluster-id", "other-id", "--cluster-name", "other"]).await;
    assert_eq!(answer, json!({"clusterId": PROVIDER_ID, "clusterName": "provider"}));
}

#[tokio::test]
async fn without_configmap_the_flags_are_used_and_nothing_is_created() {
    let fake = bare_cluster_fake().await;
    let answer = ids(&fake, &["--cluster-id", "flag-id", "--cluster-name", "flagged"]).await;
    assert_eq!(answer, json!({"clusterId": "flag-id", "clusterName": "flagged"}));
    assert!(fake.get_json("configmaps", Some(NS), "liqo-clusterid-configmap").is_none());
}

#[tokio::test]
async fn a_configmap_without_cluster_id_stops_the_start_and_is_left_alone() {
    let fake = bare_cluster_fake().await;
    fake.insert_json(
        "/api/v1/namespaces/liqo/configmaps",
        json!({"metadata": {"name": "liqo-clusterid-configmap"}, "data": {"CLUSTER_NAME": "x"}}),
    );
    let config = server::serve_config_over(&fake, &["liqo-auth", "serve", "--namespace", NS]);
    let error = server::build(&config).await.err().expect("the start fails");
    let chain = liqo_auth::error_chain(&error);
    assert!(chain.contains("has no CLUSTER_ID key"), "{chain}");
    let left = fake.get_json("configmaps", Some(NS), "liqo-clusterid-configmap").unwrap();
    assert_eq!(left["data"], json!({"CLUSTER_NAME": "x"}));
}

#[tokio::test]
async fn operator_commands_never_invent_an_identity() {
    let fake = bare_cluster_fake().await;
    let config = server::serve_config_over(&fake, &["liqo-auth", "serve", "--namespace", NS]);
    let backend = config.backend.open(Access::Existing).await.expect("the backend opens");
    let error = backend.cluster.cluster_id(None).await.expect_err("no identity yet");
    let chain = liqo_auth::error_chain(&error);
    assert!(chain.contains("no cluster identity") && chain.contains("--cluster-id"), "{chain}");
    assert!(fake.get_json("configmaps", Some(NS), "liqo-clusterid-configmap").is_none());
}
