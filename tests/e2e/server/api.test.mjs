// The server-to-server and operations endpoints (DESIGN.md section 4):
// `POST /api/publish`, `/healthz`, `/readyz` and `/metrics`.
// Runs against SQLite and PostgreSQL.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { STORES, delay, startSwitchboard } from "../lib/server.mjs";
import {
  Clients,
  QUIET_MS,
  assertHttpError,
  collect,
  emitAck,
  expectCount,
  http,
  join,
  send,
} from "../lib/switchboard.mjs";

/** The value of an unlabelled or labelled Prometheus sample, summed over its label sets. */
function sampleTotal(text, name) {
  let total = 0;
  let found = false;
  for (const line of text.split("\n")) {
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (m && m[1] === name) {
      found = true;
      total += Number(m[3]);
    }
  }
  return found ? total : undefined;
}

for (const store of STORES) {
  describe(`HTTP API [${store.name}]`, () => {
    let server;
    let db;
    const clients = new Clients();

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({ database: db.url });
    });
    afterEach(() => clients.closeAll());
    after(async () => {
      clients.closeAll();
      await server?.stop();
      await db?.drop();
    });

    test("POST /api/publish reaches every socket in the room, on every transport, and no one else", async () => {
      const ws = "news";
      const a = await clients.connect(server, { sub: "a", workspaces: [ws] });
      const b = await clients.connect(server, { sub: "b", workspaces: [ws], transports: ["polling"] });
      const a2 = await clients.connect(server, { sub: "a", workspaces: [ws] }); // a second tab of a
      const outsider = await clients.connect(server, { sub: "c", workspaces: [ws, "other"] }); // may, but did not join
      for (const s of [a, b, a2]) await join(s, ws);
      await join(outsider, "other");
      const got = [a, b, a2, outsider].map((s) => collect(s, "announcement"));

      const data = { title: "Maintenance", at: "2030-01-01T00:00:00.000Z", nested: { list: [1, "two", null, true] }, text: "ünïcödé 😀" };
      const res = await http(server, "POST", "/api/publish", {
        token: server.apiKey,
        body: { workspaceId: ws, event: "announcement", data },
      });
      assert.equal(res.status, 202, res.text);
      for (const [i, list] of got.slice(0, 3).entries()) {
        await expectCount(list, 1, `announcements at socket ${i}`);
        assert.deepEqual(list[0], data);
      }
      assert.deepEqual(got[3], [], "a socket outside the room gets nothing");

      // Scalars and arrays are data too.
      for (const value of [42, "plain text", [1, 2, 3]]) {
        const r = await http(server, "POST", "/api/publish", {
          token: server.apiKey,
          body: { workspaceId: ws, event: "announcement", data: value },
        });
        assert.equal(r.status, 202, r.text);
      }
      await expectCount(got[0], 4, "announcements at a");
      assert.deepEqual(got[0].slice(1), [42, "plain text", [1, 2, 3]]);

      // Publishing to a room with nobody in it is fine.
      const empty = await http(server, "POST", "/api/publish", {
        token: server.apiKey,
        body: { workspaceId: "nobody-here", event: "announcement", data: {} },
      });
      assert.equal(empty.status, 202, empty.text);
    });

    test("POST /api/publish refuses a missing or wrong API key with 401 and delivers nothing", async () => {
      const ws = "guarded";
      const a = await clients.connect(server, { sub: "a", workspaces: [ws] });
      await join(a, ws);
      const got = collect(a, "announcement");
      const body = { workspaceId: ws, event: "announcement", data: { x: 1 } };
      assertHttpError(await http(server, "POST", "/api/publish", { body }), 401, "unauthorized", "no key");
      assertHttpError(await http(server, "POST", "/api/publish", { body, token: "wrong" }), 401, "unauthorized", "wrong key");
      assertHttpError(
        await http(server, "POST", "/api/publish", { body, token: `${server.apiKey}x` }),
        401,
        "unauthorized",
        "key with an extra character",
      );
      assertHttpError(
        await http(server, "POST", "/api/publish", { body, headers: { authorization: server.apiKey } }),
        401,
        "unauthorized",
        "key without Bearer",
      );
      await delay(QUIET_MS);
      assert.deepEqual(got, []);
    });

    test("POST /api/publish refuses invalid bodies with 400 and bodies over 64 KiB with 413", async () => {
      const ws = "guarded2";
      const a = await clients.connect(server, { sub: "a", workspaces: [ws] });
      await join(a, ws);
      const got = collect(a, "announcement");
      const key = server.apiKey;
      const bad = [
        ["missing workspaceId", { body: { event: "announcement", data: {} } }],
        ["workspaceId a number", { body: { workspaceId: 5, event: "announcement", data: {} } }],
        ["empty workspaceId", { body: { workspaceId: "", event: "announcement", data: {} } }],
        ["missing event", { body: { workspaceId: ws, data: {} } }],
        ["event a reserved name", { body: { workspaceId: ws, event: "connect", data: {} } }],
        ["body not JSON", { rawBody: "{ not json", contentType: "application/json" }],
        ["body a JSON array", { rawBody: "[1,2]", contentType: "application/json" }],
        ["empty body", { rawBody: "", contentType: "application/json" }],
      ];
      for (const [what, options] of bad) {
        assertHttpError(await http(server, "POST", "/api/publish", { token: key, ...options }), 400, "invalid", what);
      }
      const huge = { workspaceId: ws, event: "announcement", data: { blob: "x".repeat(70 * 1024) } };
      assertHttpError(await http(server, "POST", "/api/publish", { token: key, body: huge }), 413, "too_large", "70 KiB body");
      await delay(QUIET_MS);
      assert.deepEqual(got, [], "nothing delivered for refused publishes");
      // Just under the limit is fine.
      const fits = { workspaceId: ws, event: "announcement", data: { blob: "y".repeat(60 * 1024) } };
      const ok = await http(server, "POST", "/api/publish", { token: key, body: fits });
      assert.equal(ok.status, 202, ok.text.slice(0, 300));
      await expectCount(got, 1, "announcements");
      assert.equal(got[0].blob.length, 60 * 1024);
    });

    test("/healthz and /readyz answer 200", async () => {
      const health = await http(server, "GET", "/healthz");
      assert.equal(health.status, 200, health.text);
      const ready = await http(server, "GET", "/readyz");
      assert.equal(ready.status, 200, ready.text);
      assert.equal(ready.json?.status, "ready", ready.text);
    });

    test("/metrics is Prometheus text with persisted messages and errors counted", async () => {
      const ws = "metered";
      const a = await clients.connect(server, { sub: "a", workspaces: [ws] });
      await join(a, ws);
      for (let i = 0; i < 3; i += 1) await send(a, ws, `m${i}`);
      assert.equal((await emitAck(a, "message", { workspaceId: ws, content: "" })).ok, false);
      assert.equal((await emitAck(a, "join_workspace", "not-mine")).ok, false);
      const res = await http(server, "GET", "/metrics");
      assert.equal(res.status, 200, res.text.slice(0, 300));
      assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
      assert.match(res.text, /^switchboard_messages_persisted_total(\{[^}]*\})? \d+/m);
      assert.match(res.text, /^switchboard_errors_total(\{[^}]*\})? \d+/m);
      assert.ok(sampleTotal(res.text, "switchboard_messages_persisted_total") >= 3, res.text);
      assert.ok(sampleTotal(res.text, "switchboard_errors_total") >= 2, res.text);
    });
  });
}
