// Formatting of API values. Every function returns '—' for a value the API did not give
// (undefined, null, NaN), so a missing field never shows as "undefined" or "NaN".

export const DASH = '—';

export function isNum(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

export function num(v, digits = 0) {
  if (!isNum(v)) return DASH;
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function bytes(v) {
  if (!isNum(v)) return DASH;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = Math.abs(v);
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  const digits = i === 0 ? 0 : x >= 100 ? 0 : x >= 10 ? 1 : 2;
  return `${v < 0 ? '-' : ''}${x.toFixed(digits)} ${units[i]}`;
}

// Bytes per second in decimal units, as the CLI prints rates ("212.3 MB/s").
export function rate(v) {
  if (!isNum(v)) return DASH;
  const units = ['B/s', 'kB/s', 'MB/s', 'GB/s', 'TB/s'];
  let i = 0;
  let x = Math.abs(v);
  while (x >= 1000 && i < units.length - 1) {
    x /= 1000;
    i++;
  }
  const digits = i === 0 ? 0 : x >= 100 ? 0 : 1;
  return `${x.toFixed(digits)} ${units[i]}`;
}

export function seconds(v) {
  if (!isNum(v)) return DASH;
  if (v === 0) return '0 s';
  if (v < 0.001) return `${Math.round(v * 1e6)} µs`;
  if (v < 1) return `${(v * 1000).toFixed(v < 0.01 ? 1 : 0)} ms`;
  if (v < 60) return `${v.toFixed(v < 10 ? 2 : 1)} s`;
  const m = Math.floor(v / 60);
  const s = Math.round(v - m * 60);
  if (m < 60) return `${m}m ${String(s).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

export function millis(v) {
  return isNum(v) ? seconds(v / 1000) : DASH;
}

export function percent(v, digits = 1) {
  return isNum(v) ? `${v.toFixed(digits)} %` : DASH;
}

// A ratio 0..1 as a percentage.
export function ratioPercent(v, digits = 1) {
  return isNum(v) ? percent(v * 100, digits) : DASH;
}

// Wall-clock time of a millisecond timestamp, HH:MM:SS local.
export function clock(ms) {
  if (!isNum(ms) || ms <= 0) return DASH;
  return new Date(ms).toLocaleTimeString('en-GB', { hour12: false });
}

// "12 s ago" from a millisecond timestamp and now.
export function ago(ms, now = Date.now()) {
  if (!isNum(ms) || ms <= 0) return DASH;
  const d = Math.max(0, (now - ms) / 1000);
  if (d < 1) return 'now';
  if (d < 90) return `${Math.round(d)} s ago`;
  if (d < 5400) return `${Math.round(d / 60)} min ago`;
  return `${Math.round(d / 3600)} h ago`;
}

export function str(v) {
  return typeof v === 'string' && v !== '' ? v : DASH;
}

export function shortHash(v, n = 12) {
  return typeof v === 'string' && v !== '' ? (v.length > n ? `${v.slice(0, n)}…` : v) : DASH;
}
