//! Kubernetes mode against the in-process fake API server
//! (`harness::fake_kube`; no real API server can run on these machines):
//! real router and detector processes, real nats-server and redis-server.
//! Lease leadership and failover, membership from Ready pods, the lag
//! autoscaler, `ctl scale` / `ctl status`, and the RBAC the chart grants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::fake_kube::FakeKube;
use harness::*;

const NS: &str = "spamscope";

fn kube_flags(k: &FakeKube) -> Vec<String> {
    vec![
        "--kube-api-server".into(),
        k.url.clone(),
        "--kube-namespace".into(),
        NS.into(),
    ]
}

fn kube_router(c: &Cluster, k: &FakeKube, id: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["--router-id".to_owned(), id.to_owned(), "--kube".to_owned()];
    args.extend(kube_flags(k));
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    c.role(id, "router", &refs)
}

fn ctl(args: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spamscope"))
        .arg("ctl")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `ok` until it holds; on timeout, fails with the role logs of `c`.
async fn wait_for(c: &Cluster, what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < timeout,
            "{what} not reached in {timeout:?}\n{}",
            c.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The tests start many processes each; one at a time keeps a loaded
/// two-core CI machine from starving them.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_elects_one_router_and_a_standby_takes_over() {
    let _one = ONE_AT_A_TIME.lock().await;
    let k = FakeKube::start().await;
    let c = Cluster::start(SPAMSCOPE, 8);
    let _d0 = c.detector("d0");
    let r1 = kube_router(&c, &k, "r1", &[]);
    wait_for(&c, "r1 holds the Lease", Duration::from_secs(60), || {
        k.lease_holder("spamscope-router").as_deref() == Some("r1")
    })
    .await;
    let r2 = kube_router(&c, &k, "r2", &[]);
    c.await_placement(&["d0"], Duration::from_secs(30)).await;
    // r2 stays a standby while r1 renews.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        k.lease_holder("spamscope-router").as_deref(),
        Some("r1"),
        "{}",
        tail(&r2.log_text(), 20)
    );
    assert!(!r2.log_text().contains("router is leader"));

    // r1 dies without releasing: r2 takes the Lease once it expires, then
    // the store lock, and places the new replica.
    r1.signal("-KILL");
    let t0 = Instant::now();
    wait_for(&c, "r2 holds the Lease", Duration::from_secs(30), || {
        k.lease_holder("spamscope-router").as_deref() == Some("r2")
    })
    .await;
    let took_over = t0.elapsed();
    let _d1 = c.detector("d1");
    c.await_placement(&["d0", "d1"], Duration::from_secs(60))
        .await;
    assert!(r2.log_text().contains("router is leader"));
    let lease = k.lock().leases["spamscope-router"].clone();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    eprintln!("standby took the Lease {took_over:?} after the leader died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_ready_pods_get_shards() {
    let _one = ONE_AT_A_TIME.lock().await;
    let k = FakeKube::start().await;
    k.set_pod("d0", true);
    k.set_pod("d1", false);
    let c = Cluster::start(SPAMSCOPE, 8);
    let _d0 = c.detector("d0");
    let _d1 = c.detector("d1");
    let _r = kube_router(&c, &k, "r1", &["--membership-from-pods"]);
    c.await_placement(&["d0"], Duration::from_secs(30)).await;
    // d1 heartbeats but is not Ready: still nothing for it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let owners = c.owners().await;
    assert!(owners.values().all(|o| o.replica == "d0"), "{owners:?}");
    k.set_pod("d1", true);
    c.await_placement(&["d0", "d1"], Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaler_sizes_the_detectors_from_lag() {
    let _one = ONE_AT_A_TIME.lock().await;
    let k = FakeKube::start().await;
    k.lock().statefulsets.insert("spamscope-detector".into(), 1);
    let c = Cluster::start(SPAMSCOPE, 8);
    let _r = kube_router(
        &c,
        &k,
        "r1",
        &[
            "--autoscale-min",
            "1",
            "--autoscale-max",
            "4",
            "--autoscale-lag-per-replica",
            "100",
            "--autoscale-interval-s",
            "1",
            "--autoscale-cooldown-s",
            "0",
        ],
    );
    let store = spamscope_store::Store::open(Some(&c.redis.url()), "spamscope:")
        .await
        .unwrap();
    let lag = |pending| spamscope_store::Progress {
        last_sequence: 1,
        pending,
    };
    // 350 pending over two shards: four replicas (the max).
    store.set_progress(0, lag(300)).await.unwrap();
    store.set_progress(1, lag(50)).await.unwrap();
    wait_for(&c, "scaled out to 4", Duration::from_secs(30), || {
        k.lock().statefulsets["spamscope-detector"] == 4
    })
    .await;
    // Caught up: back in, one replica per look, down to the min.
    store.set_progress(0, lag(0)).await.unwrap();
    store.set_progress(1, lag(0)).await.unwrap();
    wait_for(&c, "scaled in to 1", Duration::from_secs(30), || {
        k.lock().statefulsets["spamscope-detector"] == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_scale_and_status() {
    let _one = ONE_AT_A_TIME.lock().await;
    let k = FakeKube::start().await;
    k.lock().statefulsets.insert("spamscope-detector".into(), 2);
    let c = Cluster::start(SPAMSCOPE, 8);
    let _d0 = c.detector("d0");
    let _d1 = c.detector("d1");
    let _r = c.router("r0");
    c.await_placement(&["d0", "d1"], Duration::from_secs(30))
        .await;

    let mut scale = vec!["scale".to_owned(), "--detectors".into(), "3".into()];
    scale.extend(kube_flags(&k));
    let (ok, out, err) = ctl(&scale);
    assert!(ok, "{err}");
    assert!(out.contains("2 -> 3"), "{out}");
    assert_eq!(k.lock().statefulsets["spamscope-detector"], 3);

    let mut status = vec![
        "status".to_owned(),
        "--redis-url".into(),
        c.redis.url(),
        "--kube".into(),
        "--shards".into(),
    ];
    status.extend(kube_flags(&k));
    let (ok, out, err) = ctl(&status);
    assert!(ok, "{err}");
    assert!(out.contains("live detector replicas: 2"), "{out}");
    assert!(out.contains("3 wanted"), "{out}");
    let (ok, out, err) = ctl(&[
        "status".into(),
        "--redis-url".into(),
        c.redis.url(),
        "--json".into(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let owned: u64 = ["d0", "d1"]
        .iter()
        .map(|r| v["replicas"][r]["shards"].as_u64().unwrap())
        .sum();
    assert_eq!(owned, 8, "{v}");
    assert_eq!(v["unowned_shards"], 0);

    // Bad input: a clear error, exit 64.
    let (ok, _, err) = ctl(&["scale".into(), "--detectors".into(), "-1".into()]);
    assert!(!ok && err.contains("--detectors"), "{err}");
    let mut missing = vec!["scale".to_owned(), "--detectors".into(), "1".into()];
    missing.extend(kube_flags(&k));
    missing.extend(["--detector-statefulset".into(), "nope".into()]);
    let (ok, _, err) = ctl(&missing);
    assert!(!ok && err.contains("nope"), "{err}");
}

/// Every call the code makes is one the chart's Role grants, and the Role
/// grants nothing else: the code's list (`spamscope_kube::API_CALLS`) is
/// what the fake API server saw across leadership, membership, scaling and
/// status, and equals `helm/spamscope/rbac.json`, which `make helm-lint`
/// compares with the rendered Role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_covers_exactly_the_api_calls() {
    let _one = ONE_AT_A_TIME.lock().await;
    let k = FakeKube::start().await;
    k.lock().statefulsets.insert("spamscope-detector".into(), 1);
    k.set_pod("d0", true);
    let c = Cluster::start(SPAMSCOPE, 4);
    let _d0 = c.detector("d0");
    let mut r = kube_router(
        &c,
        &k,
        "r1",
        &[
            "--membership-from-pods",
            "--autoscale-max",
            "2",
            "--autoscale-interval-s",
            "1",
        ],
    );
    c.await_placement(&["d0"], Duration::from_secs(30)).await;
    let mut scale = vec!["scale".to_owned(), "--detectors".into(), "1".into()];
    scale.extend(kube_flags(&k));
    assert!(ctl(&scale).0);
    // SIGTERM: the router releases its Lease (an update).
    r.signal("-TERM");
    r.wait(Duration::from_secs(20)).expect("router exits");
    wait_for(&c, "lease released", Duration::from_secs(5), || {
        k.lease_holder("spamscope-router").is_none()
    })
    .await;

    let seen: BTreeSet<(String, String, String)> = k.lock().calls.clone();
    let code: BTreeSet<(String, String, String)> = spamscope_kube::API_CALLS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    assert_eq!(seen, code, "calls seen vs spamscope_kube::API_CALLS");
    let chart: Vec<(String, String, String)> =
        serde_json::from_str(&std::fs::read_to_string(repo("helm/spamscope/rbac.json")).unwrap())
            .unwrap();
    let chart: BTreeSet<_> = chart.into_iter().collect();
    assert_eq!(chart, code, "helm/spamscope/rbac.json vs the code");
}
