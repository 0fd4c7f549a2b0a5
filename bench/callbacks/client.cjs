// The Node side of the callback benchmark (bench/callbacks): makes Convex
// action callbacks the way upstream's Node executor does, and prints what
// it measured as one JSON line on stdout.
//
// What it copies from get-convex/convex-backend (94a42c3):
//   - the environment swap of npm-packages/node-executor/src/executor.ts
//     l.101-131: process.env becomes an allowlist before any callback, so a
//     preload that read the environment late would see nothing;
//   - syscalls.ts actionCallback (l.292-301): `new URL(path, origin)`, then
//     the bare global `fetch` with a JSON body, POST, and the
//     Convex-Action-Callback-Token header; undici's default pool keeps the
//     connections alive between callbacks;
//   - ctx.storage.store() (l.995) and ctx.storage.get() (l.1038): an
//     upload/get URL from a callback, then fetch of that URL with the blob.
//
// Usage: node client.cjs '<json config>' with origin, token, warm, n
// (sequential callbacks), cn and c (cn callbacks, c at a time), storage
// (stores and gets of size bytes each).
"use strict";

const cfg = JSON.parse(process.argv[2]);

// executor.ts setEnvironmentVariables, before the first callback.
const allowedEnvs = ["PATH", "PWD", "LANG", "NODE_PATH", "TZ", "UTC"];
const sanitized = {};
for (const name of allowedEnvs) {
  const value = process.env[name];
  if (value !== undefined) sanitized[name] = value;
}
process.env = sanitized;

const headers = {
  "Content-Type": "application/json",
  "Convex-Client": "actions-1.17.0",
  "Convex-Action-Callback-Token": cfg.token,
  "Convex-Action-Function-Name": "bench.js:callbacks",
  "Convex-Request-Id": "bench-request",
};

let requests = 0; // fetches answered 2xx, compared with the backend's count

async function actionCallback(path, body) {
  const url = new URL(path, cfg.origin);
  const response = await fetch(url, { body: JSON.stringify(body), method: "POST", headers });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status} ${await response.text()}`);
  const parsed = await response.json();
  requests++;
  return parsed;
}

async function query(i) {
  const r = await actionCallback("/api/actions/query", {
    path: "messages:list",
    args: [{ channel: "general", i }],
  });
  if (r.status !== "success") throw new Error("query: " + JSON.stringify(r));
}

const blob = new Blob([Buffer.alloc(cfg.size, 120)], { type: "application/octet-stream" });
const stored = [];

async function store() {
  const { url } = await actionCallback("/api/actions/storage_generate_upload_url", {});
  const response = await fetch(url, { method: "POST", body: blob, headers: { "Content-Type": blob.type } });
  if (!response.ok) throw new Error(`upload: HTTP ${response.status} ${await response.text()}`);
  const { storageId } = await response.json();
  if (storageId === undefined) throw new Error("upload: no storageId");
  requests++;
  stored.push(storageId);
}

async function get(i) {
  const { url } = await actionCallback("/api/actions/storage_get_url", { storageId: stored[i % stored.length] });
  const response = await fetch(url);
  if (!response.ok) throw new Error(`get: HTTP ${response.status}`);
  const b = await response.blob();
  if (b.size !== cfg.size) throw new Error(`get: ${b.size} bytes, want ${cfg.size}`);
  requests++;
}

const now = () => process.hrtime.bigint();

// run makes n calls of op, c at a time, and times each; c = 1 is back to back.
async function run(n, c, op) {
  const lat = new Float64Array(n);
  let next = 0;
  const start = now();
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const t = now();
      await op(i);
      lat[i] = Number(now() - t) / 1e3;
    }
  };
  await Promise.all(Array.from({ length: Math.min(c, n) }, worker));
  const seconds = Number(now() - start) / 1e9;
  lat.sort();
  const pct = (p) => lat[Math.min(n - 1, Math.floor(p * n))];
  return { n, seconds, rate: n / seconds, p50_us: pct(0.5), p99_us: pct(0.99) };
}

function describe(e) {
  const cause = e && e.cause;
  const code = cause && (cause.code || (cause.cause && cause.cause.code));
  return String(code || (cause && cause.message) || (e && e.message) || e).split("\n")[0];
}

(async () => {
  const out = { ok: true, modes: {} };
  try {
    // Unmeasured: the connections, TLS sessions and JIT warm up.
    await run(cfg.warm, 1, query);
    await run(Math.max(2, cfg.warm >> 4), 1, store);
    out.modes.sequential = await run(cfg.n, 1, query);
    out.modes.concurrent = await run(cfg.cn, cfg.c, query);
    out.modes.store = await run(cfg.storage, 1, store);
    out.modes.get = await run(cfg.storage, 1, get);
  } catch (e) {
    out.ok = false;
    out.error = describe(e);
  }
  out.requests = requests;
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(0);
})();
