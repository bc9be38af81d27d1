// Connection-state recovery (DESIGN.md section 3): a client whose transport drops
// comes back by itself with `socket.recovered === true`, gets exactly the messages
// it missed, in order, once, and is in its rooms again; an app that joins with
// `since` on every `connect` gets no duplicates; past the recovery window the
// reconnect is fresh and `since` still works. Runs against SQLite and PostgreSQL.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { STORES, delay, eventually, startSwitchboard } from "../lib/server.mjs";
import {
  Clients,
  QUIET_MS,
  assertIncreasing,
  collect,
  collectMessages,
  connected,
  emitAck,
  expectCount,
  http,
  join,
  nextEvent,
  send,
  userToken,
} from "../lib/switchboard.mjs";

/** Reconnection options: a fixed, short delay. */
const RECONNECT = { reconnection: true, reconnectionDelay: 300, reconnectionDelayMax: 300, randomizationFactor: 0 };

/** A network drop: the TCP socket under the WebSocket is destroyed, no close frame. */
async function dropTransport(socket) {
  const gone = nextEvent(socket, "disconnect", 5_000);
  socket.io.engine.transport.ws._socket.destroy();
  const reason = await gone;
  assert.equal(reason, "transport close");
  assert.equal(socket.connected, false);
}

/** Checks a list of `{ message, offset }` has unique ids equal to `ids`, with offsets `String(id)`. */
function assertDelivered(list, ids, context) {
  const got = list.map((e) => e.message.id);
  assert.deepEqual(got, ids, `${context}: ids received`);
  for (const e of list) {
    assert.equal(e.offset, String(e.message.id), `${context}: the recovery offset argument of message ${e.message.id}`);
  }
}

