// The Node side of preload's tests: node cases.cjs CASE CONFIG-JSON. A
// CommonJS main, as upstream's local.cjs is. Each case checks what Node
// sees and prints "ok"; the Go side checks what the servers saw. CONFIG
// names the URLs: cloud and site (the origins routed), public (a server
// that stands for the public edge), other (a server on another port).
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");

const [, , name, configJSON] = process.argv;
const T = JSON.parse(configJSON || "{}");
const MiB = 1 << 20;

// pattern is the body every big transfer carries; the Go side makes the
// same bytes (i % 251, so no power-of-two period hides a shifted chunk).
function pattern(n, from = 0) {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (from + i) % 251;
  return b;
}
const sha = (bytes) => crypto.createHash("sha256").update(bytes).digest("hex");

async function json(res) {
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

// streamOf gives the first 64 KiB of a 1 MiB pattern, then waits for
// gate() before giving the rest: the server has seen the first part of
// the body before the rest exists, so nothing buffered the body.
function streamOf(gate) {
  let sent = 0;
  return new ReadableStream({
    async pull(c) {
      if (sent === 64 << 10) await gate();
      const n = sent === 0 ? 64 << 10 : Math.min(128 << 10, MiB - sent);
      c.enqueue(pattern(n, sent));
      sent += n;
      if (sent === MiB) c.close();
    },
  });
}

async function readAll(res) {
  const chunks = [];
  for await (const c of res.body) chunks.push(c);
  return Buffer.concat(chunks);
}

const cases = {
  async inputs() {
    assert.equal(fetch.name, "fetch");
    assert.equal(fetch.length, 1);
    let e = await json(await fetch(`${T.cloud}/api/echo?a=1&b=%20#frag`, { headers: { "x-test": "string" } }));
    assert.deepEqual(e, { method: "GET", path: "/api/echo", query: "a=1&b=%20", xtest: "string", length: 0, sha: sha(new Uint8Array(0)) });
    // As upstream's syscalls.ts builds a callback (l.292).
    const body = JSON.stringify({ path: "q:default", args: [] });
    e = await json(await fetch.call(undefined, new URL("/api/actions/query", T.cloud), { method: "POST", headers: { "content-type": "application/json", "x-test": "url" }, body }));
    assert.equal(e.method, "POST");
    assert.equal(e.path, "/api/actions/query");
    assert.equal(e.xtest, "url");
    assert.equal(e.length, body.length);
    e = await json(await fetch(new Request(`${T.cloud}/api/storage/upload?token=t1`, { method: "POST", headers: { "x-test": "request" }, body: "hello" })));
    assert.deepEqual(e, { method: "POST", path: "/api/storage/upload", query: "token=t1", xtest: "request", length: 5, sha: sha(Buffer.from("hello")) });
    // A keepalive Request with a body is routed too (its body goes on as a stream).
    e = await json(await fetch(new Request(`${T.cloud}/api/keepalive`, { method: "POST", headers: { "x-test": "keepalive" }, body: "hello", keepalive: true })));
    assert.deepEqual(e, { method: "POST", path: "/api/keepalive", query: "", xtest: "keepalive", length: 5, sha: sha(Buffer.from("hello")) });
    // A Request and an init: the init's fields win, as without the preload.
    e = await json(await fetch(new Request(`${T.cloud}/api/override`, { headers: { "x-test": "a" } }), { method: "DELETE", headers: { "x-test": "b" } }));
    assert.equal(e.method, "DELETE");
    assert.equal(e.xtest, "b");
    e = await json(await fetch.call(globalThis, `${T.cloud}`));
    assert.equal(e.path, "/");
  },

  async bodies() {
    const up = pattern(MiB);
    let e = await json(await fetch(`${T.cloud}/api/up?m=post`, { method: "POST", body: Buffer.from(up).toString("latin1"), headers: { "x-test": "post" } }));
    assert.equal(e.method, "POST");
    assert.equal(e.xtest, "post");
    assert.equal(e.length, Buffer.byteLength(Buffer.from(up).toString("latin1")));
    e = await json(await fetch(new Request(`${T.cloud}/api/up?m=put`, { method: "PUT", body: up, headers: { "x-test": "put" } })));
    assert.deepEqual(e, { method: "PUT", path: "/api/up", query: "m=put", xtest: "put", length: MiB, sha: sha(up) });
    const res = await fetch(`${T.cloud}/bytes?n=${MiB}`);
    const down = new Uint8Array(await res.arrayBuffer());
    assert.equal(down.length, MiB);
    assert.equal(sha(down), sha(up));
  },

  async streamUp() {
    const gate = (k) => async () => assert.equal(await (await fetch(`${T.cloud}/wait-first?k=${k}`)).text(), "first part seen");
    let e = await json(await fetch(`${T.cloud}/stream-up?k=1`, { method: "POST", body: streamOf(gate(1)), duplex: "half" }));
    assert.equal(e.length, MiB);
    assert.equal(e.sha, sha(pattern(MiB)));
    e = await json(await fetch(new Request(`${T.cloud}/stream-up?k=2`, { method: "PUT", body: streamOf(gate(2)), duplex: "half" })));
    assert.equal(e.method, "PUT");
    assert.equal(e.length, MiB);
    assert.equal(e.sha, sha(pattern(MiB)));
  },

  async streamDown() {
    const res = await fetch(`${T.cloud}/stream-down?k=1`);
    const reader = res.body.getReader();
    const chunks = [];
    let got = 0;
    while (got < 64 << 10) {
      const { value, done } = await reader.read();
      assert.ok(!done, "response ended before the server was released");
      chunks.push(value);
      got += value.length;
    }
    // The server holds the rest until this request arrives.
    assert.equal(await (await fetch(`${T.cloud}/release?k=1`)).text(), "released");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
    }
    const all = Buffer.concat(chunks);
    assert.equal(all.length, MiB);
    assert.equal(sha(all), sha(pattern(MiB)));
  },

  async abort() {
    for (const [k, make] of [
      ["1", (url, signal) => fetch(url, { signal })],
      ["2", (url, signal) => fetch(new Request(url, { signal }))],
    ]) {
      const c = new AbortController();
      const res = await make(`${T.cloud}/hold?k=${k}`, c.signal);
      const reader = res.body.getReader();
      const first = await reader.read();
      assert.ok(!first.done);
      c.abort();
      await assert.rejects(reader.read(), { name: "AbortError" });
    }
  },

  async envSwap() {
    // What upstream's executor does before each action (executor.ts l.101-131).
    process.env = { PATH: process.env.PATH };
    const e = await json(await fetch(`${T.cloud}/api/after-swap`));
    assert.equal(e.path, "/api/after-swap");
  },

  async site() {
    let e = await json(await fetch(`${T.site}/hello?x=1`));
    assert.equal(e.query, "x=1");
    e = await json(await fetch(`${T.cloud}/api/cloud`));
    assert.equal(e.path, "/api/cloud");
  },

  async untouched() {
    const texts = [];
    for (const url of [
      `${T.public}/basement`, // the prefix /base, but not on a segment boundary
      T.public.replace("127.0.0.1", "localhost") + "/base/other-host",
      `${T.other}/base/other-port`,
    ]) {
      texts.push(await (await fetch(url)).text());
    }
    assert.deepEqual(texts, ["public /basement", "public /base/other-host", "other /base/other-port"]);
    await assert.rejects(fetch("file:///etc/hostname"), TypeError);
    const e = await json(await fetch(`${T.cloud}/routed`));
    assert.equal(e.path, "/routed");
  },

  async userOptions() {
    const limit = require("node:v8").getHeapStatistics().heap_size_limit / MiB;
    assert.ok(limit >= 512 && limit < 1024, `heap limit ${limit} MiB: --max-old-space-size=512 not in effect`);
    assert.equal(globalThis.userRequire, "ran");
    const e = await json(await fetch(`${T.cloud}/api/with-user-options`));
    assert.equal(e.path, "/api/with-user-options");
  },

  async stock() {
    // The preload could not install: fetch is Node's own, so a URL under
    // the origin reaches the public server.
    assert.equal(await (await fetch(`${T.cloud}/stock`)).text(), "public /stock");
  },

  async noFetch() {
    assert.equal(typeof globalThis.fetch, "undefined");
  },

  async routingThrows() {
    // The routing cannot read these inputs; fetch gets them as given and
    // reads them its own way, so they go where stock fetch sends them.
    class OddURL extends URL {
      get href() {
        throw new Error("no href");
      }
    }
    class OddRequest extends Request {
      get url() {
        throw new Error("no url");
      }
    }
    assert.equal(await (await fetch(new OddURL(`${T.public}/odd-url`))).text(), "public /odd-url");
    assert.equal(await (await fetch(new OddRequest(`${T.public}/odd-request`))).text(), "public /odd-request");
  },
};

cases[name]().then(
  () => console.log("ok"),
  (err) => {
    console.error(err);
    process.exitCode = 1;
  },
);
