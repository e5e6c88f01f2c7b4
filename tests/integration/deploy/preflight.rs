//! `liqo-auth check --pre` against the fake API server: a cluster ready for the rendered base
//! passes every step; each missing or broken piece fails its step with a cause and a fix; the
//! throwaway CSR never stays behind; the permission list the binary checks is exactly the
//! rendered service role.

use std::collections::BTreeSet;
use std::time::Duration;

use liqo_auth::adapter::kube::kube_preflight::{Need, SERVICE_PERMISSIONS};
use liqo_auth::client::check::{CheckReport, CheckStep, StepStatus};
use liqo_auth::config::{Connection, PreflightConfig};
use serde_json::json;

use super::render;
use crate::support::fake_apiserver::{ClientIdentity, FakeApiServer, SignerMode};
use crate::support::liqo::{seed_liqo_cluster, PROVIDER_ID};
use crate::support::rbac::Grant;

const STEPS: [&str; 7] = [
    "pre: API server",
    "pre: namespace",
    "pre: CSR signer",
    "pre: service account permissions",
    "pre: basic peering ClusterRoles",
    "pre: cluster identity",
    "pre: serving Secret",
];

async fn preflight(fake: &FakeApiServer, identity: Option<&ClientIdentity>, signing: Duration) -> CheckReport {
    let config = PreflightConfig {
        connection: Connection::Config(Box::new(match identity {
            Some(identity) => fake.kube_config_with_identity(Some(identity)),
            None => fake.kube_config(),
        })),
        request_timeout: Duration::from_secs(2),
        namespace: "liqo".into(),
        service_account: "liqo-auth".into(),
        signing_timeout: signing,
    };
    config.run().await
}

fn step<'a>(report: &'a CheckReport, name: &str) -> &'a CheckStep {
    report
        .steps
        .iter()
        .find(|s| s.name == format!("pre: {name}"))
        .unwrap_or_else(|| panic!("no step {name}: {report:?}"))
}

/// Applies the rendered base's Namespace and RBAC objects, as `kubectl apply -k` would.
fn apply_base_rbac(fake: &FakeApiServer) -> bool {
    let Some(r) = render("base") else { return false };
    if fake.get_json("namespaces", None, "liqo").is_none() {
        fake.insert_json("/api/v1/namespaces", json!({"metadata": {"name": "liqo"}}));
    }
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    for role in &r.cluster_roles {
        fake.insert_json(&format!("{rbac}/clusterroles"), serde_json::to_value(role).unwrap());
    }
    for binding in &r.cluster_role_bindings {
        fake.insert_json(&format!("{rbac}/clusterrolebindings"), serde_json::to_value(binding).unwrap());
    }
    for role in &r.roles {
        fake.insert_json(&format!("{rbac}/namespaces/liqo/roles"), serde_json::to_value(role).unwrap());
    }
    for binding in &r.role_bindings {
        fake.insert_json(&format!("{rbac}/namespaces/liqo/rolebindings"), serde_json::to_value(binding).unwrap());
    }
    true
}

#[tokio::test]
async fn a_cluster_with_liqo_and_the_rendered_rbac_passes_every_step_and_keeps_no_csr() {
    let fake = FakeApiServer::start().await;
    seed_liqo_cluster(&fake);
    if !apply_base_rbac(&fake) {
        return;
    }
    let report = preflight(&fake, None, Duration::from_secs(5)).await;
    let names: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, STEPS, "{report:?}");
    assert!(report.passed(), "{}", report.render_table());
    assert!(step(&report, "cluster identity").detail.contains(PROVIDER_ID));
    assert!(step(&report, "basic peering ClusterRoles").detail.contains("liqo-remote-peering-basic"));
    assert!(step(&report, "service account permissions").detail.starts_with("all 37 permissions granted"));
    assert!(fake.list_json("certificatesigningrequests").is_empty(), "the test CSR is deleted");
    let created: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == http::Method::POST && r.path.ends_with("/certificatesigningrequests"))
        .collect();
    assert_eq!(created.len(), 1, "one real round trip");
    let body = created[0].body.as_ref().unwrap();
    assert_eq!(body["spec"]["signerName"], "kubernetes.io/kube-apiserver-client");
    assert_eq!(body["spec"]["expirationSeconds"], 600);
}

