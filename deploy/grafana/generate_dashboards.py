#!/usr/bin/env python3
"""Writes the Grafana dashboards of DWCP v3 (guide section 6) into deploy/grafana/dashboards/.

The JSON files are what Grafana loads (provisioning, or Dashboard -> Import); this script is
their source, so that panel ids, layout, data source references and template variables stay
consistent across the seven dashboards. Edit here, run it, commit both:

    python3 deploy/grafana/generate_dashboards.py            # rewrite the JSON files
    python3 deploy/grafana/generate_dashboards.py --check    # exit 1 if they are stale

tests/deploy/ runs --check and validates every query (tests/deploy/check_dashboards.py).
Python 3 standard library only.
"""

import argparse
import json
import os
import sys

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards")

PROM = {"type": "prometheus", "uid": "${datasource}"}
LOKI = {"type": "loki", "uid": "${loki}"}

# Per-node series carry the scrape target's `region` label (deploy/prometheus/prometheus.yml);
# "All" is .*, which also matches series without one.
R = 'region=~"$region"'
C = 'component=~"$component"'


def target(expr, legend="", ref="A", instant=False, fmt=None):
    t = {"datasource": PROM, "refId": ref, "expr": expr, "legendFormat": legend,
         "range": not instant, "instant": instant, "editorMode": "code"}
    if fmt:
        t["format"] = fmt
    return t


def targets(*specs, **kw):
    """targets((expr, legend), ...) with refIds A, B, C, ..."""
    return [target(e, l, chr(ord("A") + i), **kw) for i, (e, l) in enumerate(specs)]


def thresholds(*steps):
    """steps: (value or None, color)."""
    return {"mode": "absolute",
            "steps": [{"value": v, "color": c} for v, c in steps]}


def value_mappings(*m):
    """m: (value, text, color)."""
    return [{"type": "value",
             "options": {str(v): {"text": t, "color": c, "index": i}
                         for i, (v, t, c) in enumerate(m)}}]


def panel(kind, title, description, tgts, unit=None, w=12, h=8, defaults=None, options=None,
          overrides=None, transformations=None):
    d = {"unit": unit} if unit else {}
    d.update(defaults or {})
    p = {"type": kind, "title": title, "description": description, "datasource": PROM,
         "targets": tgts, "fieldConfig": {"defaults": d, "overrides": overrides or []},
         "options": options or {}, "_w": w, "_h": h}
    if transformations:
        p["transformations"] = transformations
    return p


def timeseries(title, description, tgts, unit=None, bars=False, stack=False, **kw):
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1,
              "fillOpacity": 80 if bars else 10, "showPoints": "never", "spanNulls": True}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    defaults = kw.pop("defaults", {})
    defaults.setdefault("custom", custom)
    options = kw.pop("options", {"legend": {"displayMode": "table", "placement": "bottom",
                                            "calcs": ["lastNotNull", "max"]},
                                 "tooltip": {"mode": "multi", "sort": "desc"}})
    return panel("timeseries", title, description, tgts, unit, defaults=defaults,
                 options=options, **kw)


