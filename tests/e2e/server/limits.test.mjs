// Configurable limits (DESIGN.md sections 3 and 7): the message size, the events
// per second of a connection, and the connections of a user. Runs against SQLite and PostgreSQL.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { STORES, delay, eventually, startSwitchboard } from "../lib/server.mjs";
import {
  Clients,
  assertFailure,
  collect,
  collectMessages,
  connectRefused,
  connected,
  emitAck,
  expectCount,
  history,
  join,
  send,
  userToken,
} from "../lib/switchboard.mjs";

for (const store of STORES) {
  describe(`SWITCHBOARD_MAX_MESSAGE_CHARS=10 [${store.name}]`, () => {
    let server;
    let db;
    const clients = new Clients();

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({ database: db.url, env: { SWITCHBOARD_MAX_MESSAGE_CHARS: "10" } });
    });
    afterEach(() => clients.closeAll());
    after(async () => {
      clients.closeAll();
      await server?.stop();
      await db?.drop();
    });

    test("10 characters pass, 11 are too_large and nothing is stored; characters are code points", async () => {
      const ws = "short";
      const alice = await clients.connect(server, { sub: "alice", workspaces: [ws] });
      await join(alice, ws);
      const seen = collectMessages(alice);
      const accepted = [];
      for (const content of ["0123456789", "😀".repeat(10), "é".repeat(10), "a"]) {
        accepted.push(content);
        await send(alice, ws, content);
      }
      for (const content of ["0123456789A", "😀".repeat(11), "x".repeat(5000)]) {
        assertFailure(await emitAck(alice, "message", { workspaceId: ws, content }), "too_large", `${content.length} UTF-16 units`);
        assert.equal(alice.connected, true);
      }
      assert.deepEqual((await history(alice, { workspaceId: ws })).map((m) => m.content), accepted, "nothing cut, nothing extra");
      await expectCount(seen, accepted.length, "broadcast messages");
      await send(alice, ws, "still ok");
    });
  });

  describe(`SWITCHBOARD_EVENTS_PER_SECOND=5 [${store.name}]`, () => {
    let server;
    let db;
    const clients = new Clients();

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({ database: db.url, env: { SWITCHBOARD_EVENTS_PER_SECOND: "5" } });
    });
    afterEach(() => clients.closeAll());
    after(async () => {
      clients.closeAll();
      await server?.stop();
      await db?.drop();
    });

    test("a burst of 20 events is partly rate_limited; the connection stays and recovers its budget", async () => {
      const ws = "burst";
      const alice = await clients.connect(server, { sub: "alice", workspaces: [ws] });
      const disconnects = collect(alice, "disconnect");
      await join(alice, ws);
      await delay(1_200); // a full bucket
      const acks = await Promise.all(
        Array.from({ length: 20 }, (_, i) => emitAck(alice, "message", { workspaceId: ws, content: `burst ${i}` })),
      );
      const ok = acks.filter((a) => a?.ok === true);
      const limited = acks.filter((a) => a?.ok === false);
      assert.equal(ok.length + limited.length, 20, `every event is answered: ${JSON.stringify(acks)}`);
      assert.ok(limited.length > 0, `some events must be rate_limited: ${JSON.stringify(acks)}`);
      assert.ok(ok.length >= 1 && ok.length <= 10, `about 5 accepted, got ${ok.length}`);
      for (const a of limited) assertFailure(a, "rate_limited", "burst");

      // After 1.5 s the budget is back: events succeed again, and exactly the accepted ones were stored.
      await delay(1_500);
      const stored = await history(alice, { workspaceId: ws });
      assert.deepEqual(stored.map((m) => m.id).sort((x, y) => x - y), ok.map((a) => a.id).sort((x, y) => x - y));
      for (let i = 0; i < 3; i += 1) await send(alice, ws, `later ${i}`);

      // Without an ack, a rate-limited event is reported as an `error` event.
      await delay(1_200);
      const errors = collect(alice, "error");
      for (let i = 0; i < 20; i += 1) alice.emit("history", { workspaceId: ws, limit: 1 });
      await eventually(() => errors.length >= 10, 3_000).catch(() => {
        assert.fail(`20 events at once with a budget of 5: expected at least 10 error events, got ${errors.length}`);
      });
      await delay(300);
      assert.ok(errors.length <= 20, `at most one error per event: ${errors.length}`);
      for (const e of errors) assert.deepEqual(Object.keys(e).sort(), ["code", "message"]);
      assert.ok(errors.every((e) => e.code === "rate_limited"), JSON.stringify(errors));
      assert.equal(alice.connected, true);
      assert.deepEqual(disconnects, []);
    });
  });
}

describe("SWITCHBOARD_MAX_CONNECTIONS_PER_USER=2", () => {
  let server;
  const clients = new Clients();
  before(async () => {
    server = await startSwitchboard({ env: { SWITCHBOARD_MAX_CONNECTIONS_PER_USER: "2" } });
  });
  after(async () => {
    clients.closeAll();
    await server?.stop();
  });

  test("a user's third connection is refused; others are not; a closed one frees its place", async () => {
    const first = await clients.connect(server, { sub: "alice" });
    await clients.connect(server, { sub: "alice" });
    const third = clients.socket(server, { token: userToken(server.secret, "alice") });
    const refusal = await connectRefused(third);
    assert.equal(refusal.message, "Too many connections");
    await clients.connect(server, { sub: "bob" });
    first.disconnect();
    await eventually(async () => {
      const again = clients.socket(server, { token: userToken(server.secret, "alice") });
      try {
        await connected(again, 2_000);
        return true;
      } catch {
        again.disconnect();
        return false;
      }
    }, 5_000);
  });
});
