// Persistence across a restart (DESIGN.md section 1): stop the server, start it
// again on the same database: the history is still there and ids keep increasing.
// Runs against SQLite (the same file) and PostgreSQL (the same database).
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { STORES, startSwitchboard } from "../lib/server.mjs";
import { Clients, collectMessages, expectCount, history, http, join, send, userToken } from "../lib/switchboard.mjs";

for (const store of STORES) {
  describe(`restart [${store.name}]`, () => {
    let db;
    const servers = [];
    const clients = new Clients();

    before(async () => {
      db = await store.create();
    });
    afterEach(() => clients.closeAll());
    after(async () => {
      clients.closeAll();
      for (const s of servers) await s.stop();
      await db?.drop();
    });

    test("history survives a restart on the same database and ids continue increasing", async () => {
      const ws = "durable";
      const secret = "restart-secret-0123456789";
      const first = await startSwitchboard({ database: db.url, secret });
      servers.push(first);
      const alice = await clients.connect(first, { sub: "alice", workspaces: [ws, "durable-2"] });
      await join(alice, ws);
      await join(alice, "durable-2");
      const before = [];
      for (let i = 0; i < 5; i += 1) before.push(await send(alice, ws, `before restart ${i}`, `c${i}`));
      await send(alice, "durable-2", "elsewhere");
      const beforeHistory = await history(alice, { workspaceId: ws });
      clients.closeAll();

      const stopped = await first.stop();
      assert.equal(first.running, false);
      assert.ok(stopped.code === 0 || stopped.signal === "SIGTERM", `clean stop: ${JSON.stringify(stopped)}`);

      const second = await startSwitchboard({ database: db.url, secret });
      servers.push(second);
      // A token minted before the restart is still good (same secret).
      const alice2 = await clients.connect(second, { token: userToken(secret, "alice", { workspaces: [ws] }) });
      const afterHistory = await history(alice2, { workspaceId: ws });
      assert.deepEqual(afterHistory, beforeHistory, "the same messages, ids, times and clientMsgIds");
      assert.deepEqual(
        afterHistory.map((m) => [m.id, m.content, m.clientMsgId]),
        before.map((a, i) => [a.id, `before restart ${i}`, `c${i}`]),
      );
      const res = await http(second, "GET", `/api/workspaces/${ws}/messages`, {
        token: userToken(secret, "alice", { workspaces: [ws] }),
      });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json.messages, beforeHistory);

      await join(alice2, ws);
      const seen = collectMessages(alice2);
      const next = await send(alice2, ws, "after restart");
      const maxBefore = Math.max(...before.map((a) => a.id));
      assert.ok(next.id > maxBefore, `id after the restart (${next.id}) is larger than every id before (${maxBefore})`);
      await expectCount(seen, 1, "messages after the restart");
      // Catching up with `since` spans the restart too.
      const bob = await clients.connect(second, { sub: "bob", workspaces: [ws] });
      const replay = collectMessages(bob);
      await join(bob, ws, before[2].id);
      assert.deepEqual(
        replay.map((e) => e.message.id),
        [before[3].id, before[4].id, next.id],
      );
    });
  });
}
