//! Fidelity tests for the fake Kubernetes API server: each one drives it through the real
//! `kube` client (or raw HTTP where the exact wire form matters) and checks that it answers as
//! kube-apiserver does.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
    CertificateSigningRequestStatus,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding, RoleRef, Subject};
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt as _};
use kube::ResourceExt as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::fake_apiserver::{FakeApiServer, SignerMode, KUBE_APISERVER_CLIENT_SIGNER};
use crate::support::pki::{self, KeyType};

const NS: &str = "liqo-tenant-test";

async fn fake_with_namespace() -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    fake.insert_json("/api/v1/namespaces", json!({ "metadata": { "name": NS } }));
    fake
}

fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("key".to_owned(), ByteString(b"value".to_vec()))])),
        ..Default::default()
    }
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Sends one HTTP/1.1 request by hand and returns the status code and JSON body.
async fn raw_request(fake: &FakeApiServer, method: &str, path: &str, body: Option<(&str, &str)>) -> (u16, Value) {
    let addr = fake.url().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let (content_type, payload) = body.unwrap_or(("application/json", ""));
    request.push_str(&format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{payload}", payload.len()));
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header/body separator");
    let code = head.split(' ').nth(1).expect("status code").parse().expect("numeric status");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn client_csr_pem(common_name: &str, organization: &str) -> (String, rcgen::KeyPair) {
    let key = pki::key(KeyType::P256);
    (pki::csr_with(&key, Some(common_name), Some(organization), vec![]), key)
}

fn csr_object(generate_name: &str, pem: &str, expiration_seconds: Option<i32>) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(generate_name.to_owned()),
            labels: Some(BTreeMap::from([("discovery.liqo.io/remote-tenant-csr".to_owned(), "true".to_owned())])),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.as_bytes().to_vec()),
            signer_name: KUBE_APISERVER_CLIENT_SIGNER.to_owned(),
            usages: Some(vec!["digital signature".into(), "key encipherment".into(), "client auth".into()]),
            expiration_seconds,
            groups: Some(vec!["system:authenticated".to_owned()]),
            ..Default::default()
        },
        status: None,
    }
}

