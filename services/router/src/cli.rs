//! The `router` role's flags and run.

use std::time::Duration;

use anyhow::Result;
use spamscope_runtime::exit::Exit;
use spamscope_runtime::{ClusterArgs, connect, run_role};

#[derive(Debug, clap::Args)]
pub struct RouterArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Id of this router instance (standbys take over on its lock expiry).
    #[arg(long, env = "SPAMSCOPE_ROUTER_ID", default_value = "router-0")]
    pub router_id: String,
    /// Kubernetes mode: lead through a coordination.k8s.io Lease.
    #[arg(long, env = "SPAMSCOPE_KUBE")]
    pub kube: bool,
    #[command(flatten)]
    pub k8s: KubeArgs,
    /// Name of the router's Lease.
    #[arg(long, env = "SPAMSCOPE_LEASE_NAME", default_value = "spamscope-router")]
    pub lease_name: String,
    /// Place shards only on detector replicas whose pod is Ready.
    #[arg(long, env = "SPAMSCOPE_MEMBERSHIP_FROM_PODS", requires = "kube")]
    pub membership_from_pods: bool,
    /// Size the detector StatefulSet from the consumer lag, up to this many
    /// replicas (the autoscaler is off without it).
    #[arg(long, env = "SPAMSCOPE_AUTOSCALE_MAX", requires = "kube")]
    pub autoscale_max: Option<u32>,
    /// Fewest detector replicas the autoscaler leaves.
    #[arg(long, env = "SPAMSCOPE_AUTOSCALE_MIN", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub autoscale_min: u32,
    /// Pending chat events per replica before the autoscaler adds one.
    #[arg(
        long,
        env = "SPAMSCOPE_AUTOSCALE_LAG_PER_REPLICA",
        default_value_t = 50_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub autoscale_lag_per_replica: u64,
    /// How often the autoscaler looks at the lag, in seconds (1 to 3600).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub autoscale_interval_s: u64,
    /// Quiet time after a resize, in seconds.
    #[arg(long, default_value_t = 180)]
    pub autoscale_cooldown_s: u64,
}

/// Where the Kubernetes API is and what the detectors are called there.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// API server URL (default: the pod's service account, else
    /// KUBECONFIG / ~/.kube/config).
    #[arg(long, env = "SPAMSCOPE_KUBE_API_SERVER")]
    pub kube_api_server: Option<String>,
    /// Namespace of the release (default: the config's namespace).
    #[arg(long, env = "SPAMSCOPE_KUBE_NAMESPACE")]
    pub kube_namespace: Option<String>,
    /// The detector StatefulSet.
    #[arg(
        long,
        env = "SPAMSCOPE_DETECTOR_STATEFULSET",
        default_value = "spamscope-detector"
    )]
    pub detector_statefulset: String,
    /// Label selector of the detector pods.
    #[arg(
        long,
        env = "SPAMSCOPE_DETECTOR_SELECTOR",
        default_value = "app.kubernetes.io/name=spamscope,app.kubernetes.io/component=detector"
    )]
    pub detector_selector: String,
}

impl KubeArgs {
    pub async fn client(&self) -> Result<kube::Client> {
        spamscope_kube::client(
            self.kube_api_server.as_deref(),
            self.kube_namespace.as_deref(),
        )
        .await
        .map_err(|e| Exit::usage(format!("--kube-api-server: {e}")))
    }

    pub fn detectors(&self, client: kube::Client) -> spamscope_kube::Detectors {
        spamscope_kube::Detectors::new(client, &self.detector_statefulset, &self.detector_selector)
    }
}

/// `spamscope router`.
pub fn run(args: RouterArgs) -> Result<()> {
    let url = args.cluster.nats_url()?;
    args.cluster.require_shared_store()?;
    run_role("router", args.cluster.lifecycle(), |role| async move {
        let (bus, store) = connect(
            &args.cluster,
            &url,
            "spamscope-router",
            spamscope_bus::StreamLimits::Apply,
        )
        .await?;
        role.require_nats(&bus);
        role.require_store(&store);
        let defaults = crate::RouterConfig::default();
        let kube = if args.kube {
            let client = args.k8s.client().await?;
            let autoscale = match args.autoscale_max {
                None => None,
                Some(max) if max < args.autoscale_min.max(1) => {
                    return Err(Exit::usage(
                        "--autoscale-max: must be at least --autoscale-min (and 1)",
                    ));
                }
                Some(max) => Some(crate::Autoscaler {
                    bounds: spamscope_kube::Autoscale {
                        min: args.autoscale_min.max(1),
                        max,
                        lag_per_replica: args.autoscale_lag_per_replica,
                    },
                    interval: Duration::from_secs(args.autoscale_interval_s.max(1)),
                    cooldown: Duration::from_secs(args.autoscale_cooldown_s),
                }),
            };
            Some(crate::KubeRouter {
                lease: spamscope_kube::LeaseLock::new(
                    client.clone(),
                    &args.lease_name,
                    &args.router_id,
                    defaults.lock_ttl,
                ),
                detectors: args.k8s.detectors(client),
                membership_from_pods: args.membership_from_pods,
                autoscale,
            })
        } else {
            None
        };
        let cfg = crate::RouterConfig {
            id: args.router_id,
            shards: args.cluster.shards,
            kube,
            streams: Some(args.cluster.bus_config(&url)?),
            ..defaults
        };
        let mut sup = role.supervisor();
        let (health, stop) = (role.health.clone(), sup.shutdown().clone());
        sup.critical("router", async move {
            Ok(crate::run(cfg, bus, store, health, stop).await?)
        });
        Ok(sup)
    })
}
