//! `liqo-auth check --pre`: what an install needs from the cluster, checked with the operator's
//! kubeconfig before applying `deploy/`. Each check gives one [`Finding`] with the cause and
//! the fix of a failure; `client::check` prints them like the other checks.
//!
//! - the API server answers (`GET /version`);
//! - the CSR API signs `kubernetes.io/kube-apiserver-client` certificates: a real round trip
//!   through [`KubeCsrSigner`], exactly as the service signs (a throwaway key, CN
//!   `liqo-auth-preflight`, 10 minutes), the object deleted afterwards;
//! - the service account would hold every permission of the service role (one
//!   SubjectAccessReview each), and where it does not, whether the operator could grant it
//!   (SelfSubjectAccessReview: Kubernetes refuses RBAC that grants what its creator lacks);
//! - the cluster-ID ConfigMap, the serving Secret `liqo-auth-tls` and the basic peering
//!   ClusterRoles, each of which may legitimately be absent or must be valid when present.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{ListParams, PostParams};
use kube::Api;

use crate::adapter::kube::kube_cluster::CLUSTER_ID_KEY;
use crate::adapter::kube::{KubeCsrSigner, KubeCtx, KubeFailure, CLUSTER_ID_CONFIGMAP, LABEL_PEERING_PERMISSIONS};
use crate::identity::port::{SignRequest, Signer, SignerError};
use crate::identity::{ClusterId, ClusterIdentity, ClusterName, ParsedCsr};

/// The serving Secret the Deployment mounts (optional).
pub const SERVING_TLS_SECRET: &str = "liqo-auth-tls";
/// CN and cluster ID of the throwaway CSR.
const PREFLIGHT_NAME: &str = "liqo-auth-preflight";

/// What `check --pre` looks at.
#[derive(Debug, Clone)]
pub struct PreflightOptions {
    /// The namespace the service will run in.
    pub namespace: String,
    /// The service's ServiceAccount in that namespace.
    pub service_account: String,
    /// Time allowed for the CSR round trip.
    pub signing_timeout: Duration,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub name: &'static str,
    pub target: String,
    pub ok: bool,
    pub detail: String,
    pub cause: Option<String>,
    pub fix: Option<String>,
    pub duration: Duration,
}

/// When the service needs a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Always,
    /// Not when the pod serves plain HTTP (`ingress-tls-termination` drops the names).
    UnlessPlainHttp,
}

/// One permission of the service role (`deploy/base/rbac-service.yaml`; a test keeps the two
/// equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    /// `resource` or `resource/subresource`.
    pub resource: &'static str,
    pub name: Option<&'static str>,
    /// In the service's namespace (its Role) rather than cluster-wide (its ClusterRole).
    pub namespaced: bool,
    pub need: Need,
}

const fn cluster(verb: &'static str, group: &'static str, resource: &'static str) -> Permission {
    Permission { verb, group, resource, name: None, namespaced: false, need: Need::Always }
}

const fn own(verb: &'static str, group: &'static str, resource: &'static str) -> Permission {
    Permission { verb, group, resource, name: None, namespaced: true, need: Need::Always }
}

const fn named(permission: Permission, name: &'static str) -> Permission {
    Permission { name: Some(name), ..permission }
}

const fn only(permission: Permission, need: Need) -> Permission {
    Permission { need, ..permission }
}

const RBAC: &str = "rbac.authorization.k8s.io";
const CERTS: &str = "certificates.k8s.io";

