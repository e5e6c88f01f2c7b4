//! Kubernetes RBAC, as kube-apiserver evaluates it, for the requests the fake API server records:
//! what a request asks for ([`Attributes`], the apiserver's `RequestInfo`), and whether a set
//! of Roles, ClusterRoles and their bindings allows it for one user ([`Authorizer`]).
//!
//! Used by the deploy test (are the rendered roles exactly what the recorded calls need?) and
//! by the fake's (Self)SubjectAccessReview endpoints, which `liqo-auth check --pre` asks. It covers what the service and the operator
//! commands send: resource requests, `resourceNames` (including a list or watch narrowed by a
//! `metadata.name` field selector, which the apiserver authorizes as that name), subresources,
//! and the two checks made on top of a request: `approve` on the CSR's signer when approving,
//! and `bind` on the referenced role when creating a RoleBinding. Aggregated ClusterRoles and
//! non-resource URLs (`/version`, granted to everyone by `system:discovery`) are left out.

use http::Method;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};

use super::fake_apiserver::RecordedRequest;

/// What one request asks the authorizer for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Attributes {
    pub fn new(verb: &str, group: &str, resource: &str, namespace: Option<&str>, name: Option<&str>) -> Self {
        Self {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        }
    }

    /// The resource request a recorded request makes; `None` for non-resource URLs.
    pub fn of_request(request: &RecordedRequest) -> Option<Self> {
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", "v1", rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            // `/api/v1/namespaces/{name}` is the Namespace object itself; the apiserver sets
            // both its name and its namespace to `{name}`.
            ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some((*ns).to_owned()), tail),
            ["namespaces", ns] => (Some((*ns).to_owned()), rest),
            _ => (None, rest),
        };
        let (resource, name, sub) = match rest {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some((*name).to_owned()), None),
            [resource, name, sub] => (*resource, Some((*name).to_owned()), Some(*sub)),
            _ => return None,
        };
        let watch = request.is_watch();
        let verb = match (&request.method, name.is_some()) {
            (&Method::GET, true) => "get",
            (&Method::GET, false) if watch => "watch",
            (&Method::GET, false) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => return None,
        };
        let name = match (verb, name) {
            ("list" | "watch", None) => field_selector_name(&request.query_param("fieldSelector").unwrap_or_default()),
            (_, name) => name,
        };
        let resource = match sub {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        // `/api/v1/namespaces` (the collection) has no namespace.
        let namespace = if resource == "namespaces" { name.clone() } else { namespace };
        Some(Self { verb: verb.to_owned(), group: group.to_owned(), resource, namespace, name })
    }

    /// Everything the apiserver authorizes for `request`: the request itself, plus `create`
    /// when an apply patch may create the object, `approve` on the signer when a CSR is
    /// approved (`signers` maps CSR names to their signer) and `bind` on the role a new
    /// RoleBinding refers to (unless the creator holds all its permissions, which the service
    /// never does: it holds none of the peering roles' permissions).
    pub fn required_by(request: &RecordedRequest, signers: &dyn Fn(&str) -> Option<String>) -> Vec<Self> {
        let Some(main) = Self::of_request(request) else { return Vec::new() };
        let mut all = vec![main.clone()];
        if main.verb == "patch" && request.content_type.as_deref() == Some("application/apply-patch+yaml") {
            all.push(Self { verb: "create".into(), ..main.clone() });
        }
        if main.resource == "certificatesigningrequests/approval" && matches!(main.verb.as_str(), "update" | "patch") {
            let signer = main.name.as_deref().and_then(signers).unwrap_or_default();
            all.push(Self::new("approve", "certificates.k8s.io", "signers", None, Some(&signer)));
        }
        let role_ref = request.body.as_ref().map(|b| &b["roleRef"]);
        if let (Some(role_ref), "rolebindings" | "clusterrolebindings", "create") =
            (role_ref, main.resource.as_str(), main.verb.as_str())
        {
            let kind = role_ref["kind"].as_str().unwrap_or_default();
            let resource = if kind == "Role" { "roles" } else { "clusterroles" };
            let namespace = if kind == "Role" { main.namespace.as_deref() } else { None };
            all.push(Self::new("bind", "rbac.authorization.k8s.io", resource, namespace, role_ref["name"].as_str()));
        }
        all
    }
}

/// The CSR names in `requests` (creates carrying `metadata.name`) mapped to their signer.
pub fn csr_signers(requests: &[RecordedRequest]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = requests
        .iter()
        .filter(|r| r.method == Method::POST && r.path.ends_with("/certificatesigningrequests"))
        .filter_map(|r| {
            let body = r.body.as_ref()?;
            Some((body["metadata"]["name"].as_str()?.to_owned(), body["spec"]["signerName"].as_str()?.to_owned()))
        })
        .collect();
    move |name| pairs.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone())
}

/// One rule a user holds, and where: everywhere (ClusterRoleBinding) or in one namespace.
#[derive(Clone, Debug)]
pub struct Grant {
    /// `Role/liqo/liqo-auth`, `ClusterRole/liqo-auth`: where the rule comes from.
    pub source: String,
    pub index: usize,
    pub namespace: Option<String>,
    pub rule: PolicyRule,
}

impl Grant {
    pub fn allows(&self, a: &Attributes) -> bool {
        let scoped = self.namespace.is_none() || a.namespace == self.namespace;
        scoped
            && matches_any(&self.rule.verbs, &a.verb)
            && matches_any(self.rule.api_groups.as_deref().unwrap_or_default(), &a.group)
            && matches_any(self.rule.resources.as_deref().unwrap_or_default(), &a.resource)
            && match self.rule.resource_names.as_deref() {
                None | Some([]) => true,
                Some(names) => a.name.as_ref().is_some_and(|n| names.contains(n)),
            }
    }

