"use strict";
// Stand-in for the Convex Node executor's local server (`node local.cjs --ipc-path <sock>`),
// started by the stand-in backend in the backend's own process group (docs/convex-facts.md §5).
//
// It serves POST /execute on a Unix socket (the real backend talks to its Node server over a
// Unix socket, not TCP, §3). Each request is one "Node action" that makes the callbacks listed
// in `ops`, built exactly like the real executor's (§1, §11, upstream 94a42c3
// npm-packages/node-executor/src/syscalls.ts):
//   new URL("/api/actions/<op>", backendAddress) + the bare global fetch +
//   Convex-Action-Callback-Token;
// storage upload and download fetch the string URL the backend returned. `fetch` is looked up
// on globalThis at every call, as the esbuild bundle does, so a preload that replaces it
// intercepts every one. So with backendAddress "http://127.0.0.1" every callback goes to
// 127.0.0.1:80 and fails with ECONNREFUSED, the failure this project exists to fix.
//
// Like upstream's executor.ts (l.101-131), each invocation replaces process.env with an
// allowlist (PATH, PWD, LANG, NODE_PATH, TZ, UTC) taken from the environment the server
// started with, plus the action's user variables (`env` in the request), and never restores
// it: whatever the server's environment held (NODE_OPTIONS, NODE_EXTRA_CA_CERTS, the shim's
// settings) is gone by the time an action runs.
//
// Ops: the callback kinds (query, mutation, action, schedule_job, ...), the storage composites
// storage_store, storage_get, storage_delete (§1), and for tests of what must pass untouched:
//   query_request      the query callback with a Request as fetch's input
//   site_fetch=PATH    fetch(process.env.CONVEX_SITE_URL + PATH), as user code calls its HTTP actions
//   user_fetch=URL     a user fetch of URL (a string), its status and body
//   https_get=URL      a node:https GET of URL, which no fetch wrapper sees
//   heap_limit         v8.getHeapStatistics().heap_size_limit (a user --max-old-space-size)
//   node_options       NODE_OPTIONS as the server saw it when it started
//   env_keys           the names in process.env during the action
// Each result carries the op's duration in ms, measured here, inside the container.
//
// Retries follow the real executor (§9): connect-phase errors for every callback, mid-flight
// errors and 5xx only for query and mutation; up to 5 tries with jittered exponential backoff
// from STANDIN_RETRY_BASE_MS (default 200 ms; the real one waits 1-20 s). Storage upload and
// download are not retried (syscalls.ts l.995, l.1038).
//
// Each INT, TERM, HUP or USR1 it receives is appended as "node SIGNAME" to STANDIN_SIGNAL_LOG
// (default /convex/data/signals.log), then it exits 128+n, so tests can prove that stopping
// the backend never signalled its Node server.

const fs = require("node:fs");
const http = require("node:http");
const https = require("node:https");
const os = require("node:os");
const v8 = require("node:v8");

const MAX_TRIES = 5;
const signalLog = process.env.STANDIN_SIGNAL_LOG || "/convex/data/signals.log";
const retryBaseMs = Number(process.env.STANDIN_RETRY_BASE_MS || 200);
// Read at load: the first action replaces process.env.
const startEnv = { ...process.env };
const allowedEnv = ["PATH", "PWD", "LANG", "NODE_PATH", "TZ", "UTC"];

// swapEnv replaces process.env for one invocation, as upstream's executor does.
function swapEnv(userEnv) {
  const env = {};
  for (const name of allowedEnv) {
    if (startEnv[name] !== undefined) env[name] = startEnv[name];
  }
  process.env = Object.assign(env, userEnv || {});
}

for (const sig of ["SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1"]) {
  process.on(sig, () => {
    try {
      const fd = fs.openSync(signalLog, "a");
      fs.writeSync(fd, `node ${sig}\n`);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    } catch (err) {
      console.error(`local.cjs: record ${sig} in ${signalLog}: ${err.message}`);
    }
    process.exit(128 + os.constants.signals[sig]);
  });
}

// connectPhase tells whether a fetch error happened before the request was sent, the only kind
// the real executor retries for every op.
function connectPhase(err) {
  const cause = err && err.cause;
  if (!cause) return false;
  const codes = [cause, ...(cause.errors || [])].map((e) => e.code);
  return codes.some((c) => c === "ECONNREFUSED" || c === "UND_ERR_CONNECT_TIMEOUT");
}

