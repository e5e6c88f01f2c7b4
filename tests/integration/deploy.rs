//! Renders `deploy/` (the base and every overlay) with `kubectl kustomize` and checks the
//! manifests: each document parses into its `k8s-openapi` type, and the Services, Deployment
//! args, probes, security context, NetworkPolicy and RBAC are what the docs promise. `rbac`
//! compares the roles with the API calls the code makes; `monitoring` checks deploy/monitoring.
//!
//! kubectl is looked up on `PATH`. Without it every test fails when
//! `LIQO_AUTH_REQUIRE_ALL_TESTS=1` (as `.ci/run` sets it); otherwise it prints
//! `SKIPPED: kubectl not found, deploy manifests not rendered` straight to stderr (past the
//! test harness's capture) and returns, for machines without kubectl.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Service, ServiceAccount, ServicePort};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

mod identity;
mod monitoring;
mod preflight;
mod rbac;

/// Every kustomization under `deploy/`, relative to it.
const RENDERINGS: [&str; 6] = [
    "base",
    "overlays/loadbalancer",
    "overlays/nodeport",
    "overlays/ingress-tls-termination",
    "overlays/ingress-tls-passthrough",
    "overlays/nat",
];

#[test]
fn every_kustomization_renders_into_typed_objects_with_one_of_each_workload_kind() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        assert_eq!(r.deployments.len(), 1, "{name}: Deployments");
        assert_eq!(r.services.len(), 1, "{name}: Services");
        assert_eq!(r.pdbs.len(), 1, "{name}: PodDisruptionBudgets");
        assert_eq!(r.service_accounts.len(), 1, "{name}: ServiceAccounts");
        // The service's and the operator's role, each a ClusterRole and a Role.
        assert_eq!(r.cluster_roles.len(), 2, "{name}: ClusterRoles");
        assert_eq!(r.roles.len(), 2, "{name}: Roles");
        assert_eq!(r.cluster_role_bindings.len(), 2, "{name}: ClusterRoleBindings");
        assert_eq!(r.role_bindings.len(), 2, "{name}: RoleBindings");
        assert_eq!(r.network_policies.len(), 1, "{name}: NetworkPolicies");
        let namespaces: Vec<_> = r.namespaces.iter().map(|n| n.metadata.name.as_deref()).collect();
        assert_eq!(namespaces, [Some("liqo")], "{name}: the namespace is part of the install");
        let expected_ingresses = usize::from(name.contains("ingress"));
        assert_eq!(r.ingresses.len(), expected_ingresses, "{name}: Ingresses");
        for (kind, namespace) in r.namespaced() {
            assert_eq!(namespace.as_deref(), Some("liqo"), "{name}: {kind} namespace");
        }
    }
}

#[test]
fn base_service_is_cluster_ip_named_liqo_auth_with_https_443_to_8443() {
    let Some(r) = render("base") else { return };
    let service = r.service();
    assert_eq!(service.metadata.name.as_deref(), Some("liqo-auth"));
    assert_eq!(service_type(service), "ClusterIP");
    let port = single_port(service);
    assert_eq!((port.name.as_deref(), port.port, port.node_port), (Some("https"), 443, None));
    assert_eq!(resolve_target_port(r, port), 8443);
}

#[test]
fn loadbalancer_overlay_exposes_https_443_through_a_load_balancer() {
    let Some(r) = render("overlays/loadbalancer") else {
        return;
    };
    assert_eq!(service_type(r.service()), "LoadBalancer");
    let port = single_port(r.service());
    assert_eq!((port.name.as_deref(), port.port), (Some("https"), 443));
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(resolve_target_port(r, port), 8443);
}

#[test]
fn nodeport_overlay_exposes_https_on_node_port_30443() {
    let Some(r) = render("overlays/nodeport") else {
        return;
    };
    assert_eq!(service_type(r.service()), "NodePort");
    let port = single_port(r.service());
    assert_eq!((port.name.as_deref(), port.port, port.node_port), (Some("https"), 443, Some(30443)));
    assert_eq!(resolve_target_port(r, port), 8443);
}