/// Every permission `serve` uses, as the service role grants them.
pub const SERVICE_PERMISSIONS: &[Permission] = &[
    cluster("list", "", "namespaces"),
    cluster("watch", "", "namespaces"),
    cluster("create", "", "namespaces"),
    cluster("create", "", "secrets"),
    named(cluster("get", "", "secrets"), "liqo-remote-certificate"),
    named(cluster("update", "", "secrets"), "liqo-remote-certificate"),
    cluster("list", "", "nodes"),
    cluster("watch", "", "nodes"),
    cluster("list", RBAC, "clusterroles"),
    cluster("watch", RBAC, "clusterroles"),
    cluster("list", RBAC, "rolebindings"),
    cluster("create", RBAC, "rolebindings"),
    named(cluster("bind", RBAC, "clusterroles"), "liqo-remote-peering-basic"),
    cluster("create", CERTS, "certificatesigningrequests"),
    cluster("get", CERTS, "certificatesigningrequests"),
    cluster("list", CERTS, "certificatesigningrequests"),
    cluster("watch", CERTS, "certificatesigningrequests"),
    cluster("delete", CERTS, "certificatesigningrequests"),
    cluster("patch", CERTS, "certificatesigningrequests/approval"),
    named(cluster("approve", CERTS, "signers"), "kubernetes.io/kube-apiserver-client"),
    own("list", "", "secrets"),
    own("watch", "", "secrets"),
    own("create", "", "secrets"),
    named(own("update", "", "secrets"), "auth-token"),
    only(named(own("update", "", "secrets"), "liqo-auth-serving-cert"), Need::UnlessPlainHttp),
    only(named(own("get", "", "secrets"), "liqo-auth-serving-cert"), Need::UnlessPlainHttp),
    named(own("get", "", "secrets"), "liqo-auth-token-key"),
    own("get", "", "secrets"),
    own("update", "", "secrets"),
    named(own("get", "", "configmaps"), "liqo-clusterid-configmap"),
    own("create", "", "configmaps"),
    named(own("list", "", "configmaps"), "kube-root-ca.crt"),
    named(own("watch", "", "configmaps"), "kube-root-ca.crt"),
    own("create", "coordination.k8s.io", "leases"),
    own("get", "coordination.k8s.io", "leases"),
    own("list", "coordination.k8s.io", "leases"),
    own("delete", "coordination.k8s.io", "leases"),
];

impl Permission {
    /// `create secrets in liqo`, `bind clusterroles.rbac.authorization.k8s.io X`.
    pub fn describe(&self, namespace: &str) -> String {
        let group = if self.group.is_empty() { String::new() } else { format!(".{}", self.group) };
        let name = self.name.map(|n| format!(" {n}")).unwrap_or_default();
        let scope = if self.namespaced { format!(" in {namespace}") } else { " (all namespaces)".to_owned() };
        format!("{} {}{group}{name}{scope}", self.verb, self.resource)
    }

    fn attributes(&self, namespace: &str) -> ResourceAttributes {
        let (resource, subresource) = match self.resource.split_once('/') {
            Some((resource, sub)) => (resource, Some(sub.to_owned())),
            None => (self.resource, None),
        };
        ResourceAttributes {
            verb: Some(self.verb.to_owned()),
            group: Some(self.group.to_owned()),
            resource: Some(resource.to_owned()),
            subresource,
            name: self.name.map(str::to_owned),
            namespace: self.namespaced.then(|| namespace.to_owned()),
            ..ResourceAttributes::default()
        }
    }
}

/// Runs every check; never fails (failures are findings).
pub async fn preflight(ctx: &KubeCtx, options: &PreflightOptions) -> Vec<Finding> {
    let mut findings = Vec::new();
    let api_server = timed("API server", ctx.server_url.clone(), || api_server(ctx)).await;
    let reachable = api_server.ok;
    findings.push(api_server);
    if !reachable {
        return findings;
    }
    let ns = options.namespace.clone();
    findings.push(timed("namespace", ns.clone(), || namespace(ctx, &ns)).await);
    let signer = "kubernetes.io/kube-apiserver-client".to_owned();
    findings.push(timed("CSR signer", signer, || csr_round_trip(ctx, options.signing_timeout)).await);
    let roles =
        timed("basic peering ClusterRoles", format!("{LABEL_PEERING_PERMISSIONS}=basic"), || peering_roles(ctx)).await;
    let role_names: Vec<String> =
        roles.detail.split(", ").filter(|s| roles.ok && !s.is_empty()).map(str::to_owned).collect();
    let account = format!("system:serviceaccount:{}:{}", options.namespace, options.service_account);
    findings.push(
        timed("service account permissions", account.clone(), || permissions(ctx, options, &account, &role_names))
            .await,
    );
    findings.push(roles);
    findings.push(timed("cluster identity", format!("{ns}/{CLUSTER_ID_CONFIGMAP}"), || identity(ctx, &ns)).await);
    findings.push(timed("serving Secret", format!("{ns}/{SERVING_TLS_SECRET}"), || serving_secret(ctx, &ns)).await);
    findings
}

/// What a check found, before it is timed and named.
struct Outcome {
    ok: bool,
    detail: String,
    cause: Option<String>,
    fix: Option<String>,
}

