// The dashboard's panels. Each render function takes the latest data (any part may be
// missing: it then shows "—") and redraws its panel body.
import { el, fill, table, emptyRow } from './dom.js';
import * as f from './format.js';
import { TimeChart, PALETTE } from './charts.js';
import { keysOf } from './history.js';

const DECISION = {
  go: { text: 'GO', cls: 'go' },
  no_go: { text: 'NO-GO', cls: 'nogo' },
  pending: { text: 'PENDING', cls: 'pending' },
};

// ---- GO / NO-GO and rollout progress, one card per region ----
export function renderRollout(body, rollout) {
  const regions = rollout && Array.isArray(rollout.regions) ? rollout.regions : null;
  if (!regions) return fill(body, el('div', { class: 'muted pad' }, 'Rollout: —'));
  if (regions.length === 0) return fill(body, el('div', { class: 'muted pad' }, 'No region has a rollout record yet.'));
  const stages = Array.isArray(rollout.stages) ? rollout.stages : [];
  fill(
    body,
    regions.map((r) => {
      const d = DECISION[r.decision] || { text: f.str(r.decision).toUpperCase(), cls: 'unknown' };
      const reasons = Array.isArray(r.reasons) ? r.reasons : [];
      return el(
        'article',
        { class: `region-card ${d.cls}`, 'data-testid': 'region-card', dataset: { region: r.region } },
        el(
          'div',
          { class: 'decision' },
          el('div', { class: 'decision-label' }, 'Decision'),
          el('div', { class: 'decision-value', 'data-testid': 'decision' }, d.text),
          el('div', { class: 'decision-region' }, f.str(r.region)),
        ),
        el(
          'div',
          { class: 'region-main' },
          el(
            'div',
            { class: 'region-line' },
            el('span', null, 'Stage '),
            el('strong', { 'data-testid': 'stage' }, f.str(r.stage)),
            el('span', { class: 'muted' }, ` · v3 share ${f.percent(r.percent, 0)}`),
            r.halted ? el('span', { class: 'badge warn' }, 'halted') : null,
            isFinite(r.next_advance_ms) && r.next_advance_ms > 0 && r.next_stage
              ? el('span', { class: 'muted' }, ` · next: ${r.next_stage} at ${f.clock(r.next_advance_ms)}`)
              : null,
          ),
          stageStepper(stages, r),
          el('div', { class: 'progress big' }, el('div', { class: 'bar', style: { width: `${clampPct(r.percent)}%` } })),
          el(
            'div',
            { class: 'region-foot muted' },
            `changed ${f.ago(r.changed_ms)} by ${f.str(r.changed_by)} (${f.str(r.change_reason)})`,
          ),
          reasons.length ? el('ul', { class: 'reasons' }, reasons.slice(0, 3).map((x) => el('li', null, x))) : null,
        ),
      );
    }),
  );
}

function stageStepper(stages, region) {
  const current = isFinite(region.stage_index) ? region.stage_index : -1;
  return el(
    'ol',
    { class: 'stepper' },
    stages.map((s) =>
      el(
        'li',
        { class: s.index < current ? 'done' : s.index === current ? 'current' : '' },
        el('span', { class: 'step-name' }, s.name),
        el('span', { class: 'step-pct' }, f.percent(s.percent, 0)),
      ),
    ),
  );
}

function clampPct(v) {
  return f.isNum(v) ? Math.max(0, Math.min(100, v)) : 0;
}

