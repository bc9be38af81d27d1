// Presence and typing indicators (DESIGN.md section 3): `presence_join` /
// `presence_leave` counting several tabs of one user once, the `presence` ack and
// `GET /api/workspaces/{id}/presence` with display names (the JWT `name` claim),
// `typing_start` / `typing_stop` reaching every connection but the sender's, the
// typing timeout and its refresh, typing ended by a disconnect, typing refused
// outside a joined workspace, the typing rate limit (dropped without an answer),
// an abrupt disconnect leaving within the presence TTL, and presence traffic
// leaving connection-state recovery intact (no offset argument).
// Presence is not stored, so the SQLite store is enough.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard node --test --test-concurrency=1 server/presence.test.mjs

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { delay, eventually, startSwitchboard, withTimeout } from "../lib/server.mjs";
import {
  Clients,
  QUIET_MS,
  assertFailure,
  assertHttpError,
  collect,
  collectMessages,
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

let wsCounter = 0;
/** A workspace id of its own for each test (presence state outlives a test's sockets briefly). */
const freshWorkspace = (prefix) => `${prefix}-${(wsCounter += 1)}`;

/** Connects `sub` with a token granting `workspaces` and, when given, the display name `name`. */
function connectUser(clients, server, sub, { workspaces, name, ...extra } = {}) {
  return clients.connect(server, { sub, token: userToken(server.secret, sub, { workspaces, name }), ...extra });
}

/** Collects every `event` as `{ args, at }` (all listener arguments and the arrival time). */
function collectArgs(socket, event) {
  const seen = [];
  socket.on(event, (...args) => seen.push({ args, at: Date.now() }));
  return seen;
}

/** The `presence` ack for `workspaceId`, asserted successful; its users sorted by id. */
async function presenceAck(socket, workspaceId) {
  const ack = await emitAck(socket, "presence", { workspaceId });
  assert.equal(ack?.ok, true, `presence ${workspaceId} was refused: ${JSON.stringify(ack)}`);
  assert.deepEqual(Object.keys(ack).sort(), ["ok", "users"], `fields of the presence ack ${JSON.stringify(ack)}`);
  assert.ok(Array.isArray(ack.users), `presence ack without a users list: ${JSON.stringify(ack)}`);
  return sortUsers(ack.users);
}

/** `GET /api/workspaces/{id}/presence` with `token`, asserted 200; its users sorted by id. */
async function presenceHttp(server, workspaceId, token) {
  const res = await http(server, "GET", `/api/workspaces/${workspaceId}/presence`, { token });
  assert.equal(res.status, 200, `GET presence of ${workspaceId}: ${res.status} ${res.text.slice(0, 300)}`);
  assert.ok(Array.isArray(res.json?.users), `GET presence without a users list: ${res.text.slice(0, 300)}`);
  assert.deepEqual(Object.keys(res.json).sort(), ["users"], `fields of ${res.text.slice(0, 300)}`);
  return sortUsers(res.json.users);
}

function sortUsers(users) {
  return [...users].sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0));
}

/** The events of `list` (from `collect`) about `userId`. */
const about = (list, userId) => list.filter((e) => e?.userId === userId);

/** The value of a Prometheus sample with exactly these labels (0 when absent). */
function metricValue(text, name, labels) {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const match = /^(\w+)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    const got = Object.fromEntries(
      (match[2] ?? "")
        .split(",")
        .filter(Boolean)
        .map((kv) => {
          const i = kv.indexOf("=");
          return [kv.slice(0, i).trim(), kv.slice(i + 1).trim().replace(/^"|"$/g, "")];
        }),
    );
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) total += Number(match[3]);
  }
  return total;
}

async function typingDrops(server) {
  const res = await http(server, "GET", "/metrics");
  assert.equal(res.status, 200, res.text.slice(0, 300));
  return { value: metricValue(res.text, "switchboard_events_dropped_total", { reason: "typing_rate" }), text: res.text };
}

