// The live migrations table and one migration's detail view (#migration=<id>).
import { el, fill, table, emptyRow } from './dom.js';
import * as f from './format.js';
import { PALETTE } from './charts.js';

const PHASE_CLASS = {
  pending: 'neutral',
  precopy: 'info',
  switchover: 'warn',
  committing: 'warn',
  completed: 'good',
  failed: 'bad',
  aborted: 'bad',
};

function finished(m) {
  return f.isNum(m.finished_ms) && m.finished_ms > 0;
}

// 0..100: pre-copy is most of the way, switchover and commit the last part.
export function progressOf(m) {
  switch (m.phase) {
    case 'completed':
      return 100;
    case 'switchover':
      return 92;
    case 'committing':
      return 97;
    case 'precopy': {
      const sent = f.isNum(m.bytes_transferred) ? m.bytes_transferred : 0;
      const left = f.isNum(m.remaining_bytes) ? m.remaining_bytes : 0;
      return sent + left > 0 ? 5 + 85 * (sent / (sent + left)) : 5;
    }
    case 'failed':
    case 'aborted':
      return 100;
    default:
      return 0;
  }
}

export function phaseBadge(phase) {
  return el('span', { class: `badge ${PHASE_CLASS[phase] || 'neutral'}`, 'data-testid': 'phase' }, f.str(phase));
}

const COLUMNS = [
  { label: 'VM' },
  { label: 'Route' },
  { label: 'Proto' },
  { label: 'Phase' },
  { label: 'Round', cls: 'num' },
  { label: 'Bytes', cls: 'num' },
  { label: 'Rate', cls: 'num' },
  { label: 'ETA', cls: 'num' },
  { label: 'Progress', cls: 'progress-col' },
  { label: 'Duration', cls: 'num' },
  { label: 'Started' },
];

export function renderMigrations(body, migrations, { now, onOpen, selected }) {
  const list = migrations && Array.isArray(migrations.migrations) ? migrations.migrations : null;
  const { node, tbody } = table(COLUMNS, 'migrations-table');
  if (!list) tbody.append(emptyRow(COLUMNS.length, f.DASH));
  else if (!list.length) tbody.append(emptyRow(COLUMNS.length, 'No migration yet'));
  else {
    for (const m of list) {
      const done = finished(m);
      const pct = progressOf(m);
      const duration = done ? m.total_ms / 1000 : f.isNum(m.created_ms) ? (now - m.created_ms) / 1000 : null;
      const row = el(
        'tr',
        {
          class: `clickable ${m.id === selected ? 'selected' : ''} ${done ? '' : 'running'}`,
          dataset: { migrationId: m.id, phase: m.phase, vm: m.vm },
          'data-testid': 'migration-row',
          tabindex: 0,
          title: 'Open the migration',
          onclick: () => onOpen(m.id),
          onkeydown: (e) => (e.key === 'Enter' ? onOpen(m.id) : null),
        },
        el('td', null, el('strong', null, f.str(m.vm)), el('div', { class: 'muted small mono' }, f.str(m.id))),
        el('td', null, `${f.str(m.source)} → ${f.str(m.destination)}`),
        el('td', null, el('span', { class: `badge proto-${m.protocol}` }, f.str(m.protocol))),
        el('td', null, phaseBadge(m.phase), m.error ? el('div', { class: 'small bad ellipsis', title: m.error }, m.error) : null),
        el('td', { class: 'num', 'data-testid': 'round' }, f.num(m.round)),
        el('td', { class: 'num', 'data-testid': 'bytes' }, `${f.bytes(m.bytes_transferred)}`, el('div', { class: 'muted small' }, `of ${f.bytes(m.memory_bytes)}`)),
        el('td', { class: 'num' }, done ? f.DASH : f.rate(m.throughput_bps)),
        el('td', { class: 'num' }, !done && f.isNum(m.eta_seconds) && m.eta_seconds > 0 ? f.seconds(m.eta_seconds) : f.DASH),
        el(
          'td',
          { class: 'progress-col' },
          el('div', { class: `progress ${m.phase === 'failed' || m.phase === 'aborted' ? 'failed' : done ? 'done' : ''}` }, el('div', { class: 'bar', style: { width: `${pct.toFixed(1)}%` } })),
        ),
        el('td', { class: 'num' }, f.seconds(duration)),
        el('td', null, f.clock(m.created_ms)),
      );
      tbody.append(row);
    }
  }
  fill(body, el('div', { class: 'table-scroll' }, node));
}

// ---- Detail ----

const PHASES = [
  { key: 'pending', label: 'pending', start: 'created_ms', color: PALETTE[7] },
  { key: 'precopy', label: 'pre-copy', start: 'precopy_started_ms', color: PALETTE[0] },
  { key: 'switchover', label: 'switchover', start: 'switchover_started_ms', color: PALETTE[1] },
  { key: 'committing', label: 'commit', start: 'commit_started_ms', color: PALETTE[4] },
];

