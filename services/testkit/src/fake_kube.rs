//! An in-process stand-in for the Kubernetes API server: the few endpoints
//! spamscope calls (Leases, the StatefulSet scale subresource, pod lists),
//! with the server's semantics that matter here (409 on a stale
//! `resourceVersion` or an existing name, 404 on a missing object), served
//! over real HTTP on loopback. Every call is recorded as
//! `(apiGroup, resource, verb)` for the RBAC check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

#[derive(Debug, Default)]
pub struct KubeState {
    pub leases: BTreeMap<String, Value>,
    /// StatefulSet name → wanted replicas.
    pub statefulsets: BTreeMap<String, u32>,
    /// Pod name → (labels, ready).
    pub pods: BTreeMap<String, (BTreeMap<String, String>, bool)>,
    pub calls: BTreeSet<(String, String, String)>,
    version: u64,
}

/// The fake API server; dropped with the test's runtime.
#[derive(Debug, Clone)]
pub struct FakeKube {
    pub url: String,
    pub state: Arc<Mutex<KubeState>>,
}

type S = Arc<Mutex<KubeState>>;

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        axum::Json(json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "reason": reason, "message": message, "code": code.as_u16(),
        })),
    )
        .into_response()
}

fn record(s: &S, group: &str, resource: &str, verb: &str) {
    s.lock()
        .unwrap()
        .calls
        .insert((group.into(), resource.into(), verb.into()));
}

async fn get_lease(State(s): State<S>, Path((_ns, name)): Path<(String, String)>) -> Response {
    record(&s, "coordination.k8s.io", "leases", "get");
    match s.lock().unwrap().leases.get(&name) {
        Some(l) => axum::Json(l.clone()).into_response(),
        None => status(StatusCode::NOT_FOUND, "NotFound", "lease not found"),
    }
}

async fn create_lease(
    State(s): State<S>,
    Path(ns): Path<String>,
    axum::Json(mut body): axum::Json<Value>,
) -> Response {
    record(&s, "coordination.k8s.io", "leases", "create");
    let mut st = s.lock().unwrap();
    let name = body["metadata"]["name"].as_str().unwrap_or("").to_owned();
    if st.leases.contains_key(&name) {
        return status(StatusCode::CONFLICT, "AlreadyExists", "lease exists");
    }
    st.version += 1;
    body["metadata"]["resourceVersion"] = json!(st.version.to_string());
    body["metadata"]["namespace"] = json!(ns);
    body["apiVersion"] = json!("coordination.k8s.io/v1");
    body["kind"] = json!("Lease");
    st.leases.insert(name, body.clone());
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

async fn replace_lease(
    State(s): State<S>,
    Path((_ns, name)): Path<(String, String)>,
    axum::Json(mut body): axum::Json<Value>,
) -> Response {
    record(&s, "coordination.k8s.io", "leases", "update");
    let mut st = s.lock().unwrap();
    let Some(cur) = st.leases.get(&name) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "lease not found");
    };
    if body["metadata"]["resourceVersion"] != cur["metadata"]["resourceVersion"] {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified",
        );
    }
    st.version += 1;
    body["metadata"]["resourceVersion"] = json!(st.version.to_string());
    st.leases.insert(name, body.clone());
    axum::Json(body).into_response()
}

fn scale_json(ns: &str, name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "selector": "app.kubernetes.io/component=detector"},
    })
}

async fn get_scale(State(s): State<S>, Path((ns, name)): Path<(String, String)>) -> Response {
    record(&s, "apps", "statefulsets/scale", "get");
    match s.lock().unwrap().statefulsets.get(&name) {
        Some(n) => axum::Json(scale_json(&ns, &name, *n)).into_response(),
        None => status(StatusCode::NOT_FOUND, "NotFound", "statefulset not found"),
    }
}

async fn patch_scale(
    State(s): State<S>,
    Path((ns, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    record(&s, "apps", "statefulsets/scale", "patch");
    // A merge patch (`application/merge-patch+json`).
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "patch is not JSON");
    };
    let mut st = s.lock().unwrap();
    let Some(n) = st.statefulsets.get_mut(&name) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "statefulset not found");
    };
    let Some(want) = body["spec"]["replicas"].as_u64() else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "spec.replicas");
    };
    *n = want as u32;
    axum::Json(scale_json(&ns, &name, *n)).into_response()
}

async fn list_pods(
    State(s): State<S>,
    Path(ns): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    record(&s, "", "pods", "list");
    let want: Vec<(String, String)> = q
        .get("labelSelector")
        .map(|sel| {
            sel.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let st = s.lock().unwrap();
    let items: Vec<Value> = st
        .pods
        .iter()
        .filter(|(_, (labels, _))| want.iter().all(|(k, v)| labels.get(k) == Some(v)))
        .map(|(name, (labels, ready))| {
            json!({
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "status": {"conditions": [
                    {"type": "Ready", "status": if *ready { "True" } else { "False" }}
                ]},
            })
        })
        .collect();
    axum::Json(json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": "1"}, "items": items,
    }))
    .into_response()
}

async fn unknown(uri: axum::http::Uri, method: axum::http::Method) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("the fake API server has no {method} {uri}"),
    )
}

impl FakeKube {
    pub async fn start() -> Self {
        let state: S = Arc::default();
        let app = Router::new()
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                axum::routing::post(create_lease),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(get_lease).put(replace_lease),
            )
            .route(
                "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}/scale",
                get(get_scale).patch(patch_scale),
            )
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .fallback(unknown)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKube { url, state }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, KubeState> {
        self.state.lock().unwrap()
    }

    /// A detector pod of the chart (its labels), Ready or not.
    pub fn set_pod(&self, name: &str, ready: bool) {
        let labels = [
            ("app.kubernetes.io/name", "spamscope"),
            ("app.kubernetes.io/component", "detector"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        self.lock().pods.insert(name.to_owned(), (labels, ready));
    }

    pub fn lease_holder(&self, name: &str) -> Option<String> {
        self.lock()
            .leases
            .get(name)
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    }
}
