// The DWCP v3 dashboard: polls the node that served the page and redraws every panel without
// reloading. docs/dashboard.md says where each panel's data comes from.
import './style.css';
import { el, fill, panel } from './dom.js';
import * as f from './format.js';
import { getJson, getAll, describeError } from './api.js';
import { fromServer, ClientHistory } from './history.js';
import {
  renderRollout,
  renderKpis,
  Charts,
  renderHealth,
  renderErrors,
  renderAnomalies,
  renderComparison,
  renderNodes,
  renderLinks,
} from './panels.js';
import { renderMigrations, renderDetail } from './migrations.js';

const REFRESH_CHOICES = [1, 2, 5, 10, 30];
const MIGRATIONS_SHOWN = 25;

const params = new URLSearchParams(location.search);
const state = {
  refreshMs: refreshFromUrl(),
  routes: null, // Set of "METHOD path" from GET /api/v1/
  index: null,
  data: {},
  summaries: {}, // node id → its /metrics/summary
  chartNode: null,
  clientHistory: new ClientHistory(),
  lastOkMs: 0,
  error: null,
  detailId: null,
  detail: null,
  detailError: null,
  timer: null,
  inFlight: false,
};

function refreshFromUrl() {
  const s = Number(params.get('refresh') || localStorage.getItem('dwcp.refresh') || 2);
  return Number.isFinite(s) && s >= 0.5 ? s * 1000 : 2000;
}

// ---- Layout ----
const statusPill = el('span', { class: 'status-pill', 'data-testid': 'conn-status' }, 'connecting…');
const updated = el('span', { class: 'muted small', 'data-testid': 'last-updated' }, '');
const headerInfo = el('div', { class: 'header-info' });
const refreshSelect = el(
  'select',
  { 'aria-label': 'Refresh interval', 'data-testid': 'refresh' },
  REFRESH_CHOICES.map((s) => el('option', { value: s, selected: s * 1000 === state.refreshMs }, `every ${s} s`)),
);
refreshSelect.addEventListener('change', () => {
  state.refreshMs = Number(refreshSelect.value) * 1000;
  localStorage.setItem('dwcp.refresh', refreshSelect.value);
  schedule(0);
});
const banner = el('div', { class: 'banner', hidden: true, 'data-testid': 'stale-banner' });

const header = el(
  'header',
  { class: 'topbar' },
  el('div', { class: 'brand' }, el('span', { class: 'logo' }, 'DWCP'), el('span', { class: 'brand-sub' }, 'v3 live migration')),
  headerInfo,
  el('div', { class: 'header-right' }, statusPill, updated, refreshSelect),
);

const pRollout = panel('panel-rollout', 'GO / NO-GO and rollout progress by region', { span: 8, extraClass: 'flush' });
pRollout.body.classList.add('regions');
const pKpis = panel('panel-kpis', 'Overview', { span: 12, extraClass: 'flush' });
pKpis.body.classList.add('kpis');
const chartNodeSelect = el('select', { 'aria-label': 'Node of the charts', 'data-testid': 'chart-node' });
chartNodeSelect.addEventListener('change', () => {
  state.chartNode = chartNodeSelect.value;
  schedule(0);
});
const pLatency = panel('panel-latency', 'Migration latency', { span: 4, subtitle: 'p50 · p95 · p99 over 60 s windows' });
const pTransport = panel('panel-throughput-transport', 'Throughput by transport', { span: 4, subtitle: 'logical vs wire' });
const pComponent = panel('panel-throughput-component', 'Throughput by component', { span: 4, subtitle: 'AMST · HDE · network' });
const pMigrations = panel('panel-migrations', 'Live migrations', { span: 12, subtitle: 'newest first · click a row for its detail' });
const pHealth = panel('panel-health', 'Component health', { span: 5, subtitle: 'node × component' });
pHealth.body.classList.add('scroll-x');
const pErrors = panel('panel-errors', 'Error distribution', { span: 6, subtitle: 'all nodes, since start' });
const errorsChartBox = el('div', { class: 'chart small-chart' });
const errorsBars = el('div');
pErrors.body.append(errorsBars, el('h3', null, 'Errors per second'), errorsChartBox);
const pAnomalies = panel('panel-anomalies', 'Anomaly timeline', { span: 6, subtitle: 'detections, newest first' });
const anomalyChartBox = el('div', { class: 'chart small-chart' });
const anomalyList = el('div', { class: 'table-scroll short' });
pAnomalies.body.append(anomalyChartBox, anomalyList);
const pComparison = panel('panel-comparison', 'v1 vs v3', { span: 4, subtitle: 'rollout samples per region' });
const pNodes = panel('panel-nodes', 'Nodes', { span: 7 });
pNodes.body.classList.add('scroll-x');

const pLinks = panel('panel-links', 'Links', { span: 12, subtitle: 'measured by AMST, forecast by PBA' });
pLinks.body.classList.add('scroll-x');