#[tokio::test]
async fn before_anything_is_applied_each_missing_piece_fails_or_is_explained() {
    let fake = FakeApiServer::start().await;
    let report = preflight(&fake, None, Duration::from_secs(5)).await;
    assert!(!report.passed());
    assert_eq!(step(&report, "API server").status, StepStatus::Pass);
    assert!(step(&report, "namespace").detail.contains("namespace.yaml creates it"));
    assert_eq!(step(&report, "CSR signer").status, StepStatus::Pass, "{:?}", step(&report, "CSR signer"));
    let permissions = step(&report, "service account permissions");
    assert_eq!(permissions.status, StepStatus::Fail);
    assert!(permissions.detail.contains("create secrets"), "{}", permissions.detail);
    assert!(permissions.fix.as_deref().unwrap().contains("kubectl apply -k deploy/overlays/"));
    let roles = step(&report, "basic peering ClusterRoles");
    assert_eq!(roles.status, StepStatus::Fail);
    assert!(roles.fix.as_deref().unwrap().contains("install Liqo"));
    assert!(step(&report, "cluster identity").detail.contains("creates it once"), "standalone is fine");
    assert_eq!(step(&report, "serving Secret").status, StepStatus::Pass);
    let table = report.render_table();
    assert!(table.contains("fix:") && table.contains("check failed: 2 failed"), "{table}");
}

#[tokio::test]
async fn a_cluster_that_does_not_sign_or_denies_fails_the_csr_step_with_the_local_ca_fix() {
    for (mode, expected) in [(SignerMode::Ignore, "no certificate within"), (SignerMode::Deny, "denied")] {
        let fake = FakeApiServer::start().await;
        fake.set_signer_mode(mode);
        let report = preflight(&fake, None, Duration::from_millis(700)).await;
        let csr = step(&report, "CSR signer");
        assert_eq!(csr.status, StepStatus::Fail, "{mode:?}");
        assert!(csr.detail.contains(expected), "{mode:?}: {}", csr.detail);
        assert!(csr.fix.as_deref().unwrap().contains("--signer local-ca"), "{mode:?}");
        assert!(fake.list_json("certificatesigningrequests").is_empty(), "{mode:?}: nothing left behind");
    }
}

#[tokio::test]
async fn an_extra_basic_peering_role_needs_its_name_in_the_bind_rule() {
    let fake = FakeApiServer::start().await;
    seed_liqo_cluster(&fake);
    if !apply_base_rbac(&fake) {
        return;
    }
    fake.insert_json(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        json!({"metadata": {"name": "liqo-remote-peering-extra", "labels": {"auth.liqo.io/remote-peering-permissions": "basic"}}}),
    );
    let report = preflight(&fake, None, Duration::from_secs(5)).await;
    let permissions = step(&report, "service account permissions");
    assert_eq!(permissions.status, StepStatus::Fail);
    assert!(permissions.detail.contains("bind clusterroles.rbac.authorization.k8s.io liqo-remote-peering-extra"));
    assert!(permissions.fix.as_deref().unwrap().contains("deploy/base/rbac-service.yaml"));
    assert_eq!(report.steps.iter().filter(|s| s.status == StepStatus::Fail).count(), 1, "{}", report.render_table());
}

