//! OpenTelemetry end to end: every role runs as its own process with an OTLP
//! endpoint pointing at a real OTLP/gRPC receiver on loopback (the
//! collector's trace and metrics services, served by tonic). One chat event
//! must leave spans with one trace id in ingest, the detector, the history
//! writer and the gateway, each the child of the hop before; every role's
//! `/metrics` must pass `promtool check metrics` (Debian `prometheus`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::*;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use spamscope_proto::v1::watch_channel_event;

/// One received span.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    span_id: Vec<u8>,
    parent: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct Receiver {
    /// trace id → spans.
    traces: Arc<Mutex<BTreeMap<Vec<u8>, Vec<Got>>>>,
    /// service.name of every metrics export.
    metric_services: Arc<Mutex<BTreeSet<String>>>,
}

fn service_name(r: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    r.and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map_or(String::new(), |v| match v {
            AnyValue::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut traces = self.traces.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = service_name(rs.resource.as_ref());
            for ss in rs.scope_spans {
                for s in ss.spans {
                    traces.entry(s.trace_id.clone()).or_default().push(Got {
                        service: service.clone(),
                        name: s.name,
                        span_id: s.span_id,
                        parent: s.parent_span_id,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut got = self.metric_services.lock().unwrap();
        for rm in req.into_inner().resource_metrics {
            got.insert(service_name(rm.resource.as_ref()));
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// The hops one traced chat event goes through, in order.
const HOPS: [(&str, &str); 4] = [
    ("spamscope-ingest", "ingest.publish"),
    ("spamscope-detector", "detector.detect"),
    ("spamscope-history-writer", "history.write"),
    ("spamscope-gateway", "gateway.watch"),
];

/// A trace holding every hop, each span the child of the hop before.
fn complete_trace(traces: &BTreeMap<Vec<u8>, Vec<Got>>) -> Option<Vec<u8>> {
    traces.iter().find_map(|(id, spans)| {
        let find = |(svc, name): (&str, &str)| {
            spans
                .iter()
                .find(|s| s.service == svc && s.name == name)
                .cloned()
        };
        let ingest = find(HOPS[0])?;
        let detect = find(HOPS[1])?;
        let write = find(HOPS[2])?;
        let watch = find(HOPS[3])?;
        (ingest.parent.is_empty()
            && detect.parent == ingest.span_id
            && write.parent == detect.span_id
            && watch.parent == detect.span_id)
            .then(|| id.clone())
    })
}

async fn metrics_text(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest_get(&url).await {
            return r;
        }
        assert!(Instant::now() < deadline, "{url} did not answer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A plain HTTP/1.1 GET over a TCP socket (the test needs no HTTP client).
async fn reqwest_get(url: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or("not http")?;
    let (host, path) = rest.split_once('/').ok_or("no path")?;
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let (head, body) = buf.split_once("\r\n\r\n").ok_or("no body")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_owned());
    }
    Ok(body.to_owned())
}

fn promtool_check(text: &str, role: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool on PATH (Debian package prometheus; scripts/install-deps.sh test)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejects the /metrics of {role}:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_one_trace_across_services_and_every_role_serves_metrics() {
    let receiver = Receiver::default();
    let otlp_port = free_port();
    let server = {
        let r = receiver.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(r.clone()))
                .add_service(MetricsServiceServer::new(r))
                .serve(([127, 0, 0, 1], otlp_port).into()),
        )
    };

    let mut c = Cluster::start(SPAMSCOPE, 4);
    c.env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://127.0.0.1:{otlp_port}"),
        ),
        ("OTEL_TRACES_SAMPLER".into(), "parentbased_always_on".into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
        ("OTEL_METRIC_EXPORT_INTERVAL".into(), "1000".into()),
    ];
    let dir = TempDir::new("telemetry");
    let port = |p: u16| format!("127.0.0.1:{p}");
    let health: BTreeMap<&str, u16> = ["detector", "router", "history-writer", "gateway", "ingest"]
        .into_iter()
        .map(|r| (r, free_port()))
        .collect();
    let d0 = c.role(
        "d0",
        "detector",
        &[
            "--replica-id",
            "d0",
            "--health-listen",
            &port(health["detector"]),
        ],
    );
    let r0 = c.role(
        "r0",
        "router",
        &["--health-listen", &port(health["router"])],
    );
    let writer_db = dir.0.join("writer.redb");
    let writer = c.role(
        "history-writer",
        "history-writer",
        &[
            "--history-path",
            writer_db.to_str().unwrap(),
            "--health-listen",
            &port(health["history-writer"]),
        ],
    );
    let gw_addr = port(free_port());
    let gw_db = dir.0.join("gateway.redb");
    let gw = c.role(
        "gateway",
        "gateway",
        &[
            "--no-writer",
            "--listen",
            &gw_addr,
            "--history-path",
            gw_db.to_str().unwrap(),
            "--health-listen",
            &port(health["gateway"]),
        ],
    );
    c.await_placement(&["d0"], Duration::from_secs(60)).await;

    let mut ing = c.role(
        "ingest",
        "ingest",
        &[
            "--speed",
            "50",
            "--health-listen",
            &port(health["ingest"]),
            xqcow().to_str().unwrap(),
        ],
    );
    // Watch the channel as soon as its chat is in (before, it is unknown:
    // NOT_FOUND).
    let mut client = gateway_client(&gw_addr, &gw).await;
    let mut watch =
        spamscope_testkit::jetstream::watch_once_known(&mut client, "twitch.xqcow").await;
    let watched = tokio::spawn(async move {
        let mut outputs = 0u64;
        while let Some(Ok(ev)) = watch.next().await {
            if !matches!(ev.kind, Some(watch_channel_event::Kind::Chat(_))) {
                outputs += 1;
            }
        }
        outputs
    });

    // Scrape ingest while it runs (it exits when the log is published),
    // once its first publish is acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ingest_metrics = loop {
        let text = metrics_text(health["ingest"]).await;
        if text.contains("spamscope_events_out_total{") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    finish(&mut ing);

    let deadline = Instant::now() + Duration::from_secs(90);
    let trace = loop {
        if let Some(t) = complete_trace(&receiver.traces.lock().unwrap()) {
            break t;
        }
        if Instant::now() > deadline {
            let traces = receiver.traces.lock().unwrap();
            let seen: BTreeSet<(String, String)> = traces
                .values()
                .flatten()
                .map(|s| (s.service.clone(), s.name.clone()))
                .collect();
            panic!(
                "no trace crosses every service ({} traces; spans seen: {seen:?})\n{}",
                traces.len(),
                c.log_tails(15)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let spans = receiver.traces.lock().unwrap()[&trace].clone();
    for (svc, name) in HOPS {
        assert!(
            spans.iter().any(|s| s.service == svc && s.name == name),
            "{svc}/{name} missing from {spans:?}"
        );
    }

    // Metrics: Prometheus text on every role, accepted by promtool, with the
    // counters each role must have moved.
    promtool_check(&ingest_metrics, "ingest");
    assert!(ingest_metrics.contains("spamscope_events_out_total{"));
    let expect: [(&str, &[&str]); 4] = [
        (
            "detector",
            &[
                "spamscope_events_in_total{",
                "spamscope_detector_outputs_total{",
                "spamscope_consumer_lag{",
                "spamscope_detector_shards{",
            ],
        ),
        ("router", &["spamscope_router_shards_moved_total{"]),
        ("history-writer", &["spamscope_events_out_total{"]),
        ("gateway", &["spamscope_events_out_total{"]),
    ];
    for (role, names) in expect {
        let text = metrics_text(health[role]).await;
        promtool_check(&text, role);
        for n in names {
            assert!(text.contains(n), "{role} /metrics lacks {n}:\n{text}");
        }
    }
    // The same metrics went out over OTLP.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = receiver.metric_services.lock().unwrap().clone();
        if [
            "spamscope-detector",
            "spamscope-router",
            "spamscope-gateway",
        ]
        .iter()
        .all(|s| got.contains(*s))
        {
            break;
        }
        assert!(Instant::now() < deadline, "OTLP metrics only from {got:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    drop((d0, r0, writer, gw));
    let outputs = watched.await.unwrap();
    assert!(outputs > 0, "the watcher saw no outputs");
    server.abort();
}