#[test]
fn ingress_tls_termination_runs_plain_http_on_5000_behind_a_tls_ingress() {
    let Some(r) = render("overlays/ingress-tls-termination") else {
        return;
    };
    let args = args(r.container());
    assert!(args.contains(&"--enable-tls=false"), "{args:?}");
    assert!(args.contains(&"--address=:5000"), "{args:?}");
    assert!(
        args.iter().any(|a| a.starts_with("--trusted-proxy=")),
        "the Ingress controller is a trusted proxy: {args:?}"
    );
    for absent in ["--enable-tls", "--address=:8443"] {
        assert!(!args.contains(&absent), "{absent} still in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--cert-path") || a.starts_with("--key-path")),
        "TLS file flags still in {args:?}"
    );
    let pod = pod_spec(r.deployment());
    assert!(pod.volumes.is_none(), "the /certs volume is removed");
    assert!(r.container().volume_mounts.is_none());

    let port = single_port(r.service());
    assert_eq!((port.name.as_deref(), port.port), (Some("https"), 5000), "the name Liqo looks up");
    assert_eq!(resolve_target_port(r, port), 5000);
    let proxies: Vec<&str> = args.iter().filter_map(|a| a.strip_prefix("--trusted-proxy=")).collect();
    assert_eq!(proxies, ["10.244.7.0/24"], "narrowed to the controller's nodes, not the pod CIDR");

    let ingress = r.ingress();
    let spec = ingress.spec.as_ref().expect("Ingress has a spec");
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let tls = spec.tls.as_deref().expect("Ingress terminates TLS");
    assert_eq!(tls.len(), 1);
    assert_eq!(tls[0].secret_name.as_deref(), Some("liqo-auth-ingress-tls"));
    assert_eq!(tls[0].hosts.as_deref(), Some(&["auth.example.com".to_owned()][..]));
    assert_eq!(ingress_backend_port(r), "https");
}

#[test]
fn ingress_tls_passthrough_keeps_tls_in_the_pod_and_asks_nginx_to_pass_it_through() {
    let Some(r) = render("overlays/ingress-tls-passthrough") else {
        return;
    };
    let args = args(r.container());
    for flag in ["--enable-tls", "--address=:8443", "--cert-path=/certs/tls.crt", "--tls-san=auth.example.com"] {
        assert!(args.contains(&flag), "{flag} missing from {args:?}");
    }
    let annotations = r.ingress().metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("nginx.ingress.kubernetes.io/ssl-passthrough").map(String::as_str), Some("true"));
    assert_eq!(annotations.get("nginx.ingress.kubernetes.io/backend-protocol").map(String::as_str), Some("HTTPS"));
    assert_eq!(ingress_backend_port(r), "https");
    assert_eq!(service_type(r.service()), "ClusterIP");
}

#[test]
fn nat_overlay_advertises_the_public_address() {
    let Some(r) = render("overlays/nat") else {
        return;
    };
    let args = args(r.container());
    for flag in [
        "--advertise-api-server-address=203.0.113.10:6443",
        "--advertise-auth-address=203.0.113.10:30443",
        "--tls-san=203.0.113.10",
        "--enable-tls",
    ] {
        assert!(args.contains(&flag), "{flag} missing from {args:?}");
    }
    assert_eq!(service_type(r.service()), "NodePort");
    assert_eq!(single_port(r.service()).node_port, Some(30443));
    // The control-plane node cache starts whatever the flags say, so the rule stays.
    assert!(r.rules().any(|rule| names(&rule.resources).contains("nodes")));
}