def variables(with_region=True):
    v = [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {"text": "Prometheus", "value": "dwcp-prometheus"}, "hide": 0,
         "refresh": 1, "regex": "", "options": []},
        {"name": "loki", "label": "Loki", "type": "datasource", "query": "loki",
         "current": {"text": "Loki", "value": "dwcp-loki"}, "hide": 2, "refresh": 1,
         "regex": "", "options": []},
        # Guide 6.4.
        {"name": "component", "label": "Component", "type": "query", "datasource": PROM,
         "definition": "label_values(dwcp_v3_component_health, component)",
         "query": "label_values(dwcp_v3_component_health, component)",
         "refresh": 2, "includeAll": True, "allValue": ".*", "multi": True, "sort": 1,
         "current": {"text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0},
        {"name": "region", "label": "Region", "type": "query", "datasource": PROM,
         "definition": "label_values(dwcp_v3_rollout_progress_percent, region)",
         "query": "label_values(dwcp_v3_rollout_progress_percent, region)",
         "refresh": 2, "includeAll": True, "allValue": ".*", "multi": True, "sort": 1,
         "current": {"text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0},
        {"name": "interval", "label": "Interval", "type": "interval",
         "query": "1m,5m,10m,30m,1h", "auto": False, "refresh": 2, "hide": 0,
         "current": {"text": "5m", "value": "5m"},
         "options": [{"text": i, "value": i, "selected": i == "5m"}
                     for i in ["1m", "5m", "10m", "30m", "1h"]]},
    ]
    return v


def dashboard(uid, title, description, panels, refresh="30s", time_from="now-1h",
              annotations=(), tags=()):
    # Lay panels out left to right, top to bottom, on Grafana's 24-column grid.
    x = y = row_h = 0
    out = []
    for i, p in enumerate(panels, start=1):
        w, h = p.pop("_w"), p.pop("_h")
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"] = i
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x += w
        row_h = max(row_h, h)
        out.append(p)
    builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
               "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
               "name": "Annotations & Alerts", "type": "dashboard"}
    return {
        "uid": uid, "title": title, "description": description,
        "tags": ["dwcp-v3"] + list(tags), "timezone": "browser", "editable": True,
        "graphTooltip": 1, "refresh": refresh, "schemaVersion": 38, "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m", "15m"]},
        "templating": {"list": variables()},
        "annotations": {"list": [builtin] + list(annotations)},
        "links": [{"type": "dashboards", "tags": ["dwcp-v3"], "asDropdown": True,
                   "title": "DWCP v3", "includeVars": True, "keepTime": True}],
        "panels": out,
    }


def latency_quantiles(extra=""):
    sel = "{" + C + "," + R + extra + "}"
    return targets(*[(f"histogram_quantile({q}, sum by (le) (rate("
                      f"dwcp_v3_migration_latency_seconds_bucket{sel}[$interval])))", f"P{n}")
                     for q, n in (("0.50", 50), ("0.95", 95), ("0.99", 99))])


ANOMALY_LOG_ANNOTATION = {
    "name": "Anomalies (logs)", "datasource": LOKI, "enable": True, "hide": False,
    "iconColor": "red",
    "expr": '{job="dwcp-v3"} | json | message="anomaly detected"',
    "instant": False,
    "titleFormat": "{{anomaly_type}} ({{severity}})",
    "textFormat": "node {{node_id}}, vm {{vm_id}}, trace {{trace_id}}",
    "tagKeys": "anomaly_type,severity,node_id",
}


