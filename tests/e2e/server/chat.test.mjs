// Chat over Socket.IO (DESIGN.md section 3) and its HTTP history (section 4):
// two users chatting, a long-polling client, the history window rules, catching
// up with `since`, and bad input that must leave the connection usable.
// Every scenario runs against SQLite and PostgreSQL.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { STORES, delay, eventually, startSwitchboard } from "../lib/server.mjs";
import {
  Clients,
  QUIET_MS,
  RFC3339_MILLIS,
  assertFailure,
  assertHttpError,
  assertIncreasing,
  assertMessageShape,
  collect,
  collectMessages,
  emitAck,
  expectCount,
  forgedToken,
  history,
  http,
  join,
  nextEvent,
  send,
  userToken,
} from "../lib/switchboard.mjs";

for (const store of STORES) {
  describe(`chat [${store.name}]`, () => {
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

    test("two users chat both ways; everyone in the room, sender included, gets each message once", async () => {
      const ws = "team";
      const alice = await clients.connect(server, { sub: "alice", workspaces: [ws] });
      const bob = await clients.connect(server, { sub: "bob", workspaces: [ws, "elsewhere"] });
      const carol = await clients.connect(server, { sub: "carol", workspaces: ["elsewhere"] });

      const aliceJoined = nextEvent(alice, "joined");
      assert.deepEqual(await emitAck(alice, "join_workspace", { workspaceId: ws }), { ok: true });
      assert.deepEqual(await aliceJoined, { workspaceId: ws });
      const bobJoined = nextEvent(bob, "joined");
      assert.deepEqual(await emitAck(bob, "join_workspace", ws), { ok: true }, "join with a plain string");
      assert.deepEqual(await bobJoined, { workspaceId: ws });
      await join(carol, "elsewhere");

      const atAlice = collectMessages(alice);
      const atBob = collectMessages(bob);
      const atCarol = collectMessages(carol);

      const before = Date.now();
      const a1 = await emitAck(alice, "message", { workspaceId: ws, content: "hi bob", clientMsgId: "a-1" });
      assert.deepEqual(Object.keys(a1).sort(), ["createdAt", "id", "ok"], JSON.stringify(a1));
      assert.equal(a1.ok, true);
      assert.ok(Number.isSafeInteger(a1.id) && a1.id > 0, `id is a positive integer: ${a1.id}`);
      assert.match(a1.createdAt, RFC3339_MILLIS);
      const created = Date.parse(a1.createdAt);
      assert.ok(Math.abs(created - before) < 60_000, `createdAt ${a1.createdAt} is about now`);

      const b1 = await send(bob, ws, "hello alice"); // no clientMsgId
      const a2 = await send(alice, ws, "how are you? 😀 ünïcödé", "a-2");
      const b2 = await send(bob, ws, "fine", "b-2");
      const acks = [a1, b1, a2, b2];
      assertIncreasing(acks.map((a) => a.id), "ack ids");

      const expected = [
        { id: a1.id, workspaceId: ws, userId: "alice", content: "hi bob", createdAt: a1.createdAt, clientMsgId: "a-1" },
        { id: b1.id, workspaceId: ws, userId: "bob", content: "hello alice", createdAt: b1.createdAt },
        { id: a2.id, workspaceId: ws, userId: "alice", content: "how are you? 😀 ünïcödé", createdAt: a2.createdAt, clientMsgId: "a-2" },
        { id: b2.id, workspaceId: ws, userId: "bob", content: "fine", createdAt: b2.createdAt, clientMsgId: "b-2" },
      ];
      await expectCount(atAlice, 4, "messages at alice");
      await expectCount(atBob, 4, "messages at bob");
      assert.deepEqual(atAlice.map((e) => e.message), expected);
      assert.deepEqual(atBob.map((e) => e.message), expected);
      for (const e of [...atAlice, ...atBob]) assertMessageShape(e.message, { clientMsgId: e.message.clientMsgId });
      // Someone in another workspace sees none of it.
      assert.deepEqual(atCarol, []);
    });

    test("message ids are one increasing sequence across workspaces", async () => {
      const alice = await clients.connect(server, { sub: "alice", workspaces: ["seq-1", "seq-2"] });
      await join(alice, "seq-1");
      await join(alice, "seq-2");
      const ids = [];
      for (const ws of ["seq-1", "seq-2", "seq-1", "seq-2", "seq-2", "seq-1"]) ids.push((await send(alice, ws, `in ${ws}`)).id);
      assertIncreasing(ids);
      assert.equal(new Set(ids).size, ids.length);
    });

    test("a long-polling client and a WebSocket client chat both ways", async () => {
      const ws = "mixed";
      const polling = await clients.connect(server, { sub: "pat", workspaces: [ws], transports: ["polling"] });
      const websocket = await clients.connect(server, { sub: "wes", workspaces: [ws], transports: ["websocket"] });
      assert.equal(polling.io.engine.transport.name, "polling");
      assert.equal(websocket.io.engine.transport.name, "websocket");
      const pollingJoined = nextEvent(polling, "joined");
      await join(polling, ws);
      assert.deepEqual(await pollingJoined, { workspaceId: ws });
      await join(websocket, ws);
      const atPolling = collectMessages(polling);
      const atWebsocket = collectMessages(websocket);

      const sent = [];
      for (let i = 0; i < 3; i += 1) {
        sent.push({ ack: await send(polling, ws, `from polling ${i}`, `p-${i}`), userId: "pat", content: `from polling ${i}` });
        sent.push({ ack: await send(websocket, ws, `from websocket ${i}`), userId: "wes", content: `from websocket ${i}` });
      }
      assertIncreasing(sent.map((s) => s.ack.id));
      await expectCount(atPolling, 6, "messages at the polling client");
      await expectCount(atWebsocket, 6, "messages at the websocket client");
      for (const list of [atPolling, atWebsocket]) {
        assert.deepEqual(
          list.map((e) => [e.message.id, e.message.userId, e.message.content]),
          sent.map((s) => [s.ack.id, s.userId, s.content]),
        );
      }
      assert.equal(polling.io.engine.transport.name, "polling", "still polling");
    });

    describe("history", () => {
      const ws = "hist";
      let ids; // ids of the 210 messages of `ws`, ascending
      let reader; // a socket of a user with access
      let readerToken;

      before(async () => {
        // 210 messages, sent at once over 6 connections (the default rate limit is 50 events/s each).
        const senders = [];
        for (let i = 0; i < 6; i += 1) {
          const s = await clients.connect(server, { sub: `writer${i}`, workspaces: [ws, "hist-other"] });
          await join(s, ws);
          senders.push(s);
        }
        const acks = await Promise.all(
          Array.from({ length: 210 }, (_, i) => send(senders[i % senders.length], ws, `h${i}`, `c${i}`)),
        );
        // Noise in another workspace, interleaved in the id sequence.
        await join(senders[0], "hist-other");
        await send(senders[0], "hist-other", "not in hist");
        ids = acks.map((a) => a.id).sort((x, y) => x - y);
        assert.equal(new Set(ids).size, 210);
        clients.closeAll();
        readerToken = userToken(server.secret, "reader", { workspaces: [ws] });
      });

      const windows = () => [
        ["no cursor: the latest 50 (default limit)", {}, ids.slice(-50)],
        ["limit 5: the latest 5", { limit: 5 }, ids.slice(-5)],
        ["limit 200", { limit: 200 }, ids.slice(-200)],
        ["limit 1000 is clamped to 200", { limit: 1000 }, ids.slice(-200)],
        ["before, limit 10", { before: ids[100], limit: 10 }, ids.slice(90, 100)],
        ["before, default limit", { before: ids[100] }, ids.slice(50, 100)],
        ["before the first id: nothing", { before: ids[0] }, []],
        ["after, limit 10", { after: ids[100], limit: 10 }, ids.slice(101, 111)],
        ["after, default limit", { after: ids[100] }, ids.slice(101, 151)],
        ["after, near the end", { after: ids[200] }, ids.slice(201)],
        ["after the last id: nothing", { after: ids[209] }, []],
        ["after 0, limit 3: the oldest 3", { after: 0, limit: 3 }, ids.slice(0, 3)],
        ["before and after: those in between", { after: ids[100], before: ids[120] }, ids.slice(101, 120)],
        ["before and after, adjacent: nothing", { after: ids[100], before: ids[101] }, []],
        ["after 0, limit 1000: the oldest 200", { after: 0, limit: 1000 }, ids.slice(0, 200)],
      ];

      test("the history event follows the window rules, oldest first", async () => {
        reader = await clients.connect(server, { token: readerToken });
        for (const [what, query, expected] of windows()) {
          const messages = await history(reader, { workspaceId: ws, ...query });
          assert.deepEqual(messages.map((m) => m.id), expected, what);
          for (const m of messages) {
            assertMessageShape(m, { workspaceId: ws, clientMsgId: m.clientMsgId });
            assert.equal(`c${m.content.slice(1)}`, m.clientMsgId, "content and clientMsgId belong together");
          }
        }
        // The reader needs access, not a join.
        assert.equal((await history(reader, { workspaceId: ws, limit: 1 })).length, 1);
        // `null` cursors are as good as absent.
        assert.deepEqual(
          (await history(reader, { workspaceId: ws, before: null, after: null, limit: null })).map((m) => m.id),
          ids.slice(-50),
        );
      });

      test("GET /api/workspaces/{id}/messages follows the same rules", async () => {
        for (const [what, query, expected] of windows()) {
          const qs = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)])).toString();
          const res = await http(server, "GET", `/api/workspaces/${ws}/messages${qs ? `?${qs}` : ""}`, { token: readerToken });
          assert.equal(res.status, 200, `${what}: ${res.text.slice(0, 300)}`);
          assert.match(res.headers.get("content-type") ?? "", /application\/json/);
          assert.deepEqual(Object.keys(res.json), ["messages"]);
          assert.deepEqual(res.json.messages.map((m) => m.id), expected, what);
          for (const m of res.json.messages) assertMessageShape(m, { workspaceId: ws, clientMsgId: m.clientMsgId });
        }
      });

      test("GET messages: 401 without or with a bad token, 403 without access, 400 for a bad window", async () => {
        const path = `/api/workspaces/${ws}/messages`;
        assertHttpError(await http(server, "GET", path), 401, "unauthorized", "no token");
        assertHttpError(await http(server, "GET", path, { token: "garbage" }), 401, "unauthorized", "garbage token");
        assertHttpError(await http(server, "GET", path, { token: forgedToken("reader", { workspaces: [ws] }) }), 401, "unauthorized", "forged");
        const outsider = userToken(server.secret, "outsider", { workspaces: ["hist-other"] });
        const denied = await http(server, "GET", path, { token: outsider });
        assertHttpError(denied, 403, "forbidden", "no access");
        assert.ok(!denied.text.includes("h1"), "a 403 leaks no message");
        for (const bad of ["limit=0", "limit=-1", "limit=abc", "before=x", "after=1.5"]) {
          assertHttpError(await http(server, "GET", `${path}?${bad}`, { token: readerToken }), 400, "invalid", bad);
        }
      });
    });

    test("a client that comes back joins with `since` and gets exactly what it missed, in order, before the ack", async () => {
      const ws = "since";
      const alice = await clients.connect(server, { sub: "alice", workspaces: [ws, "since-other"] });
      await join(alice, ws);
      await join(alice, "since-other");
      const bob = await clients.connect(server, { sub: "bob", workspaces: [ws] });
      await join(bob, ws);
      const seen = collectMessages(bob);
      for (let i = 0; i < 3; i += 1) await send(alice, ws, `before ${i}`);
      await expectCount(seen, 3, "messages before the disconnect");
      const lastSeen = seen.at(-1).message.id;
      bob.disconnect();

      const missed = [];
      for (let i = 0; i < 5; i += 1) {
        missed.push(await send(alice, ws, `missed ${i}`, `m-${i}`));
        if (i === 2) await send(alice, "since-other", "another workspace"); // not bob's business
      }

      const bob2 = await clients.connect(server, { sub: "bob", workspaces: [ws] });
      const log = [];
      bob2.on("message", (m) => log.push(["message", m]));
      bob2.on("joined", (j) => log.push(["joined", j]));
      const ack = await emitAck(bob2, "join_workspace", { workspaceId: ws, since: lastSeen });
      log.push(["ack", ack]);
      assert.deepEqual(ack, { ok: true });
      await delay(QUIET_MS);
      const kinds = log.map(([kind]) => kind);
      assert.deepEqual(
        kinds,
        ["message", "message", "message", "message", "message", "joined", "ack"],
        `replayed messages come before joined and the ack: ${JSON.stringify(log)}`,
      );
      assert.deepEqual(
        log.slice(0, 5).map(([, m]) => [m.id, m.content, m.clientMsgId]),
        missed.map((a, i) => [a.id, `missed ${i}`, `m-${i}`]),
      );
      for (const [, m] of log.slice(0, 5)) assertMessageShape(m, { workspaceId: ws, userId: "alice", clientMsgId: m.clientMsgId });

      // And it is in the room: live messages arrive, once.
      const live = await send(alice, ws, "live");
      await eventually(() => log.filter(([k]) => k === "message").length === 6, 3_000);
      await delay(QUIET_MS);
      const messages = log.filter(([k]) => k === "message").map(([, m]) => m.id);
      assert.deepEqual(messages, [...missed.map((a) => a.id), live.id]);

      // Joining again with an old `since` on a socket already in the room replays nothing.
      assert.deepEqual(await emitAck(bob2, "join_workspace", { workspaceId: ws, since: 0 }), { ok: true });
      await delay(QUIET_MS);
      assert.equal(log.filter(([k]) => k === "message").length, 6, "no duplicates for a socket already in the room");

      // since = the latest id: nothing to replay.
      const bob3 = await clients.connect(server, { sub: "bob", workspaces: [ws] });
      const seen3 = collectMessages(bob3);
      await join(bob3, ws, live.id);
      await delay(QUIET_MS);
      assert.deepEqual(seen3, []);
    });

    test("bad input is refused with the right code and the connection stays usable", async () => {
      const ws = "bad";
      const alice = await clients.connect(server, { sub: "alice", workspaces: [ws, "not-joined"] });
      await join(alice, ws);
      const received = collectMessages(alice);
      const errors = collect(alice, "error");
      const disconnects = collect(alice, "disconnect");
      const good = await send(alice, ws, "first");

      const cases = [
        ["content of 5001 characters", "message", [{ workspaceId: ws, content: "x".repeat(5001) }], "too_large"],
        ["content of 5001 code points (emoji)", "message", [{ workspaceId: ws, content: "😀".repeat(5001) }], "too_large"],
        ["empty content", "message", [{ workspaceId: ws, content: "" }], "invalid"],
        ["missing content", "message", [{ workspaceId: ws }], "invalid"],
        ["content a number", "message", [{ workspaceId: ws, content: 42 }], "invalid"],
        ["content an object", "message", [{ workspaceId: ws, content: { text: "hi" } }], "invalid"],
        ["content an array", "message", [{ workspaceId: ws, content: ["hi"] }], "invalid"],
        ["content null", "message", [{ workspaceId: ws, content: null }], "invalid"],
        ["content true", "message", [{ workspaceId: ws, content: true }], "invalid"],
        ["missing workspaceId", "message", [{ content: "hi" }], "invalid"],
        ["workspaceId a number", "message", [{ workspaceId: 7, content: "hi" }], "invalid"],
        ["workspaceId null", "message", [{ workspaceId: null, content: "hi" }], "invalid"],
        ["workspaceId empty", "message", [{ workspaceId: "", content: "hi" }], "invalid"],
        ["clientMsgId a number", "message", [{ workspaceId: ws, content: "hi", clientMsgId: 5 }], "invalid"],
        ["clientMsgId an object", "message", [{ workspaceId: ws, content: "hi", clientMsgId: {} }], "invalid"],
        ["payload a string", "message", ["hello"], "invalid"],
        ["payload a number", "message", [42], "invalid"],
        ["payload an array", "message", [[ws, "hi"]], "invalid"],
        ["payload null", "message", [null], "invalid"],
        ["no payload", "message", [], "invalid"],
        ["a workspace not joined", "message", [{ workspaceId: "not-joined", content: "hi" }], "forbidden"],
        ["an unknown event", "frobnicate", [{ workspaceId: ws }], "invalid"],
        ["history limit 0", "history", [{ workspaceId: ws, limit: 0 }], "invalid"],
        ["history limit -1", "history", [{ workspaceId: ws, limit: -1 }], "invalid"],
        ["history limit \"abc\"", "history", [{ workspaceId: ws, limit: "abc" }], "invalid"],
        ["history limit 2.5", "history", [{ workspaceId: ws, limit: 2.5 }], "invalid"],
        ["history before a string", "history", [{ workspaceId: ws, before: "10" }], "invalid"],
        ["history payload a string", "history", [ws], "invalid"],
        ["history without workspaceId", "history", [{ limit: 5 }], "invalid"],
        ["join_workspace a number", "join_workspace", [42], "invalid"],
        ["join_workspace workspaceId a number", "join_workspace", [{ workspaceId: 42 }], "invalid"],
        ["join_workspace since a string", "join_workspace", [{ workspaceId: ws, since: "abc" }], "invalid"],
        ["join_workspace workspaceId of 129 characters", "join_workspace", [{ workspaceId: "w".repeat(129) }], "invalid"],
      ];
      for (const [what, event, args, code] of cases) {
        const ack = await emitAck(alice, event, ...args).catch((e) => assert.fail(`${what}: ${e.message}`));
        assertFailure(ack, code, what);
        assert.equal(alice.connected, true, `still connected after ${what}`);
      }

      // The same failures without an ack come as `error` events { message, code }.
      const noAck = [
        ["message", { workspaceId: ws, content: "x".repeat(5001) }, "too_large"],
        ["message", { workspaceId: ws, content: 1 }, "invalid"],
        ["message", { workspaceId: "not-joined", content: "hi" }, "forbidden"],
        ["frobnicate", {}, "invalid"],
      ];
      for (const [event, payload, code] of noAck) {
        const error = nextEvent(alice, "error");
        alice.emit(event, payload);
        const body = await error.catch((e) => assert.fail(`${event} ${JSON.stringify(payload).slice(0, 80)}: ${e.message}`));
        assert.deepEqual(Object.keys(body).sort(), ["code", "message"], JSON.stringify(body));
        assert.equal(body.code, code);
        assert.equal(typeof body.message, "string");
      }
      assert.equal(errors.length, noAck.length, "acked failures produce no error event");

      // Still usable; nothing of the refused messages was stored or broadcast.
      const last = await send(alice, ws, "still here");
      assert.ok(last.id > good.id);
      const stored = await history(alice, { workspaceId: ws });
      assert.deepEqual(stored.map((m) => m.content), ["first", "still here"]);
      await expectCount(received, 2, "broadcast messages");
      assert.deepEqual(received.map((e) => e.message.content), ["first", "still here"]);
      assert.deepEqual(disconnects, []);
    });

    test("content with a lone surrogate is refused as invalid and the connection stays open", async () => {
      // JSON.stringify("a\ud800b") is the valid JSON text "a\\ud800b"; DESIGN.md section 3:
      // "a lone surrogate or other invalid text is `invalid`", and "a failure never closes the connection".
      const ws = "surrogate";
      const alice = await clients.connect(server, { sub: "alice", workspaces: [ws] });
      await join(alice, ws);
      const disconnects = collect(alice, "disconnect");
      for (const content of ["a\ud800b", "\udc00", "x\udbff"]) {
        const ack = await emitAck(alice, "message", { workspaceId: ws, content }).catch((e) =>
          assert.fail(
            `content ${JSON.stringify(content)}: ${e.message}; connected=${alice.connected}, ` +
              `disconnect reasons ${JSON.stringify(disconnects)}`,
          ),
        );
        assertFailure(ack, "invalid", `content ${JSON.stringify(content)}`);
      }
      assert.deepEqual(disconnects, []);
      await send(alice, ws, "valid after the lone surrogates");
      assert.deepEqual((await history(alice, { workspaceId: ws })).map((m) => m.content), ["valid after the lone surrogates"]);
    });

    test("a message of exactly 5000 characters is accepted unchanged", async () => {
      const alice = await clients.connect(server, { sub: "alice", workspaces: ["big"] });
      await join(alice, "big");
      const content = "é".repeat(4999) + "😀";
      const ack = await send(alice, "big", content);
      const [m] = await history(alice, { workspaceId: "big", limit: 1 });
      assert.equal(m.id, ack.id);
      assert.equal(m.content, content, "stored and returned without being cut");
    });

    test("leave_workspace stops the deliveries", async () => {
      const ws = "leave";
      const alice = await clients.connect(server, { sub: "alice", workspaces: [ws] });
      const bob = await clients.connect(server, { sub: "bob", workspaces: [ws] });
      await join(alice, ws);
      await join(bob, ws);
      const atBob = collectMessages(bob);
      await send(alice, ws, "one");
      await expectCount(atBob, 1, "messages before leaving");
      assert.equal((await emitAck(bob, "leave_workspace", { workspaceId: ws })).ok, true);
      const atAlice = collectMessages(alice);
      await send(alice, ws, "two");
      await expectCount(atAlice, 1, "alice's own message");
      assert.equal(atBob.length, 1, "bob left: no more messages");
      assertFailure(await emitAck(bob, "message", { workspaceId: ws, content: "hi" }), "forbidden", "message after leaving");
    });
  });
}
