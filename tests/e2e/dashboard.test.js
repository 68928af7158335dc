// End-to-end test of the web dashboard dwcpd serves at "/" (docs/dashboard.md): a real
// three-node `dwcp demo` cluster on free loopback ports, Debian's Chromium driven by
// playwright-core, a migration started with the real `dwcp migrate`.
//
// Env (set by ctest, see CMakeLists.txt): DWCP_BINARY, DWCPD_BINARY, E2E_ARTIFACT_DIR,
// CHROMIUM (default /usr/bin/chromium). Run alone: `cd tests/e2e && npm ci && node --test`.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const DWCP = process.env.DWCP_BINARY || join(repo, 'build/dwcp');
const DWCPD = process.env.DWCPD_BINARY || join(repo, 'build/dwcpd');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.E2E_ARTIFACT_DIR || join(repo, 'build/e2e-artifacts');
const run = promisify(execFile);
const { chromium } = await import('playwright-core').catch((err) => {
  throw new Error(`playwright-core is not installed in tests/e2e (run \`make test\`, or \`cd tests/e2e && npm ci\`): ${err.message}`);
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `fn` until it returns a truthy value; fails with `what` after `timeoutMs`.
async function waitFor(what, fn, timeoutMs = 30000, everyMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

const cluster = { demo: null, output: '', nodes: {}, dir: null, api: null, exited: null };
let browser = null;
let page = null;
const problems = []; // console errors, page errors, failed requests: the page must have none
let failed = false; // keeps the cluster's directory and prints the demo's output

// node:test's test(), remembering a failure for after().
function test(name, fn) {
  nodeTest(name, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      failed = true;
      throw err;
    }
  });
}

function startDemo() {
  cluster.dir = mkdtempSync(join(tmpdir(), 'dwcp-e2e-'));
  const args = [
    'demo', '--nodes', '3', '--vms', '3', '--data-dir', cluster.dir, '--dwcpd', DWCPD,
    '--memory', '128MiB', '--dirty-rate', '10MB/s', '--bandwidth-limit', '150MB/s', '--interval', '300ms',
  ];
  const demo = spawn(DWCP, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  cluster.demo = demo;
  demo.on('exit', (code, signal) => {
    cluster.exited = { code, signal };
  });
  const onData = (chunk) => {
    cluster.output += chunk.toString();
    // "starting node-a (pid 1234, API http://127.0.0.1:8080, data 127.0.0.1:7070)"
    for (const m of cluster.output.matchAll(/starting (node-[a-z]+) \(pid (\d+), API (http:\/\/127\.0\.0\.1:\d+)/g)) {
      cluster.nodes[m[1]] = { pid: Number(m[2]), api: m[3] };
    }
  };
  demo.stdout.on('data', onData);
  demo.stderr.on('data', onData);
}

async function stopDemo() {
  const demo = cluster.demo;
  if (demo && cluster.exited === null) {
    demo.kill('SIGTERM'); // the demo stops its nodes in order
    const deadline = Date.now() + 20000;
    while (cluster.exited === null && Date.now() < deadline) await sleep(100);
    if (cluster.exited === null) demo.kill('SIGKILL');
  }
  // Whatever is left of the nodes we started, by the pids the demo printed.
  for (const { pid } of Object.values(cluster.nodes)) {
    try {
      process.kill(pid, 0);
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmdline.includes(cluster.dir)) process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

async function dwcp(...args) {
  const { stdout } = await run(DWCP, [...args, '--api', cluster.api], { timeout: 120000 });
  return stdout;
}

async function getJson(path) {
  const res = await fetch(cluster.api + path);
  assert.equal(res.status, 200, `${path}: HTTP ${res.status}`);
  return res.json();
}

// The text of every element matching `selector`.
const texts = (selector) => page.$$eval(selector, (els) => els.map((e) => e.textContent.trim()));
const text = async (selector) => (await page.textContent(selector)).trim();
const number = (s) => Number(String(s).replace(/[^0-9.]/g, ''));

before(async () => {
  for (const [what, path] of [['dwcp', DWCP], ['dwcpd', DWCPD], ['chromium', CHROMIUM]]) {
    assert.ok(existsSync(path), `${what} not found at ${path} (chromium: scripts/install-deps.sh installs Debian's chromium)`);
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  startDemo();
  await waitFor(
    'the demo to start three nodes',
    () => {
      if (cluster.exited) throw new Error(`dwcp demo exited early (${JSON.stringify(cluster.exited)}):\n${cluster.output}`);
      return Object.keys(cluster.nodes).length === 3 && /created vm-3|vm-3 exists/.test(cluster.output);
    },
    60000,
  );
  cluster.api = cluster.nodes['node-a'].api;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
  });
  page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console.error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('requestfailed', (req) => problems.push(`request failed: ${req.url()} ${req.failure()?.errorText}`));
  page.on('response', (res) => {
    if (res.status() >= 400) problems.push(`HTTP ${res.status()} for ${res.url()}`);
  });
});

after(async () => {
  if (browser) await browser.close();
  await stopDemo();
  if (failed) console.log(`--- dwcp demo output (nodes' logs in ${cluster.dir}) ---\n${cluster.output.slice(-4000)}`);
  else if (cluster.dir) rmSync(cluster.dir, { recursive: true, force: true });
});

test('dwcpd serves the dashboard at / and the JSON index at /api/v1/', async () => {
  const res = await fetch(cluster.api + '/');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/html/);
  const html = await res.text();
  assert.match(html, /<div id="app">/);
  const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html);
  assert.ok(asset, 'index.html names its script under /assets/');
  const js = await fetch(cluster.api + asset[1]);
  assert.equal(js.status, 200);
  assert.match(js.headers.get('cache-control'), /immutable/);
  const etag = js.headers.get('etag');
  assert.ok(etag, 'assets carry an ETag');
  const again = await fetch(cluster.api + asset[1], { headers: { 'If-None-Match': etag } });
  assert.equal(again.status, 304);
  // No reference to anything outside the node: the page works offline.
  assert.doesNotMatch(html, /(src|href)=["']?(https?:)?\/\//);
  assert.doesNotMatch(await js.text(), /(src|href)=["']?(https?:)?\/\/|@import|fonts\.googleapis/);
  const index = await getJson('/api/v1/');
  assert.equal(index.node, 'node-a');
  assert.ok(index.routes.some((r) => r.method === 'GET' && r.path === '/api/v1/migrations'));
  assert.equal((await fetch(cluster.api + '/assets/nope.js')).status, 404);
});

test('the page loads live, with every panel filled from the cluster', async () => {
  await page.goto(cluster.api + '/');
  await waitFor('the live status', async () => (await text('[data-testid=conn-status]')) === 'live');
  assert.equal(await text('[data-testid=node-name]'), 'node-a');
  // GO / NO-GO per region (the demo's region is "local").
  await waitFor('a rollout decision', async () => /^(GO|NO-GO|PENDING)$/.test(await text('[data-testid=region-card] [data-testid=decision]')));
  assert.equal(await text('[data-testid=region-card] [data-testid=stage]'), 'majority');
  // Nodes and health: three nodes, each with a health value for every component.
  await waitFor('three nodes', async () => (await page.$$('[data-testid=nodes-table] tbody tr[data-node]')).length === 3);
  await waitFor('health of every node', async () => {
    const cells = await texts('[data-testid=health-matrix] tbody td.c');
    return cells.length >= 9 && cells.every((c) => ['OK', 'DEGR', 'DOWN'].includes(c));
  });
  // Migrations finish: totals, latency and the v1 vs v3 samples are numbers.
  await waitFor('finished migrations', async () => number(await text('[data-testid=kpi-migrations-total-value]')) >= 3, 60000);
  await waitFor('a latency p99', async () => /\d/.test(await text('[data-testid=kpi-latency-p99-value]')), 60000);
  await waitFor('v1 and v3 samples', async () => {
    const cells = await texts('[data-testid=comparison-table] tbody tr:first-child td.num');
    return cells.length >= 2 && /\d/.test(cells[0]) && /\d/.test(cells[1]) && number(cells[0]) + number(cells[1]) > 0;
  }, 60000);
  // Links: measured bandwidth and RTT between the nodes, once migrations crossed them.
  await waitFor('a measured link', async () => {
    const rows = await page.$$eval('[data-testid=links-table] tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent.trim())));
    return rows.some((r) => r.length >= 5 && /\d/.test(r[2]) && /\d/.test(r[4]));
  }, 60000);
  // The latency and throughput charts drew points.
  for (const chart of ['latency', 'throughput-transport', 'throughput-component']) {
    await waitFor(`${chart} chart data`, async () => page.isHidden(`#panel-${chart} .chart-empty`));
  }
});

test('the numbers change while migrations run, without a reload', async () => {
  const marker = await page.evaluate(() => (window.__e2eMarker = Math.random()));
  const sample = async () => ({
    total: number(await text('[data-testid=kpi-migrations-total-value]')),
    first: await page.$eval('[data-testid=migrations-table] tbody tr', (tr) => tr.dataset.migrationId),
    updated: await text('[data-testid=last-updated]'),
    // "node-a's last 40 s, a point every 5 s": the charts' history grows.
    history: await text('[data-testid=history-source]'),
  });
  const a = await sample();
  const b = await waitFor('more finished migrations and a newer history point', async () => {
    const s = await sample();
    return s.total > a.total && s.first !== a.first && s.updated !== a.updated && s.history !== a.history ? s : null;
  }, 45000);
  assert.ok(b.total > a.total, `migrations total grew: ${a.total} → ${b.total}`);
  assert.equal(await page.evaluate(() => window.__e2eMarker), marker, 'the page was not reloaded');
  // The charts follow another node's history, forwarded by node-a (?node=).
  await page.selectOption('[data-testid=chart-node]', 'node-b');
  await waitFor("node-b's history", async () => /^node-b's last \d/.test(await text('[data-testid=history-source]')), 10000);
  await page.selectOption('[data-testid=chart-node]', 'node-a');
  await waitFor("node-a's history again", async () => /^node-a's last/.test(await text('[data-testid=history-source]')), 10000);
  assert.equal(await page.evaluate(() => window.__e2eMarker), marker, 'the page was not reloaded');
});

test('a migration started with `dwcp migrate` appears in the table and completes; its detail shows phases and trace id', async () => {
  const vm = `e2e-${process.pid}`;
  await dwcp('vm', 'create', '--vm', vm, '--node', 'node-b', '--memory', '384MiB', '--dirty-rate', '5MB/s');
  // The demo migrates every running VM too: ask for our VM's current node, pick another one,
  // and try again if the demo took the VM in the same instant (409).
  let started;
  for (let attempt = 0; !started; attempt++) {
    const current = await getJson(`/api/v1/vms/${vm}`);
    const to = ['node-a', 'node-b', 'node-c'].find((n) => n !== current.node);
    try {
      const { stdout } = await run(DWCP, ['migrate', '--api', cluster.api, '--json', '--no-wait', '--vm', vm, '--to', to, '--bandwidth-limit', '60MB/s'], { timeout: 30000 });
      started = JSON.parse(stdout);
    } catch (err) {
      if (attempt >= 5) throw err;
      await sleep(1000);
    }
  }
  const id = started.id;
  assert.match(id, /^mig-/);
  assert.equal(started.vm, vm);
  const row = `[data-testid=migrations-table] tbody tr[data-migration-id="${id}"]`;
  await page.waitForSelector(row, { timeout: 10000 });
  const seen = new Set();
  await waitFor('the migration to complete in the table', async () => {
    const phase = await page.$eval(row, (tr) => tr.dataset.phase);
    seen.add(phase);
    assert.ok(!['failed', 'aborted'].includes(phase), `migration ${id} ${phase}`);
    return phase === 'completed';
  }, 60000, 200);
  console.log(`phases seen in the table: ${[...seen].join(' → ')}`);
  assert.equal((await page.$eval(row, (tr) => tr.querySelector('[data-testid=phase]').textContent)).trim(), 'completed');
  assert.equal((await getJson(`/api/v1/migrations/${id}`)).result, 'success');

  await page.click(row);
  await page.waitForSelector('[data-testid=migration-detail]:not([hidden]) [data-testid=detail-phases]');
  assert.equal(await text('[data-testid=detail-id]'), id);
  assert.match(page.url(), new RegExp(`#migration=${id}$`));
  await waitFor('the trace id', async () => /^[0-9a-f]{32}$/.test(await text('[data-testid=detail-trace-id]')), 10000);
  const phases = await page.$$eval('[data-testid=detail-phases] tr[data-phase]', (trs) => trs.map((t) => t.dataset.phase));
  for (const p of ['pending', 'precopy', 'switchover', 'committing', 'completed']) assert.ok(phases.includes(p), `phase ${p} in ${phases}`);
  const components = await texts('[data-testid=detail-components] .barval');
  assert.equal(components.length, 3);
  assert.ok(components.some((c) => /\d/.test(c)), `components' time: ${components}`);
  const shot = join(ARTIFACTS, 'e2e-dashboard-detail.png');
  await page.screenshot({ path: shot });
  console.log(`screenshot: ${shot}`);
  await page.keyboard.press('Escape');
  await page.waitForSelector('[data-testid=migration-detail][hidden]', { state: 'attached' });
});

test('screenshots at laptop and desktop sizes, and no console error during the whole run', async () => {
  for (const [w, h] of [[1366, 768], [1920, 1080]]) {
    await page.setViewportSize({ width: w, height: h });
    await page.evaluate(() => window.scrollTo(0, 0));
    await sleep(2500); // a refresh at the new size
    const shot = join(ARTIFACTS, `e2e-dashboard-${w}x${h}.png`);
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot: ${shot}`);
  }
  assert.equal(await text('[data-testid=conn-status]'), 'live');
  assert.deepEqual(problems, []);
});

test('a node that stops answering shows as unreachable, and the page recovers by itself', async () => {
  const { pid } = cluster.nodes['node-a'];
  process.kill(pid, 'SIGSTOP'); // the page's node freezes: its requests time out
  try {
    await waitFor('the unreachable state', async () => (await text('[data-testid=conn-status]')) === 'unreachable', 20000);
    assert.ok(await page.isVisible('[data-testid=stale-banner]'));
    assert.match(await text('[data-testid=stale-banner]'), /Showing data from/);
    const shot = join(ARTIFACTS, 'e2e-dashboard-unreachable.png');
    await page.screenshot({ path: shot });
    console.log(`screenshot: ${shot}`);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  await waitFor('the live state again', async () => (await text('[data-testid=conn-status]')) === 'live', 20000);
  assert.ok(await page.isHidden('[data-testid=stale-banner]'));
});
