// `switchboard serve --dev` (DESIGN.md section 6: made-up secret and API key,
// demo tokens printed on start) and CORS (SWITCHBOARD_CORS_ORIGINS).
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";
import { io } from "socket.io-client";

import { freePort, httpRequest, startSwitchboard, switchboardPath, withTimeout } from "../lib/server.mjs";

describe("serve --dev", () => {
  const dir = mkdtempSync(joinPath(tmpdir(), "switchboard-dev-"));
  let proc;
  after(async () => {
    if (proc && proc.exitCode === null) {
      const exited = new Promise((resolve) => proc.once("close", resolve));
      proc.kill("SIGTERM");
      await withTimeout(exited, 10_000, "the dev server did not stop");
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test("prints an API key and demo tokens that the server accepts", async () => {
    const port = await freePort();
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("SWITCHBOARD_")) env[k] = v;
    env.SWITCHBOARD_BIND = `127.0.0.1:${port}`;
    proc = spawn(switchboardPath(), ["serve", "--dev"], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    proc.stdout.on("data", (c) => (out += c));
    proc.stderr.resume();
    await withTimeout(
      (async () => {
        while (!/token for carol/.test(out)) await new Promise((r) => setTimeout(r, 50));
      })(),
      15_000,
      `no demo tokens printed: ${out}`,
    );
    const apiKey = out.match(/^API key: (\S+)$/m)?.[1];
    const alice = out.match(/^token for alice \(workspaces demo, design\): (\S+)$/m)?.[1];
    assert.ok(apiKey && apiKey.length >= 32, `an API key is printed: ${out}`);
    assert.ok(alice, `a token for alice is printed: ${out}`);

    const base = `http://127.0.0.1:${port}`;
    const ready = await withTimeout(
      (async () => {
        for (;;) {
          try {
            const res = await httpRequest(`${base}/readyz`);
            if (res.status === 200) return res;
          } catch {}
          await new Promise((r) => setTimeout(r, 50));
        }
      })(),
      15_000,
      "the dev server never became ready",
    );
    assert.equal(ready.status, 200);

    const socket = io(base, { auth: { token: alice }, transports: ["websocket"], reconnection: false, forceNew: true });
    try {
      await withTimeout(new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", reject);
      }), 5_000, "alice's printed token did not connect");
      const joined = await socket.timeout(5_000).emitWithAck("join_workspace", "demo");
      assert.deepEqual(joined, { ok: true }, "the printed token grants workspace demo");
      const sent = await socket.timeout(5_000).emitWithAck("message", { workspaceId: "demo", content: "hello from dev" });
      assert.equal(sent.ok, true);
    } finally {
      socket.close();
    }

    const page = await httpRequest(`${base}/`);
    assert.equal(page.status, 200, "the demo page is served at /");
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    for (const [asset, type] of [["/assets/app.js", /^text\/javascript/], ["/assets/app.css", /^text\/css/]]) {
      const res = await httpRequest(`${base}${asset}`);
      assert.equal(res.status, 200, `${asset} is served`);
      assert.match(res.headers.get("content-type") ?? "", type);
    }
    const demo = await httpRequest(`${base}/api/dev/demo`);
    assert.equal(demo.status, 200);
    const session = JSON.parse(demo.body);
    assert.equal(session.apiKey, apiKey, "the demo session carries the printed API key");
    assert.deepEqual(session.workspaces, ["demo", "design"]);
    assert.deepEqual(session.users.map((u) => [u.id, u.name]), [["alice", "Alice"], ["bob", "Bob"], ["carol", "Carol"]]);
    const bob = io(base, { auth: { token: session.users[1].token }, transports: ["websocket"], reconnection: false, forceNew: true });
    try {
      await withTimeout(new Promise((resolve, reject) => {
        bob.once("connect", resolve);
        bob.once("connect_error", reject);
      }), 5_000, "bob's demo token did not connect");
      for (const workspace of ["demo", "design"]) {
        const joined = await bob.timeout(5_000).emitWithAck("join_workspace", workspace);
        assert.deepEqual(joined, { ok: true }, `bob's demo token grants ${workspace}`);
      }
    } finally {
      bob.close();
    }

    const put = await httpRequest(`${base}/api/workspaces/w9/members/alice`, {
      method: "PUT",
      headers: { authorization: `Bearer ${apiKey}` },
    });
    assert.equal(put.status, 204, "the printed API key is accepted");
    const wrong = await httpRequest(`${base}/api/workspaces/w9/members/alice`, {
      method: "PUT",
      headers: { authorization: "Bearer not-the-key" },
    });
    assert.equal(wrong.status, 401);
  });
});

describe("CORS", () => {
  let server;
  after(async () => server?.stop());

  test("allowed origins get CORS headers on the Socket.IO path and the API; others do not", async () => {
    server = await startSwitchboard({ env: { SWITCHBOARD_CORS_ORIGINS: "http://app.example, http://admin.example" } });
    const path = "/socket.io/?EIO=4&transport=polling";
    const preflight = await httpRequest(`${server.url}${path}`, {
      method: "OPTIONS",
      headers: {
        origin: "http://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
      },
    });
    assert.ok(preflight.status < 300, `preflight answered ${preflight.status}`);
    assert.equal(preflight.headers.get("access-control-allow-origin"), "http://app.example");
    assert.equal(preflight.headers.get("access-control-allow-credentials"), "true");
    assert.match(preflight.headers.get("access-control-allow-methods") ?? "", /POST/);

    const handshake = await httpRequest(`${server.url}${path}`, { headers: { origin: "http://admin.example" } });
    assert.equal(handshake.status, 200);
    assert.equal(handshake.headers.get("access-control-allow-origin"), "http://admin.example");

    const foreign = await httpRequest(`${server.url}${path}`, { headers: { origin: "http://evil.example" } });
    assert.equal(foreign.headers.get("access-control-allow-origin"), null, "an origin not listed gets no CORS header");

    const health = await httpRequest(`${server.url}/healthz`, { headers: { origin: "http://app.example" } });
    assert.equal(health.headers.get("access-control-allow-origin"), "http://app.example");
  });

  test("without --dev there is no demo page and no demo session", async () => {
    for (const path of ["/", "/assets/app.js", "/api/dev/demo"]) {
      const res = await httpRequest(`${server.url}${path}`);
      assert.equal(res.status, 404, `${path} answers 404 without --dev`);
    }
  });
});
