"use strict";
// Stand-in for the Convex Node executor's local server (`node local.cjs --ipc-path <sock>`),
// started by the stand-in backend in the backend's own process group (convex-facts.md §5).
//
// It serves POST /execute on a Unix socket (the real backend talks to its Node server over a
// Unix socket, not TCP, §3). Each request is one "Node action" that makes the callbacks listed
// in `ops`, built exactly like the real executor's (§1):
//   new URL("/api/actions/<op>", backendAddress) + fetch + Convex-Action-Callback-Token.
// So with backendAddress "http://127.0.0.1" every callback goes to 127.0.0.1:80 and fails with
// ECONNREFUSED, the failure this project exists to fix.
//
// Retries follow the real executor (§9): connect-phase errors for every callback, mid-flight
// errors and 5xx only for query and mutation; up to 5 tries with jittered exponential backoff
// from STANDIN_RETRY_BASE_MS (default 200 ms; the real one waits 1-20 s).
//
// Each INT, TERM, HUP or USR1 it receives is appended as "node SIGNAME" to STANDIN_SIGNAL_LOG
// (default /convex/data/signals.log), then it exits 128+n, so tests can prove that stopping
// the backend never signalled its Node server.

const fs = require("node:fs");
const http = require("node:http");
const os = require("node:os");

const MAX_TRIES = 5;
const signalLog = process.env.STANDIN_SIGNAL_LOG || "/convex/data/signals.log";
const retryBaseMs = Number(process.env.STANDIN_RETRY_BASE_MS || 200);

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

async function fetchWithRetry(op, url, init) {
  const midFlightRetried = op === "query" || op === "mutation";
  for (let attempt = 1; ; attempt++) {
    const backoff = () => sleep(retryBaseMs * 2 ** (attempt - 1) * (0.5 + Math.random() / 2));
    let res;
    try {
      res = await fetch(url, init);
    } catch (err) {
      if (attempt < MAX_TRIES && (connectPhase(err) || midFlightRetried)) {
        await backoff();
        continue;
      }
      throw new Error(`${op} ${url}: ${describe(err)} (after ${attempt} tries)`);
    }
    if (res.status >= 500 && midFlightRetried && attempt < MAX_TRIES) {
      await res.body?.cancel();
      await backoff();
      continue;
    }
    return res;
  }
}

async function callback(action, op, fields = {}) {
  const url = new URL(`/api/actions/${op}`, action.backendAddress);
  const res = await fetchWithRetry(op, url, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "Convex-Action-Callback-Token": action.callbackToken,
    },
    body: JSON.stringify({ ...fields, delay: action.delay || undefined }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${op} ${url}: HTTP ${res.status}: ${text.trim()}`);
  return JSON.parse(text).value;
}

// runOp performs one op; storage_* composites do what ctx.storage.store/get/delete do (§1).
async function runOp(action, op, state) {
  switch (op) {
    case "storage_store": {
      const uploadUrl = await callback(action, "storage_generate_upload_url");
      const res = await fetchWithRetry(op, uploadUrl, { method: "POST", body: "hello from node" });
      const text = await res.text();
      if (!res.ok) throw new Error(`${op} ${uploadUrl}: HTTP ${res.status}: ${text.trim()}`);
      state.storageId = JSON.parse(text).storageId;
      return state.storageId;
    }
    case "storage_get": {
      const getUrl = await callback(action, "storage_get_url", { storageId: state.storageId });
      if (!getUrl) throw new Error(`${op}: no file ${state.storageId}`);
      const res = await fetchWithRetry(op, getUrl);
      const text = await res.text();
      if (!res.ok) throw new Error(`${op} ${getUrl}: HTTP ${res.status}: ${text.trim()}`);
      return text;
    }
    case "storage_delete":
      return callback(action, "storage_delete", { storageId: state.storageId });
    default:
      return callback(action, op, { args: { from: "node" } });
  }
}

async function execute(action) {
  const results = [];
  const state = {};
  for (const op of action.ops || []) {
    try {
      results.push({ op, ok: true, value: await runOp(action, op, state) });
    } catch (err) {
      results.push({ op, ok: false, error: err.message });
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