for (const store of STORES) {
  describe(`connection-state recovery [${store.name}]`, () => {
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

    test("a dropped websocket client recovers its room and exactly the missed messages", async () => {
      const ws = "rec";
      const alice = await clients.connect(server, { sub: "alice", workspaces: [ws], ...RECONNECT });
      const bob = await clients.connect(server, { sub: "bob", workspaces: [ws] });
      assert.equal(alice.recovered, false);
      const firstPid = alice._pid;
      assert.equal(typeof firstPid, "string", "the CONNECT answer carries a pid");
      await join(alice, ws);
      await join(bob, ws);
      const seen = collectMessages(alice);
      const sent = [];
      for (let i = 0; i < 3; i += 1) sent.push((await send(bob, ws, `before ${i}`)).id);
      await expectCount(seen, 3, "messages before the drop");

      const back = nextEvent(alice, "connect", 10_000);
      await dropTransport(alice);
      const missed = [];
      for (let i = 0; i < 4; i += 1) missed.push((await send(bob, ws, `missed ${i}`)).id);
      assert.equal(alice.connected, false, "the missed messages were sent while alice was away");

      await back;
      assert.equal(alice.recovered, true, "socket.recovered after reconnecting within the window");
      assert.equal(alice._pid, firstPid);
      await expectCount(seen, 7, "messages after recovery");
      assertDelivered(seen, [...sent, ...missed], "after recovery");
      assert.deepEqual(
        seen.slice(3).map((e) => e.message.content),
        ["missed 0", "missed 1", "missed 2", "missed 3"],
      );

      // Back in the room without joining again.
      const live = (await send(bob, ws, "live")).id;
      await expectCount(seen, 8, "messages after a live one");
      assertDelivered(seen, [...sent, ...missed, live], "live after recovery");
    });

    test("recovery restores every workspace of the connection, each with its own missed messages", async () => {
      const alice = await clients.connect(server, { sub: "alice", workspaces: ["rec-a", "rec-b"], ...RECONNECT });
      const bob = await clients.connect(server, { sub: "bob", workspaces: ["rec-a", "rec-b", "rec-c"] });
      await join(alice, "rec-a");
      await join(alice, "rec-b");
      for (const ws of ["rec-a", "rec-b", "rec-c"]) await join(bob, ws);
      const seen = collectMessages(alice);
      const first = (await send(bob, "rec-a", "a0")).id;
      await expectCount(seen, 1, "first message");

      const back = nextEvent(alice, "connect", 10_000);
      await dropTransport(alice);
      const missed = [];
      for (const [ws, text] of [["rec-b", "b1"], ["rec-c", "c1"], ["rec-a", "a1"], ["rec-b", "b2"]]) {
        const id = (await send(bob, ws, text)).id;
        if (ws !== "rec-c") missed.push(id);
      }
      await back;
      assert.equal(alice.recovered, true);
      await expectCount(seen, 1 + missed.length, "messages after recovery");
      // Delivery is in id order within a workspace; across workspaces the contract promises no order.
      assert.deepEqual(seen.map((e) => e.message.id).sort((x, y) => x - y), [first, ...missed].sort((x, y) => x - y));
      for (const ws of ["rec-a", "rec-b"]) {
        const inWs = seen.filter((e) => e.message.workspaceId === ws);
        assert.deepEqual(inWs.map((e) => e.message.content), ws === "rec-a" ? ["a0", "a1"] : ["b1", "b2"], ws);
      }
      // Both rooms are back.
      const a2 = (await send(bob, "rec-a", "a2")).id;
      const b3 = (await send(bob, "rec-b", "b3")).id;
      await expectCount(seen, 6, "live messages after recovery");
      assert.deepEqual(seen.slice(-2).map((e) => e.message.id), [a2, b3]);
    });

    test("an app that joins with `since` on every connect gets no duplicates after recovery", async () => {
      const ws = "hook";
      const token = userToken(server.secret, "alice", { workspaces: [ws] });
      // Like a React hook: remember the last id seen, (re)join with it on every `connect`.
      const socket = clients.socket(server, { token, ...RECONNECT });
      let lastId = null;
      const seen = [];
      const joinAcks = [];
      socket.on("message", (message, offset) => {
        seen.push({ message, offset });
        if (lastId === null || message.id > lastId) lastId = message.id;
      });
      socket.on("connect", () => {
        socket.emit("join_workspace", { workspaceId: ws, since: lastId }, (ack) => joinAcks.push(ack));
      });
      await connected(socket);
      await eventually(() => joinAcks.length === 1, 3_000);
      assert.deepEqual(joinAcks, [{ ok: true }]);

      const bob = await clients.connect(server, { sub: "bob", workspaces: [ws] });
      await join(bob, ws);
      const sent = [];
      for (let i = 0; i < 3; i += 1) sent.push((await send(bob, ws, `before ${i}`)).id);
      await expectCount(seen, 3, "messages before the drop");

      const back = nextEvent(socket, "connect", 10_000);
      await dropTransport(socket);
      const missed = [];
      for (let i = 0; i < 4; i += 1) missed.push((await send(bob, ws, `missed ${i}`)).id);
      await back;
      assert.equal(socket.recovered, true);
      await eventually(() => joinAcks.length === 2, 3_000);
      assert.deepEqual(joinAcks, [{ ok: true }, { ok: true }]);
      await expectCount(seen, 7, "messages after recovery and the app's join with since");
      assertDelivered(seen, [...sent, ...missed], "hook");

      const live = (await send(bob, ws, "live")).id;
      await expectCount(seen, 8, "messages after a live one");
      const ids = seen.map((e) => e.message.id);
      assert.equal(new Set(ids).size, ids.length, `no duplicates: ${ids}`);
      assert.deepEqual(ids, [...sent, ...missed, live]);
    });

    for (const data of ["hello", "1000000", { text: "an object" }]) {
      test(`recovery still works after an announcement whose data is ${JSON.stringify(data)}`, async () => {
        // The stock client takes a trailing string argument of any event as its recovery
        // offset; an `announcement` published through POST /api/publish is an event too.
        const ws = `announce-${typeof data}-${String(data).length}`;
        const alice = await clients.connect(server, { sub: "alice", workspaces: [ws], ...RECONNECT });
        const bob = await clients.connect(server, { sub: "bob", workspaces: [ws] });
        await join(alice, ws);
        await join(bob, ws);
        const seen = collectMessages(alice);
        const announcements = collect(alice, "announcement");
        const first = (await send(bob, ws, "first")).id;
        await expectCount(seen, 1, "first message");
        const res = await http(server, "POST", "/api/publish", {
          token: server.apiKey,
          body: { workspaceId: ws, event: "announcement", data },
        });
        assert.equal(res.status, 202, res.text);
        await expectCount(announcements, 1, "announcements");
        assert.deepEqual(announcements[0], data);

        const back = nextEvent(alice, "connect", 10_000);
        await dropTransport(alice);
        const missed = [];
        for (let i = 0; i < 3; i += 1) missed.push((await send(bob, ws, `missed ${i}`)).id);
        await back;
        assert.equal(alice.recovered, true, `recovered after an announcement ${JSON.stringify(data)}`);
        await expectCount(seen, 4, "messages after recovery");
        assert.deepEqual(seen.map((e) => e.message.id), [first, ...missed]);
      });
    }

    test("a clean disconnect is not recovered", async () => {
      const ws = "clean";
      const alice = await clients.connect(server, { sub: "alice", workspaces: [ws], ...RECONNECT });
      await join(alice, ws);
      const seen = collectMessages(alice);
      await send(alice, ws, "hello");
      await expectCount(seen, 1, "own message");
      alice.disconnect(); // the client says goodbye: the server forgets the session
      await delay(100);
      const back = nextEvent(alice, "connect", 5_000);
      alice.connect(); // same Manager and pid
      await back;
      assert.equal(alice.recovered, false, "a session closed on purpose is not recovered");
    });
  });

  describe(`recovery window expiry [${store.name}]`, () => {
    let server;
    let db;
    const clients = new Clients();

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({ database: db.url, env: { SWITCHBOARD_RECOVERY_WINDOW_SECS: "1" } });
    });
    afterEach(() => clients.closeAll());
    after(async () => {
      clients.closeAll();
      await server?.stop();
      await db?.drop();
    });

    test("past the window the reconnect is fresh, not in the room, and `since` fetches what was missed", async () => {
      const ws = "late";
      const slow = { reconnection: true, reconnectionDelay: 2_500, reconnectionDelayMax: 2_500, randomizationFactor: 0 };
      const alice = await clients.connect(server, { sub: "alice", workspaces: [ws], ...slow });
      const bob = await clients.connect(server, { sub: "bob", workspaces: [ws] });
      await join(alice, ws);
      await join(bob, ws);
      const seen = collectMessages(alice);
      const sent = [];
      for (let i = 0; i < 2; i += 1) sent.push((await send(bob, ws, `before ${i}`)).id);
      await expectCount(seen, 2, "messages before the drop");
      const lastSeen = seen.at(-1).message.id;

      const back = nextEvent(alice, "connect", 10_000);
      await dropTransport(alice);
      const missed = [];
      for (let i = 0; i < 3; i += 1) missed.push((await send(bob, ws, `missed ${i}`)).id);
      await back; // about 2.5 s later: the 1 s window is over
      assert.equal(alice.recovered, false, "reconnected after the recovery window: not recovered");

      // Not in the room any more: nothing was replayed and a live message does not arrive.
      const notDelivered = (await send(bob, ws, "while not joined")).id;
      await delay(QUIET_MS);
      assert.deepEqual(seen.map((e) => e.message.id), sent, "a fresh connection is in no room");

      const log = [];
      alice.on("message", (m) => log.push(["message", m.id]));
      alice.on("joined", () => log.push(["joined"]));
      const ack = await emitAck(alice, "join_workspace", { workspaceId: ws, since: lastSeen });
      log.push(["ack", ack]);
      assert.deepEqual(ack, { ok: true });
      assert.deepEqual(log, [
        ...[...missed, notDelivered].map((id) => ["message", id]),
        ["joined"],
        ["ack", { ok: true }],
      ]);
      const live = (await send(bob, ws, "live")).id;
      await expectCount(seen, sent.length + missed.length + 2, "messages after the join with since");
      assert.deepEqual(seen.map((e) => e.message.id), [...sent, ...missed, notDelivered, live]);
    });
  });
  describe(`recovery under concurrent traffic [${store.name}]`, () => {
    let server;
    let db;
    const clients = new Clients();

    before(async () => {
      db = await store.create();
      // A high rate limit: the senders flood on purpose.
      server = await startSwitchboard({ database: db.url, env: { SWITCHBOARD_EVENTS_PER_SECOND: "100000" } });
    });
    afterEach(() => clients.closeAll());
    after(async () => {
      clients.closeAll();
      await server?.stop();
      await db?.drop();
    });

    test("a client in several busy workspaces that drops again and again loses nothing and gets nothing twice", async () => {
      const workspaces = ["busy-1", "busy-2", "busy-3", "busy-4", "busy-5", "busy-6"];
      const fast = { reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 50, randomizationFactor: 0 };
      const reader = await clients.connect(server, { sub: "reader", workspaces, ...fast });
      for (const ws of workspaces) await join(reader, ws);
      const seen = collectMessages(reader);
      const senders = [];
      for (const ws of workspaces) {
        const s = await clients.connect(server, { sub: `writer-${ws}`, workspaces: [ws] });
        await join(s, ws);
        senders.push([s, ws]);
      }
      // One message per workspace first, so the client has a recovery offset.
      const sent = [];
      for (const [s, ws] of senders) sent.push((await send(s, ws, `${ws} first`)).id);
      await expectCount(seen, workspaces.length, "first messages");

      const ROUNDS = 15;
      let recovered = 0;
      for (let round = 0; round < ROUNDS; round += 1) {
        const acks = Promise.all(
          senders.flatMap(([s, ws]) => Array.from({ length: 30 }, (_, i) => send(s, ws, `${ws} ${round}.${i}`))),
        );
        await delay(5 + ((round * 7) % 20));
        const back = nextEvent(reader, "connect", 10_000);
        reader.io.engine.transport.ws._socket.destroy(); // drop in the middle of the traffic
        for (const ack of await acks) sent.push(ack.id);
        await back;
        if (reader.recovered) recovered += 1;
      }
      assert.equal(recovered, ROUNDS, "every reconnect within the window is recovered");
      await eventually(() => seen.length >= sent.length, 5_000).catch(() => {});
      await delay(QUIET_MS);

      const got = seen.map((e) => e.message.id);
      const gotSet = new Set(got);
      const missing = sent.filter((id) => !gotSet.has(id));
      const duplicates = got.filter((id, i) => got.indexOf(id) !== i);
      // For the diagnosis: arrivals with an id lower than one received before (the client's
      // recovery offset is the id of the last message it received, whatever its workspace).
      let highest = 0;
      const lowerThanEarlier = got.filter((id) => {
        const lower = id < highest;
        highest = Math.max(highest, id);
        return lower;
      }).length;
      assert.deepEqual(
        { missing, duplicates },
        { missing: [], duplicates: [] },
        `${sent.length} messages sent, ${got.length} received (${lowerThanEarlier} arrived after a higher id): ` +
          `acknowledged messages missed by the recovered client and messages it received twice`,
      );
      for (const ws of workspaces) {
        const inWs = seen.filter((e) => e.message.workspaceId === ws).map((e) => e.message.id);
        assertIncreasing(inWs, `delivery order in ${ws}`);
      }
    });
  });
}