// ---- KPI strip ----
export function renderKpis(body, { summaries, self, nodesTotal }) {
  const list = Object.values(summaries).filter(Boolean);
  const mig = list.map((s) => s.migrations || {});
  const sumOf = (arr, key) => {
    const v = arr.map((x) => x[key]).filter(f.isNum);
    return v.length ? v.reduce((a, b) => a + b, 0) : null;
  };
  const total = sumOf(mig, 'total');
  const success = sumOf(mig, 'success');
  const failed = sumOf(mig, 'failed');
  const aborted = sumOf(mig, 'aborted');
  const active = sumOf(mig, 'active_outgoing');
  const perMin = sumOf(mig, 'per_minute');
  const tput = sumOf(list, 'throughput_bytes_per_second');
  const lat = (self && self.latency_seconds) || {};
  const sla = (self && self.sla) || {};
  const compliance = sla.compliance ? sla.compliance.overall : null;
  const budget = sla.error_budget ? sla.error_budget.remaining_percent : null;
  const errors = sumOf(list.map((s) => s.errors || {}), 'total');
  const anomalies = sumOf(list.map((s) => (s.anomalies && s.anomalies.detections) || {}), 'total');
  const scope = `${list.length}/${f.isNum(nodesTotal) ? nodesTotal : '—'} nodes`;
  const selfName = self ? self.node : '—';
  const kpis = [
    { id: 'migrations-total', label: 'Migrations', value: f.num(total), sub: `${f.num(success)} ok · ${f.num(failed)} failed${aborted > 0 ? ` · ${f.num(aborted)} aborted` : ''}`, tone: failed > 0 ? 'warn' : '' },
    { id: 'success-rate', label: 'Success rate', value: f.isNum(total) && total > 0 ? f.ratioPercent(success / total) : f.DASH, sub: scope, tone: f.isNum(total) && total > 0 && success / total < 0.99 ? 'bad' : '' },
    { id: 'active', label: 'Active now', value: f.num(active), sub: `${f.num(perMin)} / min finished` },
    // Each logical byte counts at both ends (sent and received): half the nodes' sum.
    { id: 'throughput', label: 'Throughput', value: f.isNum(tput) ? f.rate(tput / 2) : f.DASH, sub: 'logical, cluster' },
    { id: 'latency-p50', label: 'Latency p50', value: f.seconds(lat.p50), sub: `p95 ${f.seconds(lat.p95)} · ${selfName}` },
    { id: 'latency-p99', label: 'Latency p99', value: f.seconds(lat.p99), sub: `${f.num(lat.count)} migrations · ${selfName}` },
    { id: 'sla', label: 'SLA compliance', value: f.ratioPercent(compliance, 2), sub: `budget ${f.percent(budget, 1)} left`, tone: f.isNum(compliance) && compliance < 0.999 ? 'warn' : '' },
    { id: 'errors', label: 'Errors', value: f.num(errors), sub: `${f.num(anomalies)} anomalies`, tone: f.isNum(errors) && errors > 0 ? 'warn' : '' },
  ];
  fill(
    body,
    kpis.map((k) =>
      el(
        'div',
        { class: `kpi ${k.tone || ''}`, 'data-testid': `kpi-${k.id}` },
        el('div', { class: 'kpi-label' }, k.label),
        el('div', { class: 'kpi-value', 'data-testid': `kpi-${k.id}-value` }, k.value),
        el('div', { class: 'kpi-sub' }, k.sub),
      ),
    ),
  );
}

// ---- Charts ----
export class Charts {
  constructor({ latency, transport, component, errors, anomalies }) {
    this.latency = new TimeChart(latency, { fmt: f.seconds });
    this.transport = new TimeChart(transport, { fmt: f.rate });
    this.component = new TimeChart(component, { fmt: f.rate });
    this.errors = new TimeChart(errors, { fmt: (v) => `${v.toFixed(v < 1 ? 2 : 1)}/s`, height: 110 });
    this.anomalies = new TimeChart(anomalies, { fmt: (v) => v.toFixed(0), height: 100, bars: true, minMax: 2 });
  }

  render(points) {
    const xs = points.map((p) => p.t);
    const col = (fn) => points.map((p) => nullable(fn(p)));
    this.latency.setData(
      [
        { label: 'p50', color: PALETTE[3] },
        { label: 'p95', color: PALETTE[1] },
        { label: 'p99', color: PALETTE[2] },
      ],
      xs,
      [col((p) => p.latency.p50), col((p) => p.latency.p95), col((p) => p.latency.p99)],
    );
    const transports = keysOf(points, 'transports');
    this.transport.setData(
      [...transports.map((t) => ({ label: t === 'all' ? 'logical' : `logical ${t}`, fill: true })), { label: 'network (wire)', dash: [4, 3] }],
      xs,
      [...transports.map((t) => col((p) => p.transports[t])), col((p) => p.network)],
    );
    const modes = ['datacenter', 'hybrid', 'internet'];
    this.component.setData(
      [
        ...modes.map((m, i) => ({ label: `AMST ${m}`, color: PALETTE[i === 0 ? 0 : i === 1 ? 5 : 4] })),
        { label: 'HDE input', color: PALETTE[1] },
        { label: 'network', color: PALETTE[7], dash: [4, 3] },
      ],
      xs,
      [...modes.map((m) => col((p) => p.amst[m])), col((p) => p.hde), col((p) => p.network)],
    );
    const comps = keysOf(points, 'errors');
    this.errors.setData(
      comps.length ? comps.map((c) => ({ label: c })) : [{ label: 'errors' }],
      xs,
      comps.length ? comps.map((c) => col((p) => p.errors[c])) : [col(() => (points.length ? 0 : null))],
    );
    this.anomalies.setData([{ label: 'anomalies', color: PALETTE[4] }], xs, [col((p) => p.anomalies)]);
  }
}