#[test]
fn every_rendering_passes_tls_args_and_cluster_identity_as_the_base_does() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        let container = r.container();
        assert_eq!(container.command.as_deref(), Some(&["/usr/bin/liqo-auth".to_owned()][..]));
        let args = args(container);
        assert_eq!(args.first(), Some(&"serve"), "{name}");
        for flag in ["--backend=kubernetes", "--namespace=$(POD_NAMESPACE)", "--metrics-address=:9090"] {
            assert!(args.contains(&flag), "{name}: {flag} missing from {args:?}");
        }
        // The service reads (or creates) the cluster identity itself: flags for it would
        // override nothing, and a configMapKeyRef keeps the pod in CreateContainerConfigError
        // on a cluster without Liqo.
        assert!(!args.iter().any(|a| a.starts_with("--cluster-")), "{name}: {args:?}");
        let env = container.env.as_deref().unwrap_or_default();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["POD_NAMESPACE"], "{name}");
        let namespace = env[0].value_from.clone().and_then(|v| v.field_ref).expect("fieldRef");
        assert_eq!(namespace.field_path, "metadata.namespace");
        assert!(container.env_from.is_none(), "{name}: no envFrom");
        if args.contains(&"--enable-tls") {
            assert!(args.contains(&"--key-path=/certs/tls.key"), "{name}");
            let volume = pod_spec(r.deployment())
                .volumes
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find_map(|v| v.secret.as_ref())
                .unwrap_or_else(|| panic!("{name}: TLS without a certificate volume"));
            assert_eq!(volume.secret_name.as_deref(), Some("liqo-auth-tls"));
            assert_eq!(volume.optional, Some(true), "{name}: pods start without it");
            assert!(
                args.contains(&"--generate-missing"),
                "{name}: an optional Secret needs --generate-missing: {args:?}"
            );
            let mount = &container.volume_mounts.as_deref().unwrap_or_default()[0];
            assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/certs", Some(true)));
        }
    }
}

#[test]
fn every_rendering_passes_args_the_binary_accepts() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        // The kubelet expands $(VAR) from the container's env before exec.
        let expanded = args(r.container()).into_iter().map(|arg| arg.replace("$(POD_NAMESPACE)", "liqo"));
        let argv = std::iter::once("liqo-auth".to_owned()).chain(expanded);
        if let Err(error) = liqo_auth::cli::Args::try_parse_from(argv) {
            panic!("{name}: the binary rejects the Deployment's args: {error}");
        }
    }
}

#[test]
fn every_rendering_probes_healthz_and_readyz_over_http_on_admin_port_9090() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        let container = r.container();
        for (probe, path) in [(&container.liveness_probe, "/healthz"), (&container.readiness_probe, "/readyz")] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.clone())
                .unwrap_or_else(|| panic!("{name}: no httpGet probe for {path}"));
            assert_eq!(get.path.as_deref(), Some(path), "{name}");
            assert_eq!(container_port(container, &get.port), 9090, "{name}: {path}");
            assert_eq!(get.scheme.as_deref().unwrap_or("HTTP"), "HTTP", "{name}");
        }
    }
}

#[test]
fn every_rendering_runs_two_hardened_replicas_covered_by_a_disruption_budget() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        let deployment = r.deployment();
        let spec = deployment.spec.as_ref().expect("Deployment has a spec");
        assert_eq!(spec.replicas, Some(2), "{name}");
        let pod = pod_spec(deployment);
        assert_eq!(pod.service_account_name.as_deref(), Some("liqo-auth"));
        assert!(
            pod.topology_spread_constraints.is_some() || pod.affinity.is_some(),
            "{name}: replicas are spread across nodes"
        );

        let security = r.container().security_context.clone().expect("container securityContext");
        assert_eq!(security.run_as_non_root, Some(true), "{name}");
        assert_eq!(security.run_as_user, Some(65532), "{name}");
        assert_eq!(security.run_as_group, Some(65532), "{name}");
        assert_eq!(security.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
        let drop = security.capabilities.and_then(|c| c.drop);
        assert_eq!(drop.as_deref(), Some(&["ALL".to_owned()][..]), "{name}");
        let seccomp = security.seccomp_profile.expect("seccompProfile");
        assert_eq!(seccomp.type_, "RuntimeDefault", "{name}");

        let resources = r.container().resources.clone().expect("resources");
        let (requests, limits) = (resources.requests.as_ref(), resources.limits.as_ref());
        assert_eq!(quantity(requests, "cpu"), Some("50m"), "{name}");
        assert_eq!(quantity(requests, "memory"), Some("32Mi"), "{name}");
        assert_eq!(quantity(limits, "cpu"), Some("500m"), "{name}");
        assert_eq!(quantity(limits, "memory"), Some("128Mi"), "{name}");

        let pdb = r.pdbs[0].spec.as_ref().expect("PDB has a spec");
        // maxUnavailable, so a drain never blocks even when scaled to one replica.
        assert_eq!((pdb.max_unavailable.clone(), pdb.min_available.clone()), (Some(IntOrString::Int(1)), None));
        assert_eq!(
            pdb.selector.as_ref().and_then(|s| s.match_labels.clone()),
            spec.selector.match_labels,
            "{name}: the PDB covers the Deployment's pods"
        );
    }
}

