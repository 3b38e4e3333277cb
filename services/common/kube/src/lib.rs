//! spamscope in Kubernetes.
//!
//! - [`LeaseLock`]: leadership of the router through a
//!   `coordination.k8s.io/v1` Lease (optimistic concurrency on the Lease's
//!   `resourceVersion`: two routers never both win a round).
//! - [`Detectors`]: the detector StatefulSet: its scale subresource (`ctl
//!   scale`, the autoscaler) and its ready pods (membership: a pod that is not
//!   Ready gets no shards).
//! - [`desired_replicas`]: the lag autoscaler's rule.
//! - [`API_CALLS`]: every API call this crate makes; the Helm chart's Role
//!   grants exactly these (checked by the tests and `make helm-lint`).

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Config};

/// `(apiGroup, resource, verb)` of every call this crate makes.
pub const API_CALLS: &[(&str, &str, &str)] = &[
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
    ("apps", "statefulsets/scale", "get"),
    ("apps", "statefulsets/scale", "patch"),
    ("", "pods", "list"),
];

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes configuration: {0}")]
    Config(String),
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// A client for the API server at `url` (tests, `kubectl proxy`), or the
/// one the environment names: the pod's service account in a cluster,
/// `KUBECONFIG` / `~/.kube/config` outside. `namespace` overrides the
/// default namespace.
pub async fn client(url: Option<&str>, namespace: Option<&str>) -> Result<Client, KubeError> {
    let mut cfg = match url {
        Some(u) => Config::new(
            u.parse()
                .map_err(|e| KubeError::Config(format!("API server URL {u:?}: {e}")))?,
        ),
        None => Config::infer()
            .await
            .map_err(|e| KubeError::Config(e.to_string()))?,
    };
    if let Some(ns) = namespace {
        cfg.default_namespace = ns.to_owned();
    }
    Client::try_from(cfg).map_err(KubeError::Api)
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Leadership through a Lease: the holder renews it every round; another
/// candidate takes it once `renewTime + leaseDurationSeconds` has passed.
#[derive(Debug, Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    holder: String,
    ttl: Duration,
}

impl LeaseLock {
    pub fn new(client: Client, name: &str, holder: &str, ttl: Duration) -> Self {
        Self {
            api: Api::default_namespaced(client),
            name: name.to_owned(),
            holder: holder.to_owned(),
            ttl,
        }
    }

    /// Takes or renews the Lease; `Ok(false)` while another holder's Lease
    /// is current (or another candidate won this round).
    pub async fn acquire_or_renew(&self) -> Result<bool, KubeError> {
        let now = Timestamp::now();
        let ttl_s = i32::try_from(self.ttl.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.holder.clone()),
                    lease_duration_seconds: Some(ttl_s),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if conflict(&e) => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let mine = spec.holder_identity.as_deref() == Some(self.holder.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(MicroTime(renewed)), Some(d)) => renewed
                .saturating_add(SignedDuration::from_secs(i64::from(d)))
                .map_or(true, |until| until < now),
            _ => true,
        } || spec.holder_identity.is_none();
        if !mine && !expired {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.holder.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(ttl_s);
        spec.renew_time = Some(MicroTime(now));
        // `replace` sends the resourceVersion read above: a concurrent
        // writer makes this a 409, and this round is lost.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the Lease up (if held) so a standby takes over at once.
    pub async fn release(&self) -> Result<(), KubeError> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The detector StatefulSet and its pods.
#[derive(Debug, Clone)]
pub struct Detectors {
    sts: Api<StatefulSet>,
    pods: Api<Pod>,
    name: String,
    selector: String,
}

impl Detectors {
    /// `name`: the StatefulSet; `selector`: the label selector of its pods.
    pub fn new(client: Client, name: &str, selector: &str) -> Self {
        Self {
            sts: Api::default_namespaced(client.clone()),
            pods: Api::default_namespaced(client),
            name: name.to_owned(),
            selector: selector.to_owned(),
        }
    }

    /// `(wanted, running)` replicas from the scale subresource.
    pub async fn replicas(&self) -> Result<(u32, u32), KubeError> {
        let s = self.sts.get_scale(&self.name).await?;
        let want = s.spec.and_then(|s| s.replicas).unwrap_or(0);
        let have = s.status.map_or(0, |s| s.replicas);
        Ok((want.max(0) as u32, have.max(0) as u32))
    }

    /// Sets the wanted replicas (scale subresource, merge patch).
    pub async fn scale(&self, replicas: u32) -> Result<(), KubeError> {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.sts
            .patch_scale(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Names of the pods that are Ready (a detector's replica id is its pod
    /// name), sorted.
    pub async fn ready_pods(&self) -> Result<Vec<String>, KubeError> {
        let pods = self
            .pods
            .list(&ListParams::default().labels(&self.selector))
            .await?;
        let mut names: Vec<String> = pods
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        Ok(names)
    }
}

/// Bounds and target of the lag autoscaler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// Pending chat events one replica may have before another is added.
    pub lag_per_replica: u64,
}

/// Replicas for a total consumer lag: enough that each has at most
/// `lag_per_replica` pending, within `[min, max]`. Scale-out is immediate;
/// scale-in goes one replica at a time and only once the lag would still
/// fit at half the target with one replica fewer (no flapping around the
/// threshold).
pub fn desired_replicas(current: u32, total_lag: u64, a: &Autoscale) -> u32 {
    let per = a.lag_per_replica.max(1);
    let need = u32::try_from(total_lag.div_ceil(per)).unwrap_or(u32::MAX);
    let (min, max) = (a.min.max(1), a.max.max(a.min.max(1)));
    let current = current.clamp(min, max);
    if need > current {
        return need.min(max);
    }
    let fewer = current.saturating_sub(1).max(min);
    if fewer < current && total_lag <= u64::from(fewer) * per / 2 {
        return fewer;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Autoscale = Autoscale {
        min: 2,
        max: 8,
        lag_per_replica: 10_000,
    };

    #[test]
    fn scales_out_at_once_and_in_one_step_with_hysteresis() {
        assert_eq!(desired_replicas(2, 0, &A), 2, "never below min");
        assert_eq!(desired_replicas(2, 35_000, &A), 4);
        assert_eq!(desired_replicas(2, 10_000_000, &A), 8, "never above max");
        assert_eq!(
            desired_replicas(6, 35_000, &A),
            6,
            "35k fits 5 but not at half"
        );
        assert_eq!(desired_replicas(6, 20_000, &A), 5, "one step in");
        assert_eq!(desired_replicas(1, 0, &A), 2, "raised to min");
        assert_eq!(
            desired_replicas(20, 0, &A),
            7,
            "lowered to max, then one step"
        );
    }
}