    /// Every single permission this grant spells out, one per verb, resource and name: what
    /// a request must use for the grant to count as needed.
    pub fn permissions(&self) -> Vec<Attributes> {
        let names: Vec<Option<&str>> = match self.rule.resource_names.as_deref() {
            None | Some([]) => vec![None],
            Some(names) => names.iter().map(|n| Some(n.as_str())).collect(),
        };
        let mut out = Vec::new();
        for verb in &self.rule.verbs {
            for group in self.rule.api_groups.iter().flatten() {
                for resource in self.rule.resources.iter().flatten() {
                    for name in &names {
                        out.push(Attributes::new(verb, group, resource, self.namespace.as_deref(), *name));
                    }
                }
            }
        }
        out
    }

    /// Whether `a` uses `permission` (one of [`Self::permissions`]) of this grant.
    pub fn uses(permission: &Attributes, a: &Attributes) -> bool {
        permission.verb == a.verb
            && permission.group == a.group
            && permission.resource == a.resource
            && (permission.namespace.is_none() || permission.namespace == a.namespace)
            && (permission.name.is_none() || permission.name == a.name)
    }
}

/// The RBAC objects of a cluster (or a rendering), evaluated for one user.
#[derive(Clone, Debug, Default)]
pub struct Authorizer {
    pub grants: Vec<Grant>,
    /// Members of `system:masters` are allowed everything, as the apiserver allows them.
    pub superuser: bool,
}

/// Roles and bindings, typed.
#[derive(Clone, Debug, Default)]
pub struct RbacObjects {
    pub cluster_roles: Vec<ClusterRole>,
    pub roles: Vec<Role>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub role_bindings: Vec<RoleBinding>,
}

impl RbacObjects {
    /// From JSON objects (with `kind`); other kinds are ignored.
    pub fn from_json(objects: &[serde_json::Value]) -> Self {
        let mut out = Self::default();
        for object in objects {
            let value = object.clone();
            match object["kind"].as_str() {
                Some("ClusterRole") => out.cluster_roles.extend(serde_json::from_value(value).ok()),
                Some("Role") => out.roles.extend(serde_json::from_value(value).ok()),
                Some("ClusterRoleBinding") => out.cluster_role_bindings.extend(serde_json::from_value(value).ok()),
                Some("RoleBinding") => out.role_bindings.extend(serde_json::from_value(value).ok()),
                _ => {}
            }
        }
        out
    }

    /// What `user` (member of `groups`) holds through these objects.
    pub fn authorizer(&self, user: &str, groups: &[String]) -> Authorizer {
        let bound = |subjects: &Option<Vec<Subject>>, binding_namespace: Option<&str>| {
            subjects.iter().flatten().any(|s| subject_matches(s, binding_namespace, user, groups))
        };
        let mut grants = Vec::new();
        let mut add = |source: String, namespace: Option<String>, rules: &Option<Vec<PolicyRule>>| {
            for (index, rule) in rules.iter().flatten().enumerate() {
                grants.push(Grant { source: source.clone(), index, namespace: namespace.clone(), rule: rule.clone() });
            }
        };
        let cluster_role = |name: &str| self.cluster_roles.iter().find(|r| r.metadata.name.as_deref() == Some(name));
        for binding in &self.cluster_role_bindings {
            if bound(&binding.subjects, None) && binding.role_ref.kind == "ClusterRole" {
                if let Some(role) = cluster_role(&binding.role_ref.name) {
                    add(format!("ClusterRole/{}", binding.role_ref.name), None, &role.rules);
                }
            }
        }
        for binding in &self.role_bindings {
            let namespace = binding.metadata.namespace.clone();
            if !bound(&binding.subjects, namespace.as_deref()) {
                continue;
            }
            let name = &binding.role_ref.name;
            match binding.role_ref.kind.as_str() {
                "ClusterRole" => {
                    if let Some(role) = cluster_role(name) {
                        add(
                            format!("ClusterRole/{name}@{}", namespace.clone().unwrap_or_default()),
                            namespace,
                            &role.rules,
                        );
                    }
                }
                _ => {
                    let role = self.roles.iter().find(|r| {
                        r.metadata.name.as_deref() == Some(name.as_str()) && r.metadata.namespace == namespace
                    });
                    if let Some(role) = role {
                        let source = format!("Role/{}/{name}", namespace.clone().unwrap_or_default());
                        add(source, namespace, &role.rules);
                    }
                }
            }
        }
        Authorizer { grants, superuser: groups.iter().any(|g| g == "system:masters") }
    }
}

impl Authorizer {
    pub fn allows(&self, a: &Attributes) -> bool {
        self.superuser || self.grants.iter().any(|g| g.allows(a))
    }
}

fn subject_matches(subject: &Subject, binding_namespace: Option<&str>, user: &str, groups: &[String]) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user,
        "Group" => groups.contains(&subject.name),
        "ServiceAccount" => {
            let namespace = subject.namespace.as_deref().or(binding_namespace).unwrap_or_default();
            user == format!("system:serviceaccount:{namespace}:{}", subject.name)
        }
        _ => false,
    }
}

fn matches_any(list: &[String], value: &str) -> bool {
    list.iter().any(|item| item == "*" || item == value)
}

/// `metadata.name=X` in a field selector (alone or among others), as the apiserver reads it.
fn field_selector_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (key, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        (key.trim() == "metadata.name" && !key.ends_with('!')).then(|| value.trim().to_owned())
    })
}