#[test]
fn rbac_has_no_wildcard_verbs_resources_or_api_groups() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        for rule in r.rules() {
            let all: Vec<&String> = rule
                .verbs
                .iter()
                .chain(rule.resources.iter().flatten())
                .chain(rule.api_groups.iter().flatten())
                .chain(rule.resource_names.iter().flatten())
                .collect();
            assert!(!all.iter().any(|s| s.contains('*')), "{name}: {rule:?}");
            assert!(rule.non_resource_urls.is_none(), "{name}: {rule:?}");
        }
    }
}

#[test]
fn approve_is_granted_only_on_the_kube_apiserver_client_signer() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        let approving: Vec<&PolicyRule> = r.rules().filter(|rule| rule.verbs.iter().any(|v| v == "approve")).collect();
        assert_eq!(approving.len(), 1, "{name}: one approve rule");
        let rule = approving[0];
        assert_eq!(rule.verbs, ["approve"]);
        assert_eq!(names(&rule.api_groups), set(["certificates.k8s.io"]));
        assert_eq!(names(&rule.resources), set(["signers"]));
        assert_eq!(names(&rule.resource_names), set(["kubernetes.io/kube-apiserver-client"]));
    }
}

#[test]
fn bind_is_granted_only_on_the_basic_peering_cluster_role() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        let binding: Vec<&PolicyRule> =
            r.rules().filter(|rule| rule.verbs.iter().any(|v| v == "bind" || v == "escalate")).collect();
        assert_eq!(binding.len(), 1, "{name}: one bind rule");
        let rule = binding[0];
        assert_eq!(rule.verbs, ["bind"]);
        assert_eq!(names(&rule.resources), set(["clusterroles"]));
        assert_eq!(names(&rule.resource_names), set(["liqo-remote-peering-basic"]));
        assert!(
            r.cluster_role_bindings.iter().all(|b| b.role_ref.name.starts_with("liqo-auth")),
            "{name}: no ClusterRoleBinding to the peering roles"
        );
    }
}

#[test]
fn secrets_are_never_listed_or_watched_cluster_wide() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        for rule in r.cluster_roles.iter().flat_map(|role| role.rules.iter().flatten()) {
            if names(&rule.resources).contains("secrets") {
                let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
                assert!(
                    verbs.is_disjoint(&set(["list", "watch", "patch", "deletecollection"])),
                    "{name}: cluster-wide {verbs:?} on secrets"
                );
                // Beyond create (which cannot name its object), only the stored certificate.
                if !verbs.iter().all(|v| *v == "create") {
                    assert_eq!(names(&rule.resource_names), set(["liqo-remote-certificate"]), "{name}: {rule:?}");
                }
            }

            assert!(
                !names(&rule.resources).contains("configmaps"),
                "{name}: no cluster-wide configmaps (the reference's aws-auth rule)"
            );
        }
    }
}

#[test]
fn the_service_roles_are_bound_to_the_service_account_and_the_operator_roles_to_a_group() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        let account = &r.service_accounts[0].metadata;
        let bindings = r
            .cluster_role_bindings
            .iter()
            .map(|b| (&b.role_ref, b.subjects.as_deref().unwrap_or_default(), "ClusterRole"))
            .chain(r.role_bindings.iter().map(|b| (&b.role_ref, b.subjects.as_deref().unwrap_or_default(), "Role")));
        for (role_ref, subjects, kind) in bindings {
            assert_eq!(role_ref.kind, kind, "{name}: {role_ref:?}");
            assert_eq!(subjects.len(), 1, "{name}: {role_ref:?}");
            let subject = &subjects[0];
            match role_ref.name.as_str() {
                "liqo-auth" => {
                    assert_eq!(subject.kind, "ServiceAccount", "{name}");
                    assert_eq!(Some(&subject.name), account.name.as_ref(), "{name}");
                    assert_eq!(subject.namespace, account.namespace, "{name}");
                }
                "liqo-auth-operator" => {
                    assert_eq!((subject.kind.as_str(), subject.name.as_str()), ("Group", "liqo-auth-operators"));
                }
                other => panic!("{name}: unexpected binding to {other}"),
            }
        }
    }
}

