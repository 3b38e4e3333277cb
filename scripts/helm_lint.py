#!/usr/bin/env python3
"""Offline checks of the Helm chart and the k8s/ manifests (`make helm-lint`).

1. Helm's own lint (strict) through Helm's Go library (PyPI helm-python-sdk),
   for the default values and every file in helm/spamscope/ci/.
2. Render each of them and validate every object with kubernetes-validate
   --strict against Kubernetes KUBE_VERSION; objects of CRDs with no schema
   there (ServiceMonitor) must at least have their required fields.
3. Invariants a user relies on: the Role grants exactly helm/spamscope/rbac.json
   (which tests/kube.rs checks against the code), only the router mounts a
   service account token, every container is non-root with a read-only root
   file system and probes on /healthz and /readyz, the detector's grace
   period outlasts its hand-over; every flag and SPAMSCOPE_ variable a
   container is given is one its role reads (docs/configuration.md, which
   a cli test keeps equal to `--help`).
4. Values the chart must refuse (schema or template), with the key named.
5. k8s/: every kustomization's resources exist and validate; the overlay's
   Helm values render.
"""

from __future__ import annotations

import json
import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "spamscope"
KUBE_VERSION = "1.33.0"
CRD_REQUIRED = {("monitoring.coreos.com/v1", "ServiceMonitor"): ["spec", "selector"]}

failures: list[str] = []


def fail(msg: str) -> None:
    failures.append(msg)
    print(f"FAIL {msg}")


def lint(values: dict, label: str) -> None:
    report = helm.lint(
        CHART, values, strict=True, namespace="spamscope", kube_version=f"v{KUBE_VERSION}"
    )
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    for m in bad:
        fail(f"helm lint [{label}]: {m.get('path')}: {m.get('error')}")
    for e in report.get("errors", []) or []:
        fail(f"helm lint [{label}]: {e}")


