#!/usr/bin/env python3
"""Static checks of deploy/ that promtool and amtool do not make (Python standard library only).

  * Grafana dashboards (deploy/grafana/dashboards/*.json): valid JSON, the uid, title list and
    refresh the guide's section 6 asks for, unique panel ids, a grid position and a data
    source on every panel, an expression on every target, the template variables of 6.4.
  * Every metric name in a dashboard query, a rule (deploy/prometheus/rules/) or a guide query
    (deploy/prometheus/guide-queries.yml) is exported by dwcpd, recorded by a recording rule,
    standard, or listed as pending with its issue number (tests/deploy/metrics.txt).
  * Every alert has severity (warning|critical) and component labels and summary, description
    and runbook_url annotations; each runbook_url is an anchor of docs/runbook.md; and the
    promtool tests (deploy/prometheus/tests/) have a firing and a not-firing case for it.
  * Every query of the dashboards, of guide-queries.yml and of docs/runbook.md's `q '...'`
    commands parses: they are written as recording rules into a temporary file for
    `promtool check rules` (--promtool).

Usage: check_deploy.py [--root REPO] [--promtool PATH]    exit status 1 on any finding.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

# Guide section 6: file -> (uid, title of each panel in order). The 6.1 dashboards have
# exactly the guide's panels; the 6.2 ones one panel per listed metric.
DASHBOARDS = {
    "phase6-production-live.json": ("dwcp-v3-phase6-live", [
        "GO/NO-GO Decision Indicator", "Rollout Progress by Stage",
        "Migration Latency (P50/P95/P99)", "Throughput Real-Time", "Component Health Matrix",
        "Error Distribution", "Anomaly Detection Timeline", "v1 vs v3 Comparison"]),
    "real-time-performance.json": ("dwcp-v3-real-time", [
        "Latency Heatmap", "Throughput by Component", "Error Rate Trends",
        "Resource Utilization", "Network Flow Diagram"]),
    "sla-compliance.json": ("dwcp-v3-sla", [
        "Overall SLA Compliance", "SLA Breakdown (Latency/Throughput/Errors)",
        "Violation Timeline", "Compliance Trends", "Error Budget Burn Rate"]),
    "amst.json": ("dwcp-v3-amst", [
        "Throughput by stream count", "RDMA vs TCP performance", "Stream saturation",
        "Mode switching frequency"]),
    "hde.json": ("dwcp-v3-hde", [
        "Compression ratio by algorithm", "Deduplication effectiveness", "Compression latency",
        "Data pattern analysis"]),
    "pba.json": ("dwcp-v3-pba", [
        "Prediction accuracy", "LSTM model performance", "Bandwidth utilization",
        "Prediction error distribution"]),
    "acp.json": ("dwcp-v3-acp", [
        "Consensus latency", "Quorum health", "Byzantine detection",
        "Leader election frequency"]),
}
REFRESH = {"phase6-production-live.json": "5s"}

# Guide 6.4.
VARIABLES = {
    "component": "label_values(dwcp_v3_component_health, component)",
    "region": "label_values(dwcp_v3_rollout_progress_percent, region)",
    "interval": "1m,5m,10m,30m,1h",
}

# How Grafana fills the variables when "All" (.*) and the default interval are selected;
# tests/integration/prometheus_stack_test.cc substitutes the same way.
SUBSTITUTIONS = [
    (re.compile(r"\$\{?component\}?"), ".*"),
    (re.compile(r"\$\{?region\}?"), ".*"),
    (re.compile(r"\$\{?interval\}?"), "5m"),
    (re.compile(r"\$\{?__rate_interval\}?"), "1m"),
]

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "inf", "nan", "atan2", "le",
}


class Findings:
    def __init__(self):
        self.items = []

    def add(self, where, what):
        self.items.append(f"{where}: {what}")


def substitute(expr):
    for pattern, value in SUBSTITUTIONS:
        expr = pattern.sub(value, expr)
    return expr


def metric_names(expr):
    """The metric names (and recording rule names) an expression selects."""
    e = substitute(expr)
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)          # string literals
    e = re.sub(r"'(?:[^'\\]|\\.)*'", "''", e)
    e = re.sub(r"#[^\n]*", "", e)                       # comments
    e = re.sub(r"\{[^}]*\}", "", e)                     # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                    # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?\b", " ", e)  # numbers (1e9 is no name)
    e = re.sub(r"\boffset\s+-?\w+", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        rest = e[m.end():]
        if re.match(r"\s*\(", rest):                    # a function or aggregation
            continue
        if m.group(0) in PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def load_catalogue(path, findings):
    cat = {}
    for n, line in enumerate(open(path, encoding="utf-8"), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 3 or parts[1] not in ("counter", "gauge", "histogram") or \
                parts[2] not in ("exported", "pending", "standard"):
            findings.add(f"{path}:{n}", "expected '<name> <counter|gauge|histogram> "
                         "<exported|pending ISSUE NOTE|standard>'")
            continue
        if parts[2] == "pending" and (len(parts) < 5 or not parts[3].isdigit()):
            findings.add(f"{path}:{n}", f"pending metric {parts[0]} needs an issue number and a note")
            continue
        cat[parts[0]] = {"type": parts[1], "status": parts[2],
                         "issue": parts[3] if parts[2] == "pending" else None}
    return cat


def known(name, catalogue, recorded):
    if name in recorded:
        return True
    if name in catalogue:
        return catalogue[name]["type"] != "histogram"
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and catalogue.get(base, {}).get("type") == "histogram":
            return True
    return False


def yaml_values(text, key):
    """Values of `key:` in a YAML file written like ours: plain, quoted, or a | / > block."""
    out = []
    lines = text.split("\n")
    i = 0
    pat = re.compile(r"^(\s*)(?:- )?" + re.escape(key) + r":\s*(.*)$")
    while i < len(lines):
        m = pat.match(lines[i])
        if not m:
            i += 1
            continue
        indent, value = len(m.group(1)), m.group(2).strip()
        if value in ("|", ">", "|-", ">-"):
            block = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or
                                      len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i].strip())
                i += 1
            out.append(("\n" if value.startswith("|") else " ").join(block).strip())
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
            if m.group(0).rstrip().endswith("'"):
                value = value.replace("''", "'")
        out.append(value)
        i += 1
    return out


def github_anchors(markdown):
    anchors = set()
    for line in markdown.split("\n"):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            anchors.add(slug)
        for a in re.findall(r'<a\s+(?:id|name)="([^"]+)"', line):
            anchors.add(a)
    return anchors


def check_dashboards(root, catalogue, recorded, findings, queries):
    ddir = os.path.join(root, "deploy/grafana/dashboards")
    present = {os.path.basename(p) for p in glob.glob(os.path.join(ddir, "*.json"))}
    for extra in sorted(present - set(DASHBOARDS)):
        findings.add(f"deploy/grafana/dashboards/{extra}", "not a dashboard of guide section 6 "
                     "(add it to tests/deploy/check_deploy.py)")
    uids = set()
    for name, (uid, titles) in DASHBOARDS.items():
        where = f"deploy/grafana/dashboards/{name}"
        try:
            d = json.load(open(os.path.join(ddir, name), encoding="utf-8"))
        except FileNotFoundError:
            findings.add(where, "missing")
            continue
        except json.JSONDecodeError as e:
            findings.add(where, f"invalid JSON: {e}")
            continue
        if d.get("uid") != uid:
            findings.add(where, f"uid is {d.get('uid')!r}, the guide's URL needs {uid!r}")
        if d.get("uid") in uids:
            findings.add(where, "uid used twice")
        uids.add(d.get("uid"))
        if not d.get("title"):
            findings.add(where, "no title")
        if name in REFRESH and d.get("refresh") != REFRESH[name]:
            findings.add(where, f"refresh is {d.get('refresh')!r}, the guide says {REFRESH[name]}")
        if not isinstance(d.get("schemaVersion"), int):
            findings.add(where, "no schemaVersion")

        variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
        for var, definition in VARIABLES.items():
            v = variables.get(var)
            if v is None:
                findings.add(where, f"template variable ${var} missing (guide 6.4)")
                continue
            got = v.get("definition") or v.get("query")
            if isinstance(got, dict):
                got = got.get("query")
            if got != definition:
                findings.add(where, f"${var} is {got!r}, guide 6.4 says {definition!r}")
            if var in ("component", "region") and (not v.get("includeAll") or v.get("allValue") != ".*"):
                findings.add(where, f"${var} needs includeAll with allValue .*")
            if var != "interval":
                for n in metric_names(definition.replace("label_values(", "").split(",")[0]):
                    if not known(n, catalogue, recorded):
                        findings.add(where, f"${var} uses unknown metric {n}")

        panels = []
        for p in d.get("panels", []):
            panels.append(p)
            panels.extend(p.get("panels", []))  # collapsed rows
        panels = [p for p in panels if p.get("type") != "row"]
        got_titles = [p.get("title") for p in panels]
        if got_titles != titles:
            findings.add(where, f"panels {got_titles} != guide's {titles}")
        ids = [p.get("id") for p in panels]
        if len(ids) != len(set(ids)) or any(not isinstance(i, int) for i in ids):
            findings.add(where, f"panel ids not unique integers: {ids}")
        for p in panels:
            pw = f"{where} panel {p.get('id')} {p.get('title')!r}"
            gp = p.get("gridPos", {})
            if not all(isinstance(gp.get(k), int) for k in ("x", "y", "w", "h")) or \
                    gp.get("x", 0) + gp.get("w", 0) > 24:
                findings.add(pw, f"bad gridPos {gp}")
            if not p.get("datasource"):
                findings.add(pw, "no datasource")
            if not p.get("targets"):
                findings.add(pw, "no targets")
            refs = [t.get("refId") for t in p.get("targets", [])]
            if len(refs) != len(set(refs)):
                findings.add(pw, f"refIds not unique: {refs}")
            for t in p.get("targets", []):
                expr = (t.get("expr") or "").strip()
                tw = f"{pw} target {t.get('refId')}"
                if not expr:
                    findings.add(tw, "no expr")
                    continue
                ds = t.get("datasource") or p.get("datasource")
                if (ds or {}).get("type") != "prometheus":
                    findings.add(tw, f"datasource {ds} is not Prometheus")
                for n in sorted(metric_names(expr)):
                    if not known(n, catalogue, recorded):
                        findings.add(tw, f"metric {n} is neither exported, recorded nor listed "
                                     "as pending in tests/deploy/metrics.txt")
                queries.append((f"{name}: {p.get('title')} / {t.get('refId')}", expr))
        for a in d.get("annotations", {}).get("list", []):
            if a.get("builtIn"):
                continue
            expr = a.get("expr", "")
            ds = (a.get("datasource") or {}).get("type")
            if ds == "loki" and not expr.startswith('{job="dwcp-v3"}'):
                findings.add(f"{where} annotation {a.get('name')!r}",
                             "Loki queries select {job=\"dwcp-v3\"} (deploy/loki/promtail.yaml)")
            elif ds not in ("loki", "prometheus"):
                findings.add(f"{where} annotation {a.get('name')!r}", f"unexpected datasource {ds}")


def check_guide_queries(root, catalogue, recorded, findings, queries):
    path = "deploy/prometheus/guide-queries.yml"
    text = open(os.path.join(root, path), encoding="utf-8").read()
    sections = yaml_values(text, "section")
    titles = yaml_values(text, "title")
    exprs = yaml_values(text, "expr")
    if not (len(sections) == len(titles) == len(exprs)):
        findings.add(path, f"{len(sections)} sections, {len(titles)} titles, {len(exprs)} exprs")
        return
    counts = {}
    for sec, title, expr in zip(sections, titles, exprs):
        counts[sec] = counts.get(sec, 0) + 1
        for n in sorted(metric_names(expr)):
            if not known(n, catalogue, recorded):
                findings.add(f"{path} {sec} {title!r}", f"metric {n} unknown")
        queries.append((f"guide {sec}: {title}", expr))
    # Guide 7.1-7.5 hold 4, 4, 4, 3, 3 queries; 8.1-8.4 have 2, 4, 4, 1 PromQL steps.
    expected = {"7.1": 4, "7.2": 4, "7.3": 4, "7.4": 3, "7.5": 3,
                "8.1": 2, "8.2": 4, "8.3": 4, "8.4": 1}
    for sec, n in expected.items():
        if counts.get(sec, 0) != n:
            findings.add(path, f"section {sec} has {counts.get(sec, 0)} queries, the guide {n}")


def check_runbook_queries(root, catalogue, recorded, findings, queries):
    """The PromQL of docs/runbook.md's `q '...'` commands: known metrics, and it parses."""
    path = os.path.join(root, "docs/runbook.md")
    if not os.path.exists(path):
        return
    for m in re.finditer(r"\bq '([^']*)'", open(path, encoding="utf-8").read()):
        expr = m.group(1)
        for n in sorted(metric_names(expr)):
            if not known(n, catalogue, recorded):
                findings.add("docs/runbook.md", f"metric {n} in {expr!r} unknown")
        queries.append((f"docs/runbook.md: {expr[:60]}", expr))