#[test]
fn the_service_role_deletes_only_its_own_csrs_and_expired_renewal_proofs() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        let service_cluster_role = r.cluster_roles.iter().filter(|c| c.metadata.name.as_deref() == Some("liqo-auth"));
        let service_role = r.roles.iter().filter(|c| c.metadata.name.as_deref() == Some("liqo-auth"));
        let rules = service_cluster_role
            .flat_map(|c| c.rules.iter().flatten())
            .chain(service_role.flat_map(|c| c.rules.iter().flatten()));
        for rule in rules {
            if rule.verbs.iter().any(|v| v == "delete" || v == "deletecollection") {
                let resources = names(&rule.resources);
                assert!(
                    resources == set(["certificatesigningrequests"]) || resources == set(["leases"]),
                    "{name}: {rule:?}"
                );
                assert!(!rule.verbs.iter().any(|v| v == "deletecollection"), "{name}: {rule:?}");
            }
        }
    }
}

#[test]
fn the_image_is_pinned_to_the_crate_version() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        let image = r.container().image.clone().expect("an image");
        let expected = format!("ghcr.io/liqo-auth/liqo-auth:{}", env!("CARGO_PKG_VERSION"));
        assert_eq!(image, expected, "{name}");
        assert_eq!(r.container().image_pull_policy.as_deref(), Some("IfNotPresent"), "{name}");
    }
}

#[test]
fn every_service_keeps_the_port_name_liqo_looks_up() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        assert_eq!(r.service().metadata.name.as_deref(), Some("liqo-auth"), "{name}");
        assert_eq!(single_port(r.service()).name.as_deref(), Some("https"), "{name}");
    }
}

#[test]
fn load_balancer_and_node_port_services_keep_the_peer_source_address() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        let spec = r.service().spec.as_ref().expect("Service spec");
        let expected = match service_type(r.service()) {
            "LoadBalancer" | "NodePort" => Some("Local"),
            _ => None,
        };
        assert_eq!(spec.external_traffic_policy.as_deref(), expected, "{name}");
    }
}

#[test]
fn the_network_policy_opens_the_public_port_and_limits_admin_and_plain_http() {
    for name in RENDERINGS {
        let Some(r) = render(name) else { return };
        let policy = &r.network_policies[0];
        let spec = policy.spec.as_ref().expect("NetworkPolicy spec");
        let labels = spec.pod_selector.as_ref().and_then(|s| s.match_labels.clone());
        let pods = r.deployment().spec.as_ref().and_then(|s| s.template.metadata.as_ref()?.labels.clone());
        assert!(
            labels.as_ref().is_some_and(|l| pods.as_ref().is_some_and(|p| l.iter().all(|(k, v)| p.get(k) == Some(v)))),
            "{name}: the policy selects the pods"
        );
        assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]), "{name}");
        let container = r.container();
        // Who may reach each container port: `None` = anyone, else the peers of the rule.
        let mut allowed: BTreeMap<i32, Vec<Option<Vec<NetworkPolicyPeer>>>> = BTreeMap::new();
        for rule in spec.ingress.iter().flatten() {
            let ports = rule.ports.as_deref().expect("every rule names its ports");
            for port in ports {
                let number = container_port(container, port.port.as_ref().expect("a port"));
                allowed.entry(number).or_default().push(rule.from.clone().filter(|f| !f.is_empty()));
            }
        }
        let from_namespace = |peers: &Option<Vec<NetworkPolicyPeer>>, namespace: &str| {
            let peers = peers.as_deref().unwrap_or_default();
            !peers.is_empty()
                && peers.iter().all(|p| {
                    p.ip_block.is_none()
                        && p.namespace_selector.as_ref().and_then(|s| s.match_labels.as_ref()).is_some_and(|l| {
                            l.get("kubernetes.io/metadata.name").map(String::as_str) == Some(namespace)
                        })
                })
        };
        let admin = allowed.get(&9090).unwrap_or_else(|| panic!("{name}: admin port unreachable"));
        assert!(admin.iter().all(|peers| from_namespace(peers, "monitoring")), "{name}: admin {admin:?}");
        if name.ends_with("ingress-tls-termination") {
            let plain = allowed.get(&5000).expect("plain HTTP port reachable from the controller");
            assert!(plain.iter().all(|peers| from_namespace(peers, "ingress-nginx")), "{name}: {plain:?}");
            assert_eq!(allowed.len(), 2, "{name}: no other port: {allowed:?}");
        } else {
            let public = allowed.get(&8443).expect("public port");
            assert!(public.iter().any(Option::is_none), "{name}: the public port is open to everyone");
            assert_eq!(allowed.len(), 2, "{name}: no other port: {allowed:?}");
        }
    }
}