def render(values: dict) -> list[dict]:
    chart = helm.Chart.load(CHART)
    out = chart.render(values, name="spamscope", namespace="spamscope", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            if not text.strip():
                fail(f"{path} is empty")
            continue
        try:
            parsed = [d for d in yaml.safe_load_all(text) if d]
        except yaml.YAMLError as e:
            fail(f"{path} does not parse: {e}")
            continue
        for doc in parsed:
            doc["__path"] = path
            docs.append(doc)
    return docs


def validate(doc: dict, where: str) -> None:
    body = {k: v for k, v in doc.items() if k != "__path"}
    key = (body.get("apiVersion"), body.get("kind"))
    try:
        kubernetes_validate.validate(body, KUBE_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        need = CRD_REQUIRED.get(key)
        if need is None:
            fail(f"{where}: no schema for {key}")
            return
        node = body
        for k in need:
            if not isinstance(node, dict) or k not in node:
                fail(f"{where}: {key[1]} lacks {'.'.join(need)}")
                return
            node = node[k]
    except kubernetes_validate.ValidationError as e:
        fail(f"{where}: {key[1]} {body['metadata'].get('name')}: {e.message} at {list(e.path)}")


def pod_specs(docs: list[dict]):
    for d in docs:
        spec = d.get("spec", {})
        tpl = spec.get("template", {}).get("spec")
        if tpl:
            yield d, tpl


def check_invariants(docs: list[dict], label: str) -> None:
    want = {tuple(c) for c in json.loads((CHART / "rbac.json").read_text())}
    roles = [d for d in docs if d["kind"] == "Role"]
    got = set()
    for r in roles:
        for rule in r.get("rules", []):
            for g in rule["apiGroups"]:
                for res in rule["resources"]:
                    for v in rule["verbs"]:
                        got.add((g, res, v))
    if got != want:
        fail(f"[{label}] Role grants {sorted(got)}, the code calls {sorted(want)}")
    # Names in the Role are the objects the router is told to use.
    router = next((s for d, s in pod_specs(docs) if d["metadata"]["name"].endswith("-router")), None)
    env = {e["name"]: e.get("value") for e in router["containers"][0]["env"]} if router else {}
    named = {"leases": env.get("SPAMSCOPE_LEASE_NAME"), "statefulsets/scale": env.get("SPAMSCOPE_DETECTOR_STATEFULSET")}
    sts = {d["metadata"]["name"] for d in docs if d["kind"] == "StatefulSet"}
    if named["statefulsets/scale"] not in sts:
        fail(f"[{label}] the router scales {named['statefulsets/scale']}, rendered: {sts}")
    for r in roles:
        for rule in r.get("rules", []):
            for res in rule["resources"]:
                for n in rule.get("resourceNames", []):
                    if named.get(res) != n:
                        fail(f"[{label}] Role names {res}/{n}, the router uses {named.get(res)}")
    for d, spec in pod_specs(docs):
        name = d["metadata"]["name"]
        component = d["metadata"]["labels"].get("app.kubernetes.io/component")
        token = spec.get("automountServiceAccountToken")
        if (component == "router") != (token is True):
            fail(f"[{label}] {name}: automountServiceAccountToken={token}")
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            fail(f"[{label}] {name}: pod not runAsNonRoot")
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False:
                fail(f"[{label}] {name}/{c['name']}: securityContext too loose")
            if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                fail(f"[{label}] {name}/{c['name']}: no liveness probe on /healthz")
            if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                fail(f"[{label}] {name}/{c['name']}: no readiness probe on /readyz")
            if not c.get("resources", {}).get("limits"):
                fail(f"[{label}] {name}/{c['name']}: no resource limits")
        if d["kind"] == "StatefulSet":
            args = spec["containers"][0]["args"]
            handover = next(int(a.split("=")[1]) for a in args if a.startswith("--handover-timeout-s="))
            env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
            grace = int(env["SPAMSCOPE_SHUTDOWN_GRACE_S"])
            # The hand-over, then the role's shutdown grace.
            if spec["terminationGracePeriodSeconds"] <= handover + grace:
                fail(f"[{label}] {name}: grace period not longer than the hand-over and the shutdown grace")
    kinds = {d["kind"] for d in docs}
    for k in ["StatefulSet", "Deployment", "Service", "ConfigMap", "Role", "RoleBinding"]:
        if k not in kinds:
            fail(f"[{label}] no {k} rendered")


def role_inputs() -> dict[str, set[str]]:
    """Flags and variables each role reads, from docs/configuration.md."""
    import re

    roles: dict[str, set[str]] = {}
    outside: list[tuple[str, list[str]]] = []
    current = None
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        m = re.match(r"^## `spamscope ([a-z-]+)`", line)
        if m:
            current = roles.setdefault(m.group(1), set())
            continue
        if line.startswith("## "):
            current = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if current is not None and len(cells) >= 2 and cells[0].startswith("`--"):
            current.add(cells[0].strip("`").split()[0])
            if cells[1]:
                current.add(cells[1].strip("`"))
        elif current is None and len(cells) >= 2 and cells[0].startswith("`SPAMSCOPE_"):
            outside.append((cells[0].strip("`"), [r.strip() for r in cells[1].split(",")]))
    for var, readers in outside:
        for r in readers:
            if r in roles:
                roles[r].add(var)
    return roles


def check_role_inputs(docs: list[dict], label: str) -> None:
    roles = role_inputs()
    for d, spec in pod_specs(docs):
        for c in spec["containers"]:
            args = c.get("args", [])
            if not args or args[0] not in roles:
                continue
            known = roles[args[0]]
            for a in args[1:]:
                flag = a.split("=")[0]
                if flag.startswith("--") and flag not in known:
                    fail(f"[{label}] {d['metadata']['name']}/{c['name']}: {args[0]} has no flag {flag}")
            for e in c.get("env", []):
                n = e["name"]
                if n.startswith("SPAMSCOPE_") and n not in known:
                    fail(f"[{label}] {d['metadata']['name']}/{c['name']}: {args[0]} reads no {n}")


def check_nats_url(docs: list[dict], values: dict, label: str) -> None:
    """With nats.existingSecret every container reads the NATS URL (and its
    login) from that Secret, and the ConfigMap does not carry the URL."""
    secret = values.get("nats", {}).get("existingSecret")
    config = [d for d in docs if d["kind"] == "ConfigMap"]
    in_config = any("SPAMSCOPE_NATS_URL" in (d.get("data") or {}) for d in config)
    for d, spec in pod_specs(docs):
        for c in spec["containers"]:
            env = {e["name"]: e for e in c.get("env", [])}
            ref = env.get("SPAMSCOPE_NATS_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
            if secret and ref.get("name") != secret:
                fail(f"[{label}] {d['metadata']['name']}/{c['name']} does not read the NATS URL from {secret}")
            if not secret and ref:
                fail(f"[{label}] {d['metadata']['name']}/{c['name']} reads the NATS URL from a Secret")
    if bool(secret) == in_config:
        fail(f"[{label}] the ConfigMap {'holds' if in_config else 'lacks'} SPAMSCOPE_NATS_URL")


def check_ca_files(docs: list[dict], values: dict, label: str) -> None:
    """With nats.caSecret / redis.caSecret every container is given the
    file's path in SPAMSCOPE_NATS_CA_FILE / SPAMSCOPE_REDIS_CA_FILE, and
    with nats.clientCertSecret / redis.clientCertSecret the client
    certificate and key in SPAMSCOPE_*_CERT_FILE and SPAMSCOPE_*_KEY_FILE;
    each path lies on a mount of that Secret. Without the value, no
    container sets the variable."""
    for what in ["nats", "redis"]:
        v = values.get(what, {})
        files = [
            ("caSecret", v.get("caSecret"), v.get("caSecretKey", "ca.crt"), "CA_FILE"),
            ("clientCertSecret", v.get("clientCertSecret"), "tls.crt", "CERT_FILE"),
            ("clientCertSecret", v.get("clientCertSecret"), "tls.key", "KEY_FILE"),
        ]
        for value, secret, key, suffix in files:
            var = f"SPAMSCOPE_{what.upper()}_{suffix}"
            for d, spec in pod_specs(docs):
                volumes = {vol["name"]: vol for vol in spec.get("volumes", [])}
                for c in spec["containers"]:
                    where = f"[{label}] {d['metadata']['name']}/{c['name']}"
                    env = {e["name"]: e.get("value") for e in c.get("env", [])}
                    path = env.get(var)
                    if not secret:
                        if path:
                            fail(f"{where} sets {var} without {what}.{value}")
                        continue
                    if not path or not path.endswith("/" + key):
                        fail(f"{where} does not point {var} at {key}: {path}")
                        continue
                    mounted = [
                        m for m in c.get("volumeMounts", [])
                        if path.startswith(m["mountPath"].rstrip("/") + "/")
                        and volumes.get(m["name"], {}).get("secret", {}).get("secretName") == secret
                    ]
                    if not mounted:
                        fail(f"{where}: {path} is not on a mount of the Secret {secret}")


def check_scylla_login(docs: list[dict], values: dict, label: str) -> None:
    """With history.scylla.existingSecret (and the scylla backend) every
    container that runs the history store reads SPAMSCOPE_SCYLLA_USER and
    SPAMSCOPE_SCYLLA_PASSWORD from that Secret; without it, none does."""
    history = values.get("history", {})
    secret = history.get("scylla", {}).get("existingSecret")
    if history.get("backend", "scylla") != "scylla":
        secret = None
    for d, spec in pod_specs(docs):
        for c in spec["containers"]:
            args = c.get("args", [])
            if not args or args[0] not in ("gateway", "history-writer"):
                continue
            where = f"[{label}] {d['metadata']['name']}/{c['name']}"
            env = {e["name"]: e for e in c.get("env", [])}
            for var, key in [("SPAMSCOPE_SCYLLA_USER", "scylla-user"), ("SPAMSCOPE_SCYLLA_PASSWORD", "scylla-password")]:
                ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef", {})
                if not secret:
                    if var in env:
                        fail(f"{where} sets {var} without history.scylla.existingSecret")
                elif ref.get("name") != secret or ref.get("key") != key:
                    fail(f"{where} does not read {var} from {secret}/{key}: {ref}")


def must_refuse(values: dict, key: str) -> None:
    chart = helm.Chart.load(CHART)
    try:
        chart.validate_schema(values)
        chart.render(values, name="spamscope", namespace="spamscope", is_install=True)
    except helm.HelmError as e:
        if key not in str(e):
            fail(f"refused {values} but the error does not name {key}: {e}")
        return
    fail(f"accepted bad values {values}")


def load_yaml(path: pathlib.Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def check_k8s() -> int:
    n = 0
    for kust in sorted((ROOT / "k8s").rglob("kustomization.yaml")):
        k = load_yaml(kust)
        for res in k.get("resources", []):
            p = (kust.parent / res).resolve()
            if p.is_dir():
                if not (p / "kustomization.yaml").exists():
                    fail(f"{kust}: {res} has no kustomization.yaml")
                continue
            if not p.exists():
                fail(f"{kust}: {res} does not exist")
                continue
            for doc in yaml.safe_load_all(p.read_text()):
                if doc:
                    validate(doc, str(p.relative_to(ROOT)))
                    n += 1
        for hc in k.get("helmCharts", []):
            values = load_yaml(kust.parent / hc["valuesFile"]) if "valuesFile" in hc else {}
            lint(values, f"{kust.relative_to(ROOT)}")
            for doc in render(values):
                validate(doc, f"{kust.relative_to(ROOT)}:{doc['__path']}")
                n += 1
    return n


def main() -> int:
    helm.disable_logging()
    cases = {"default": {}}
    for f in sorted((CHART / "ci").glob("*.yaml")):
        cases[f.stem] = load_yaml(f)
    for label, values in cases.items():
        lint(values, label)
        docs = render(values)
        for d in docs:
            validate(d, f"[{label}] {d['__path']}")
        check_invariants(docs, label)
        check_role_inputs(docs, label)
        check_nats_url(docs, values, label)
        check_ca_files(docs, values, label)
        check_scylla_login(docs, values, label)
        print(f"ok   {label}: helm lint --strict, {len(docs)} objects valid for Kubernetes {KUBE_VERSION}")
    must_refuse({"shards": 0}, "shards")
    must_refuse({"shutdownGraceSeconds": 40}, "shutdownGraceSeconds")
    must_refuse({"shutdownGraceSeconds": 25, "detector": {"handoverTimeoutSeconds": 40}}, "terminationGracePeriodSeconds")
    must_refuse({"detector": {"replicas": "two"}}, "replicas")
    must_refuse({"nats": {"url": "http://nats:4222"}}, "url")
    must_refuse({"nats": {"url": "nats://nats:4222", "streamReplicas": 7}}, "streamReplicas")
    must_refuse({"secrets": {"adminToken": "short"}}, "adminToken")
    must_refuse({"bogus": 1}, "bogus")
    must_refuse({"actor": {"enabled": True}}, "actor.enabled")
    must_refuse({"actor": {"enabled": True, "helix": {"clientId": "x"}}}, "actor.helix.moderatorId")
    must_refuse({"actor": {"replicas": 2}}, "replicas")
    must_refuse({"detector": {"streamForgetSeconds": 3600}}, "streamForgetSeconds")
    must_refuse({"gateway": {"watchBuffer": 1}}, "watchBuffer")
    must_refuse(
        {"detector": {"handoverTimeoutSeconds": 60, "terminationGracePeriodSeconds": 30}},
        "terminationGracePeriodSeconds",
    )
    # Longer than the hand-over alone, but not with the 10 s shutdown grace.
    must_refuse(
        {"detector": {"handoverTimeoutSeconds": 30, "terminationGracePeriodSeconds": 35}},
        "terminationGracePeriodSeconds",
    )
    must_refuse(
        {"router": {"autoscaler": {"enabled": True}}, "detector": {"hpa": {"enabled": True}}},
        "autoscaler",
    )
    must_refuse({"history": {"backend": "embedded"}, "gateway": {"replicas": 2}}, "gateway.replicas")
    must_refuse({"ingest": {"sources": [{"name": "t", "source": "twitch", "channels": []}]}}, "sources")
    print("ok   bad values are refused, naming the key")
    n = check_k8s()
    print(f"ok   k8s/: {n} objects valid for Kubernetes {KUBE_VERSION}")
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
