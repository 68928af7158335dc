#!/usr/bin/env python3
"""Checks of the deploy/ files no Debian tool validates: OpenTelemetry Collector, promtail,
Kubernetes manifests, Grafana provisioning, dwcpd's example config. Needs PyYAML (Debian
python3-yaml). Each file must parse, and hold what the guide and docs/deploy.md promise.

Usage: check_yaml.py [--root REPO]    exit status 1 on any finding.
"""

import argparse
import glob
import os
import re
import sys

import yaml


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")))
    args = ap.parse_args()
    root = args.root
    findings = []

    def fail(where, what):
        findings.append(f"{where}: {what}")

    def load(rel, multi=False):
        try:
            with open(os.path.join(root, rel), encoding="utf-8") as f:
                return list(yaml.safe_load_all(f)) if multi else yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            fail(rel, f"does not load: {e}")
            return [] if multi else {}

    # Every YAML file of deploy/ parses.
    for path in sorted(glob.glob(os.path.join(root, "deploy/**/*.y*ml"), recursive=True)):
        load(os.path.relpath(path, root), multi=True)

    # --- OpenTelemetry Collector -----------------------------------------------------------
    rel = "deploy/otel/otel-collector.yaml"
    otel = load(rel) or {}
    svc = otel.get("service", {})
    for name, pipe in svc.get("pipelines", {}).items():
        for kind in ("receivers", "processors", "exporters"):
            for comp in pipe.get(kind, []):
                if comp not in (otel.get(kind) or {}):
                    fail(rel, f"pipeline {name} uses undefined {kind[:-1]} {comp}")
    for ext in svc.get("extensions", []):
        if ext not in (otel.get("extensions") or {}):
            fail(rel, f"undefined extension {ext}")
    traces = svc.get("pipelines", {}).get("traces", {})
    if (otel.get("receivers", {}).get("otlp", {}).get("protocols", {}).get("grpc", {})
            .get("endpoint", "")).rsplit(":", 1)[-1] != "4317":
        fail(rel, "OTLP gRPC receiver must listen on 4317 (guide 1, dwcpd's otlp_endpoint)")
    procs = traces.get("processors", [])
    if "tail_sampling" not in procs or (procs and procs[0] != "memory_limiter"):
        fail(rel, "traces pipeline: memory_limiter first, then tail_sampling")
    types = {p.get("type") for p in otel.get("processors", {}).get("tail_sampling", {}).get("policies", [])}
    for t in ("status_code", "latency", "probabilistic"):
        if t not in types:
            fail(rel, f"tail_sampling lacks a {t} policy (errors + slow + probabilistic)")
    if not any(e.startswith(("otlp", "jaeger")) for e in traces.get("exporters", [])):
        fail(rel, "traces are not exported to Jaeger (OTLP)")

    # --- promtail ------------------------------------------------------------------------
    rel = "deploy/loki/promtail.yaml"
    pt = load(rel) or {}
    jobs = pt.get("scrape_configs", [])
    ok = False
    for job in jobs:
        for sc in job.get("static_configs", []):
            labels = sc.get("labels", {})
            if labels.get("job") == "dwcp-v3" and labels.get("__path__"):
                ok = True
        extracted = set()
        for stage in job.get("pipeline_stages", []):
            if "json" in stage:
                extracted |= set(stage["json"].get("expressions", {}))
        for field in ("level", "component", "trace_id", "vm_id"):
            if field not in extracted:
                fail(rel, f"job {job.get('job_name')}: json stage does not extract {field}")
    if not ok:
        fail(rel, 'no file job labelled job="dwcp-v3"')
    if not any(c.get("url", "").endswith("/loki/api/v1/push") for c in pt.get("clients", [])):
        fail(rel, "no Loki push client")

    # --- Kubernetes ------------------------------------------------------------------------
    kinds = {}
    for path in sorted(glob.glob(os.path.join(root, "deploy/k8s/*.yaml"))):
        rel = os.path.relpath(path, root)
        for doc in load(rel, multi=True):
            if not doc:
                continue
            kind = doc.get("kind")
            if kind == "Kustomization":
                for r in doc.get("resources", []):
                    if not os.path.exists(os.path.join(root, "deploy/k8s", r)):
                        fail(rel, f"resource {r} missing")
                continue
            if not doc.get("apiVersion") or not kind or not doc.get("metadata", {}).get("name"):
                fail(rel, "needs apiVersion, kind and metadata.name")
            kinds[kind] = (rel, doc)
    for kind in ("Namespace", "ConfigMap", "Service"):
        if kind not in kinds:
            fail("deploy/k8s", f"no {kind}")
    workload = kinds.get("DaemonSet") or kinds.get("StatefulSet")
    if not workload:
        fail("deploy/k8s", "no DaemonSet or StatefulSet for dwcpd")
    else:
        rel, doc = workload
        tmpl = doc["spec"]["template"]
        ann = tmpl.get("metadata", {}).get("annotations", {})
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != "8080":
            fail(rel, "pod template needs prometheus.io/scrape \"true\" and prometheus.io/port \"8080\"")
        c = tmpl["spec"]["containers"][0]
        if not any(a.startswith("--config") for a in c.get("args", [])):
            fail(rel, "dwcpd must be started with --config")
        if not (c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz"):
            fail(rel, "readinessProbe must be GET /readyz")
        labels = tmpl.get("metadata", {}).get("labels", {})
        selector = doc["spec"]["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in selector.items()):
            fail(rel, "selector does not match the pod template's labels")
        svc = kinds.get("Service", (None, {}))[1]
        if svc and any(labels.get(k) != v for k, v in svc["spec"].get("selector", {}).items()):
            fail("deploy/k8s/service.yaml", "selector matches no dwcpd pod")
    if "ConfigMap" in kinds:
        rel, doc = kinds["ConfigMap"]
        try:
            cfg = yaml.safe_load(doc["data"]["dwcp.yaml"])
            if not isinstance(cfg, dict):
                raise ValueError("not a mapping")
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            fail(rel, f"data.dwcp.yaml is not a dwcpd config: {e}")

    # --- Grafana provisioning --------------------------------------------------------------
    rel = "deploy/grafana/provisioning/datasources/dwcp-v3.yaml"
    ds = {d.get("uid"): d for d in (load(rel) or {}).get("datasources", [])}
    for uid, typ in (("dwcp-prometheus", "prometheus"), ("dwcp-loki", "loki")):
        if ds.get(uid, {}).get("type") != typ:
            fail(rel, f"needs a {typ} data source with uid {uid} (the dashboards' defaults)")
    rel = "deploy/grafana/provisioning/dashboards/dwcp-v3.yaml"
    provs = (load(rel) or {}).get("providers", [])
    if not any(p.get("type") == "file" and p.get("options", {}).get("path") for p in provs):
        fail(rel, "needs a file provider with options.path")

    # --- container -------------------------------------------------------------------------
    rel = "deploy/container/Containerfile"
    text = open(os.path.join(root, rel), encoding="utf-8").read()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    if not froms or not all(re.match(r"(docker\.io/library/)?debian:12", f) for f in froms):
        fail(rel, f"every stage must be Debian 12: {froms}")
    if "scripts/install-deps.sh" not in text or "cmake --build" not in text:
        fail(rel, "must build with scripts/install-deps.sh and cmake")
    if re.search(r"\b(curl|wget)\s+[^\n]*https?://", text):
        fail(rel, "downloads something outside Debian's archive")

    for f in findings:
        print("FAIL " + f)
    print(f"check_yaml: {len(findings)} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