impl Outcome {
    fn pass(detail: impl Into<String>) -> Self {
        Self { ok: true, detail: detail.into(), cause: None, fix: None }
    }

    fn fail(detail: impl Into<String>, cause: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { ok: false, detail: detail.into(), cause: Some(cause.into()), fix: Some(fix.into()) }
    }

    fn api(operation: &str, failure: &KubeFailure) -> Self {
        match failure {
            KubeFailure::Forbidden { message, .. } => Self::fail(
                format!("{operation}: forbidden"),
                format!("your credentials may not do this: {message}"),
                "run `liqo-auth check --pre` with a cluster admin's kubeconfig (--kubeconfig or KUBECONFIG)",
            ),
            other => Self::fail(
                format!("{operation}: {}", crate::error::error_chain(other)),
                "the API server refused or did not answer the request",
                "check the kubeconfig's context and that the API server is reachable",
            ),
        }
    }
}

async fn timed<F, Fut>(name: &'static str, target: String, check: F) -> Finding
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let started = Instant::now();
    let outcome = check().await;
    Finding {
        name,
        target,
        ok: outcome.ok,
        detail: outcome.detail,
        cause: outcome.cause,
        fix: outcome.fix,
        duration: started.elapsed(),
    }
}

async fn api_server(ctx: &KubeCtx) -> Outcome {
    match ctx.call("GET /version", ctx.client.apiserver_version()).await {
        Ok(version) => Outcome::pass(format!("Kubernetes {}", version.git_version)),
        Err(failure) => Outcome::fail(
            crate::error::error_chain(&failure),
            "the API server named by the kubeconfig does not answer",
            "check the kubeconfig (--kubeconfig, KUBECONFIG, current context) and the network path to it",
        ),
    }
}

async fn namespace(ctx: &KubeCtx, namespace: &str) -> Outcome {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match ctx.call_opt(&format!("reading namespace {namespace}"), api.get(namespace)).await {
        Ok(Some(_)) => Outcome::pass("exists"),
        Ok(None) => Outcome::pass("absent: deploy/base/namespace.yaml creates it"),
        Err(failure) => Outcome::api("reading the namespace", &failure),
    }
}

/// A throwaway CSR through the service's own signer code, deleted afterwards whatever happened.
async fn csr_round_trip(ctx: &KubeCtx, timeout: Duration) -> Outcome {
    let made = (|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).ok()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).ok()?;
        params.distinguished_name.push(rcgen::DnType::CommonName, PREFLIGHT_NAME);
        let pem = params.serialize_request(&key).ok()?.pem().ok()?;
        let csr = ParsedCsr::from_pem(pem.as_bytes()).ok()?;
        let cluster = ClusterIdentity {
            id: ClusterId::parse(PREFLIGHT_NAME).ok()?,
            name: ClusterName::parse(PREFLIGHT_NAME).ok()?,
        };
        Some((csr, cluster))
    })();
    let Some((csr, cluster)) = made else {
        return Outcome::fail("could not build the test CSR", "internal error", "report this as a bug");
    };
    let signer = KubeCsrSigner::new(ctx.clone(), timeout);
    let request = SignRequest { cluster: &cluster, csr: &csr, ttl: Duration::from_secs(600) };
    let result = signer.sign(request).await;
    signer.forget(request).await;
    let local_ca = "if the cluster cannot sign these (some managed clusters, e.g. EKS, do not), run `serve --signer local-ca --ca-cert F --ca-key F` with a CA the API server trusts for client certificates";
    match result {
        Ok(_) => Outcome::pass(format!("signed a 10-minute test certificate within {timeout:?}; the CSR was deleted")),
        Err(SignerError::NotIssued { waited, .. }) => Outcome::fail(
            format!("approved, but no certificate within {waited:?}"),
            "no controller signs kubernetes.io/kube-apiserver-client CSRs (kube-controller-manager's signer disabled, or a managed cluster without it)",
            format!("enable kube-controller-manager's --cluster-signing-cert-file/--cluster-signing-key-file, or {local_ca}"),
        ),
        Err(SignerError::Denied { reason, .. }) => Outcome::fail(
            format!("denied: {reason}"),
            "an approval policy (admission webhook or controller) denies these CSRs",
            format!("allow CSRs for signer kubernetes.io/kube-apiserver-client approved by liqo-auth, or {local_ca}"),
        ),
        Err(SignerError::Failed { reason, .. }) => Outcome::fail(
            format!("the signer failed: {reason}"),
            "kube-controller-manager could not sign (its signing CA missing or expired?)",
            format!("check kube-controller-manager's logs and signing CA, or {local_ca}"),
        ),
        Err(other) => {
            let chain = crate::error::error_chain(&other);
            if chain.contains("forbidden") {
                Outcome::fail(
                    chain,
                    "your credentials may not create or approve CSRs",
                    "run `liqo-auth check --pre` with a cluster admin's kubeconfig",
                )
            } else {
                Outcome::fail(chain, "the CSR API did not answer as expected", "check the API server and retry")
            }
        }
    }
}

