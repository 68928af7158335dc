// Time series for the charts. The node keeps 15 minutes of points (GET
// /metrics/summary/history); a node that lacks that endpoint gets a series the page samples
// itself from /metrics/summary while it is open.
import { isNum } from './format.js';

const MAX_CLIENT_POINTS = 450;

// Normalizes the server's history into {t, latency, transports, amst, hde, network, errors,
// anomalies, perMinute} points (seconds for t).
export function fromServer(history) {
  const points = Array.isArray(history && history.points) ? history.points : [];
  return points
    .filter((p) => p && isNum(p.t_ms))
    .map((p) => ({
      t: p.t_ms / 1000,
      latency: obj(p.latency_seconds),
      transports: obj(p.throughput_bytes_per_second),
      amst: obj(p.amst_bytes_per_second),
      hde: numOrNull(p.hde_input_bytes_per_second),
      network: numOrNull(p.network_bytes_per_second),
      errors: obj(p.errors_per_second),
      anomalies: numOrNull(p.anomalies),
      perMinute: numOrNull(p.migrations_per_minute),
    }));
}

// Samples /metrics/summary readings into points; rates come from counter differences.
export class ClientHistory {
  constructor() {
    this.node = null;
    this.points = [];
    this.last = null;
  }

  add(summary, nowMs) {
    if (!summary || typeof summary !== 'object') return;
    if (summary.node !== this.node) {
      this.node = summary.node;
      this.points = [];
      this.last = null;
    }
    const bytes = obj(summary.bytes);
    const network = sum([bytes.network_sent, bytes.network_received]);
    const errors = obj(obj(summary.errors).by_component);
    const anomalies = obj(obj(summary.anomalies).detections).total;
    const point = {
      t: nowMs / 1000,
      latency: obj(summary.latency_seconds),
      transports: { all: numOrNull(summary.throughput_bytes_per_second) },
      amst: {},
      hde: null,
      network: null,
      errors: {},
      anomalies: null,
      perMinute: numOrNull(obj(summary.migrations).per_minute),
    };
    const prev = this.last;
    if (prev && nowMs > prev.t) {
      const dt = (nowMs - prev.t) / 1000;
      if (isNum(network) && isNum(prev.network)) point.network = Math.max(0, (network - prev.network) / dt);
      for (const [k, v] of Object.entries(errors)) {
        if (isNum(v)) point.errors[k] = Math.max(0, (v - (prev.errors[k] || 0)) / dt);
      }
      if (isNum(anomalies) && isNum(prev.anomalies)) point.anomalies = Math.max(0, anomalies - prev.anomalies);
    }
    this.last = { t: nowMs, network, errors: { ...errors }, anomalies };
    this.points.push(point);
    if (this.points.length > MAX_CLIENT_POINTS) this.points.shift();
  }
}

function obj(v) {
  return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
}

function numOrNull(v) {
  return isNum(v) ? v : null;
}

function sum(values) {
  const nums = values.filter(isNum);
  return nums.length ? nums.reduce((a, b) => a + b, 0) : null;
}

// The keys that appear in `field` of any point, sorted.
export function keysOf(points, field) {
  const keys = new Set();
  for (const p of points) for (const k of Object.keys(p[field] || {})) keys.add(k);
  return [...keys].sort();
}