fn approved(mut csr: CertificateSigningRequest) -> CertificateSigningRequest {
    csr.status = Some(CertificateSigningRequestStatus {
        conditions: Some(vec![CertificateSigningRequestCondition {
            type_: "Approved".to_owned(),
            status: "True".to_owned(),
            reason: Some("IdentityManagerApproval".to_owned()),
            message: Some("This CSR was approved by Liqo Identity Manager".to_owned()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    csr
}

async fn wait_for_csr<F>(api: &Api<CertificateSigningRequest>, name: &str, done: F) -> CertificateSigningRequest
where
    F: Fn(&CertificateSigningRequest) -> bool,
{
    for _ in 0..200 {
        let csr = api.get(name).await.expect("get csr");
        if done(&csr) {
            return csr;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("CSR {name} never reached the expected state");
}

fn condition_types(csr: &CertificateSigningRequest) -> Vec<String> {
    csr.status.iter().flat_map(|s| s.conditions.iter().flatten()).map(|c| c.type_.clone()).collect()
}

#[tokio::test]
async fn creates_gets_and_lists_secrets_with_label_and_field_selectors() {
    let fake = fake_with_namespace().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    let pp = PostParams::default();
    let created = api.create(&pp, &secret("a", &[("tier", "basic"), ("cluster", "x")])).await.expect("create a");
    api.create(&pp, &secret("b", &[("tier", "incoming")])).await.expect("create b");
    api.create(&pp, &secret("c", &[])).await.expect("create c");

    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let fetched = api.get("a").await.expect("get");
    assert_eq!(fetched.data.expect("data")["key"].0, b"value");
    assert_eq!(fetched.metadata.resource_version, created.metadata.resource_version);

    let names = |list: kube::core::ObjectList<Secret>| list.items.iter().map(|s| s.name_any()).collect::<Vec<_>>();
    let list = |selector: &'static str| {
        let api = api.clone();
        async move { names(api.list(&ListParams::default().labels(selector)).await.expect("list")) }
    };
    assert_eq!(list("tier").await, ["a", "b"]);
    assert_eq!(list("tier=basic").await, ["a"]);
    assert_eq!(list("tier!=basic").await, ["b", "c"]);
    assert_eq!(list("!tier").await, ["c"]);
    assert_eq!(list("tier,cluster=x").await, ["a"]);
    assert_eq!(list("tier in (incoming,outgoing)").await, ["b"]);
    let by_name = api.list(&ListParams::default().fields("metadata.name=b")).await.expect("list by field");
    assert_eq!(names(by_name), ["b"]);
    let all: Api<Secret> = Api::all(fake.client());
    let by_ns = all.list(&ListParams::default().fields(&format!("metadata.namespace={NS}"))).await.expect("list all");
    assert_eq!(by_ns.items.len(), 3);
    let bad_field = api.list(&ListParams::default().fields("spec.nope=1")).await;
    assert_eq!(api_error(bad_field).code, 400);
}

#[tokio::test]
async fn lists_report_a_resource_version_and_paginate_with_continue_tokens() {
    let fake = fake_with_namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), NS);
    for name in ["one", "two", "three"] {
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
            ..Default::default()
        };
        api.create(&PostParams::default(), &cm).await.expect("create");
    }
    let first = api.list(&ListParams::default().limit(2)).await.expect("first page");
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.resource_version, Some(fake.resource_version().to_string()));
    let token = first.metadata.continue_.clone().expect("continue token");
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    let second = api.list(&ListParams::default().limit(2).continue_token(&token)).await.expect("second page");
    assert_eq!(second.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["two"]);
    assert!(second.metadata.continue_.is_none());
}

#[tokio::test]
async fn generate_name_appends_five_random_lower_case_characters() {
    let fake = FakeApiServer::start().await;
    let api: Api<CertificateSigningRequest> = Api::all(fake.client());
    let (pem, _) = client_csr_pem("cluster-1", "liqo.io");
    let first = api.create(&PostParams::default(), &csr_object("liqo-identity-", &pem, None)).await.expect("create");
    let second = api.create(&PostParams::default(), &csr_object("liqo-identity-", &pem, None)).await.expect("create");
    for name in [first.name_any(), second.name_any()] {
        let suffix = name.strip_prefix("liqo-identity-").expect("prefix kept");
        assert_eq!(suffix.len(), 5);
        assert!(suffix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }
    assert_ne!(first.name_any(), second.name_any());
    // The requester is recorded by the server, not taken from the body.
    assert_eq!(first.spec.username.as_deref(), Some("system:admin"));
}

#[tokio::test]
async fn creating_an_existing_secret_fails_with_already_exists() {
    let fake = fake_with_namespace().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    api.create(&PostParams::default(), &secret("dup", &[])).await.expect("first create");
    let status = api_error(api.create(&PostParams::default(), &secret("dup", &[])).await);
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "AlreadyExists");
    assert_eq!(status.message, r#"secrets "dup" already exists"#);
}

#[tokio::test]
async fn missing_objects_answer_not_found_status_exactly_like_kube_apiserver() {
    let fake = fake_with_namespace().await;
    let (code, body) = raw_request(&fake, "GET", &format!("/api/v1/namespaces/{NS}/secrets/x"), None).await;
    assert_eq!(code, 404);
    assert_eq!(
        body,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"secrets \"x\" not found","reason":"NotFound",
               "details":{"name":"x","kind":"secrets"},"code":404})
    );
    let csrs: Api<CertificateSigningRequest> = Api::all(fake.client());
    let status = api_error(csrs.get("nope").await);
    assert_eq!(status.message, r#"certificatesigningrequests.certificates.k8s.io "nope" not found"#);
    let details = status.details.expect("details");
    assert_eq!((details.group.as_str(), details.kind.as_str()), ("certificates.k8s.io", "certificatesigningrequests"));
}

#[tokio::test]
async fn creating_in_a_missing_namespace_fails_with_namespace_not_found() {
    let fake = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), "ghost");
    let status = api_error(api.create(&PostParams::default(), &secret("s", &[])).await);
    assert_eq!((status.code, status.message.as_str()), (404, r#"namespaces "ghost" not found"#));
}

#[tokio::test]
async fn unknown_paths_and_verbs_answer_status_errors() {
    let fake = FakeApiServer::start().await;
    let (code, body) = raw_request(&fake, "GET", "/api/v1/pods", None).await;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(body["kind"], "Status");
    let (code, _) = raw_request(&fake, "GET", "/apis/apps/v1/deployments", None).await;
    assert_eq!(code, 404);
    let (code, body) = raw_request(&fake, "PUT", "/api/v1/namespaces", Some(("application/json", "{}"))).await;
    assert_eq!((code, body["reason"].as_str()), (405, Some("MethodNotAllowed")));
}

/// A merge patch that carries `metadata.resourceVersion` is a precondition, as on a real API
/// server: the CSR approval patch relies on it so a stale approval never erases a signer's
/// Denied or Failed.
#[tokio::test]
async fn a_merge_patch_with_a_stale_resource_version_fails_with_conflict() {
    let fake = fake_with_namespace().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    let original = api.create(&PostParams::default(), &secret("p", &[])).await.expect("create");
    let stale = original.resource_version().expect("rv");
    let patch = json!({ "metadata": { "resourceVersion": stale, "labels": { "v": "2" } } });
    let patched =
        api.patch("p", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("a current version applies");
    assert_eq!(patched.labels().get("v").map(String::as_str), Some("2"));
    let patch = json!({ "metadata": { "resourceVersion": stale, "labels": { "v": "3" } } });
    let status = api_error(api.patch("p", &PatchParams::default(), &Patch::Merge(&patch)).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let unversioned = json!({ "metadata": { "labels": { "v": "4" } } });
    let patched = api.patch("p", &PatchParams::default(), &Patch::Merge(&unversioned)).await.expect("no precondition");
    assert_eq!(patched.labels().get("v").map(String::as_str), Some("4"));
}

#[tokio::test]
async fn replacing_with_a_stale_resource_version_fails_with_conflict() {
    let fake = fake_with_namespace().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    let original = api.create(&PostParams::default(), &secret("s", &[])).await.expect("create");
    let mut fresh = original.clone();
    fresh.metadata.labels = Some(BTreeMap::from([("v".to_owned(), "2".to_owned())]));
    let updated = api.replace("s", &PostParams::default(), &fresh).await.expect("replace");
    let old_rv: u64 = original.resource_version().expect("rv").parse().expect("numeric rv");
    let new_rv: u64 = updated.resource_version().expect("rv").parse().expect("numeric rv");
    assert!(new_rv > old_rv);

    let status = api_error(api.replace("s", &PostParams::default(), &original).await);
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(
        status.message,
        r#"Operation cannot be fulfilled on secrets "s": the object has been modified; please apply your changes to the latest version and try again"#
    );

    let unchanged = api.replace("s", &PostParams::default(), &updated).await.expect("no-op replace");
    assert_eq!(unchanged.resource_version(), updated.resource_version(), "no-op writes keep the version");

    let status = api_error(api.replace("missing", &PostParams::default(), &secret("missing", &[])).await);
    assert_eq!(status.code, 404);
}

#[tokio::test]
async fn invalid_names_and_labels_are_rejected_with_unprocessable_entity() {
    let fake = fake_with_namespace().await;
    let secrets: Api<Secret> = Api::namespaced(fake.client(), NS);
    let status = api_error(secrets.create(&PostParams::default(), &secret("Bad_Name", &[])).await);
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert!(
        status.message.starts_with(
            r#"Secret "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain"#
        ),
        "{}",
        status.message
    );
    let details = status.details.expect("details");
    assert_eq!(details.kind, "Secret");
    assert_eq!(details.causes[0].field, "metadata.name");

    let namespaces: Api<Namespace> = Api::all(fake.client());
    let dotted = Namespace {
        metadata: kube::api::ObjectMeta { name: Some("a.b".into()), ..Default::default() },
        ..Default::default()
    };
    let status = api_error(namespaces.create(&PostParams::default(), &dotted).await);
    assert_eq!(status.code, 422);
    assert!(status.message.contains("a lowercase RFC 1123 label"), "{}", status.message);

    let status =
        api_error(secrets.create(&PostParams::default(), &secret("ok", &[("cluster-id", "not valid!")])).await);
    assert_eq!(status.code, 422);
    assert!(status.message.contains("metadata.labels"), "{}", status.message);
}

#[tokio::test]
async fn string_data_is_merged_into_base64_data_and_never_returned() {
    let fake = fake_with_namespace().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    let mut s = secret("sd", &[]);
    s.string_data =
        Some(BTreeMap::from([("token".to_owned(), "abc".to_owned()), ("key".to_owned(), "override".to_owned())]));
    let created = api.create(&PostParams::default(), &s).await.expect("create");
    assert!(created.string_data.is_none());
    let data = created.data.expect("data");
    assert_eq!(data["token"].0, b"abc");
    assert_eq!(data["key"].0, b"override", "stringData wins over data");
    let stored = fake.get_json("secrets", Some(NS), "sd").expect("stored");
    assert_eq!(stored["data"]["token"], "YWJj");
    assert!(stored.get("stringData").is_none());

    let patch = json!({ "stringData": { "extra": "x" } });
    let patched = api.patch("sd", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    assert_eq!(patched.data.expect("data")["extra"].0, b"x");
}

#[tokio::test]
async fn merge_patch_and_server_side_apply_update_and_create_objects() {
    let fake = fake_with_namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), NS);
    let applied =
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "cm" }, "data": { "a": "1" } });
    let pp = PatchParams::apply("liqo-auth");
    let created = api.patch("cm", &pp, &Patch::Apply(&applied)).await.expect("apply creates");
    assert_eq!(created.data.as_ref().expect("data")["a"], "1");
    let patched = api
        .patch("cm", &PatchParams::default(), &Patch::Merge(json!({ "data": { "b": "2", "a": null } })))
        .await
        .expect("merge patch");
    assert_eq!(patched.data.expect("data"), BTreeMap::from([("b".to_owned(), "2".to_owned())]));

    let stale = json!({ "metadata": { "resourceVersion": created.resource_version() }, "data": { "c": "3" } });
    let status = api_error(api.patch("cm", &PatchParams::default(), &Patch::Merge(&stale)).await);
    assert_eq!(status.reason, "Conflict");
    let status = api_error(api.patch("ghost", &PatchParams::default(), &Patch::Merge(json!({}))).await);
    assert_eq!(status.code, 404);
}

#[tokio::test]
async fn deleting_returns_a_success_status_and_then_not_found() {
    let fake = fake_with_namespace().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    let created = api.create(&PostParams::default(), &secret("gone", &[])).await.expect("create");
    let answer = api.delete("gone", &DeleteParams::default()).await.expect("delete");
    let status = answer.right().expect("secrets answer a Status on delete");
    let details = status.details.expect("details");
    assert_eq!((details.name.as_str(), details.kind.as_str()), ("gone", "secrets"));
    assert_eq!(Some(details.uid), created.metadata.uid);
    assert_eq!(api_error(api.get("gone").await).code, 404);
    assert_eq!(api_error(api.delete("gone", &DeleteParams::default()).await).code, 404);
}

#[tokio::test]
async fn deleting_a_namespace_terminates_it_and_removes_its_contents() {
    let fake = fake_with_namespace().await;
    let secrets: Api<Secret> = Api::namespaced(fake.client(), NS);
    secrets.create(&PostParams::default(), &secret("inside", &[])).await.expect("create");
    let namespaces: Api<Namespace> = Api::all(fake.client());
    let answer = namespaces.delete(NS, &DeleteParams::default()).await.expect("delete");
    let terminating = answer.left().expect("namespaces answer the object on delete");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    for _ in 0..100 {
        if fake.get_json("namespaces", None, NS).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fake.get_json("namespaces", None, NS).is_none());
    assert!(fake.get_json("secrets", Some(NS), "inside").is_none());
}

#[tokio::test]
async fn cluster_roles_role_bindings_and_nodes_are_served() {
    let fake = fake_with_namespace().await;
    fake.insert(&ClusterRole {
        metadata: kube::api::ObjectMeta {
            name: Some("liqo-remote-peering-basic".into()),
            labels: Some(BTreeMap::from([("auth.liqo.io/remote-peering-permissions".into(), "basic".into())])),
            ..Default::default()
        },
        ..Default::default()
    });
    fake.insert_json("/api/v1/nodes", json!({ "metadata": { "name": "node-1" } }));
    let roles: Api<ClusterRole> = Api::all(fake.client());
    let basic = roles
        .list(&ListParams::default().labels("auth.liqo.io/remote-peering-permissions=basic"))
        .await
        .expect("list roles");
    assert_eq!(basic.items.len(), 1);
    let nodes: Api<Node> = Api::all(fake.client());
    assert_eq!(nodes.list(&ListParams::default()).await.expect("nodes").items.len(), 1);

    let bindings: Api<RoleBinding> = Api::namespaced(fake.client(), NS);
    let binding = RoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some("liqo-binding-liqo-remote-peering-basic".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "liqo-remote-peering-basic".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: "cluster-1".into(),
            ..Default::default()
        }]),
    };
    let created = bindings.create(&PostParams::default(), &binding).await.expect("create binding");
    let status = api_error(bindings.create(&PostParams::default(), &binding).await);
    assert_eq!(
        status.message,
        r#"rolebindings.rbac.authorization.k8s.io "liqo-binding-liqo-remote-peering-basic" already exists"#
    );
    let mut changed = created.clone();
    changed.role_ref.name = "other".into();
    let status = api_error(bindings.replace(&created.name_any(), &PostParams::default(), &changed).await);
    assert_eq!(status.code, 422);
    assert!(status.message.contains("cannot change roleRef"), "{}", status.message);
}