function nullable(v) {
  return f.isNum(v) ? v : null;
}

// ---- Component health matrix: node × component ----
export function renderHealth(body, { nodes, summaries }) {
  const comps = new Set();
  for (const s of Object.values(summaries)) if (s && s.health) for (const c of Object.keys(s.health)) comps.add(c);
  const components = [...comps].sort();
  const cols = [{ label: 'Node' }, ...components.map((c) => ({ label: c.toUpperCase(), cls: 'c' })), { label: 'CPU', cls: 'num' }, { label: 'Mem', cls: 'num' }];
  const { node, tbody } = table(cols, 'health-matrix');
  const list = Array.isArray(nodes) ? nodes : [];
  if (!list.length) tbody.append(emptyRow(cols.length, 'No nodes'));
  for (const n of list) {
    const s = summaries[n.id];
    const res = (s && s.resources) || {};
    tbody.append(
      el(
        'tr',
        { dataset: { node: n.id } },
        el('td', null, el('span', { class: `dot ${n.alive ? 'ok' : 'down'}` }), n.id),
        components.map((c) => healthCell(s && s.health ? s.health[c] : undefined, n.alive)),
        el('td', { class: 'num' }, f.percent(res.cpu_percent, 0)),
        el('td', { class: 'num' }, f.percent(res.memory_percent, 1)),
      ),
    );
  }
  const legend = el(
    'div',
    { class: 'legend' },
    el('span', null, el('i', { class: 'h ok' }), 'healthy'),
    el('span', null, el('i', { class: 'h degraded' }), 'degraded'),
    el('span', null, el('i', { class: 'h down' }), 'down'),
    el('span', null, el('i', { class: 'h unknown' }), 'no data'),
  );
  fill(body, node, legend);
}

function healthCell(v, alive) {
  if (!f.isNum(v)) return el('td', { class: 'c' }, el('span', { class: 'h unknown', title: alive ? 'no data' : 'node not alive' }, f.DASH));
  const cls = v >= 1 ? 'ok' : v > 0 ? 'degraded' : 'down';
  const text = v >= 1 ? 'OK' : v > 0 ? 'DEGR' : 'DOWN';
  return el('td', { class: 'c' }, el('span', { class: `h ${cls}` }, text));
}

// ---- Error distribution: by component and by type, summed over the nodes ----
export function renderErrors(body, { summaries }) {
  const byComp = {};
  const byType = {};
  let any = false;
  for (const s of Object.values(summaries)) {
    if (!s || !s.errors) continue;
    any = true;
    for (const [k, v] of Object.entries(s.errors.by_component || {})) if (f.isNum(v)) byComp[k] = (byComp[k] || 0) + v;
    for (const [k, v] of Object.entries(s.errors.by_type || {})) if (f.isNum(v)) byType[k] = (byType[k] || 0) + v;
  }
  if (!any) return fill(body, el('div', { class: 'muted' }, f.DASH));
  fill(body, el('div', { class: 'split' }, barList('By component', byComp), barList('By type', byType)));
}