#[test]
fn every_rbac_rule_in_the_base_is_explained_by_a_comment() {
    for (file, minimum) in [("base/rbac-service.yaml", 14), ("base/rbac-operator.yaml", 5)] {
        let path = deploy_dir().join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let lines: Vec<&str> = text.lines().collect();
        let mut rules = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("- apiGroups:") {
                rules += 1;
                let previous = lines[..i].last().map(|l| l.trim_start()).unwrap_or("");
                assert!(previous.starts_with('#'), "{file}: rule at line {} has no comment above it", i + 1);
            }
        }
        assert!(rules >= minimum, "found only {rules} rules in {}", path.display());
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering and parsing.

/// The objects of one rendering, by kind. Any other kind fails the parse.
#[derive(Default)]
struct Rendered {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    ingresses: Vec<Ingress>,
    pdbs: Vec<PodDisruptionBudget>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    roles: Vec<Role>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    role_bindings: Vec<RoleBinding>,
    namespaces: Vec<Namespace>,
    network_policies: Vec<NetworkPolicy>,
}

impl Rendered {
    fn parse(name: &str, yaml: &str) -> Self {
        let mut rendered = Self::default();
        for document in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{name}: invalid YAML document: {e}"));
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_else(|| panic!("{name}: document without kind")).to_owned();
            fn typed<T: serde::de::DeserializeOwned>(name: &str, kind: &str, value: serde_yaml::Value) -> T {
                serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{name}: {kind} does not parse: {e}"))
            }
            match kind.as_str() {
                "Deployment" => rendered.deployments.push(typed(name, &kind, value)),
                "Service" => rendered.services.push(typed(name, &kind, value)),
                "Ingress" => rendered.ingresses.push(typed(name, &kind, value)),
                "PodDisruptionBudget" => rendered.pdbs.push(typed(name, &kind, value)),
                "ServiceAccount" => rendered.service_accounts.push(typed(name, &kind, value)),
                "ClusterRole" => rendered.cluster_roles.push(typed(name, &kind, value)),
                "Role" => rendered.roles.push(typed(name, &kind, value)),
                "ClusterRoleBinding" => rendered.cluster_role_bindings.push(typed(name, &kind, value)),
                "RoleBinding" => rendered.role_bindings.push(typed(name, &kind, value)),
                "Namespace" => rendered.namespaces.push(typed(name, &kind, value)),
                "NetworkPolicy" => rendered.network_policies.push(typed(name, &kind, value)),
                other => panic!("{name}: unexpected kind {other}"),
            }
        }
        rendered
    }

    fn deployment(&self) -> &Deployment {
        &self.deployments[0]
    }

    fn container(&self) -> &Container {
        let containers = &pod_spec(self.deployment()).containers;
        assert_eq!(containers.len(), 1, "one container");
        &containers[0]
    }

    fn service(&self) -> &Service {
        &self.services[0]
    }

    fn ingress(&self) -> &Ingress {
        &self.ingresses[0]
    }

    fn rules(&self) -> impl Iterator<Item = &PolicyRule> {
        let cluster = self.cluster_roles.iter().flat_map(|r| r.rules.iter().flatten());
        let namespaced = self.roles.iter().flat_map(|r| r.rules.iter().flatten());
        cluster.chain(namespaced)
    }

    /// `(kind, namespace)` of every namespaced object.
    fn namespaced(&self) -> Vec<(&'static str, Option<String>)> {
        let mut out = Vec::new();
        out.extend(self.deployments.iter().map(|o| ("Deployment", o.metadata.namespace.clone())));
        out.extend(self.services.iter().map(|o| ("Service", o.metadata.namespace.clone())));
        out.extend(self.ingresses.iter().map(|o| ("Ingress", o.metadata.namespace.clone())));
        out.extend(self.pdbs.iter().map(|o| ("PodDisruptionBudget", o.metadata.namespace.clone())));
        out.extend(self.service_accounts.iter().map(|o| ("ServiceAccount", o.metadata.namespace.clone())));
        out.extend(self.roles.iter().map(|o| ("Role", o.metadata.namespace.clone())));
        out.extend(self.role_bindings.iter().map(|o| ("RoleBinding", o.metadata.namespace.clone())));
        out.extend(self.network_policies.iter().map(|o| ("NetworkPolicy", o.metadata.namespace.clone())));
        out
    }
}