# --- 6.1 Phase 6 Live Production --------------------------------------------------------
def phase6_live():
    panels = [
        panel("stat", "GO/NO-GO Decision Indicator",
              "The rollout controller's decision per region (dwcp_v3_rollout_decision: 1 GO, "
              "0 NO-GO, 0.5 pending). A NO-GO for a minute fires DwcpV3RolloutNoGo, which "
              "rolls the region back through POST /api/v1/rollback.",
              targets(('min by (region) (dwcp_v3_rollout_decision{' + R + '})', "{{region}}")),
              w=6, h=6,
              defaults={"mappings": value_mappings((1, "GO", "green"), (0, "NO-GO", "red"),
                                                   (0.5, "PENDING", "yellow")),
                        "thresholds": thresholds((None, "red"), (0.5, "yellow"), (1, "green")),
                        "color": {"mode": "thresholds"}},
              options={"colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
                       "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
        panel("bargauge", "Rollout Progress by Stage",
              "Share of migrations sent through v3, per region and stage "
              "(dwcp_v3_rollout_progress_percent).",
              targets(('max by (region, stage) (dwcp_v3_rollout_progress_percent{' + R + '})',
                       "{{region}} / {{stage}}")),
              unit="percent", w=6, h=6,
              defaults={"min": 0, "max": 100,
                        "thresholds": thresholds((None, "blue"), (100, "green"))},
              options={"orientation": "horizontal", "displayMode": "gradient",
                       "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
        timeseries("Migration Latency (P50/P95/P99)",
                   "Quantiles of the total time of finished migrations over $interval "
                   "(dwcp_v3_migration_latency_seconds; $component filters by the component "
                   "that took the largest share). The SLA objective is P99 <= 10 s.",
                   latency_quantiles(), unit="s", w=12, h=6,
                   defaults={"thresholds": thresholds((None, "green"), (10, "red")),
                             "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                        "showPoints": "never", "spanNulls": True,
                                        "thresholdsStyle": {"mode": "dashed"}}}),
        timeseries("Throughput Real-Time",
                   "Guest bytes per second moved by each node (sent + received) over the last "
                   "second, scraped every 5 s (dwcp_v3_throughput_bytes_per_second).",
                   targets(('sum by (instance) (dwcp_v3_throughput_bytes_per_second{' + R + '})',
                            "{{instance}}"),
                           ('sum(dwcp_v3_throughput_bytes_per_second{' + R + '})', "all nodes")),
                   unit="Bps", w=12, h=8),
        panel("status-history", "Component Health Matrix",
              "dwcp_v3_component_health per node and component: 1 healthy, 0.5 degraded, "
              "0 down (checks in docs/metrics.md).",
              targets(('min by (instance, component) (dwcp_v3_component_health{' + C + ',' + R + '})',
                       "{{instance}} {{component}}")),
              w=12, h=8,
              defaults={"mappings": value_mappings((1, "healthy", "green"),
                                                   (0.5, "degraded", "orange"),
                                                   (0, "down", "red")),
                        "thresholds": thresholds((None, "red"), (0.5, "orange"), (1, "green")),
                        "color": {"mode": "thresholds"}},
              options={"showValue": "never", "rowHeight": 0.9, "colWidth": 0.9,
                       "legend": {"showLegend": False}}),
        panel("piechart", "Error Distribution",
              "Errors counted over $interval by component and type (dwcp_v3_errors_total).",
              targets(('sum by (component, error_type) (increase(dwcp_v3_errors_total{' + C + ',' + R + '}[$interval]))',
                       "{{component}} / {{error_type}}"), instant=True),
              w=8, h=8,
              options={"pieType": "donut", "displayLabels": ["name", "value"],
                       "legend": {"displayMode": "table", "placement": "right", "values": ["value"]},
                       "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
        timeseries("Anomaly Detection Timeline",
                   "Anomalies confirmed by the detector per $interval, by type and severity "
                   "(dwcp_v3_anomaly_detections_total). The red annotations come from the "
                   "'anomaly detected' log lines in Loki and carry the trace_id of the migration.",
                   targets(('sum by (anomaly_type, severity) (increase(dwcp_v3_anomaly_detections_total{' + R + '}[$interval]))',
                            "{{anomaly_type}} ({{severity}})")),
                   unit="short", bars=True, stack=True, w=8, h=8),
        panel("table", "v1 vs v3 Comparison",
              "Real v1 and v3 migrations side by side over $interval: finished per minute, "
              "successful per minute, and the share that failed (dwcp_v3_migrations_total by "
              "protocol). The rollout's GO/NO-GO compares the same figures.",
              targets(('sum by (protocol) (rate(dwcp_v3_migrations_total{' + R + '}[$interval])) * 60',
                       "finished/min"),
                      ('sum by (protocol) (rate(dwcp_v3_migrations_total{result="success",' + R + '}[$interval])) * 60',
                       "successful/min"),
                      ('sum by (protocol) (rate(dwcp_v3_migrations_total{result="failed",' + R + '}[$interval]))'
                       ' / sum by (protocol) (rate(dwcp_v3_migrations_total{' + R + '}[$interval]))',
                       "failed share"),
                      instant=True, fmt="table"),
              w=8, h=8,
              transformations=[
                  {"id": "merge", "options": {}},
                  {"id": "organize", "options": {
                      "excludeByName": {"Time": True},
                      "renameByName": {"protocol": "Protocol", "Value #A": "Finished / min",
                                       "Value #B": "Successful / min",
                                       "Value #C": "Failed share"}}}],
              overrides=[{"matcher": {"id": "byName", "options": "Failed share"},
                          "properties": [{"id": "unit", "value": "percentunit"}]},
                         {"matcher": {"id": "byRegexp", "options": ".*/ min"},
                          "properties": [{"id": "decimals", "value": 1}]}]),
    ]
    return dashboard("dwcp-v3-phase6-live", "DWCP v3 - Phase 6 Live Production",
                     "The live view of a v3 rollout (guide 6.1).", panels, refresh="5s",
                     time_from="now-30m", annotations=[ANOMALY_LOG_ANNOTATION], tags=["phase6"])


# --- 6.1 Real-Time Performance ----------------------------------------------------------
def real_time():
    panels = [
        panel("heatmap", "Latency Heatmap",
              "Finished migrations per latency bucket and $interval "
              "(dwcp_v3_migration_latency_seconds_bucket).",
              targets(('sum by (le) (increase(dwcp_v3_migration_latency_seconds_bucket{' + C + ',' + R + '}[$interval]))',
                       "{{le}}"), fmt="heatmap"),
              unit="s", w=12, h=9,
              options={"calculate": False, "yAxis": {"unit": "s"},
                       "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges",
                                               "exponent": 0.5, "steps": 64},
                       "tooltip": {"show": True, "yHistogram": True},
                       "rowsFrame": {"layout": "auto"}}),
        timeseries("Throughput by Component",
                   "Bytes per second at each stage of the data path: guest bytes the migration "
                   "engine moved, bytes the HDE encoder took in and put out, and bytes AMST put "
                   "on the wire (framing included).",
                   targets(('sum(dwcp_v3_throughput_bytes_per_second{' + R + '})', "migration (guest bytes)"),
                           ('sum(rate(dwcp_v3_hde_input_bytes_total{' + R + '}[$interval]))', "hde in"),
                           ('sum(rate(dwcp_v3_hde_output_bytes_total{' + R + '}[$interval]))', "hde out"),
                           ('sum(dwcp_v3_amst_throughput_bytes_per_second{' + R + '})', "amst (wire)")),
                   unit="Bps", w=12, h=9),
        timeseries("Error Rate Trends",
                   "Errors per second over $interval by component, and by type "
                   "(dwcp_v3_errors_total; guide 7.2).",
                   targets(('sum by (component) (rate(dwcp_v3_errors_total{' + C + ',' + R + '}[$interval]))',
                            "{{component}}"),
                           ('sum by (error_type) (rate(dwcp_v3_errors_total{' + C + ',' + R + '}[$interval]))',
                            "type {{error_type}}")),
                   unit="reqps", w=8, h=8),
        timeseries("Resource Utilization",
                   "dwcpd's CPU (share of all cores), memory (share of the host) and coroutine "
                   "tasks (share of max_tasks; the 'goroutines' of the guide).",
                   targets(('avg by (instance, resource_type) (dwcp_v3_resource_utilization_percent{' + R + '})',
                            "{{instance}} {{resource_type}}")),
                   unit="percent", w=8, h=8, defaults={"min": 0, "max": 100}),
        timeseries("Network Flow Diagram",
                   "Bytes on DWCP data connections per node: sent above the axis, received "
                   "below (dwcp_v3_network_bytes_total). dwcpd exports no per-peer series (no "
                   "unbounded labels), so flows are shown per node and direction.",
                   targets(('sum by (instance) (rate(dwcp_v3_network_bytes_total{direction="sent",' + R + '}[$interval]))',
                            "{{instance}} sent"),
                           ('-sum by (instance) (rate(dwcp_v3_network_bytes_total{direction="received",' + R + '}[$interval]))',
                            "{{instance}} received")),
                   unit="Bps", w=8, h=8),
    ]
    return dashboard("dwcp-v3-real-time", "DWCP v3 - Real-Time Performance",
                     "Latency, throughput, errors and resources as they happen (guide 6.1).",
                     panels, refresh="10s", time_from="now-1h")


# --- 6.1 SLA Compliance -----------------------------------------------------------------
def sla():
    pct_stat = {"colorMode": "value", "graphMode": "area", "textMode": "value_and_name",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    panels = [
        panel("stat", "Overall SLA Compliance",
              "Guide 7.4: the mean of every compliance series (overall included); the strict "
              "figure (minutes in which every objective was met, sla_type=\"overall\"); and "
              "the guide's error budget remaining (violation-minutes of 30 days against the "
              "minutes of 30 days, all nodes). docs/sla.md explains each.",
              targets(('avg(dwcp_v3_sla_compliance{' + R + '}) * 100', "compliance (guide)"),
                      ('avg(dwcp_v3_sla_compliance{sla_type="overall",' + R + '}) * 100', "all objectives met"),
                      ('100 - (sum(increase(dwcp_v3_sla_violations_total{' + R + '}[30d])) / (30 * 24 * 60) * 100)',
                       "error budget remaining")),
              unit="percent", w=8, h=7,
              defaults={"decimals": 2, "min": 0, "max": 100,
                        "thresholds": thresholds((None, "red"), (99, "orange"), (99.5, "green")),
                        "color": {"mode": "thresholds"}},
              options=pct_stat),
        panel("bargauge", "SLA Breakdown (Latency/Throughput/Errors)",
              "Share of good minutes in the SLA window per objective (dwcp_v3_sla_compliance).",
              targets(('avg by (sla_type) (dwcp_v3_sla_compliance{sla_type!="overall",' + R + '}) * 100',
                       "{{sla_type}}"), instant=True),
              unit="percent", w=8, h=7,
              defaults={"min": 90, "max": 100, "decimals": 2,
                        "thresholds": thresholds((None, "red"), (99, "orange"), (99.5, "green")),
                        "color": {"mode": "thresholds"}},
              options={"orientation": "horizontal", "displayMode": "lcd",
                       "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
        timeseries("Violation Timeline",
                   "Violation-minutes per $interval by first missed objective "
                   "(dwcp_v3_sla_violations_total: each bad minute counts once). Which minute "
                   "and why: /metrics/summary -> sla.recent_violations, or the WARN log line "
                   "'SLA violation-minute'.",
                   targets(('sum by (sla_type) (increase(dwcp_v3_sla_violations_total{' + R + '}[$interval]))',
                            "{{sla_type}}")),
                   unit="short", bars=True, stack=True, w=8, h=7),
        timeseries("Compliance Trends",
                   "Compliance per objective over time (each node's rolling SLA window, averaged).",
                   targets(('avg by (sla_type) (dwcp_v3_sla_compliance{' + R + '}) * 100', "{{sla_type}}")),
                   unit="percent", w=12, h=8, defaults={"max": 100}),
        timeseries("Error Budget Burn Rate",
                   "How many times faster than sustainable each node spends its 30-day budget "
                   "(99.5 % good minutes; deploy/prometheus/rules/recording.yml). The alert "
                   "DwcpV3ErrorBudgetBurn pages at 14.4 (1 h and 5 m) or 6 (6 h and 30 m) and "
                   "opens a ticket at 3 (1 d and 2 h) or 1 (3 d and 6 h).",
                   targets(('max by (instance) (instance:dwcp_v3_sla_error_budget:burn_rate1h{' + R + '})', "{{instance}} 1h"),
                           ('max by (instance) (instance:dwcp_v3_sla_error_budget:burn_rate6h{' + R + '})', "{{instance}} 6h"),
                           ('max by (instance) (instance:dwcp_v3_sla_error_budget:burn_rate1d{' + R + '})', "{{instance}} 1d"),
                           ('max by (instance) (instance:dwcp_v3_sla_error_budget:burn_rate3d{' + R + '})', "{{instance}} 3d")),
                   unit="x", w=12, h=8,
                   defaults={"thresholds": thresholds((None, "green"), (1, "yellow"), (6, "orange"), (14.4, "red")),
                             "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0,
                                        "showPoints": "never", "spanNulls": True,
                                        "thresholdsStyle": {"mode": "dashed"}}}),
    ]
    return dashboard("dwcp-v3-sla", "DWCP v3 - SLA Compliance",
                     "SLA objectives, violation-minutes and the error budget (guide 6.1, 7.4; "
                     "docs/sla.md).", panels, refresh="1m", time_from="now-24h")


# --- 6.2 Component dashboards -----------------------------------------------------------
def amst():
    panels = [
        timeseries("Throughput by stream count",
                   "Wire bytes per second per open data stream, and the number of open streams "
                   "(right axis): whether adding streams still adds throughput.",
                   targets(('sum by (instance, transport) (dwcp_v3_amst_throughput_bytes_per_second{' + R + '})'
                            ' / clamp_min(sum by (instance, transport) (dwcp_v3_amst_active_streams{' + R + '}), 1)',
                            "{{instance}} {{transport}} per stream"),
                           ('sum by (instance, transport) (dwcp_v3_amst_active_streams{' + R + '})',
                            "{{instance}} {{transport}} streams")),
                   unit="Bps", w=12, h=8,
                   overrides=[{"matcher": {"id": "byRegexp", "options": ".* streams$"},
                               "properties": [{"id": "unit", "value": "short"},
                                              {"id": "custom.axisPlacement", "value": "right"}]}]),
        timeseries("RDMA vs TCP performance",
                   "Wire bytes per second by transport (dwcp_v3_amst_throughput_bytes_per_second).",
                   targets(('sum by (transport) (dwcp_v3_amst_throughput_bytes_per_second{transport=~"rdma|tcp",' + R + '})',
                            "{{transport}}")),
                   unit="Bps", w=12, h=8),
        timeseries("Stream saturation",
                   "How full the data streams are (0..1) by transport "
                   "(dwcp_v3_amst_stream_saturation_ratio).",
                   targets(('max by (instance, transport) (dwcp_v3_amst_stream_saturation_ratio{' + R + '})',
                            "{{instance}} {{transport}}")),
                   unit="percentunit", w=12, h=8, defaults={"min": 0, "max": 1}),
        timeseries("Mode switching frequency",
                   "Peer links that switched into each link mode per $interval "
                   "(dwcp_v3_amst_mode_switches_total), and the links now in each mode "
                   "(dwcp_v3_amst_links, right axis).",
                   targets(('sum by (mode) (increase(dwcp_v3_amst_mode_switches_total{' + R + '}[$interval]))',
                            "switches to {{mode}}"),
                           ('sum by (mode) (dwcp_v3_amst_links{' + R + '})', "links in {{mode}}")),
                   unit="short", w=12, h=8,
                   overrides=[{"matcher": {"id": "byRegexp", "options": "^links in .*"},
                               "properties": [{"id": "custom.axisPlacement", "value": "right"}]}]),
    ]
    return dashboard("dwcp-v3-amst", "DWCP v3 - AMST", "Adaptive multi-stream transport "
                     "(guide 6.2; docs/amst.md).", panels, tags=["component"])


def hde():
    panels = [
        timeseries("Compression ratio by algorithm",
                   "Mean guest bytes per encoded byte of the page batches of each algorithm "
                   "over $interval (dwcp_v3_compression_ratio; zero = v3 zero-page elision), "
                   "and HDE's overall ratio (dwcp_v3_hde_compression_ratio).",
                   targets(('sum by (algorithm) (rate(dwcp_v3_compression_ratio_sum{' + R + '}[$interval]))'
                            ' / sum by (algorithm) (rate(dwcp_v3_compression_ratio_count{' + R + '}[$interval]))',
                            "{{algorithm}}"),
                           ('avg(dwcp_v3_hde_compression_ratio{' + R + '})', "overall")),
                   unit="x", w=12, h=8),
        timeseries("Deduplication effectiveness",
                   "Share of non-zero pages sent as references to pages the destination already "
                   "held, share of re-sent pages sent as deltas, and the share of each page "
                   "encoding over $interval (docs/hde.md).",
                   targets(('avg(dwcp_v3_hde_dedup_hit_ratio{' + R + '})', "dedup hit ratio"),
                           ('avg(dwcp_v3_hde_delta_hit_ratio{' + R + '})', "delta hit ratio"),
                           ('sum by (encoding) (rate(dwcp_v3_hde_pages_total{' + R + '}[$interval]))'
                            ' / ignoring (encoding) group_left () sum(rate(dwcp_v3_hde_pages_total{' + R + '}[$interval]))',
                            "pages {{encoding}}")),
                   unit="percentunit", w=12, h=8, defaults={"min": 0, "max": 1}),
        timeseries("Compression latency",
                   "P99 of HDE's compress step per batch by codec "
                   "(dwcp_v3_hde_compression_latency_seconds), and of whole batch encode and "
                   "decode (dwcp_v3_component_latency_seconds{component=\"hde\"}).",
                   targets(('histogram_quantile(0.99, sum by (le, algorithm) (rate(dwcp_v3_hde_compression_latency_seconds_bucket{' + R + '}[$interval])))',
                            "compress {{algorithm}} P99"),
                           ('histogram_quantile(0.99, sum by (le, operation) (rate(dwcp_v3_component_latency_seconds_bucket{component="hde",' + R + '}[$interval])))',
                            "{{operation}} P99")),
                   unit="s", w=12, h=8),
        panel("piechart", "Data pattern analysis",
              "Pages encoded over $interval by content pattern (zero, duplicate, delta, text, "
              "binary, random; dwcp_v3_hde_pattern_pages_total), and by encoding "
              "(dwcp_v3_hde_pages_total).",
              targets(('sum by (pattern) (increase(dwcp_v3_hde_pattern_pages_total{' + R + '}[$interval]))', "{{pattern}}"),
                      ('sum by (encoding) (increase(dwcp_v3_hde_pages_total{' + R + '}[$interval]))', "encoded {{encoding}}"),
                      instant=True),
              w=12, h=8,
              options={"pieType": "pie", "displayLabels": ["name", "percent"],
                       "legend": {"displayMode": "table", "placement": "right", "values": ["value", "percent"]},
                       "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
    ]
    return dashboard("dwcp-v3-hde", "DWCP v3 - HDE", "Hierarchical delta encoding "
                     "(guide 6.2; docs/hde.md).", panels, tags=["component"])


def pba():
    panels = [
        timeseries("Prediction accuracy",
                   "Accuracy of the bandwidth forecasts in use, per node "
                   "(dwcp_v3_pba_prediction_accuracy_percent).",
                   targets(('avg by (instance) (dwcp_v3_pba_prediction_accuracy_percent{' + R + '})', "{{instance}}")),
                   unit="percent", w=12, h=8, defaults={"min": 0, "max": 100}),
        timeseries("LSTM model performance",
                   "Rolling forecast error of each model (LSTM against EWMA and Holt); the "
                   "one with the lowest recent error wins per link (dwcp_v3_pba_model_error_ratio).",
                   targets(('avg by (model) (dwcp_v3_pba_model_error_ratio{' + R + '})', "{{model}}")),
                   unit="percentunit", w=12, h=8),
        timeseries("Bandwidth utilization",
                   "Share of the predicted link bandwidth that migrations use "
                   "(dwcp_v3_pba_bandwidth_utilization_percent).",
                   targets(('avg by (instance) (dwcp_v3_pba_bandwidth_utilization_percent{' + R + '})', "{{instance}}")),
                   unit="percent", w=12, h=8, defaults={"min": 0, "max": 100}),
        panel("heatmap", "Prediction error distribution",
              "Relative error of each forecast checked against what the link then delivered "
              "(dwcp_v3_pba_prediction_error_ratio).",
              targets(('sum by (le) (increase(dwcp_v3_pba_prediction_error_ratio_bucket{' + R + '}[$interval]))', "{{le}}"),
                      fmt="heatmap"),
              unit="percentunit", w=12, h=8,
              options={"calculate": False, "yAxis": {"unit": "percentunit"}, "cellGap": 1,
                       "color": {"mode": "scheme", "scheme": "Blues", "exponent": 0.5, "steps": 64},
                       "tooltip": {"show": True, "yHistogram": True}}),
    ]
    return dashboard("dwcp-v3-pba", "DWCP v3 - PBA", "Predictive bandwidth allocation "
                     "(guide 6.2). Its metrics arrive with issue 7.", panels, tags=["component"])


def acp():
    panels = [
        timeseries("Consensus latency",
                   "P99 of ownership commits and other ACP operations "
                   "(dwcp_v3_component_latency_seconds{component=\"acp\"}), of the state "
                   "store's heartbeat transactions (dwcp_v3_acp_store_latency_seconds), and of "
                   "consensus rounds on etcd (dwcp_v3_acp_consensus_latency_seconds).",
                   targets(('histogram_quantile(0.99, sum by (le, operation) (rate(dwcp_v3_component_latency_seconds_bucket{component="acp",' + R + '}[$interval])))',
                            "{{operation}} P99"),
                           ('histogram_quantile(0.99, sum by (le) (rate(dwcp_v3_acp_store_latency_seconds_bucket{' + R + '}[$interval])))',
                            "store heartbeat P99"),
                           ('histogram_quantile(0.99, sum by (le) (rate(dwcp_v3_acp_consensus_latency_seconds_bucket{' + R + '}[$interval])))',
                            "consensus P99")),
                   unit="s", w=12, h=8),
        timeseries("Quorum health",
                   "ACP health per node (1 healthy, 0.5 slow store, 0 store failing), nodes "
                   "answering scrapes, and the share of healthy store members "
                   "(dwcp_v3_acp_quorum_healthy_ratio, etcd).",
                   targets(('min by (instance) (dwcp_v3_component_health{component="acp",' + R + '})', "{{instance}} acp health"),
                           ('sum(up{job="dwcp-v3",' + R + '})', "nodes up"),
                           ('min(dwcp_v3_acp_quorum_healthy_ratio{' + R + '})', "healthy store members")),
                   unit="short", w=12, h=8,
                   overrides=[{"matcher": {"id": "byName", "options": "nodes up"},
                               "properties": [{"id": "custom.axisPlacement", "value": "right"}]}]),
        timeseries("Byzantine detection",
                   "Peers that sent data that did not verify: protocol, digest and data-loss "
                   "errors per $interval (dwcp_v3_errors_total), detections by reason "
                   "(dwcp_v3_acp_byzantine_detections_total) and the peers refused right now "
                   "(dwcp_v3_acp_quarantined_peers; docs/consensus.md).",
                   targets(('sum by (instance, error_type) (increase(dwcp_v3_errors_total{error_type=~"protocol|digest_mismatch|data_loss",' + R + '}[$interval]))',
                            "{{instance}} {{error_type}}"),
                           ('sum by (reason) (increase(dwcp_v3_acp_byzantine_detections_total{' + R + '}[$interval]))',
                            "detected: {{reason}}"),
                           ('sum by (instance) (dwcp_v3_acp_quarantined_peers{' + R + '})',
                            "{{instance}} quarantined peers")),
                   unit="short", bars=True, w=12, h=8),
        timeseries("Leader election frequency",
                   "Leader elections per $interval for cluster-wide duties "
                   "(dwcp_v3_acp_leader_elections_total, etcd store).",
                   targets(('sum(increase(dwcp_v3_acp_leader_elections_total{' + R + '}[$interval]))', "elections")),
                   unit="short", bars=True, w=12, h=8),
    ]
    return dashboard("dwcp-v3-acp", "DWCP v3 - ACP", "Adaptive consensus (guide 6.2).", panels,
                     tags=["component"])


DASHBOARDS = {
    "phase6-production-live.json": phase6_live,
    "real-time-performance.json": real_time,
    "sla-compliance.json": sla,
    "amst.json": amst,
    "hde.json": hde,
    "pba.json": pba,
    "acp.json": acp,
}


def render(fn):
    return json.dumps(fn(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the JSON files are stale")
    ap.add_argument("--out", default=OUT_DIR)
    args = ap.parse_args()
    stale = []
    for name, fn in DASHBOARDS.items():
        path = os.path.join(args.out, name)
        text = render(fn)
        if args.check:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            os.makedirs(args.out, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print("stale dashboards (run deploy/grafana/generate_dashboards.py): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