/** A network drop: the TCP socket under the WebSocket is destroyed, no close frame. */
async function dropTransport(socket) {
  const gone = nextEvent(socket, "disconnect", 5_000);
  socket.io.engine.transport.ws._socket.destroy();
  const reason = await gone;
  assert.equal(reason, "transport close");
  assert.equal(socket.connected, false);
}

/** Every socket's queued events are worked through in order: an acked event after others proves those are done. */
async function settled(socket, workspaceId) {
  await emitAck(socket, "presence", { workspaceId });
}

describe("presence and typing [sqlite, default settings]", () => {
  let server;
  const clients = new Clients();

  before(async () => {
    server = await startSwitchboard();
  });
  afterEach(() => clients.closeAll());
  after(async () => {
    clients.closeAll();
    await server?.stop();
  });

  test("two tabs of one user: one presence_join, presence_leave only when the last tab closes; presence ack and HTTP list users once with their names", async () => {
    const ws = freshWorkspace("tabs");
    const alice = await connectUser(clients, server, "alice", { workspaces: [ws], name: "Alice Liddell" });
    const carol = await connectUser(clients, server, "carol", { workspaces: [ws] }); // no name claim
    const joins = collectArgs(alice, "presence_join");
    const leaves = collectArgs(alice, "presence_leave");
    await join(alice, ws);
    await join(carol, ws);

    const bob1 = await connectUser(clients, server, "bob", { workspaces: [ws], name: "Bob Builder" });
    const bob2 = await connectUser(clients, server, "bob", { workspaces: [ws], name: "Bob Builder" });
    await join(bob1, ws);
    await join(bob2, ws);

    const bobJoins = () => joins.filter((e) => e.args[0]?.userId === "bob");
    await eventually(() => bobJoins().length >= 1, 3_000).catch(() =>
      assert.fail(`alice got no presence_join for bob: ${JSON.stringify(joins)}`),
    );
    await delay(QUIET_MS);
    assert.equal(bobJoins().length, 1, `exactly one presence_join for bob's two tabs: ${JSON.stringify(joins)}`);
    assert.deepEqual(bobJoins()[0].args, [{ workspaceId: ws, userId: "bob" }], "presence_join payload (one argument)");
    assert.equal(joins.filter((e) => e.args[0]?.userId === "carol").length, 1, `one presence_join for carol: ${JSON.stringify(joins)}`);

    const everyone = [
      { userId: "alice", name: "Alice Liddell" },
      { userId: "bob", name: "Bob Builder" },
      { userId: "carol" },
    ];
    assert.deepEqual(await presenceAck(alice, ws), everyone, "presence ack: each online user once, with its display name");
    assert.deepEqual(await presenceAck(bob2, ws), everyone, "presence ack asked by bob");
    const aliceToken = userToken(server.secret, "alice", { workspaces: [ws] });
    assert.deepEqual(await presenceHttp(server, ws, aliceToken), everyone, "GET /api/workspaces/W/presence");

    // HTTP: 401 without a token, 403 without access.
    assertHttpError(await http(server, "GET", `/api/workspaces/${ws}/presence`), 401, "unauthorized", "GET presence without a token");
    assertHttpError(
      await http(server, "GET", `/api/workspaces/${ws}/presence`, { token: userToken(server.secret, "mallory", { workspaces: ["other"] }) }),
      403,
      "forbidden",
      "GET presence without access",
    );
    // The presence event checks access too.
    const mallory = await connectUser(clients, server, "mallory", { workspaces: ["other"] });
    assertFailure(await emitAck(mallory, "presence", { workspaceId: ws }), "forbidden", "presence event without access");

    // Closing one tab: bob is still online, no presence_leave.
    bob1.disconnect();
    await delay(500);
    assert.deepEqual(leaves, [], `no presence_leave while bob's second tab is open: ${JSON.stringify(leaves)}`);
    assert.deepEqual(await presenceAck(alice, ws), everyone, "bob is still listed with one tab open");
    assert.deepEqual(await presenceHttp(server, ws, aliceToken), everyone, "GET presence: bob still listed");

    // Closing the last tab: exactly one presence_leave.
    bob2.disconnect();
    await eventually(() => leaves.length >= 1, 3_000).catch(() =>
      assert.fail("alice got no presence_leave after bob's last tab closed"),
    );
    await delay(QUIET_MS);
    assert.equal(leaves.length, 1, `exactly one presence_leave: ${JSON.stringify(leaves)}`);
    assert.deepEqual(leaves[0].args, [{ workspaceId: ws, userId: "bob" }], "presence_leave payload (one argument)");
    const rest = [everyone[0], everyone[2]];
    assert.deepEqual(await presenceAck(alice, ws), rest, "bob is gone from the presence ack");
    assert.deepEqual(await presenceHttp(server, ws, aliceToken), rest, "bob is gone from GET presence");
  });

  test("leave_workspace counts as leaving: the last tab's leave announces presence_leave, joining again presence_join", async () => {
    const ws = freshWorkspace("leave");
    const alice = await connectUser(clients, server, "alice", { workspaces: [ws], name: "Alice" });
    await join(alice, ws);
    const joins = collect(alice, "presence_join");
    const leaves = collect(alice, "presence_leave");

    const bob1 = await connectUser(clients, server, "bob", { workspaces: [ws], name: "Bob" });
    const bob2 = await connectUser(clients, server, "bob", { workspaces: [ws], name: "Bob" });
    await join(bob1, ws);
    await join(bob2, ws);
    await expectCount(joins, 1, "presence_join events for bob's two tabs");
    assert.deepEqual(joins[0], { workspaceId: ws, userId: "bob" });

    assert.deepEqual(await emitAck(bob1, "leave_workspace", { workspaceId: ws }), { ok: true });
    await delay(QUIET_MS);
    assert.deepEqual(leaves, [], "no presence_leave while bob's other tab is still in the workspace");
    assert.deepEqual(await presenceAck(alice, ws), [
      { userId: "alice", name: "Alice" },
      { userId: "bob", name: "Bob" },
    ]);

    assert.deepEqual(await emitAck(bob2, "leave_workspace", ws), { ok: true }, "leave with a plain string");
    await expectCount(leaves, 1, "presence_leave events after bob's last tab left");
    assert.deepEqual(leaves[0], { workspaceId: ws, userId: "bob" });
    assert.deepEqual(await presenceAck(alice, ws), [{ userId: "alice", name: "Alice" }], "bob left the presence list");
    assert.ok(bob2.connected && bob1.connected, "leaving a workspace keeps the connections");

    // Back again: a fresh presence_join.
    await join(bob1, ws);
    await expectCount(joins, 2, "presence_join events after bob joined again");
    assert.deepEqual(joins[1], { workspaceId: ws, userId: "bob" });
  });

  test("typing_start / typing_stop reach every other connection (bob's second tab too) but not the sender's", async () => {
    const ws = freshWorkspace("typing");
    const alice = await connectUser(clients, server, "alice", { workspaces: [ws] });
    const bob1 = await connectUser(clients, server, "bob", { workspaces: [ws] });
    const bob2 = await connectUser(clients, server, "bob", { workspaces: [ws] });
    for (const s of [alice, bob1, bob2]) await join(s, ws);
    const typing = {
      alice: collectArgs(alice, "user_typing"),
      bob1: collectArgs(bob1, "user_typing"),
      bob2: collectArgs(bob2, "user_typing"),
    };
    const stopped = {
      alice: collectArgs(alice, "user_stopped_typing"),
      bob1: collectArgs(bob1, "user_stopped_typing"),
      bob2: collectArgs(bob2, "user_stopped_typing"),
    };

    assert.deepEqual(await emitAck(bob1, "typing_start", { workspaceId: ws }), { ok: true }, "typing_start ack");
    await eventually(() => typing.alice.length >= 1 && typing.bob2.length >= 1, 3_000).catch(() =>
      assert.fail(`user_typing not delivered: alice ${JSON.stringify(typing.alice)}, bob's second tab ${JSON.stringify(typing.bob2)}`),
    );
    await delay(QUIET_MS);
    const payload = [{ workspaceId: ws, userId: "bob" }];
    assert.deepEqual(typing.alice.map((e) => e.args), [payload], "alice: one user_typing, one argument");
    assert.deepEqual(typing.bob2.map((e) => e.args), [payload], "bob's second tab: one user_typing (only the sending connection is left out)");
    assert.deepEqual(typing.bob1, [], "the sending connection gets no user_typing");

    assert.deepEqual(await emitAck(bob1, "typing_stop", { workspaceId: ws }), { ok: true }, "typing_stop ack");
    await eventually(() => stopped.alice.length >= 1 && stopped.bob2.length >= 1, 3_000).catch(() =>
      assert.fail(`user_stopped_typing not delivered: alice ${JSON.stringify(stopped.alice)}, bob2 ${JSON.stringify(stopped.bob2)}`),
    );
    await delay(QUIET_MS);
    assert.deepEqual(stopped.alice.map((e) => e.args), [payload], "alice: one user_stopped_typing");
    assert.deepEqual(stopped.bob2.map((e) => e.args), [payload], "bob's second tab: one user_stopped_typing");
    assert.deepEqual(stopped.bob1, [], "the sending connection gets no user_stopped_typing");

    // A stop without a start changes nothing and announces nothing; the id-only form is accepted.
    assert.deepEqual(await emitAck(bob1, "typing_stop", ws), { ok: true }, "typing_stop with a plain string");
    await delay(QUIET_MS);
    assert.equal(stopped.alice.length, 1, `a stop while not typing announces nothing: ${JSON.stringify(stopped.alice)}`);
    assert.equal(typing.alice.length, 1);
  });

  test("a disconnect while typing ends it with user_stopped_typing at once (well before the 6 s timeout)", async () => {
    const ws = freshWorkspace("typing-dc");
    const alice = await connectUser(clients, server, "alice", { workspaces: [ws] });
    const bob = await connectUser(clients, server, "bob", { workspaces: [ws] });
    await join(alice, ws);
    await join(bob, ws);
    const typing = collect(alice, "user_typing");
    const stopped = collect(alice, "user_stopped_typing");
    const leaves = collect(alice, "presence_leave");

    assert.deepEqual(await emitAck(bob, "typing_start", { workspaceId: ws }), { ok: true });
    await expectCount(typing, 1, "user_typing events");
    const start = Date.now();
    bob.disconnect();
    await eventually(() => stopped.length >= 1, 3_000).catch(() =>
      assert.fail("no user_stopped_typing within 3 s of bob's disconnect (the typing timeout is 6 s)"),
    );
    assert.ok(Date.now() - start < 3_000);
    assert.deepEqual(stopped, [{ workspaceId: ws, userId: "bob" }]);
    await expectCount(leaves, 1, "presence_leave events after the disconnect");
    assert.deepEqual(leaves[0], { workspaceId: ws, userId: "bob" });
    await delay(QUIET_MS);
    assert.equal(stopped.length, 1, `exactly one user_stopped_typing: ${JSON.stringify(stopped)}`);
  });

  test("typing in a workspace the socket has not joined is refused with forbidden (ack or error event) and announces nothing", async () => {
    const ws = freshWorkspace("typing-refused");
    const alice = await connectUser(clients, server, "alice", { workspaces: [ws] });
    // bob may access ws (token grant) but has not joined it.
    const bob = await connectUser(clients, server, "bob", { workspaces: [ws] });
    await join(alice, ws);
    const typing = collect(alice, "user_typing");
    const stopped = collect(alice, "user_stopped_typing");
    const errors = collect(bob, "error");

    assertFailure(await emitAck(bob, "typing_start", { workspaceId: ws }), "forbidden", "typing_start before joining");
    assertFailure(await emitAck(bob, "typing_stop", { workspaceId: ws }), "forbidden", "typing_stop before joining");
    assertFailure(await emitAck(bob, "typing_start", { workspaceId: "nowhere" }), "forbidden", "typing_start without access");

    bob.emit("typing_start", { workspaceId: ws });
    const error = await nextEvent(bob, "error", 3_000);
    assert.equal(error?.code, "forbidden", `error event: ${JSON.stringify(error)}`);
    assert.equal(typeof error?.message, "string");
    assert.ok(error.message.length > 0);
    await delay(QUIET_MS);
    assert.equal(errors.length, 1, `one error event for the one refused typing_start: ${JSON.stringify(errors)}`);
    assert.deepEqual(typing, [], "nothing announced for refused typing");
    assert.deepEqual(stopped, []);
    assert.ok(bob.connected, "a refusal keeps the connection");

    // After joining, the same event is accepted.
    await join(bob, ws);
    assert.deepEqual(await emitAck(bob, "typing_start", { workspaceId: ws }), { ok: true });
    await expectCount(typing, 1, "user_typing after joining");
    // And after leaving, refused again.
    assert.deepEqual(await emitAck(bob, "leave_workspace", ws), { ok: true });
    assertFailure(await emitAck(bob, "typing_start", { workspaceId: ws }), "forbidden", "typing_start after leaving");
  });

  test("typing rate limit: a burst of 30 start/stop events yields at most ~6 events, drops answer nothing, /metrics counts them", async () => {
    const ws = freshWorkspace("typing-rate");
    const alice = await connectUser(clients, server, "alice", { workspaces: [ws] });
    const bob = await connectUser(clients, server, "bob", { workspaces: [ws] });
    await join(alice, ws);
    await join(bob, ws);
    const seen = [];
    alice.on("user_typing", (e) => seen.push({ type: "typing", ...e }));
    alice.on("user_stopped_typing", (e) => seen.push({ type: "stopped", ...e }));
    const errors = collect(bob, "error");
    const before0 = (await typingDrops(server)).value;

    // Part 1: 30 alternating events without acks, all at once (the general limit, 50/s, is not reached).
    for (let i = 0; i < 30; i += 1) bob.emit(i % 2 === 0 ? "typing_start" : "typing_stop", { workspaceId: ws });
    await settled(bob, ws); // events of a socket run in order: the burst has been worked through
    await delay(QUIET_MS);
    assert.ok(seen.length >= 1, "the burst's first typing_start was announced");
    assert.ok(seen.length <= 6, `at most ~5-6 typing events pass the 5/s limit, got ${seen.length}: ${JSON.stringify(seen)}`);
    assert.equal(seen[0].type, "typing");
    for (const e of seen) assert.deepEqual({ workspaceId: e.workspaceId, userId: e.userId }, { workspaceId: ws, userId: "bob" });
    assert.deepEqual(errors, [], "dropped typing events get no error event (no rate_limited either)");
    const afterBurst = await typingDrops(server);
    assert.ok(
      afterBurst.value - before0 >= 30 - 6,
      `switchboard_events_dropped_total{reason="typing_rate"} went from ${before0} to ${afterBurst.value}, expected at least 24 more`,
    );

    // Reset the typing state once the bucket has refilled.
    await delay(1_100);
    assert.deepEqual(await emitAck(bob, "typing_stop", { workspaceId: ws }), { ok: true });
    await delay(QUIET_MS);
    seen.length = 0;
    await delay(1_100);

    // Part 2: with acks; a dropped event gets no ack at all (neither ok nor rate_limited).
    const beforeAcked = (await typingDrops(server)).value;
    const acks = [];
    for (let i = 0; i < 30; i += 1) {
      bob.emit(i % 2 === 0 ? "typing_start" : "typing_stop", { workspaceId: ws }, (reply) => acks.push(reply));
    }
    await settled(bob, ws);
    await delay(1_000); // an unanswered ack stays unanswered
    assert.ok(acks.length >= 1 && acks.length <= 6, `between 1 and ~6 typing events answered, got ${acks.length}: ${JSON.stringify(acks)}`);
    for (const ack of acks) assert.deepEqual(ack, { ok: true }, `only the events that passed are answered, with ok: ${JSON.stringify(acks)}`);
    assert.ok(seen.length <= acks.length, `announced ${seen.length} > answered ${acks.length}`);
    assert.deepEqual(errors, [], "still no error events");
    const afterAcked = await typingDrops(server);
    assert.equal(
      afterAcked.value - beforeAcked,
      30 - acks.length,
      `every unanswered typing event is counted as dropped (typing_rate): ${beforeAcked} -> ${afterAcked.value}, ${acks.length} answered`,
    );
    assert.match(afterAcked.text, /^switchboard_events_dropped_total\{[^}]*reason="typing_rate"[^}]*\} \d+/m);
    assert.ok(afterAcked.value > 0);

    // Other events are not affected by the typing limit, and the connection is fine.
    assert.ok(bob.connected);
    assert.equal((await send(bob, ws, "still here")).ok, true);
  });

  test("presence and typing events carry no recovery offset: recovery still works after presence traffic", async () => {
    const ws = freshWorkspace("recovery");
    const alice = await connectUser(clients, server, "alice", { workspaces: [ws], ...RECONNECT });
    const bob = await connectUser(clients, server, "bob", { workspaces: [ws] });
    await join(alice, ws);
    const messages = collectMessages(alice);
    const joins = collectArgs(alice, "presence_join");
    const leaves = collectArgs(alice, "presence_leave");
    const typing = collectArgs(alice, "user_typing");
    const stopped = collectArgs(alice, "user_stopped_typing");

    await join(bob, ws);
    // A message first, so alice has an offset to recover from...
    const first = (await send(bob, ws, "first")).id;
    await expectCount(messages, 1, "messages before presence traffic");
    assert.equal(messages[0].offset, String(first));

    // ...then presence and typing traffic after it.
    const carol = await connectUser(clients, server, "carol", { workspaces: [ws] });
    await join(carol, ws);
    assert.deepEqual(await emitAck(bob, "typing_start", { workspaceId: ws }), { ok: true });
    assert.deepEqual(await emitAck(bob, "typing_stop", { workspaceId: ws }), { ok: true });
    carol.disconnect();
    await eventually(
      () => joins.length >= 2 && typing.length >= 1 && stopped.length >= 1 && leaves.length >= 1,
      3_000,
    ).catch(() =>
      assert.fail(`presence traffic missing: ${JSON.stringify({ joins, leaves, typing, stopped })}`),
    );
    await delay(QUIET_MS);
    for (const [name, list] of Object.entries({ presence_join: joins, presence_leave: leaves, user_typing: typing, user_stopped_typing: stopped })) {
      for (const e of list) {
        assert.equal(e.args.length, 1, `${name} must carry exactly one argument (no offset): ${JSON.stringify(e.args)}`);
      }
    }
    assert.deepEqual(joins.map((e) => e.args[0].userId).sort(), ["bob", "carol"]);
    assert.equal(alice._lastOffset, String(first), "presence/typing events did not replace the client's recovery offset");

    // Drop alice's transport; she comes back by herself and is recovered.
    const back = nextEvent(alice, "connect", 10_000);
    await dropTransport(alice);
    const missed = (await send(bob, ws, "missed")).id;
    await back;
    assert.equal(alice.recovered, true, "socket.recovered after presence traffic");
    await expectCount(messages, 2, "messages after recovery");
    assert.deepEqual(messages.map((m) => m.message.id), [first, missed]);
    assert.equal(messages[1].offset, String(missed));

    // Back in the room without joining again, with presence.
    const live = (await send(bob, ws, "live")).id;
    await expectCount(messages, 3, "messages after a live one");
    assert.equal(messages[2].message.id, live);
    assert.deepEqual(
      (await presenceAck(bob, ws)).map((u) => u.userId),
      ["alice", "bob"],
      "alice is online again after recovery",
    );
  });
});

