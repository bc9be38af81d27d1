// Authentication and access (DESIGN.md sections 2, 3 and 4): refused tokens on
// the Socket.IO CONNECT and on the HTTP API, workspace access by token claim or by
// membership managed with the API key. Runs against SQLite and PostgreSQL.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { STORES, startSwitchboard } from "../lib/server.mjs";
import {
  Clients,
  algNoneToken,
  assertFailure,
  assertHttpError,
  connectRefused,
  connected,
  emitAck,
  expiredToken,
  forgedToken,
  http,
  join,
  nextEvent,
  userToken,
} from "../lib/switchboard.mjs";

for (const store of STORES) {
  describe(`authentication and access [${store.name}]`, () => {
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

    const refusedTokens = () => [
      ["no auth at all", null],
      ["an empty token", ""],
      ["a token that is not a JWT", "not-a-jwt"],
      ["a forged token (wrong secret)", forgedToken("mallory", { workspaces: ["w1"] })],
      ["an expired token", expiredToken(server.secret, "alice", { workspaces: ["w1"] })],
      ["a token expired one second ago", expiredToken(server.secret, "alice", { agoSecs: 1 })],
      ["an alg:none token", algNoneToken("alice", { workspaces: ["w1"] })],
      ["a token without exp", userToken(server.secret, "alice", { claims: { exp: undefined } })],
      ["a token without sub", userToken(server.secret, "alice", { claims: { sub: undefined } })],
    ];

    for (const transports of [["websocket"], ["polling"]]) {
      test(`refused tokens get connect_error "Authentication failed" [${transports}]`, async () => {
        for (const [what, token] of refusedTokens()) {
          const socket = clients.socket(server, { token, transports });
          const err = await connectRefused(socket).catch((e) => assert.fail(`${what}: ${e.message}`));
          assert.equal(err.message, "Authentication failed", `${what}: connect_error message`);
          assert.equal(socket.connected, false, what);
          socket.disconnect();
        }
        // The server still accepts a good token afterwards.
        const ok = clients.socket(server, { token: userToken(server.secret, "alice"), transports });
        await connected(ok);
      });
    }

    test("a refused connection never received a single event", async () => {
      const socket = clients.socket(server, { token: forgedToken("mallory", { workspaces: ["w1"] }) });
      const events = [];
      socket.onAny((name, ...args) => events.push([name, args]));
      await connectRefused(socket);
      assert.deepEqual(events, []);
    });

    test("join_workspace outside the token's workspaces and without membership is denied", async () => {
      const dave = await clients.connect(server, { sub: "dave", workspaces: ["w-dave"] });
      const joined = [];
      dave.on("joined", (p) => joined.push(p));

      const ack = await emitAck(dave, "join_workspace", { workspaceId: "secret" });
      assert.deepEqual(ack, { ok: false, error: "forbidden", message: "Access denied" });
      const ackString = await emitAck(dave, "join_workspace", "secret");
      assert.deepEqual(ackString, { ok: false, error: "forbidden", message: "Access denied" });

      // Without an ack: an `error` event to this socket.
      const error = nextEvent(dave, "error");
      dave.emit("join_workspace", { workspaceId: "secret" });
      assert.deepEqual(await error, { message: "Access denied", code: "forbidden" });
      const error2 = nextEvent(dave, "error");
      dave.emit("join_workspace", "secret");
      assert.deepEqual(await error2, { message: "Access denied", code: "forbidden" });

      // The connection stays usable: its own workspace works.
      assert.equal(dave.connected, true);
      await join(dave, "w-dave");
      assert.deepEqual(joined, [{ workspaceId: "w-dave" }]);

      // Nor may it read the history of the denied workspace or post to it.
      assertFailure(await emitAck(dave, "history", { workspaceId: "secret" }), "forbidden", "history");
      assertFailure(await emitAck(dave, "message", { workspaceId: "secret", content: "hi" }), "forbidden", "message");
    });

    test("membership granted with the API key opens the workspace; removing it closes it again", async () => {
      const ws = "members-only";
      const user = "erin";
      const token = userToken(server.secret, user); // no workspaces claim at all
      const socket1 = await clients.connect(server, { token });
      assert.deepEqual(await emitAck(socket1, "join_workspace", { workspaceId: ws }), {
        ok: false,
        error: "forbidden",
        message: "Access denied",
      });
      assertHttpError(await http(server, "GET", `/api/workspaces/${ws}/messages`, { token }), 403, "forbidden", "before PUT");

      // Membership calls need the API key.
      assertHttpError(await http(server, "PUT", `/api/workspaces/${ws}/members/${user}`), 401, "unauthorized", "PUT without key");
      assertHttpError(
        await http(server, "PUT", `/api/workspaces/${ws}/members/${user}`, { token: "wrong-key" }),
        401,
        "unauthorized",
        "PUT with a wrong key",
      );
      assertHttpError(
        await http(server, "PUT", `/api/workspaces/${ws}/members/${user}`, { token }),
        401,
        "unauthorized",
        "PUT with a user token instead of the key",
      );
      assert.deepEqual(await emitAck(socket1, "join_workspace", { workspaceId: ws }), {
        ok: false,
        error: "forbidden",
        message: "Access denied",
      });

      const put = await http(server, "PUT", `/api/workspaces/${ws}/members/${user}`, { token: server.apiKey });
      assert.equal(put.status, 204, put.text);
      assert.equal(put.text, "");
      const putAgain = await http(server, "PUT", `/api/workspaces/${ws}/members/${user}`, { token: server.apiKey });
      assert.equal(putAgain.status, 204, `PUT is idempotent: ${putAgain.text}`);

      const joinedEvent = nextEvent(socket1, "joined");
      assert.deepEqual(await emitAck(socket1, "join_workspace", { workspaceId: ws }), { ok: true });
      assert.deepEqual(await joinedEvent, { workspaceId: ws });
      const sent = await emitAck(socket1, "message", { workspaceId: ws, content: "member now" });
      assert.equal(sent.ok, true, JSON.stringify(sent));
      const res = await http(server, "GET", `/api/workspaces/${ws}/messages`, { token });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(
        res.json.messages.map((m) => m.content),
        ["member now"],
      );

      assertHttpError(await http(server, "DELETE", `/api/workspaces/${ws}/members/${user}`), 401, "unauthorized", "DELETE without key");
      const del = await http(server, "DELETE", `/api/workspaces/${ws}/members/${user}`, { token: server.apiKey });
      assert.equal(del.status, 204, del.text);

      const socket2 = await clients.connect(server, { token });
      assert.deepEqual(await emitAck(socket2, "join_workspace", { workspaceId: ws }), {
        ok: false,
        error: "forbidden",
        message: "Access denied",
      });
      assertFailure(await emitAck(socket2, "history", { workspaceId: ws }), "forbidden", "history after DELETE");
      assertHttpError(await http(server, "GET", `/api/workspaces/${ws}/messages`, { token }), 403, "forbidden", "after DELETE");
      // A different user never gained access through erin's membership.
      const frank = await clients.connect(server, { sub: "frank" });
      assert.deepEqual(await emitAck(frank, "join_workspace", ws), { ok: false, error: "forbidden", message: "Access denied" });
    });

    test("the HTTP API refuses missing, forged, expired and alg:none tokens with 401", async () => {
      const path = "/api/workspaces/w1/messages";
      assertHttpError(await http(server, "GET", path), 401, "unauthorized", "no Authorization");
      for (const [what, token] of refusedTokens().slice(1)) {
        assertHttpError(await http(server, "GET", path, { token }), 401, "unauthorized", what);
      }
      assertHttpError(
        await http(server, "GET", path, { headers: { authorization: `Basic ${Buffer.from("a:b").toString("base64")}` } }),
        401,
        "unauthorized",
        "Basic auth",
      );
      const ok = await http(server, "GET", path, { token: userToken(server.secret, "alice", { workspaces: ["w1"] }) });
      assert.equal(ok.status, 200, ok.text);
      assert.deepEqual(ok.json, { messages: [] });
    });
  });
}