export function renderDetail(container, m, { now, error, onClose }) {
  const closeBtn = el('button', { class: 'close', 'aria-label': 'Close', onclick: onClose, 'data-testid': 'detail-close' }, '×');
  if (!m) {
    return fill(container, el('div', { class: 'drawer-head' }, el('h2', null, 'Migration'), closeBtn), el('div', { class: 'muted pad' }, error ? `Cannot load: ${error}` : 'Loading…'));
  }
  const done = finished(m);
  const reduction = f.isNum(m.bytes_transferred) && f.isNum(m.network_bytes) && m.network_bytes > 0 ? `${(m.bytes_transferred / m.network_bytes).toFixed(2)}×` : f.DASH;
  const verified = m.source_digest && m.dest_digest ? (m.source_digest === m.dest_digest ? 'verified' : 'MISMATCH') : f.DASH;
  const facts = [
    ['VM', f.str(m.vm)],
    ['Route', `${f.str(m.source)} → ${f.str(m.destination)}`],
    ['Protocol', f.str(m.protocol)],
    ['Result', f.str(m.result || (done ? m.phase : 'running'))],
    ['Rounds', f.num(m.round)],
    ['Memory', f.bytes(m.memory_bytes)],
    ['Moved (logical)', f.bytes(m.bytes_transferred)],
    ['On the wire', `${f.bytes(m.network_bytes)} (${reduction} reduction)`],
    ['Throughput', f.rate(m.throughput_bps)],
    ['Remaining', done ? f.DASH : f.bytes(m.remaining_bytes)],
    ['ETA', !done && m.eta_seconds > 0 ? f.seconds(m.eta_seconds) : f.DASH],
    ['Downtime', f.isNum(m.downtime_ms) && done ? `${m.downtime_ms.toFixed(1)} ms` : f.DASH],
    ['Total time', done ? f.millis(m.total_ms) : f.DASH],
    ['Started', f.clock(m.created_ms)],
  ];
  fill(
    container,
    el(
      'div',
      { class: 'drawer-head' },
      el('div', null, el('h2', null, `${f.str(m.vm)} `, phaseBadge(m.phase)), el('div', { class: 'muted mono small', 'data-testid': 'detail-id' }, m.id)),
      closeBtn,
    ),
    m.error ? el('div', { class: 'alert bad', 'data-testid': 'detail-error' }, m.error) : null,
    el('h3', null, 'Trace'),
    el('div', { class: 'trace' }, el('code', { 'data-testid': 'detail-trace-id' }, f.str(m.trace_id))),
    el('h3', null, 'Phases'),
    phaseTimeline(m, now),
    el('h3', null, "Components' time"),
    componentBars(m),
    el('h3', null, 'Numbers'),
    el('dl', { class: 'facts' }, facts.map(([k, v]) => [el('dt', null, k), el('dd', null, v)])),
    el('h3', null, 'Content digest'),
    el(
      'dl',
      { class: 'facts digests' },
      el('dt', null, 'source'),
      el('dd', { class: 'mono small' }, f.str(m.source_digest)),
      el('dt', null, 'destination'),
      el('dd', { class: 'mono small' }, f.str(m.dest_digest)),
      el('dt', null, 'check'),
      el('dd', { class: verified === 'MISMATCH' ? 'bad' : verified === 'verified' ? 'good' : '' }, verified),
    ),
  );
}

function phaseTimeline(m, now) {
  const end = f.isNum(m.finished_ms) && m.finished_ms > 0 ? m.finished_ms : now;
  const spans = [];
  PHASES.forEach((p, i) => {
    const start = m[p.start];
    if (!f.isNum(start) || start <= 0) return;
    let stop = end;
    for (let j = i + 1; j < PHASES.length; j++) {
      const next = m[PHASES[j].start];
      if (f.isNum(next) && next > 0) {
        stop = next;
        break;
      }
    }
    spans.push({ ...p, startMs: start, ms: Math.max(0, stop - start) });
  });
  const total = spans.reduce((a, s) => a + s.ms, 0);
  const outcome = f.isNum(m.finished_ms) && m.finished_ms > 0 ? m.phase : null;
  return el(
    'div',
    { class: 'phases', 'data-testid': 'detail-phases' },
    el(
      'div',
      { class: 'phase-bar' },
      spans.map((s) => el('span', { class: 'seg', title: `${s.label}: ${f.millis(s.ms)}`, style: { flexGrow: String(Math.max(s.ms, total * 0.02)), background: s.color } })),
    ),
    el(
      'table',
      { class: 'grid compact' },
      el(
        'tbody',
        null,
        spans.map((s) =>
          el('tr', { dataset: { phase: s.key } }, el('td', null, el('i', { class: 'swatch', style: { background: s.color } }), s.label), el('td', null, f.clock(s.startMs)), el('td', { class: 'num' }, f.millis(s.ms))),
        ),
        outcome ? el('tr', { dataset: { phase: outcome } }, el('td', null, phaseBadge(outcome)), el('td', null, f.clock(m.finished_ms)), el('td', { class: 'num' }, f.millis(m.total_ms))) : null,
        spans.length === 0 ? el('tr', null, el('td', { colspan: 3, class: 'muted' }, f.DASH)) : null,
      ),
    ),
  );
}

function componentBars(m) {
  const comps = [
    ['AMST (transfer)', m.amst_seconds, PALETTE[0]],
    ['HDE (encode)', m.hde_seconds, PALETTE[1]],
    ['ACP (consensus)', m.acp_seconds, PALETTE[4]],
  ];
  const max = Math.max(1e-9, ...comps.map((c) => (f.isNum(c[1]) ? c[1] : 0)));
  return el(
    'div',
    { class: 'barlist', 'data-testid': 'detail-components' },
    comps.map(([name, v, color]) =>
      el(
        'div',
        { class: 'barrow' },
        el('span', { class: 'barname' }, name),
        el('span', { class: 'bartrack' }, el('span', { class: 'barfill', style: { width: `${f.isNum(v) ? (v / max) * 100 : 0}%`, background: color } })),
        el('span', { class: 'barval' }, f.seconds(v)),
      ),
    ),
  );
}