/// `deploy/<name>` as rendered by kubectl; `None` (after saying so) when kubectl is not
/// installed. All kustomizations are rendered once and shared by the tests.
fn render(name: &str) -> Option<&'static Rendered> {
    static RENDERED: OnceLock<Option<Vec<(&str, Rendered)>>> = OnceLock::new();
    let all = RENDERED.get_or_init(|| {
        let kubectl = find_on_path("kubectl")?;
        Some(RENDERINGS.iter().map(|name| (*name, kustomize(&kubectl, name))).collect())
    });
    let Some(all) = all else {
        if crate::support::all_tests_required() {
            panic!(
                "kubectl not found on PATH, and LIQO_AUTH_REQUIRE_ALL_TESTS=1 forbids skipping: install kubectl \
                 (.ci/run does) or unset LIQO_AUTH_REQUIRE_ALL_TESTS"
            );
        }
        // Written to the real stderr, not through the harness's capture, so it is always seen.
        let _ = writeln!(std::io::stderr(), "SKIPPED: kubectl not found, deploy manifests not rendered");
        return None;
    };
    let found = all.iter().find(|(n, _)| *n == name);
    Some(&found.unwrap_or_else(|| panic!("{name} is not in RENDERINGS")).1)
}

fn kustomize(kubectl: &Path, name: &str) -> Rendered {
    Rendered::parse(name, &kustomize_with(kubectl, name))
}

/// `kubectl kustomize deploy/<name>` as text, for kustomizations outside `RENDERINGS`
/// (deploy/monitoring renders custom resources); `None` as for [`render`].
fn kustomize_text(name: &str) -> Option<String> {
    render("base")?;
    let kubectl = find_on_path("kubectl").expect("render found kubectl");
    Some(kustomize_with(&kubectl, name))
}

fn kustomize_with(kubectl: &Path, name: &str) -> String {
    let dir = deploy_dir().join(name);
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("running {} kustomize: {e}", kubectl.display()));
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kustomize prints UTF-8")
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

// ---------------------------------------------------------------------------------------------
// deploy/consumer: the renewal agent on a consumer cluster.

/// `deploy/consumer` as rendered by kubectl (`None` when skipped, as for [`render`]).
fn consumer() -> Option<&'static Rendered> {
    static RENDERED: OnceLock<Option<Rendered>> = OnceLock::new();
    RENDERED.get_or_init(|| find_on_path("kubectl").map(|kubectl| kustomize(&kubectl, "consumer"))).as_ref().or_else(
        || {
            // Same rule as the provider renderings: CI fails, a machine without kubectl skips.
            render("base");
            None
        },
    )
}

#[test]
fn consumer_renders_one_agent_with_its_service_account_and_cluster_role() {
    let Some(r) = consumer() else { return };
    assert_eq!(r.deployments.len(), 1);
    assert_eq!(r.service_accounts.len(), 1);
    assert_eq!(r.cluster_roles.len(), 1);
    assert_eq!(r.cluster_role_bindings.len(), 1);
    assert!(r.services.is_empty() && r.roles.is_empty() && r.role_bindings.is_empty());
    for (kind, namespace) in r.namespaced() {
        assert_eq!(namespace.as_deref(), Some("liqo"), "{kind} namespace");
    }
    let spec = r.deployment().spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1), "one agent renews each identity once");
    let pod = pod_spec(r.deployment());
    let account = pod.service_account_name.as_deref();
    assert_eq!(account, Some("liqo-auth-agent"));
    let binding = &r.cluster_role_bindings[0];
    assert_eq!(binding.role_ref.name, "liqo-auth-agent");
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!((subject.kind.as_str(), Some(subject.name.as_str())), ("ServiceAccount", account));
    assert_eq!(subject.namespace.as_deref(), Some("liqo"));
}