// describe spells out what `fetch failed` hides, the way Node's own messages do:
// "fetch failed: connect ECONNREFUSED 127.0.0.1:80".
function describe(err) {
  const cause = err && err.cause;
  if (!cause) return String((err && err.message) || err);
  const parts = (cause.errors && cause.errors.length ? cause.errors : [cause]).map((e) =>
    e.code && e.address
      ? `${e.syscall || "connect"} ${e.code} ${e.address}:${e.port}`
      : `${e.code ? e.code + " " : ""}${e.message}`,
  );
  return `${err.message}: ${parts.join(", ")}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// fetchWithRetry calls the global fetch on input(), a fresh string, URL or Request for each try
// (a Request's body can be read once).
async function fetchWithRetry(op, url, input, tries = MAX_TRIES) {
  const midFlightRetried = op === "query" || op === "mutation";
  for (let attempt = 1; ; attempt++) {
    const backoff = () => sleep(retryBaseMs * 2 ** (attempt - 1) * (0.5 + Math.random() / 2));
    let res;
    try {
      res = await fetch(...input());
    } catch (err) {
      if (attempt < tries && (connectPhase(err) || midFlightRetried)) {
        await backoff();
        continue;
      }
      throw new Error(`${op} ${url}: ${describe(err)} (after ${attempt} tries)`);
    }
    if (res.status >= 500 && midFlightRetried && attempt < tries) {
      await res.body?.cancel();
      await backoff();
      continue;
    }
    return res;
  }
}

// callback makes one ctx.* callback. asRequest hands fetch a Request instead of (URL, init).
async function callback(action, op, fields = {}, asRequest = false) {
  const url = new URL(`/api/actions/${op}`, action.backendAddress);
  const init = {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "Convex-Action-Callback-Token": action.callbackToken,
    },
    body: JSON.stringify({ ...fields, delay: action.delay || undefined }),
  };
  const res = await fetchWithRetry(op, url, () => (asRequest ? [new Request(url, init)] : [url, init]));
  const text = await res.text();
  if (!res.ok) throw new Error(`${op} ${url}: HTTP ${res.status}: ${text.trim()}`);
  return JSON.parse(text).value;
}

// fetchText fetches a string URL once, like the storage upload and download, and returns the
// body; an HTTP error status is an error.
async function fetchText(op, url, init) {
  const res = await fetchWithRetry(op, url, () => [url, init], 1);
  const text = await res.text();
  if (!res.ok) throw new Error(`${op} ${url}: HTTP ${res.status}: ${text.trim()}`);
  return text;
}

// httpsGet is a node:https GET of url: its status and body.
function httpsGet(url) {
  return new Promise((resolve, reject) => {
    https
      .get(url, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => resolve({ status: res.statusCode, body }));
        res.on("error", reject);
      })
      .on("error", (err) => reject(new Error(`https_get ${url}: ${err.code || ""} ${err.message}`.trim())));
  });
}

// runOp performs one op ("name" or "name=argument"); storage_* composites do what
// ctx.storage.store/get/delete do (§1).
async function runOp(action, spec, state) {
  const eq = spec.indexOf("=");
  const op = eq < 0 ? spec : spec.slice(0, eq);
  const arg = eq < 0 ? "" : spec.slice(eq + 1);
  switch (op) {
    case "storage_store": {
      const uploadUrl = await callback(action, "storage_generate_upload_url");
      const text = await fetchText(op, uploadUrl, { method: "POST", body: "hello from node" });
      state.storageId = JSON.parse(text).storageId;
      return state.storageId;
    }
    case "storage_get": {
      const getUrl = await callback(action, "storage_get_url", { storageId: state.storageId });
      if (!getUrl) throw new Error(`${op}: no file ${state.storageId}`);
      return fetchText(op, getUrl);
    }
    case "storage_delete":
      return callback(action, "storage_delete", { storageId: state.storageId });
    case "query_request":
      return callback(action, "query", { args: { from: "node" } }, true);
    case "site_fetch":
      return fetchText(op, process.env.CONVEX_SITE_URL + arg);
    case "user_fetch":
      return fetchText(op, arg);
    case "https_get": {
      const { status, body } = await httpsGet(arg);
      if (status !== 200) throw new Error(`${op} ${arg}: HTTP ${status}: ${body.trim()}`);
      return body;
    }
    case "heap_limit":
      return v8.getHeapStatistics().heap_size_limit;
    case "node_options":
      return startEnv.NODE_OPTIONS || "";
    case "env_keys":
      return Object.keys(process.env).sort();
    default:
      return callback(action, op, { args: { from: "node" } });
  }
}

async function execute(action) {
  swapEnv(action.env);
  const results = [];
  const state = {};
  for (const op of action.ops || []) {
    const began = performance.now();
    try {
      const value = await runOp(action, op, state);
      results.push({ op, ok: true, value, ms: performance.now() - began });
    } catch (err) {
      results.push({ op, ok: false, error: err.message, ms: performance.now() - began });
    }
  }
  return { ok: results.every((r) => r.ok), results };
}

function argValue(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const ipcPath = argValue("--ipc-path");
if (!ipcPath) {
  console.error("local.cjs: missing --ipc-path");
  process.exit(2);
}
fs.rmSync(ipcPath, { force: true });

const server = http.createServer(async (req, res) => {
  if (req.method !== "POST" || req.url !== "/execute") {
    res.writeHead(404).end();
    return;
  }
  let body = "";
  for await (const chunk of req) body += chunk;
  let result;
  try {
    result = await execute(JSON.parse(body));
  } catch (err) {
    result = { ok: false, error: `execute: ${err.message}` };
  }
  res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(result));
});
server.requestTimeout = 0; // Node actions may run 600 s (§9)
server.listen(ipcPath, () => console.log("ready"));