describe("presence and typing [sqlite, SWITCHBOARD_TYPING_TIMEOUT_MS=1000, SWITCHBOARD_PRESENCE_TTL_MS=1000]", () => {
  let server;
  const clients = new Clients();

  before(async () => {
    server = await startSwitchboard({
      env: { SWITCHBOARD_TYPING_TIMEOUT_MS: "1000", SWITCHBOARD_PRESENCE_TTL_MS: "1000" },
    });
  });
  afterEach(() => clients.closeAll());
  after(async () => {
    clients.closeAll();
    await server?.stop();
  });

  test("a typing_start with no refresh ends by itself with user_stopped_typing after ~1 s", async () => {
    const ws = freshWorkspace("typing-timeout");
    const alice = await connectUser(clients, server, "alice", { workspaces: [ws] });
    const bob = await connectUser(clients, server, "bob", { workspaces: [ws] });
    await join(alice, ws);
    await join(bob, ws);
    const typing = collectArgs(alice, "user_typing");
    const stopped = collectArgs(alice, "user_stopped_typing");
    const bobStopped = collect(bob, "user_stopped_typing");

    const start = Date.now();
    assert.deepEqual(await emitAck(bob, "typing_start", { workspaceId: ws }), { ok: true });
    await eventually(() => stopped.length >= 1, 4_000).catch(() =>
      assert.fail(`no user_stopped_typing within 4 s of a typing_start (timeout 1 s); user_typing: ${JSON.stringify(typing)}`),
    );
    const elapsed = stopped[0].at - start;
    assert.ok(elapsed >= 800 && elapsed <= 2_000, `the typing state ended ${elapsed} ms after typing_start, expected 800-2000 ms`);
    assert.deepEqual(stopped[0].args, [{ workspaceId: ws, userId: "bob" }]);
    assert.equal(typing.length, 1);
    assert.ok(typing[0].at < stopped[0].at, "user_typing came before user_stopped_typing");
    await delay(QUIET_MS);
    assert.equal(stopped.length, 1, `exactly one user_stopped_typing: ${JSON.stringify(stopped)}`);
    assert.deepEqual(bobStopped, [], "the timeout's user_stopped_typing skips the typing connection too");
  });

  test("repeated typing_start within the timeout refreshes the state: one user_typing, the stop ~1 s after the last start", async () => {
    const ws = freshWorkspace("typing-refresh");
    const alice = await connectUser(clients, server, "alice", { workspaces: [ws] });
    const bob = await connectUser(clients, server, "bob", { workspaces: [ws] });
    await join(alice, ws);
    await join(bob, ws);
    const typing = collectArgs(alice, "user_typing");
    const stopped = collectArgs(alice, "user_stopped_typing");

    const first = Date.now();
    let last = first;
    for (let i = 0; i < 4; i += 1) {
      if (i > 0) await delay(600);
      assert.deepEqual(stopped, [], `the state was still refreshed ${Date.now() - first} ms after the first start (refresh ${i})`);
      last = Date.now();
      assert.deepEqual(await emitAck(bob, "typing_start", { workspaceId: ws }), { ok: true });
    }
    await eventually(() => stopped.length >= 1, 4_000).catch(() =>
      assert.fail("no user_stopped_typing within 4 s of the last typing_start"),
    );
    const sinceLast = stopped[0].at - last;
    assert.ok(
      sinceLast >= 800 && sinceLast <= 2_000,
      `user_stopped_typing came ${sinceLast} ms after the last typing_start (${stopped[0].at - first} ms after the first), expected 800-2000 ms after the last`,
    );
    await delay(QUIET_MS);
    assert.equal(typing.length, 1, `a refresh announces no second user_typing: ${JSON.stringify(typing)}`);
    assert.deepEqual(typing[0].args, [{ workspaceId: ws, userId: "bob" }]);
    assert.equal(stopped.length, 1, `exactly one user_stopped_typing: ${JSON.stringify(stopped)}`);

    // After the timeout a new start is a new typing state again.
    assert.deepEqual(await emitAck(bob, "typing_start", { workspaceId: ws }), { ok: true });
    await eventually(() => typing.length >= 2, 3_000).catch(() =>
      assert.fail("a typing_start after the timeout announced no new user_typing"),
    );
  });

  test("a live connection stays present across several TTLs; an abrupt TCP drop leaves within the TTL", async () => {
    const ws = freshWorkspace("abrupt");
    const alice = await connectUser(clients, server, "alice", { workspaces: [ws], name: "Alice" });
    const bob = await connectUser(clients, server, "bob", { workspaces: [ws], name: "Bob", reconnection: false });
    await join(alice, ws);
    const joins = collect(alice, "presence_join");
    const leaves = collectArgs(alice, "presence_leave");
    await join(bob, ws);
    await expectCount(joins, 1, "presence_join for bob");

    // 2.5 TTLs: the node refreshes its live entries, so nobody leaves or joins again.
    await delay(2_500);
    assert.deepEqual(leaves, [], `a live connection must not expire: ${JSON.stringify(leaves)}`);
    assert.equal(joins.length, 1, `no repeated presence_join on refresh: ${JSON.stringify(joins)}`);
    assert.deepEqual(await presenceAck(alice, ws), [
      { userId: "alice", name: "Alice" },
      { userId: "bob", name: "Bob" },
    ]);

    const start = Date.now();
    bob.io.engine.transport.ws._socket.destroy();
    await withTimeout(
      eventually(() => leaves.length >= 1, 2_000),
      2_500,
      "no presence_leave within 2 s of bob's TCP socket being destroyed (presence TTL 1 s)",
    ).catch((err) => assert.fail(err.message));
    const elapsed = leaves[0].at - start;
    assert.ok(elapsed < 2_000, `presence_leave came ${elapsed} ms after the drop, expected < 2000 ms`);
    assert.deepEqual(leaves[0].args, [{ workspaceId: ws, userId: "bob" }]);
    await delay(QUIET_MS);
    assert.equal(leaves.length, 1, `exactly one presence_leave: ${JSON.stringify(leaves)}`);
    assert.deepEqual(await presenceAck(alice, ws), [{ userId: "alice", name: "Alice" }], "bob is no longer listed");
  });
});