#[test]
fn consumer_runs_the_agent_with_args_the_binary_accepts_and_probes_its_admin_port() {
    let Some(r) = consumer() else { return };
    let container = r.container();
    let argv = std::iter::once("liqo-auth").chain(args(container));
    let parsed =
        liqo_auth::cli::Args::try_parse_from(argv).unwrap_or_else(|e| panic!("the binary rejects the args: {e}"));
    assert!(matches!(parsed.command, liqo_auth::cli::Command::Agent(_)), "runs `liqo-auth agent`");
    assert!(args(container).contains(&"--metrics-address=:9091"));
    for (probe, path) in [(&container.liveness_probe, "/healthz"), (&container.readiness_probe, "/readyz")] {
        let get = probe.as_ref().and_then(|p| p.http_get.clone()).unwrap_or_else(|| panic!("no probe for {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(container_port(container, &get.port), 9091, "{path}");
    }
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
}

#[test]
fn consumer_rbac_is_list_on_namespaces_and_list_update_on_secrets_only() {
    let Some(r) = consumer() else { return };
    let mut granted: Vec<(String, Vec<String>)> = r
        .rules()
        .map(|rule| {
            assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]), "core group only");
            assert!(rule.resource_names.is_none());
            let resources = rule.resources.clone().unwrap_or_default();
            assert_eq!(resources.len(), 1);
            let mut verbs = rule.verbs.clone();
            verbs.sort();
            (resources[0].clone(), verbs)
        })
        .collect();
    granted.sort();
    let expected = vec![
        ("namespaces".to_owned(), vec!["list".to_owned()]),
        ("secrets".to_owned(), vec!["list".to_owned(), "update".to_owned()]),
    ];
    assert_eq!(granted, expected);
}

// ---------------------------------------------------------------------------------------------
// Small accessors.

fn pod_spec(deployment: &Deployment) -> &k8s_openapi::api::core::v1::PodSpec {
    deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("Deployment has a pod spec")
}

fn args(container: &Container) -> Vec<&str> {
    container.args.iter().flatten().map(String::as_str).collect()
}

fn service_type(service: &Service) -> &str {
    service.spec.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP")
}

fn single_port(service: &Service) -> &ServicePort {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default();
    assert_eq!(ports.len(), 1, "the Service has one port");
    &ports[0]
}

/// The container port a Service port forwards to (by name or number).
fn resolve_target_port(r: &Rendered, port: &ServicePort) -> i32 {
    let target = port.target_port.clone().unwrap_or(IntOrString::Int(port.port));
    container_port(r.container(), &target)
}

/// The number behind a port reference; a name must match a declared container port.
fn container_port(container: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(number) => *number,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .unwrap_or_else(|| panic!("no container port named {name}")),
    }
}

/// The Service port name the Ingress routes to, checked to exist on the Service.
fn ingress_backend_port(r: &Rendered) -> String {
    let rules = r.ingress().spec.as_ref().and_then(|s| s.rules.as_deref()).unwrap_or_default();
    assert_eq!(rules.len(), 1, "one Ingress rule");
    assert_eq!(rules[0].host.as_deref(), Some("auth.example.com"));
    let paths = &rules[0].http.as_ref().expect("http rule").paths;
    assert_eq!(paths.len(), 1, "one path");
    let backend = paths[0].backend.service.as_ref().expect("Service backend");
    assert_eq!(backend.name, "liqo-auth");
    let name = backend.port.as_ref().and_then(|p| p.name.clone()).expect("the backend names its port");
    assert_eq!(
        single_port(r.service()).name.as_deref(),
        Some(name.as_str()),
        "the Ingress backend port exists on the Service"
    );
    name
}

fn quantity<'a>(map: Option<&'a BTreeMap<String, Quantity>>, key: &str) -> Option<&'a str> {
    map.and_then(|m| m.get(key)).map(|q| q.0.as_str())
}

fn names(list: &Option<Vec<String>>) -> BTreeSet<&str> {
    list.iter().flatten().map(String::as_str).collect()
}

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<&str> {
    items.into_iter().collect()
}