function barList(title, counts) {
  const entries = Object.entries(counts)
    .filter(([, v]) => v > 0)
    .sort((a, b) => b[1] - a[1]);
  const max = Math.max(1, ...entries.map((e) => e[1]));
  return el(
    'div',
    { class: 'barlist' },
    el('h3', null, title),
    entries.length === 0
      ? el('div', { class: 'muted ok-text' }, 'No errors')
      : entries.map(([k, v], i) =>
          el(
            'div',
            { class: 'barrow' },
            el('span', { class: 'barname' }, k),
            el('span', { class: 'bartrack' }, el('span', { class: 'barfill', style: { width: `${(v / max) * 100}%`, background: PALETTE[(i + 2) % PALETTE.length] } })),
            el('span', { class: 'barval' }, f.num(v)),
          ),
        ),
  );
}

// ---- Anomaly timeline: recent detections of every node, newest first ----
export function renderAnomalies(listNode, { summaries }) {
  const rows = [];
  let any = false;
  for (const [nodeId, s] of Object.entries(summaries)) {
    const recent = s && s.anomalies && Array.isArray(s.anomalies.recent) ? s.anomalies.recent : null;
    if (!recent) continue;
    any = true;
    for (const a of recent) rows.push({ ...a, node: nodeId, t: Date.parse(a.timestamp) });
  }
  rows.sort((a, b) => (b.t || 0) - (a.t || 0));
  const { node, tbody } = table(
    [{ label: 'Time' }, { label: 'Node' }, { label: 'Type' }, { label: 'Severity' }, { label: 'Value / baseline', cls: 'num' }, { label: 'Trace' }],
    'anomaly-table',
  );
  if (!rows.length) tbody.append(emptyRow(6, any ? 'No anomaly detected' : f.DASH));
  for (const a of rows.slice(0, 12)) {
    tbody.append(
      el(
        'tr',
        null,
        el('td', null, f.clock(a.t)),
        el('td', null, a.node),
        el('td', null, f.str(a.anomaly_type), el('div', { class: 'muted small' }, f.str(a.series))),
        el('td', null, el('span', { class: `badge ${a.severity === 'critical' ? 'bad' : 'warn'}` }, f.str(a.severity))),
        el('td', { class: 'num' }, `${fmtSig(a.value)} / ${fmtSig(a.baseline)}`),
        el('td', { class: 'mono small' }, f.shortHash(a.trace_id, 10)),
      ),
    );
  }
  fill(listNode, node);
}

function fmtSig(v) {
  if (!f.isNum(v)) return f.DASH;
  const a = Math.abs(v);
  if (a >= 1e6) return v.toExponential(2);
  return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toPrecision(2);
}

// ---- v1 vs v3 per region ----
export function renderComparison(body, rollout) {
  const regions = rollout && Array.isArray(rollout.regions) ? rollout.regions : null;
  if (!regions || !regions.length) return fill(body, el('div', { class: 'muted' }, f.DASH));
  const metrics = [
    { label: 'Migrations', key: 'migrations', fmt: f.num, better: null },
    { label: 'Success rate', key: 'success_rate', fmt: (v) => f.ratioPercent(v), better: 'up' },
    { label: 'Latency p50', key: 'latency_p50_seconds', fmt: f.seconds, better: 'down' },
    { label: 'Throughput p50', key: 'throughput_p50_bytes_per_second', fmt: f.rate, better: 'up' },
  ];
  fill(
    body,
    regions.map((r) => {
      const v1 = (r.samples && r.samples.v1) || {};
      const v3 = (r.samples && r.samples.v3) || {};
      const { node, tbody } = table([{ label: r.region }, { label: 'v1', cls: 'num' }, { label: 'v3', cls: 'num' }, { label: 'v3 vs v1', cls: 'num' }], 'comparison-table');
      for (const m of metrics) {
        const a = v1[m.key];
        const b = v3[m.key];
        let delta = f.DASH;
        let tone = '';
        if (m.better && f.isNum(a) && f.isNum(b) && a !== 0) {
          const change = (b - a) / Math.abs(a);
          delta = `${change >= 0 ? '+' : ''}${(change * 100).toFixed(1)} %`;
          const good = m.better === 'up' ? change >= 0 : change <= 0;
          tone = Math.abs(change) < 0.005 ? '' : good ? 'good' : 'bad';
        }
        tbody.append(
          el('tr', null, el('td', null, m.label), el('td', { class: 'num' }, m.fmt(a)), el('td', { class: 'num' }, m.fmt(b)), el('td', { class: `num ${tone}` }, delta)),
        );
      }
      return node;
    }),
  );
}