#[tokio::test]
async fn a_broken_serving_secret_and_an_identity_without_cluster_id_fail_with_their_fixes() {
    let fake = FakeApiServer::start().await;
    fake.insert_json("/api/v1/namespaces", json!({"metadata": {"name": "liqo"}}));
    fake.insert_json(
        "/api/v1/namespaces/liqo/secrets",
        json!({"metadata": {"name": "liqo-auth-tls"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "not a certificate", "tls.key": "k"}}),
    );
    fake.insert_json(
        "/api/v1/namespaces/liqo/configmaps",
        json!({"metadata": {"name": "liqo-clusterid-configmap"}, "data": {"CLUSTER_NAME": "x"}}),
    );
    let report = preflight(&fake, None, Duration::from_secs(5)).await;
    let serving = step(&report, "serving Secret");
    assert_eq!(serving.status, StepStatus::Fail);
    assert!(serving.fix.as_deref().unwrap().contains("kubectl -n liqo create secret tls liqo-auth-tls"));
    let identity = step(&report, "cluster identity");
    assert_eq!(identity.status, StepStatus::Fail);
    assert!(identity.detail.contains("no CLUSTER_ID"), "{}", identity.detail);
}

#[tokio::test]
async fn an_operator_who_lacks_the_permissions_is_told_to_ask_a_cluster_admin() {
    let fake = FakeApiServer::start_tls(true).await;
    // Bob may read and review, nothing else.
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    fake.insert_json(
        &format!("{rbac}/clusterroles"),
        json!({"metadata": {"name": "reviewer"}, "rules": [
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["namespaces", "configmaps", "secrets"], "verbs": ["get"]},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["list"]},
        ]}),
    );
    fake.insert_json(
        &format!("{rbac}/clusterrolebindings"),
        json!({"metadata": {"name": "bob-reviewer"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reviewer"},
               "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bob"}]}),
    );
    let bob = fake.issue_client_identity("bob", &[]);
    let report = preflight(&fake, Some(&bob), Duration::from_secs(5)).await;
    let permissions = step(&report, "service account permissions");
    assert_eq!(permissions.status, StepStatus::Fail);
    let fix = permissions.fix.as_deref().unwrap();
    assert!(fix.contains("you do not hold") && fix.contains("have a cluster admin apply it"), "{fix}");
    assert!(fix.contains("approve signers"), "{fix}");
}

#[test]
fn the_permissions_checked_are_exactly_the_rendered_service_role() {
    let Some(r) = render("base") else { return };
    let service = r.rbac().authorizer("system:serviceaccount:liqo:liqo-auth", &[]);
    let rendered: BTreeSet<(String, String, String, Option<String>, bool)> = service
        .grants
        .iter()
        .flat_map(Grant::permissions)
        .map(|p| (p.verb, p.group, p.resource, p.name, p.namespace.is_some()))
        .collect();
    let checked: BTreeSet<(String, String, String, Option<String>, bool)> = SERVICE_PERMISSIONS
        .iter()
        .map(|p| (p.verb.into(), p.group.into(), p.resource.into(), p.name.map(str::to_owned), p.namespaced))
        .collect();
    assert_eq!(checked, rendered);
    // What an overlay may drop is marked as conditional, and nothing else.
    let Some(plain) = render("overlays/ingress-tls-termination") else { return };
    {
        let (overlay, need) = (plain, Need::UnlessPlainHttp);
        let grants = overlay.rbac().authorizer("system:serviceaccount:liqo:liqo-auth", &[]).grants;
        let kept: BTreeSet<_> = grants
            .iter()
            .flat_map(Grant::permissions)
            .map(|p| (p.verb, p.group, p.resource, p.name, p.namespace.is_some()))
            .collect();
        let dropped: BTreeSet<_> = rendered.difference(&kept).cloned().collect();
        let marked: BTreeSet<_> = SERVICE_PERMISSIONS
            .iter()
            .filter(|p| p.need == need)
            .map(|p| {
                (p.verb.to_owned(), p.group.to_owned(), p.resource.to_owned(), p.name.map(str::to_owned), p.namespaced)
            })
            .collect();
        assert_eq!(dropped, marked, "{need:?}");
    }
}