const latencyBox = el('div', { class: 'chart' });
const transportBox = el('div', { class: 'chart' });
const componentBox = el('div', { class: 'chart' });
pLatency.body.append(latencyBox);
pTransport.body.append(transportBox);
pComponent.body.append(componentBox);

const chartsHead = el(
  'div',
  { class: 'section-head span-12' },
  el('h2', null, 'Performance'),
  el('label', { class: 'muted small' }, 'node ', chartNodeSelect),
  el('span', { class: 'muted small', 'data-testid': 'history-source' }),
);

const drawer = el('aside', { class: 'drawer', hidden: true, 'data-testid': 'migration-detail', role: 'dialog' });
const scrim = el('div', { class: 'scrim', hidden: true, onclick: () => closeDetail() });

const grid = el(
  'main',
  { class: 'grid-layout' },
  pRollout.root,
  pComparison.root,
  pKpis.root,
  chartsHead,
  pLatency.root,
  pTransport.root,
  pComponent.root,
  pMigrations.root,
  pHealth.root,
  pNodes.root,
  pErrors.root,
  pAnomalies.root,
  pLinks.root,
);
fill(document.getElementById('app'), header, banner, grid, scrim, drawer);

const charts = new Charts({
  latency: latencyBox,
  transport: transportBox,
  component: componentBox,
  errors: errorsChartBox,
  anomalies: anomalyChartBox,
});

// ---- Data ----
function has(path) {
  return state.routes ? state.routes.has(`GET ${path}`) : false;
}

async function loadIndex() {
  const index = await getJson('/api/v1/');
  state.index = index;
  state.routes = new Set((Array.isArray(index.routes) ? index.routes : []).map((r) => `${r.method} ${r.path}`));
}

async function poll() {
  if (state.inFlight) return;
  state.inFlight = true;
  const started = Date.now();
  try {
    if (!state.routes) await loadIndex();
    const self = state.index && state.index.node;
    if (!state.chartNode) state.chartNode = self;
    const chartNode = state.chartNode;
    const historyPath = has('/metrics/summary/history')
      ? `/metrics/summary/history${chartNode && chartNode !== self ? `?node=${encodeURIComponent(chartNode)}` : ''}`
      : null;
    const r = await getAll({
      summary: getJson('/metrics/summary'),
      nodes: getJson('/api/v1/nodes'),
      migrations: getJson(`/api/v1/migrations?limit=${MIGRATIONS_SHOWN}`),
      rollout: has('/api/v1/rollout') ? getJson('/api/v1/rollout') : Promise.resolve(null),
      links: has('/api/v1/links') ? getJson('/api/v1/links') : Promise.resolve(null),
      history: historyPath ? getJson(historyPath) : Promise.resolve(null),
      detail: state.detailId ? getJson(`/api/v1/migrations/${encodeURIComponent(state.detailId)}`) : Promise.resolve(null),
    });
    if (!r.summary.ok) throw r.summary.error;
    const now = Date.now();
    const data = {};
    for (const [k, v] of Object.entries(r)) data[k] = v.ok ? v.value : null;
    state.data = data;
    const nodes = data.nodes && Array.isArray(data.nodes.nodes) ? data.nodes.nodes : [];
    // Every other live node's summary, through this node (?node=ID). A node that does not
    // forward answers with its own: that one is dropped, so the cell shows "—".
    const others = nodes.filter((n) => n.id !== data.summary.node && n.alive);
    const forwarded = await getAll(Object.fromEntries(others.map((n) => [n.id, getJson(`/metrics/summary?node=${encodeURIComponent(n.id)}`)])));
    const summaries = { [data.summary.node]: data.summary };
    for (const n of others) {
      const got = forwarded[n.id];
      if (got.ok && got.value && got.value.node === n.id) summaries[n.id] = got.value;
    }
    state.summaries = summaries;
    if (state.detailId) {
      state.detail = r.detail.ok ? r.detail.value : state.detail && state.detail.id === state.detailId ? state.detail : null;
      state.detailError = r.detail.ok ? null : describeError(r.detail.error);
    }
    if (chartNode === data.summary.node) state.clientHistory.add(data.summary, now);
    else if (summaries[chartNode]) state.clientHistory.add(summaries[chartNode], now);
    state.lastOkMs = now;
    state.error = null;
    const partial = Object.entries(r).filter(([, v]) => !v.ok).map(([k, v]) => `${k}: ${describeError(v.error)}`);
    render(now, partial);
  } catch (err) {
    state.error = describeError(err);
    // The node may have been replaced by a newer build: read its routes again next time.
    state.routes = null;
    renderStatus(Date.now());
  } finally {
    state.inFlight = false;
    schedule(Math.max(0, state.refreshMs - (Date.now() - started)));
  }
}

function schedule(ms) {
  clearTimeout(state.timer);
  state.timer = setTimeout(poll, ms);
}