// ---- Nodes ----
export function renderNodes(body, { nodes, summaries, now }) {
  const cols = ['Node', 'Region', 'State', 'VMs', 'Migrating', 'Throughput', 'Version', 'Heartbeat', 'API'].map((label, i) => ({ label, cls: [3, 4, 5].includes(i) ? 'num' : '' }));
  const { node, tbody } = table(cols, 'nodes-table');
  const list = Array.isArray(nodes) ? nodes : [];
  if (!list.length) tbody.append(emptyRow(cols.length, f.DASH));
  for (const n of list) {
    const s = summaries[n.id];
    const m = (s && s.migrations) || {};
    const active = f.isNum(m.active_outgoing) || f.isNum(m.active_incoming) ? `${f.num(m.active_outgoing)} out · ${f.num(m.active_incoming)} in` : f.DASH;
    tbody.append(
      el(
        'tr',
        { dataset: { node: n.id } },
        el('td', null, el('span', { class: `dot ${n.alive ? 'ok' : 'down'}` }), el('strong', null, n.id)),
        el('td', null, f.str(n.region)),
        el('td', null, el('span', { class: `badge ${n.alive ? 'good' : 'bad'}` }, n.alive ? f.str(n.state) : `${f.str(n.state)} · no heartbeat`)),
        el('td', { class: 'num' }, f.num(n.vms)),
        el('td', { class: 'num' }, active),
        el('td', { class: 'num' }, s ? f.rate(s.throughput_bytes_per_second) : f.DASH),
        el('td', null, f.str(n.version)),
        el('td', null, f.ago(n.heartbeat_ms, now)),
        el('td', { class: 'mono small' }, f.str(n.api_url)),
      ),
    );
  }
  fill(body, node);
}

// ---- Links ----
export function renderLinks(body, links) {
  const cols = [
    { label: 'Link' },
    { label: 'Mode' },
    { label: 'Bandwidth', cls: 'num' },
    { label: 'Predicted', cls: 'num' },
    { label: 'RTT', cls: 'num' },
    { label: 'Model' },
    { label: 'Accuracy', cls: 'num' },
    { label: 'Measured by' },
    { label: 'Updated' },
  ];
  const { node, tbody } = table(cols, 'links-table');
  const list = links && Array.isArray(links.links) ? links.links : null;
  if (!list) tbody.append(emptyRow(cols.length, `${f.DASH} (this node does not serve /api/v1/links)`));
  else if (!list.length) tbody.append(emptyRow(cols.length, 'No link measured yet: links appear after the first migration between two nodes'));
  else {
    // Both ends measure a link; show one row per direction: the sender's, which has PBA's
    // forecast, else the newest.
    const best = new Map();
    for (const l of list) {
      const key = `${l.source}\u0001${l.destination}`;
      const have = best.get(key);
      const score = (x) => (f.isNum(x.predicted_bandwidth_bytes_per_second) ? 1e15 : 0) + (f.isNum(x.updated_ms) ? x.updated_ms : 0);
      if (!have || score(l) > score(have)) best.set(key, l);
    }
    const sorted = [...best.values()].sort((a, b) => `${a.source} ${a.destination}`.localeCompare(`${b.source} ${b.destination}`));
    for (const l of sorted) {
      tbody.append(
        el(
          'tr',
          null,
          el('td', null, el('strong', null, f.str(l.source)), ' → ', el('strong', null, f.str(l.destination))),
          el('td', null, l.mode ? el('span', { class: `badge mode-${l.mode}` }, l.mode) : f.DASH),
          el('td', { class: 'num' }, f.rate(l.bandwidth_bytes_per_second)),
          el('td', { class: 'num' }, f.rate(l.predicted_bandwidth_bytes_per_second)),
          el('td', { class: 'num' }, f.millis(l.rtt_ms)),
          el('td', null, f.str(l.model)),
          el('td', { class: 'num' }, f.percent(l.accuracy_percent, 1)),
          el('td', null, f.str(l.measured_by)),
          el('td', null, f.ago(l.updated_ms)),
        ),
      );
    }
  }
  fill(body, node);
}