#[tokio::test]
async fn watcher_sees_objects_added_modified_and_deleted() {
    let fake = fake_with_namespace().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    api.create(&PostParams::default(), &secret("before", &[("w", "1")])).await.expect("create");
    let config = watcher::Config::default().labels("w=1");
    let mut events = watcher(api.clone(), config).boxed();
    let mut seen = Vec::new();
    let expect = |seen: &mut Vec<String>, event: watcher::Event<Secret>| match event {
        watcher::Event::Apply(s) | watcher::Event::InitApply(s) => seen.push(format!("apply {}", s.name_any())),
        watcher::Event::Delete(s) => seen.push(format!("delete {}", s.name_any())),
        watcher::Event::Init | watcher::Event::InitDone => {}
    };
    while !seen.contains(&"apply before".to_owned()) {
        expect(&mut seen, events.try_next().await.expect("watch ok").expect("stream open"));
    }
    let mut s = api.create(&PostParams::default(), &secret("later", &[("w", "1")])).await.expect("create");
    api.create(&PostParams::default(), &secret("unlabelled", &[])).await.expect("create");
    s.metadata.annotations = Some(BTreeMap::from([("touched".to_owned(), "yes".to_owned())]));
    api.replace("later", &PostParams::default(), &s).await.expect("replace");
    api.delete("later", &DeleteParams::default()).await.expect("delete");
    while seen.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.try_next()).await.expect("event in time");
        expect(&mut seen, event.expect("watch ok").expect("stream open"));
    }
    assert_eq!(seen, ["apply before", "apply later", "apply later", "delete later"]);
    let watch = fake.requests().into_iter().find(|r| r.is_watch()).expect("a watch request");
    assert_eq!(watch.query_param("labelSelector").as_deref(), Some("w=1"));
    assert_eq!(watch.query_param("allowWatchBookmarks").as_deref(), Some("true"));
}