/// The ClusterRoles the service binds for each peer; `detail` lists their names.
async fn peering_roles(ctx: &KubeCtx) -> Outcome {
    let api: Api<ClusterRole> = Api::all(ctx.client.clone());
    let selector = format!("{LABEL_PEERING_PERMISSIONS}=basic");
    match ctx.call("listing the basic peering ClusterRoles", api.list(&ListParams::default().labels(&selector))).await
    {
        Ok(list) if list.items.is_empty() => Outcome::fail(
            "none",
            format!("no ClusterRole is labelled {selector}: peers would get a certificate but no permission"),
            "install Liqo first (it creates liqo-remote-peering-basic), or create the peering ClusterRole with that label",
        ),
        Ok(list) => {
            let names: Vec<String> = list.items.into_iter().filter_map(|r| r.metadata.name).collect();
            Outcome::pass(names.join(", "))
        }
        Err(failure) => Outcome::api("listing ClusterRoles", &failure),
    }
}

/// One SubjectAccessReview per service permission (and `bind` per peering role); for what the
/// account lacks, a SelfSubjectAccessReview tells whether applying `deploy/` would work.
async fn permissions(ctx: &KubeCtx, options: &PreflightOptions, account: &str, roles: &[String]) -> Outcome {
    let namespace = options.namespace.as_str();
    // (what, attributes, when needed, the extra peering role it binds)
    let mut wanted: Vec<(String, ResourceAttributes, Need, Option<&str>)> =
        SERVICE_PERMISSIONS.iter().map(|p| (p.describe(namespace), p.attributes(namespace), p.need, None)).collect();
    for role in roles.iter().filter(|r| r.as_str() != "liqo-remote-peering-basic") {
        let mut attributes = named(cluster("bind", RBAC, "clusterroles"), "placeholder").attributes(namespace);
        attributes.name = Some(role.clone());
        let what = format!("bind clusterroles.{RBAC} {role} (all namespaces)");
        wanted.push((what, attributes, Need::Always, Some(role.as_str())));
    }
    let groups = vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".to_owned(),
    ];
    let reviews: Api<SubjectAccessReview> = Api::all(ctx.client.clone());
    let mut missing = Vec::new();
    let mut optional = Vec::new();
    for (what, attributes, need, role) in &wanted {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(account.to_owned()),
                groups: Some(groups.clone()),
                resource_attributes: Some(attributes.clone()),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer =
            match ctx.call("creating a SubjectAccessReview", reviews.create(&PostParams::default(), &review)).await {
                Ok(answer) => answer,
                Err(failure) => return Outcome::api("creating a SubjectAccessReview", &failure),
            };
        if answer.status.is_some_and(|s| s.allowed) {
            continue;
        }
        match need {
            Need::Always => missing.push((what.clone(), attributes.clone(), *role)),
            Need::UnlessPlainHttp => optional.push(format!("{what} (not needed when the pod serves plain HTTP)")),
        }
    }
    let notes = if optional.is_empty() { String::new() } else { format!("; not granted: {}", optional.join(", ")) };
    if missing.is_empty() {
        return Outcome::pass(format!("all {} permissions granted{notes}", wanted.len() - optional.len()));
    }
    // Kubernetes lets someone grant only permissions they hold (or with `escalate`).
    let own: Api<SelfSubjectAccessReview> = Api::all(ctx.client.clone());
    let mut lacking = Vec::new();
    for (what, attributes, _) in &missing {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(attributes.clone()),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let held = ctx
            .call("creating a SelfSubjectAccessReview", own.create(&PostParams::default(), &review))
            .await
            .ok()
            .and_then(|a| a.status)
            .is_some_and(|s| s.allowed);
        if !held {
            lacking.push(what.clone());
        }
    }
    let denied: Vec<&str> = missing.iter().map(|(what, ..)| what.as_str()).collect();
    let unbindable: Vec<&str> = missing.iter().filter_map(|(.., role)| *role).collect();
    let detail = format!("{} of {} missing: {}{notes}", missing.len(), wanted.len(), denied.join(", "));
    let (cause, mut fix) = if unbindable.len() == missing.len() {
        (
            format!(
                "ClusterRole {} carries the basic peering label, but the service role's bind rule does not name it",
                unbindable.join(", ")
            ),
            format!(
                "add {} to the resourceNames of the `bind` rule in deploy/base/rbac-service.yaml and apply it",
                unbindable.join(", ")
            ),
        )
    } else {
        (
            format!("the service role is not applied, or not bound to {account}"),
            "apply the manifests: kubectl apply -k deploy/overlays/<overlay> (ServiceAccount, roles and bindings)"
                .to_owned(),
        )
    };
    if !lacking.is_empty() {
        fix.push_str(&format!(
            "; you do not hold {} yourself, and Kubernetes refuses RBAC granting what its creator lacks: have a cluster admin apply it",
            lacking.join(", ")
        ));
    }
    Outcome::fail(detail, cause, fix)
}