def rule_blocks(text, kind):
    """(name, block text) for each `- alert:` or `- record:` entry."""
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"^\s*- " + kind + r":\s*(\S+)", text, re.M)]
    ends = [s for s, _ in starts[1:]] + [len(text)]
    return [(name, text[s:e]) for (s, name), e in zip(starts, ends)]


def check_rules(root, catalogue, recorded, findings):
    rdir = os.path.join(root, "deploy/prometheus/rules")
    runbook_path = os.path.join(root, "docs/runbook.md")
    anchors = github_anchors(open(runbook_path, encoding="utf-8").read()) \
        if os.path.exists(runbook_path) else set()
    if not anchors:
        findings.add("docs/runbook.md", "missing or without headings")
    alerts = {}
    for path in sorted(glob.glob(os.path.join(rdir, "*.yml"))):
        rel = os.path.relpath(path, root)
        text = open(path, encoding="utf-8").read()
        for expr in yaml_values(text, "expr"):
            for n in sorted(metric_names(expr)):
                if not known(n, catalogue, recorded):
                    findings.add(rel, f"metric {n} in {expr.splitlines()[0]!r} unknown")
        for name, block in rule_blocks(text, "alert"):
            where = f"{rel} alert {name}"
            alerts.setdefault(name, 0)
            alerts[name] += 1
            sev = re.search(r"^\s+severity:\s*(\S+)", block, re.M)
            if not sev or sev.group(1).strip("'\"") not in ("warning", "critical"):
                findings.add(where, "needs label severity: warning|critical")
            if not re.search(r"^\s+component:\s*\S", block, re.M):
                findings.add(where, "needs a component label")
            for a in ("summary", "description", "runbook_url"):
                if not re.search(r"^\s+" + a + r":\s*\S", block, re.M):
                    findings.add(where, f"needs annotation {a}")
            for url in yaml_values(block, "runbook_url"):
                m = re.match(r"^docs/runbook\.md#(.+)$", url)
                if not m:
                    findings.add(where, f"runbook_url {url!r} is not docs/runbook.md#anchor")
                elif m.group(1) not in anchors:
                    findings.add(where, f"docs/runbook.md has no anchor #{m.group(1)}")
    if not alerts:
        findings.add("deploy/prometheus/rules", "no alerts")
    # promtool tests: a firing and a not-firing case per alert name.
    firing, quiet = set(), set()
    for path in sorted(glob.glob(os.path.join(root, "deploy/prometheus/tests/*.yml"))):
        text = open(path, encoding="utf-8").read()
        for m in re.finditer(r"alertname:\s*(\S+)\s*\n\s*exp_alerts:\s*(\[\])?", text):
            (quiet if m.group(2) else firing).add(m.group(1))
    for name in sorted(alerts):
        if name not in firing:
            findings.add("deploy/prometheus/tests", f"no test in which {name} fires")
        if name not in quiet:
            findings.add("deploy/prometheus/tests", f"no test in which {name} does not fire")
    return alerts


