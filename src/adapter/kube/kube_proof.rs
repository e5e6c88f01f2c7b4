//! `KubeProofLedger`: the Kubernetes backend's [`ProofLedger`], shared by every replica: one
//! `coordination.k8s.io/v1` Lease per used renewal proof, in the service's namespace, named
//! `liqo-auth-proof-<first 40 hex of the proof id>`.
//!
//! Recording is a create: `AlreadyExists` means another request (on any replica) used the proof
//! first, so the API server's own uniqueness of names is the atomicity. A Lease is used because
//! the service needs no other access to Leases, so RBAC can grant exactly create, list and
//! delete on them in one namespace. Each Lease carries its expiry in an annotation (and as
//! `leaseDurationSeconds`); every record also deletes the expired ones it lists, so the ledger
//! holds at most the proofs of the last few minutes.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::Api;

use crate::adapter::kube::KubeCtx;
use crate::identity::port::{ProofId, ProofLedger, Seen, StoreError};

/// Label marking the Leases of this ledger.
pub const LABEL_RENEWAL_PROOF: &str = "auth.liqo.io/renewal-proof";
/// Annotation holding the Unix second until which the proof is remembered.
pub const ANNOTATION_EXPIRES_AT: &str = "auth.liqo.io/expires-at";
/// Prefix of the Lease names.
pub const LEASE_PREFIX: &str = "liqo-auth-proof-";

/// Used renewal proofs as Leases in `namespace`.
#[derive(Clone)]
pub struct KubeProofLedger {
    ctx: KubeCtx,
    namespace: String,
}

impl KubeProofLedger {
    /// A ledger over `ctx`, keeping Leases in `namespace`.
    pub fn new(ctx: KubeCtx, namespace: String) -> Self {
        Self { ctx, namespace }
    }

    fn api(&self) -> Api<Lease> {
        self.ctx.namespaced(&self.namespace)
    }

    /// Deletes the ledger's expired Leases (best effort: a failure only leaves them for the next
    /// sweep, and an expired proof is refused by its own `exp` anyway).
    async fn sweep(&self, now: i64) {
        let api = self.api();
        let selector = format!("{LABEL_RENEWAL_PROOF}=true");
        let listed =
            self.ctx.call("listing renewal-proof Leases", api.list(&ListParams::default().labels(&selector))).await;
        let leases = match listed {
            Ok(list) => list.items,
            Err(failure) => {
                tracing::debug!(error = %failure, "could not sweep expired renewal-proof Leases");
                return;
            }
        };
        for lease in leases {
            let expired = expires_at(&lease).is_none_or(|until| until < now);
            let Some(name) = lease.metadata.name.filter(|_| expired) else { continue };
            let operation = format!("deleting Lease {name}");
            if let Err(failure) = self.ctx.call_opt(&operation, api.delete(&name, &DeleteParams::default())).await {
                tracing::debug!(error = %failure, "could not delete expired renewal-proof Lease {name}");
            }
        }
    }
}

#[async_trait::async_trait]
impl ProofLedger for KubeProofLedger {
    async fn record(&self, id: &ProofId, until: i64) -> Result<Seen, StoreError> {
        let now = crate::pki::unix_now();
        let name = lease_name(id);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(LABEL_RENEWAL_PROOF.to_owned(), "true".to_owned())])),
                annotations: Some(BTreeMap::from([(ANNOTATION_EXPIRES_AT.to_owned(), until.to_string())])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                lease_duration_seconds: Some(i32::try_from((until - now).max(1)).unwrap_or(i32::MAX)),
                ..LeaseSpec::default()
            }),
        };
        let api = self.api();
        let create = || async {
            self.ctx.call(&format!("creating Lease {name}"), api.create(&PostParams::default(), &lease)).await
        };
        let seen = match create().await {
            Ok(_) => Seen::First,
            Err(failure) if failure.is_already_exists() => {
                // Only an expired record (one a failed sweep left) may be taken over; the
                // delete carries its resourceVersion, so a concurrent take-over fails cleanly.
                let existing = self.ctx.call_opt(&format!("reading Lease {name}"), api.get(&name)).await?;
                match existing {
                    Some(old) if expires_at(&old).is_none_or(|t| t < now) => {
                        let precondition = kube::api::Preconditions {
                            resource_version: old.metadata.resource_version.clone(),
                            uid: None,
                        };
                        let params = DeleteParams { preconditions: Some(precondition), ..DeleteParams::default() };
                        let _ = self.ctx.call_opt(&format!("deleting Lease {name}"), api.delete(&name, &params)).await;
                        match create().await {
                            Ok(_) => Seen::First,
                            Err(failure) if failure.is_already_exists() => Seen::Again,
                            Err(failure) => return Err(failure.into()),
                        }
                    }
                    _ => Seen::Again,
                }
            }
            Err(failure) => return Err(failure.into()),
        };
        if seen == Seen::First {
            self.sweep(now).await;
        }
        Ok(seen)
    }
}

/// `liqo-auth-proof-` and 40 hex characters: a valid object name, unique enough (160 bits).
fn lease_name(id: &ProofId) -> String {
    format!("{LEASE_PREFIX}{}", &id.as_str()[..40])
}

fn expires_at(lease: &Lease) -> Option<i64> {
    lease.metadata.annotations.as_ref()?.get(ANNOTATION_EXPIRES_AT)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ClusterId;

    #[test]
    fn lease_names_are_valid_object_names() {
        let name = lease_name(&ProofId::new(&ClusterId::parse("c1").unwrap(), "../x"));
        assert_eq!(name.len(), LEASE_PREFIX.len() + 40);
        assert!(name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'));
    }
}