async fn identity(ctx: &KubeCtx, namespace: &str) -> Outcome {
    let api: Api<ConfigMap> = ctx.namespaced(namespace);
    match ctx.call_opt("reading the cluster-ID ConfigMap", api.get(CLUSTER_ID_CONFIGMAP)).await {
        Ok(None) => Outcome::pass("absent: the service creates it once with a new cluster ID (standalone install)"),
        Ok(Some(configmap)) => {
            let data: BTreeMap<String, String> = configmap.data.unwrap_or_default();
            match data.get(CLUSTER_ID_KEY).filter(|v| !v.is_empty()) {
                Some(id) if ClusterId::parse(id).is_ok() => {
                    let name = data.get("CLUSTER_NAME").map(String::as_str).unwrap_or("(no name)");
                    Outcome::pass(format!("cluster {id} ({name})"))
                }
                Some(id) => Outcome::fail(
                    format!("CLUSTER_ID {id:?} is not a DNS-1123 label"),
                    "the service refuses a cluster ID peers could not use as a name",
                    format!("fix {CLUSTER_ID_KEY} in ConfigMap {CLUSTER_ID_CONFIGMAP} (Liqo uses a UUID)"),
                ),
                None => Outcome::fail(
                    format!("no {CLUSTER_ID_KEY} key"),
                    "the ConfigMap exists without a cluster ID, and the service does not overwrite it",
                    format!("add {CLUSTER_ID_KEY} (a UUID), or delete ConfigMap {CLUSTER_ID_CONFIGMAP} to let the service create it"),
                ),
            }
        }
        Err(failure) => Outcome::api("reading the cluster-ID ConfigMap", &failure),
    }
}

async fn serving_secret(ctx: &KubeCtx, namespace: &str) -> Outcome {
    let api: Api<Secret> = ctx.namespaced(namespace);
    let secret = match ctx.call_opt("reading the serving Secret", api.get(SERVING_TLS_SECRET)).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Outcome::pass(
                "absent: the service generates a self-signed certificate, kept in liqo-auth-serving-cert and shared by every replica",
            )
        }
        Err(failure) => return Outcome::api("reading the serving Secret", &failure),
    };
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| data.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok()).unwrap_or_default();
    let fix = format!(
        "recreate it: kubectl -n {namespace} create secret tls {SERVING_TLS_SECRET} --cert=tls.crt --key=tls.key (or let cert-manager issue it)"
    );
    let (cert, key) = (text("tls.crt"), text("tls.key"));
    if cert.is_empty() || key.is_empty() {
        return Outcome::fail("no tls.crt or tls.key", "the pod mounts these two keys as its serving pair", fix);
    }
    match crate::pki::CertificateSummary::from_pem(cert.as_bytes()) {
        Some(summary) => {
            let left = summary.not_after - crate::pki::unix_now();
            if left <= 0 {
                Outcome::fail("the certificate has expired", "peers refuse an expired certificate", fix)
            } else {
                let days = left / 86_400;
                Outcome::pass(format!("certificate valid for {days} more days"))
            }
        }
        None => Outcome::fail("tls.crt is not a PEM certificate", "the pod cannot serve TLS with it", fix),
    }
}
