// Live time-series charts on uPlot. A TimeChart keeps its series list and re-sizes with its
// container; setData() replaces the data (and rebuilds the chart when the series change).
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { el } from './dom.js';

export const PALETTE = ['#4c9aff', '#f5a623', '#e5534b', '#57ab5a', '#b083f0', '#39c5cf', '#e0823d', '#8b949e'];

const AXIS = {
  stroke: '#8b95a5',
  grid: { stroke: 'rgba(139,149,165,0.12)', width: 1 },
  ticks: { stroke: 'rgba(139,149,165,0.25)', width: 1, size: 4 },
  font: '11px system-ui, sans-serif',
};

// series: [{label, color?, dash?, fill?}] ; fmt: value → text for axis and legend.
export class TimeChart {
  // height: pixels, or 'auto' (grows with the width: taller charts on a wide screen).
  constructor(container, { height = 'auto', fmt = (v) => String(v), bars = false, minMax = 0 } = {}) {
    this.container = container;
    this.autoHeight = height === 'auto';
    this.height = this.autoHeight ? 190 : height;
    this.minMax = minMax;
    this.fmt = fmt;
    this.bars = bars;
    this.plot = null;
    this.pending = 0;
    this.labels = [];
    this.emptyNote = el('div', { class: 'chart-empty' }, 'no data yet');
    this.box = el('div', { class: 'chart-box' });
    container.append(this.box, this.emptyNote);
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(container);
  }

  width() {
    return Math.max(200, Math.floor(this.container.clientWidth));
  }

  heightFor(width) {
    return this.autoHeight ? Math.round(Math.min(260, Math.max(170, width * 0.4))) : this.height;
  }

  // Resizes on the next frame, and only when the width changed: setting the size inside the
  // observer's callback would re-trigger it.
  resize() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      const width = this.width();
      const height = this.heightFor(width);
      if (this.plot && (width !== this.plot.width || height !== this.height)) {
        this.height = height;
        this.plot.setSize({ width, height });
      }
    });
  }

  build(series) {
    if (this.plot) this.plot.destroy();
    const fmt = this.fmt;
    const paths = this.bars ? uPlot.paths.bars({ size: [0.8, 12] }) : undefined;
    const minMax = this.minMax;
    this.height = this.heightFor(this.width());
    const opts = {
      width: this.width(),
      height: this.height,
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(minMax, max > 0 ? max * 1.1 : 1)] } },
      axes: [
        { ...AXIS, values: (u, ticks) => ticks.map((t) => shortTime(t)) },
        { ...AXIS, size: 64, values: (u, ticks) => ticks.map((t) => fmt(t)) },
      ],
      series: [
        { value: (u, v) => (v == null ? '—' : shortTime(v)) },
        ...series.map((s, i) => {
          const color = s.color || PALETTE[i % PALETTE.length];
          return {
            label: s.label,
            stroke: color,
            width: this.bars ? 0 : 1.6,
            dash: s.dash,
            fill: this.bars ? color : s.fill ? hexAlpha(color, 0.12) : undefined,
            paths,
            spanGaps: false,
            points: { show: false },
            // Under the cursor its value; otherwise the latest one.
            value: (u, v, sidx, idx) => {
              const shown = idx == null ? lastValue(u.data[sidx]) : v;
              return shown == null ? '—' : fmt(shown);
            },
          };
        }),
      ],
    };
    this.plot = new uPlot(opts, [[], ...series.map(() => [])], this.box);
    this.labels = series.map((s) => s.label);
  }

  // xs: seconds since the epoch; ys: one array per series (null = no value).
  setData(series, xs, ys) {
    const labels = series.map((s) => s.label);
    if (!this.plot || labels.join('\u0001') !== this.labels.join('\u0001')) this.build(series);
    const hasValue = ys.some((arr) => arr.some((v) => v != null));
    this.emptyNote.hidden = hasValue && xs.length > 0;
    this.plot.setData([xs, ...ys]);
  }
}

function lastValue(arr) {
  for (let i = (arr ? arr.length : 0) - 1; i >= 0; i--) if (arr[i] != null) return arr[i];
  return null;
}

function shortTime(t) {
  const d = new Date(t * 1000);
  return d.toLocaleTimeString('en-GB', { hour12: false });
}

function hexAlpha(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}