describe("a node that stops refreshing presence (dev-mode test hook)", () => {
  let server;
  let plain;
  const clients = new Clients();
  after(async () => {
    clients.closeAll();
    await server?.stop();
    await plain?.stop();
  });

  test("its users expire within the TTL and the others are told, though the sockets stay connected", async () => {
    server = await startSwitchboard({ args: ["--dev"], env: { SWITCHBOARD_PRESENCE_TTL_MS: "1000" } });
    const alice = await clients.connect(server, { sub: "alice", workspaces: ["hang"] });
    const bob = await clients.connect(server, { sub: "bob", workspaces: ["hang"] });
    await join(alice, "hang");
    await join(bob, "hang");
    await delay(1_500); // entries are refreshed while the node is healthy: nobody leaves
    const leaves = collect(alice, "presence_leave");
    assert.equal(leaves.length, 0, "no presence_leave while the node refreshes");

    const res = await http(server, "POST", "/api/dev/presence/pause", { token: server.apiKey });
    assert.equal(res.status, 204);
    const paused = Date.now();
    await eventually(() => leaves.some((p) => p?.userId === "bob"), 3_000);
    const elapsed = Date.now() - paused;
    assert.ok(elapsed < 2_500, `bob expired ${elapsed} ms after refreshing stopped (TTL 1000 ms)`);
    assert.equal(bob.connected, true, "bob's socket is still connected: only presence expired");
    const listed = await emitAck(alice, "presence", { workspaceId: "hang" });
    assert.deepEqual(listed.users.map((u) => u.userId).includes("bob"), false);
  });

  test("the hook does not exist without --dev", async () => {
    plain = await startSwitchboard();
    const res = await http(plain, "POST", "/api/dev/presence/pause", { token: plain.apiKey });
    assert.equal(res.status, 404);
  });
});