def check_parses(queries, promtool, findings):
    """Every query as a recording rule, for `promtool check rules` to parse."""
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write("groups:\n  - name: queries\n    rules:\n")
        for i, (_, expr) in enumerate(queries):
            f.write(f"      - record: query_{i}\n        expr: {json.dumps(substitute(expr))}\n")
        path = f.name
    try:
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            out = r.stdout + r.stderr
            for i, (where, expr) in enumerate(queries):
                if re.search(rf"\bquery_{i}\b|rule {i + 1}\b|group \"queries\", rule {i + 1},", out):
                    findings.add(where, f"does not parse: {substitute(expr)!r}")
            findings.add("promtool check rules (all queries)", out.strip()[-2000:])
    finally:
        os.unlink(path)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")))
    ap.add_argument("--promtool", default="promtool")
    args = ap.parse_args()
    findings = Findings()
    catalogue = load_catalogue(os.path.join(args.root, "tests/deploy/metrics.txt"), findings)
    recording = open(os.path.join(args.root, "deploy/prometheus/rules/recording.yml"),
                     encoding="utf-8").read()
    recorded = set(re.findall(r"^\s*- record:\s*(\S+)", recording, re.M))
    queries = []
    check_dashboards(args.root, catalogue, recorded, findings, queries)
    check_guide_queries(args.root, catalogue, recorded, findings, queries)
    alerts = check_rules(args.root, catalogue, recorded, findings)
    runbook = []
    check_runbook_queries(args.root, catalogue, recorded, findings, runbook)
    check_parses(queries + runbook, args.promtool, findings)
    pending = sorted({re.sub(r"_(bucket|sum|count)$", "", n) for _, e in queries
                      for n in metric_names(e)} & {n for n, c in catalogue.items()
                                                   if c["status"] == "pending"})
    for f in findings.items:
        print("FAIL " + f)
    print(f"check_deploy: {len(DASHBOARDS)} dashboards, {len(queries)} queries, "
          f"{len(runbook)} runbook queries, {len(recorded)} recording rules, {sum(alerts.values())} alert rules "
          f"({len(alerts)} names); pending metrics in use: {', '.join(pending) or 'none'}; "
          f"{len(findings.items)} findings")
    return 1 if findings.items else 0


if __name__ == "__main__":
    sys.exit(main())