#[tokio::test]
async fn streaming_list_watchers_get_initial_events_then_the_end_bookmark() {
    let fake = fake_with_namespace().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    api.create(&PostParams::default(), &secret("present", &[])).await.expect("create");
    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher(api.clone(), config).boxed();
    let mut initial = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.try_next()).await.expect("in time");
        match event.expect("watch ok").expect("open") {
            watcher::Event::InitApply(s) => initial.push(s.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["present"]);
    let watch = fake.requests().into_iter().find(|r| r.is_watch()).expect("watch request");
    assert_eq!(watch.query_param("sendInitialEvents").as_deref(), Some("true"));
    assert!(!fake.requests().iter().any(|r| r.method == http::Method::GET && !r.is_watch()), "no list call");
}

#[tokio::test]
async fn reflector_catches_up_after_watches_are_closed() {
    let fake = fake_with_namespace().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.expect("store ready");
    api.create(&PostParams::default(), &secret("one", &[])).await.expect("create");
    for _ in 0..200 {
        if fake.active_watches() == 1 && reader.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fake.close_watches();
    // Written during the gap: replayed from history when the watcher resumes.
    api.create(&PostParams::default(), &secret("two", &[])).await.expect("create");
    api.delete("one", &DeleteParams::default()).await.expect("delete");
    for _ in 0..300 {
        let names: Vec<String> = reader.state().iter().map(|s| s.name_any()).collect();
        if names == ["two"] {
            task.abort();
            let watches = fake.requests().into_iter().filter(|r| r.is_watch()).count();
            assert!(watches >= 2, "the watcher re-watched after the close");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("reflector never caught up: {:?}", reader.state());
}

#[tokio::test]
async fn watch_from_an_old_resource_version_replays_missed_events_and_expires_after_compaction() {
    let fake = fake_with_namespace().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    let first = api.create(&PostParams::default(), &secret("x", &[])).await.expect("create");
    let rv = first.resource_version().expect("rv");
    api.delete("x", &DeleteParams::default()).await.expect("delete");
    api.create(&PostParams::default(), &secret("y", &[])).await.expect("create");
    let stream = api.watch(&WatchParams::default().timeout(1), &rv).await.expect("watch");
    let events: Vec<_> = stream.try_collect().await.expect("events");
    let summary: Vec<String> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(s) => format!("ADDED {}", s.name_any()),
            WatchEvent::Modified(s) => format!("MODIFIED {}", s.name_any()),
            WatchEvent::Deleted(s) => format!("DELETED {}", s.name_any()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(summary, ["DELETED x", "ADDED y"]);

    fake.compact_history();
    let stream = api.watch(&WatchParams::default().timeout(1), &rv).await.expect("watch");
    let events: Vec<_> = stream.try_collect().await.expect("events");
    match events.as_slice() {
        [WatchEvent::Error(e)] => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected one 410 error event, got {other:?}"),
    }
}

#[tokio::test]
async fn approved_client_csr_is_signed_by_the_test_ca_with_the_requested_lifetime() {
    let fake = FakeApiServer::start().await;
    let api: Api<CertificateSigningRequest> = Api::all(fake.client());
    let (pem, _) = client_csr_pem("cluster-1", "liqo.io");
    let created =
        api.create(&PostParams::default(), &csr_object("liqo-identity-", &pem, Some(3600))).await.expect("create");
    let name = created.name_any();
    assert!(created.status.as_ref().is_none_or(|s| s.certificate.is_none()));

    let approval = approved(created.clone());
    api.replace_subresource("approval", &name, &PostParams::default(), &approval).await.expect("approve");
    let signed = wait_for_csr(&api, &name, |c| c.status.as_ref().is_some_and(|s| s.certificate.is_some())).await;
    let cert_pem = signed.status.expect("status").certificate.expect("certificate").0;
    let stored = fake.get_json("certificatesigningrequests", None, &name).expect("stored");
    assert!(stored["status"]["certificate"].as_str().expect("base64 in JSON").starts_with("LS0t"));

    let (_, pem_block) = x509_parser::pem::parse_x509_pem(&cert_pem).expect("pem");
    let cert = pem_block.parse_x509().expect("x509");
    let (_, ca_block) = x509_parser::pem::parse_x509_pem(fake.ca_pem().as_bytes()).expect("ca pem");
    let ca = ca_block.parse_x509().expect("ca x509");
    cert.verify_signature(Some(ca.public_key())).expect("signed by the test CA");
    assert_eq!(cert.subject().iter_common_name().next().and_then(|c| c.as_str().ok()), Some("cluster-1"));
    assert_eq!(cert.subject().iter_organization().next().and_then(|o| o.as_str().ok()), Some("liqo.io"));
    let eku = cert.extended_key_usage().expect("eku ok").expect("eku present").value;
    assert!(eku.client_auth && !eku.server_auth);
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 3600);
}

#[tokio::test]
async fn csr_approval_through_patch_approval_is_signed_and_watchers_see_it() {
    let fake = FakeApiServer::start().await;
    let api: Api<CertificateSigningRequest> = Api::all(fake.client());
    let (pem, _) = client_csr_pem("cluster-2", "liqo.io");
    let created = api.create(&PostParams::default(), &csr_object("liqo-identity-", &pem, None)).await.expect("create");
    let name = created.name_any();
    let mut events = watcher(api.clone(), watcher::Config::default().labels("discovery.liqo.io/remote-tenant-csr"))
        .applied_objects()
        .boxed();
    let patch = json!({ "status": { "conditions": [{ "type": "Approved", "status": "True", "reason": "Test", "message": "ok" }] } });
    api.patch_approval(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("approve");
    loop {
        let csr = tokio::time::timeout(Duration::from_secs(5), events.try_next()).await.expect("in time");
        let csr = csr.expect("watch ok").expect("open");
        if csr.status.as_ref().is_some_and(|s| s.certificate.is_some()) {
            assert_eq!(condition_types(&csr), ["Approved"]);
            break;
        }
    }
}

#[tokio::test]
async fn plain_updates_leave_csr_status_alone_and_status_updates_leave_spec_alone() {
    let fake = FakeApiServer::start().await;
    let api: Api<CertificateSigningRequest> = Api::all(fake.client());
    fake.set_signer_mode(SignerMode::Ignore);
    let (pem, _) = client_csr_pem("cluster-3", "liqo.io");
    let created = api.create(&PostParams::default(), &approved(csr_object("c-", &pem, None))).await.expect("create");
    assert!(condition_types(&created).is_empty(), "status is dropped on create");
    let name = created.name_any();

    let sneaky = approved(created.clone());
    let updated = api.replace(&name, &PostParams::default(), &sneaky).await.expect("replace");
    assert!(condition_types(&updated).is_empty(), "plain update cannot approve");

    let mut status_write = updated.clone();
    status_write.spec.signer_name = "example.com/other".into();
    status_write.status = Some(CertificateSigningRequestStatus {
        certificate: Some(ByteString(b"-----BEGIN CERTIFICATE-----\n".to_vec())),
        ..Default::default()
    });
    let after = api.replace_status(&name, &PostParams::default(), &status_write).await.expect("status update");
    assert_eq!(after.spec.signer_name, KUBE_APISERVER_CLIENT_SIGNER);
    assert!(after.status.expect("status").certificate.is_some());

    let mut approving_via_status = approved(api.get(&name).await.expect("get"));
    approving_via_status.metadata.resource_version = None;
    let status = api_error(api.replace_status(&name, &PostParams::default(), &approving_via_status).await);
    assert_eq!(status.code, 422);
}

#[tokio::test]
async fn deny_mode_marks_new_csrs_denied_and_approval_is_then_invalid() {
    let fake = FakeApiServer::start().await;
    fake.set_signer_mode(SignerMode::Deny);
    let api: Api<CertificateSigningRequest> = Api::all(fake.client());
    let (pem, _) = client_csr_pem("cluster-4", "liqo.io");
    let created = api.create(&PostParams::default(), &csr_object("c-", &pem, None)).await.expect("create");
    let name = created.name_any();
    let denied = api.get(&name).await.expect("get");
    assert_eq!(condition_types(&denied), ["Denied"]);
    // Appending Approved, as Liqo does, collides with Denied.
    let mut approving = denied.clone();
    let approval = approved(created).status.expect("status").conditions.expect("conditions");
    approving.status.as_mut().expect("status").conditions.as_mut().expect("conditions").extend(approval);
    let status = api_error(api.replace_subresource("approval", &name, &PostParams::default(), &approving).await);
    assert_eq!(status.code, 422);
    assert!(status.message.contains("mutually exclusive"), "{}", status.message);
    // Replacing the conditions would drop Denied, which is not allowed either.
    let patch = json!({ "status": { "conditions": [{ "type": "Approved", "status": "True" }] } });
    let status = api_error(api.patch_approval(&name, &PatchParams::default(), &Patch::Merge(&patch)).await);
    assert_eq!(status.code, 422);
    assert!(status.message.contains("may not remove a condition of type \"Denied\""), "{}", status.message);
}

#[tokio::test]
async fn fail_and_ignore_modes_never_issue_a_certificate() {
    let fake = FakeApiServer::start().await;
    let api: Api<CertificateSigningRequest> = Api::all(fake.client());
    let (pem, _) = client_csr_pem("cluster-5", "liqo.io");

    fake.set_signer_mode(SignerMode::Fail);
    let failing = api.create(&PostParams::default(), &csr_object("f-", &pem, None)).await.expect("create");
    let patch = json!({ "status": { "conditions": [{ "type": "Approved", "status": "True" }] } });
    api.patch_approval(&failing.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.expect("approve");
    let failed = wait_for_csr(&api, &failing.name_any(), |c| condition_types(c).contains(&"Failed".to_owned())).await;
    assert!(failed.status.expect("status").certificate.is_none());

    fake.set_signer_mode(SignerMode::Ignore);
    let ignored = api.create(&PostParams::default(), &csr_object("i-", &pem, None)).await.expect("create");
    api.patch_approval(&ignored.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.expect("approve");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let still = api.get(&ignored.name_any()).await.expect("get");
    assert_eq!(condition_types(&still), ["Approved"]);
    assert!(still.status.expect("status").certificate.is_none());
}

#[tokio::test]
async fn signer_rejects_usages_the_real_signer_rejects_and_honours_the_signing_delay() {
    let fake = FakeApiServer::start().await;
    let api: Api<CertificateSigningRequest> = Api::all(fake.client());
    let (pem, _) = client_csr_pem("cluster-6", "liqo.io");
    let mut server_usage = csr_object("u-", &pem, None);
    server_usage.spec.usages = Some(vec!["server auth".into()]);
    let created = api.create(&PostParams::default(), &server_usage).await.expect("create");
    let patch = json!({ "status": { "conditions": [{ "type": "Approved", "status": "True" }] } });
    api.patch_approval(&created.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.expect("approve");
    let failed = wait_for_csr(&api, &created.name_any(), |c| condition_types(c).contains(&"Failed".to_owned())).await;
    let message = failed.status.expect("status").conditions.expect("conditions")[1].message.clone();
    assert_eq!(message.as_deref(), Some("invalid usage for client certificate: server auth"));

    let short = api_error(api.create(&PostParams::default(), &csr_object("s-", &pem, Some(60))).await);
    assert_eq!(short.code, 422);

    fake.set_signing_delay(Duration::from_millis(300));
    let slow = api.create(&PostParams::default(), &csr_object("d-", &pem, None)).await.expect("create");
    let started = std::time::Instant::now();
    api.patch_approval(&slow.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.expect("approve");
    wait_for_csr(&api, &slow.name_any(), |c| c.status.as_ref().is_some_and(|s| s.certificate.is_some())).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn fail_next_answers_once_with_the_injected_status() {
    let fake = fake_with_namespace().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    fake.fail_next(Some(http::Method::POST), "/secrets", 500, "InternalError");
    let status = api_error(api.create(&PostParams::default(), &secret("s", &[])).await);
    assert_eq!((status.code, status.reason.as_str()), (500, "InternalError"));
    api.create(&PostParams::default(), &secret("s", &[])).await.expect("second attempt succeeds");
    assert_eq!(fake.fault_counts().failed, 1);
    let posts = fake.requests().iter().filter(|r| r.method == http::Method::POST).count();
    assert_eq!(posts, 2, "failed requests are recorded too");
    fake.clear_requests();
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn drop_next_closes_the_connection_and_delay_next_holds_the_answer() {
    let fake = fake_with_namespace().await;
    let api: Api<Secret> = Api::namespaced(fake.client(), NS);
    fake.drop_next(None, "/secrets/s");
    let dropped = api.get("s").await;
    assert!(matches!(dropped, Err(ref e) if !matches!(e, kube::Error::Api(_))), "{dropped:?}");
    assert_eq!(fake.fault_counts().dropped, 1);

    fake.delay_next(Some(http::Method::GET), "/secrets/s", Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert_eq!(api_error(api.get("s").await).code, 404);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(fake.fault_counts().delayed, 1);
}

#[tokio::test]
async fn typed_seeding_and_inspection_helpers_round_trip() {
    let fake = fake_with_namespace().await;
    let mut s = secret("seeded", &[]);
    s.metadata.namespace = Some(NS.to_owned());
    let stored = fake.insert(&s);
    assert!(stored.metadata.resource_version.is_some());
    assert_eq!(fake.list_json("Secret").len(), 1);
    assert_eq!(fake.get_json("secret", Some(NS), "seeded").expect("present")["kind"], "Secret");
    assert!(fake.requests().is_empty(), "seeding is not an API request");
}

#[tokio::test]
async fn issued_identity_authenticates_over_mutual_tls() {
    let fake = FakeApiServer::start_tls(false).await;
    assert!(fake.url().starts_with("https://127.0.0.1:"));
    // Get a certificate the way liqo-auth does: CSR object, approval, signer.
    let admin = fake.client();
    let api: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let (pem, key) = client_csr_pem("cluster-7", "liqo.io");
    let created = api.create(&PostParams::default(), &csr_object("liqo-identity-", &pem, None)).await.expect("create");
    assert_eq!(created.spec.username.as_deref(), Some("fake-apiserver-admin"));
    let patch = json!({ "status": { "conditions": [{ "type": "Approved", "status": "True" }] } });
    api.patch_approval(&created.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.expect("approve");
    let signed =
        wait_for_csr(&api, &created.name_any(), |c| c.status.as_ref().is_some_and(|s| s.certificate.is_some())).await;
    let cert_pem = String::from_utf8(signed.status.expect("status").certificate.expect("cert").0).expect("utf-8");

    fake.clear_requests();
    let identity = crate::support::fake_apiserver::ClientIdentity { cert_pem, key_pem: key.serialize_pem() };
    let client = kube::Client::try_from(fake.kube_config_with_identity(Some(&identity))).expect("client");
    let version = client.apiserver_version().await.expect("/version with the issued certificate");
    assert_eq!(version.major, "1");
    assert_eq!(fake.authenticated_users(), ["cluster-7"]);
    assert_eq!(fake.requests()[0].path, "/version");

    let anonymous = kube::Client::try_from(fake.kube_config_with_identity(None)).expect("client");
    let status = api_error(anonymous.apiserver_version().await);
    assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
}

#[tokio::test]
async fn required_client_certificates_are_enforced_in_the_handshake() {
    let fake = FakeApiServer::start_tls(true).await;
    let anonymous = kube::Client::try_from(fake.kube_config_with_identity(None)).expect("client");
    let result = anonymous.apiserver_version().await;
    assert!(matches!(result, Err(ref e) if !matches!(e, kube::Error::Api(_))), "{result:?}");

    let stranger_ca = FakeApiServer::start().await;
    let foreign = stranger_ca.issue_client_identity("intruder", &[]);
    let client = kube::Client::try_from(fake.kube_config_with_identity(Some(&foreign))).expect("client");
    assert!(client.apiserver_version().await.is_err(), "a certificate from another CA is refused");

    let trusted = fake.issue_client_identity("cluster-8", &["liqo.io"]);
    let client = kube::Client::try_from(fake.kube_config_with_identity(Some(&trusted))).expect("client");
    client.apiserver_version().await.expect("trusted identity authenticates");
    assert_eq!(fake.authenticated_users(), ["cluster-8"]);
}