// ---- Rendering ----
function renderStatus(now) {
  const age = state.lastOkMs ? now - state.lastOkMs : Infinity;
  let cls = 'live';
  let text = 'live';
  if (state.error) {
    cls = 'down';
    text = 'unreachable';
  } else if (age > 3 * state.refreshMs + 2000) {
    cls = 'stale';
    text = 'stale';
  }
  statusPill.className = `status-pill ${cls}`;
  statusPill.textContent = text;
  updated.textContent = state.lastOkMs ? `updated ${f.clock(state.lastOkMs)}` : '';
  document.body.classList.toggle('is-stale', cls !== 'live');
  if (cls === 'live') {
    banner.hidden = true;
  } else {
    banner.hidden = false;
    banner.textContent = state.lastOkMs
      ? `${location.host} is ${text}${state.error ? ` (${state.error})` : ''}. Showing data from ${f.clock(state.lastOkMs)}; retrying every ${state.refreshMs / 1000} s.`
      : `Cannot reach ${location.host}${state.error ? ` (${state.error})` : ''}; retrying every ${state.refreshMs / 1000} s.`;
  }
}

function render(now, partial) {
  const d = state.data;
  const nodes = d.nodes && Array.isArray(d.nodes.nodes) ? d.nodes.nodes : [];
  const idx = state.index || {};
  const regions = [...new Set(nodes.map((n) => n.region).filter(Boolean))];
  fill(
    headerInfo,
    el('span', null, 'Cluster ', el('strong', { 'data-testid': 'cluster-name' }, regions.length ? regions.join(', ') : f.DASH)),
    el('span', null, 'Node ', el('strong', { 'data-testid': 'node-name' }, f.str(idx.node))),
    el('span', null, `${nodes.filter((n) => n.alive).length}/${nodes.length} nodes up`),
    el('span', { class: 'muted' }, `dwcpd ${f.str(idx.version)}`),
  );
  document.title = `DWCP v3 · ${f.str(idx.node)}`;
  renderStatus(now);

  // Charts' node choice.
  const ids = nodes.map((n) => n.id);
  if (chartNodeSelect.options.length !== ids.length || ids.some((id, i) => chartNodeSelect.options[i].value !== id)) {
    fill(chartNodeSelect, ids.map((id) => el('option', { value: id }, id)));
  }
  chartNodeSelect.value = state.chartNode;

  renderRollout(pRollout.body, d.rollout);
  renderKpis(pKpis.body, { summaries: state.summaries, self: state.summaries[state.chartNode] || d.summary, nodesTotal: nodes.length });

  const serverHistory = d.history && d.history.node === state.chartNode ? fromServer(d.history) : null;
  const points = serverHistory || (state.clientHistory.node === state.chartNode ? state.clientHistory.points : []);
  const source = chartsHead.querySelector('[data-testid="history-source"]');
  source.textContent = serverHistory
    ? `${state.chartNode}'s last ${f.seconds(points.length > 1 ? points[points.length - 1].t - points[0].t : 0)}, a point every ${f.num(d.history.interval_seconds)} s`
    : 'sampled by this page (the node keeps no history)';
  charts.render(points);

  renderMigrations(pMigrations.body, d.migrations, { now, onOpen: openDetail, selected: state.detailId });
  pMigrations.note.textContent = partial.length ? `some data missing: ${partial.join('; ')}` : 'newest first · click a row for its detail';
  renderHealth(pHealth.body, { nodes, summaries: state.summaries });
  renderErrors(errorsBars, { summaries: state.summaries });
  renderAnomalies(anomalyList, { summaries: state.summaries });
  renderComparison(pComparison.body, d.rollout);
  renderNodes(pNodes.body, { nodes, summaries: state.summaries, now });
  renderLinks(pLinks.body, d.links);
  if (state.detailId) renderDetail(drawer, state.detail, { now, error: state.detailError, onClose: closeDetail });
}

// ---- Detail view: #migration=<id> ----
function openDetail(id) {
  if (location.hash !== `#migration=${encodeURIComponent(id)}`) location.hash = `migration=${encodeURIComponent(id)}`;
  else syncDetail();
}

function closeDetail() {
  history.replaceState(null, '', location.pathname + location.search);
  syncDetail();
}

function syncDetail() {
  const m = /^#migration=(.+)$/.exec(location.hash);
  const id = m ? decodeURIComponent(m[1]) : null;
  if (id === state.detailId) return;
  state.detailId = id;
  state.detail = null;
  state.detailError = null;
  drawer.hidden = !id;
  scrim.hidden = !id;
  if (id) {
    renderDetail(drawer, null, { now: Date.now(), onClose: closeDetail });
    schedule(0);
  }
}

window.addEventListener('hashchange', syncDetail);
window.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && state.detailId) closeDetail();
});
setInterval(() => renderStatus(Date.now()), 1000);
syncDetail();
poll();
