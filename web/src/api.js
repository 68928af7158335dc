// Reads dwcpd's JSON endpoints from the origin that served the page.

const TIMEOUT_MS = 4000;

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// GET `path` → parsed JSON. Rejects with HttpError on a non-2xx answer, with a TypeError or
// AbortError when the node cannot be reached in time.
export async function getJson(path, { timeoutMs = TIMEOUT_MS } = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const res = await fetch(path, {
      signal: controller.signal,
      cache: 'no-store',
      headers: { Accept: 'application/json' },
    });
    const text = await res.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!res.ok) {
      const msg = body && typeof body.error === 'string' ? body.error : `HTTP ${res.status}`;
      throw new HttpError(res.status, msg);
    }
    if (body === null) throw new HttpError(res.status, `${path}: not JSON`);
    return body;
  } finally {
    clearTimeout(timer);
  }
}

// Settles every request; each result is {ok, value} or {ok:false, error}.
export async function getAll(requests) {
  const keys = Object.keys(requests);
  const settled = await Promise.allSettled(keys.map((k) => requests[k]));
  const out = {};
  keys.forEach((k, i) => {
    const s = settled[i];
    out[k] = s.status === 'fulfilled' ? { ok: true, value: s.value } : { ok: false, error: s.reason };
  });
  return out;
}

export function describeError(err) {
  if (!err) return 'unknown error';
  if (err.name === 'AbortError') return 'timed out';
  if (err instanceof HttpError) return `${err.message} (HTTP ${err.status})`;
  return err.message || String(err);
}
