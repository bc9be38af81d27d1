// End-to-end tests of the testbed server with the stock socket.io-client.
//
// Run: SWITCHBOARD_TESTBED=path/to/testbed npm run test:socketio
//
// Most tests run once per transport setup: WebSocket only, long-polling only,
// and the default (polling, then upgraded to WebSocket).

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { io, Manager } from "socket.io-client";

import { RawSocket } from "../lib/raw.mjs";
import { delay, eventually, startServer, waitFor } from "../lib/server.mjs";

const SETUPS = [
  { name: "websocket", opts: { transports: ["websocket"] }, transport: "websocket" },
  { name: "polling", opts: { transports: ["polling"] }, transport: "polling" },
  { name: "upgrade", opts: {}, transport: "websocket", upgrade: true },
];

/** How long a "nothing arrives" check waits, after delivery elsewhere proved the message went out. */
const QUIET_MS = 300;

let server;
/** Sockets and managers a test opened; closed after each test. */
const opened = new Set();

before(async () => {
  server = await startServer();
});

afterEach(() => {
  for (const s of opened) s.disconnect();
  opened.clear();
});

after(async () => {
  for (const s of opened) s.disconnect();
  await server?.stop();
});

/** Creates a socket (not yet awaited) for `setup`. `token: null` sends no auth. */
function makeSocket(setup, { url = server.url, ns = "/", token = "alice", ...extra } = {}) {
  const options = { forceNew: true, reconnection: false, timeout: 5_000, ...setup.opts, ...extra };
  if (token !== null) options.auth = { token };
  const socket = io(url + ns, options);
  opened.add(socket);
  return socket;
}

/** Resolves on `connect`, rejects on `connect_error` or after `timeoutMs`. */
function connected(socket, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    const done = (fn, value) => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
      fn(value);
    };
    const onConnect = () => done(resolve, socket);
    const onError = (err) => done(reject, new Error(`connect_error: ${err.message}`));
    const timer = setTimeout(() => done(reject, new Error(`no connect within ${timeoutMs} ms`)), timeoutMs);
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

/**
 * Connects a socket for `setup` and checks it ended on the transport the setup
 * promises (for the default setup: waits for the upgrade to WebSocket).
 */
async function connect(setup, options) {
  const socket = makeSocket(setup, options);
  const upgraded = setup.upgrade ? waitFor(socket.io.engine, "upgrade", 5_000) : null;
  await connected(socket);
  if (upgraded) await upgraded;
  assert.equal(socket.io.engine.transport.name, setup.transport);
  return socket;
}

/** Resolves with the argument array of the next `event` on `socket`. */
function nextEvent(socket, event, timeoutMs = 3_000) {
  return new Promise((resolve, reject) => {
    const listener = (...args) => {
      clearTimeout(timer);
      resolve(args);
    };
    const timer = setTimeout(() => {
      socket.off(event, listener);
      reject(new Error(`no "${event}" event within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once(event, listener);
  });
}

/** Emits with an ack callback; resolves with the ack's argument array. */
function emitAck(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(5_000).emit(event, ...args, (err, ...reply) => (err ? reject(err) : resolve(reply)));
  });
}

/** Collects every `event` received by `socket` (argument arrays). */
function collect(socket, event) {
  const seen = [];
  socket.on(event, (...args) => seen.push(args));
  return seen;
}

/** A Buffer of the bytes of a received binary value; fails for anything that is not binary. */
function bytes(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  assert.fail(`expected binary data, got ${JSON.stringify(value)}`);
}

const MIXED_ARGS = [
  1,
  "two",
  { three: [3, { four: null, five: [true, false], six: {} }], seven: [] },
  true,
  -2.5,
  9007199254740991,
  "ünïcødé ✓ 日本語 Ελληνικά שלום 🎉👍🏽 \"quoted\" \\ back\nslash\ttab",
  null,
  [[["deep"]]],
];

describe("connection and auth", () => {
  for (const setup of SETUPS) {
    test(`connects with a token [${setup.name}]`, async () => {
      const socket = await connect(setup, { token: "alice" });
      assert.equal(socket.connected, true);
      assert.equal(typeof socket.id, "string");
      assert.ok(socket.id.length > 0);
      assert.equal(socket.recovered, false);
      // The token reached the server: it signs what the socket says.
      const [joined] = await emitAck(socket, "join", "whoami");
      assert.equal(joined.ok, true);
      const said = nextEvent(socket, "said");
      const [ack] = await emitAck(socket, "say", { room: "whoami", text: "hello" });
      assert.equal(ack.ok, true);
      assert.equal(typeof ack.offset, "number");
      const [body, offset] = await said;
      assert.deepEqual(body, { room: "whoami", text: "hello", from: "alice" });
      assert.equal(offset, String(ack.offset));
    });

    for (const [label, token] of [
      ["no token", null],
      ['token "refuse"', "refuse"],
    ]) {
      test(`refuses ${label} with connect_error [${setup.name}]`, async () => {
        const socket = makeSocket(setup, { token });
        const err = await waitFor(socket, "connect_error", 5_000);
        assert.ok(err instanceof Error);
        assert.equal(err.message, "Authentication failed");
        assert.equal(socket.connected, false);
      });
    }
  }
});

describe("events and acks", () => {
  for (const setup of SETUPS) {
    test(`echo without ack comes back as an echo event [${setup.name}]`, async () => {
      const socket = await connect(setup);
      const echoed = nextEvent(socket, "echo");
      socket.emit("echo", ...MIXED_ARGS);
      assert.deepEqual(await echoed, MIXED_ARGS);

      const single = nextEvent(socket, "echo");
      socket.emit("echo", "only one");
      assert.deepEqual(await single, ["only one"]);
    });

    test(`client→server ack carries the args [${setup.name}]`, async () => {
      const socket = await connect(setup);
      const echoes = collect(socket, "echo");
      assert.deepEqual(await emitAck(socket, "echo", ...MIXED_ARGS), MIXED_ARGS);
      assert.deepEqual(await emitAck(socket, "echo"), []);
      // Many acks in flight at once each get their own answer.
      const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => emitAck(socket, "echo", i, `n${i}`)));
      replies.forEach((reply, i) => assert.deepEqual(reply, [i, `n${i}`]));
      assert.deepEqual(echoes, [], "an acked echo must not also emit an echo event");
    });

    test(`server→client ack: the client's answer comes back [${setup.name}]`, async () => {
      const socket = await connect(setup);
      let question;
      socket.on("question", (q, ack) => {
        question = q;
        ack("pong", 42, { nested: ["ü", null] });
      });
      const answer = nextEvent(socket, "answer");
      socket.emit("ask");
      const [reply] = await answer;
      assert.deepEqual(question, { q: "ping?" });
      assert.deepEqual(reply, { ok: true, args: ["pong", 42, { nested: ["ü", null] }] });
    });

    test(`server→client ack times out after ~2 s when never called [${setup.name}]`, async () => {
      const socket = await connect(setup);
      let asked = 0;
      socket.on("question", () => {
        asked += 1; // never acknowledges
      });
      const answer = nextEvent(socket, "answer", 6_000);
      const start = Date.now();
      socket.emit("ask");
      const [reply] = await answer;
      const elapsed = Date.now() - start;
      assert.equal(asked, 1);
      assert.equal(reply.ok, false);
      assert.equal(typeof reply.error, "string");
      assert.ok(elapsed >= 1_800 && elapsed <= 4_000, `answer came after ${elapsed} ms, expected about 2000`);
    });
  }
});

describe("binary payloads", () => {
  for (const setup of SETUPS) {
    test(`one Buffer comes back in binary-back and in the ack [${setup.name}]`, async () => {
      const socket = await connect(setup);
      const payload = Buffer.from([0, 1, 2, 127, 128, 254, 255]);
      const back = nextEvent(socket, "binary-back");
      const ack = await emitAck(socket, "binary", payload);
      const event = await back;
      assert.equal(event.length, 1);
      assert.deepEqual(bytes(event[0]), payload);
      assert.equal(ack.length, 1);
      assert.deepEqual(bytes(ack[0]), payload);
    });

    test(`two Buffers mixed with JSON come back intact [${setup.name}]`, async () => {
      const socket = await connect(setup);
      const first = Buffer.from("first buffer ✓", "utf8");
      const second = Buffer.alloc(70_000, 0xab); // larger than one read buffer
      second[0] = 1;
      second[second.length - 1] = 2;
      const back = nextEvent(socket, "binary-back");
      const ack = await emitAck(socket, "binary", { label: "two", parts: [first, { inner: second }] }, "tail", 7);
      for (const args of [await back, ack]) {
        assert.equal(args.length, 3);
        assert.equal(args[0].label, "two");
        assert.deepEqual(bytes(args[0].parts[0]), first);
        assert.deepEqual(bytes(args[0].parts[1].inner), second);
        assert.equal(args[1], "tail");
        assert.equal(args[2], 7);
      }
    });
  }
});

describe("rooms", () => {
  for (const setup of SETUPS) {
    test(`say, say_others and leave [${setup.name}]`, async () => {
      const a = await connect(setup, { token: "alice" });
      const b = await connect(setup, { token: "bob" });
      const c = await connect(setup, { token: "carol" });
      const seen = { a: collect(a, "said"), b: collect(b, "said"), c: collect(c, "said") };
      const texts = (list) => list.map(([body]) => body.text);

      for (const s of [a, b]) {
        const [reply] = await emitAck(s, "join", "r1");
        assert.equal(reply.ok, true);
        assert.ok(reply.rooms.includes("r1"), `rooms ${JSON.stringify(reply.rooms)} lack r1`);
      }

      // say: both members, sender included; not the outsider.
      const [ack] = await emitAck(a, "say", { room: "r1", text: "to all" });
      assert.equal(ack.ok, true);
      await eventually(() => seen.a.length === 1 && seen.b.length === 1, 3_000);
      for (const list of [seen.a, seen.b]) {
        assert.deepEqual(list[0], [{ room: "r1", text: "to all", from: "alice" }, String(ack.offset)]);
      }
      await delay(QUIET_MS);
      assert.deepEqual(seen.c, []);

      // say_others: the sender is left out.
      await emitAck(a, "say_others", { room: "r1", text: "not me" });
      await eventually(() => seen.b.length === 2, 3_000);
      assert.deepEqual(seen.b[1][0], { room: "r1", text: "not me", from: "alice" });
      await delay(QUIET_MS);
      assert.deepEqual(texts(seen.a), ["to all"]);
      assert.deepEqual(seen.c, []);

      // leave: b no longer gets the room's messages.
      const [left] = await emitAck(b, "leave", "r1");
      assert.equal(left.ok, true);
      assert.ok(!left.rooms.includes("r1"));
      await emitAck(a, "say", { room: "r1", text: "after leave" });
      await eventually(() => seen.a.length === 2, 3_000);
      assert.deepEqual(texts(seen.a), ["to all", "after leave"]);
      await delay(QUIET_MS);
      assert.deepEqual(texts(seen.b), ["to all", "not me"]);
      assert.deepEqual(seen.c, []);
    });
  }
});

describe("namespaces", () => {
  for (const setup of SETUPS) {
    test(`/admin works beside / on one manager; /nope is refused [${setup.name}]`, async () => {
      const manager = new Manager(server.url, { reconnection: false, timeout: 5_000, ...setup.opts });
      const root = manager.socket("/", { auth: { token: "alice" } });
      const admin = manager.socket("/admin", { auth: { token: "root" } });
      opened.add(root).add(admin);
      const upgraded = setup.upgrade ? waitFor(manager.engine, "upgrade", 5_000) : null;
      await Promise.all([connected(root), connected(admin)]);
      if (upgraded) await upgraded;
      assert.equal(root.io, admin.io);
      assert.equal(manager.engine.transport.name, setup.transport);
      assert.notEqual(root.id, admin.id);

      assert.deepEqual(await emitAck(admin, "echo", "admin", 1), ["admin", 1]);
      assert.deepEqual(await emitAck(root, "echo", "root", 2), ["root", 2]);

      // Rooms are per namespace: a say in /admin reaches /admin members only.
      await emitAck(root, "join", "shared");
      await emitAck(admin, "join", "shared");
      const rootSaid = collect(root, "said");
      const adminSaid = collect(admin, "said");
      await emitAck(admin, "say", { room: "shared", text: "admins only" });
      await eventually(() => adminSaid.length === 1, 3_000);
      assert.deepEqual(adminSaid[0][0], { room: "shared", text: "admins only", from: "root" });
      await delay(QUIET_MS);
      assert.deepEqual(rootSaid, []);

      const nope = manager.socket("/nope", { auth: { token: "alice" } });
      opened.add(nope);
      const err = await waitFor(nope, "connect_error", 5_000);
      assert.equal(err.message, "Invalid namespace");
      // The other namespaces of the manager are unaffected.
      assert.equal(root.connected, true);
      assert.equal(admin.connected, true);
      assert.deepEqual(await emitAck(admin, "echo", "still"), ["still"]);
    });
  }
});

describe("server-side disconnects", () => {
  for (const setup of SETUPS) {
    test(`disconnect_me gives "io server disconnect" and no reconnection [${setup.name}]`, async () => {
      const socket = await connect(setup, { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
      let connects = 0;
      socket.on("connect", () => connects++);
      const gone = nextEvent(socket, "disconnect");
      socket.emit("disconnect_me");
      const [reason] = await gone;
      assert.equal(reason, "io server disconnect");
      assert.equal(socket.connected, false);
      assert.equal(socket.active, false);
      await delay(500);
      assert.equal(connects, 0, "the client must not reconnect after a server-side disconnect");
    });

    test(`close_me closes the transport and the client reconnects [${setup.name}]`, async () => {
      const socket = await connect(setup, {
        reconnection: true,
        reconnectionDelay: 100,
        reconnectionDelayMax: 200,
        randomizationFactor: 0,
      });
      const firstId = socket.id;
      const gone = nextEvent(socket, "disconnect");
      const back = nextEvent(socket, "connect", 5_000);
      socket.emit("close_me");
      const [reason] = await gone;
      assert.equal(reason, "transport close");
      await back;
      assert.equal(socket.connected, true);
      assert.notEqual(socket.id, firstId);
      assert.deepEqual(await emitAck(socket, "echo", "again"), ["again"]);
    });
  }
});

describe("reconnection after a server restart", () => {
  for (const setup of SETUPS) {
    test(`reconnects to a restarted server; an unknown pid is not recovered [${setup.name}]`, async () => {
      let own = await startServer();
      try {
        const socket = await connect(setup, {
          url: own.url,
          reconnection: true,
          reconnectionDelay: 100,
          reconnectionDelayMax: 200,
          randomizationFactor: 0,
        });
        assert.equal(socket.recovered, false);
        // Receive one offset so the reconnection asks for recovery (pid + offset).
        await emitAck(socket, "join", "rec-restart");
        const said = collect(socket, "said");
        await emitAck(socket, "say", { room: "rec-restart", text: "before restart" });
        await eventually(() => said.length === 1, 3_000);

        const gone = nextEvent(socket, "disconnect", 5_000);
        await own.stop();
        const [reason] = await gone;
        assert.ok(["transport close", "transport error"].includes(reason), `disconnect reason ${reason}`);
        const back = nextEvent(socket, "connect", 10_000);
        own = await startServer({ port: own.port });
        await back;
        assert.equal(socket.connected, true);
        assert.equal(socket.recovered, false, "a pid unknown to the new server must not be recovered");
        assert.deepEqual(await emitAck(socket, "echo", "after restart"), ["after restart"]);

        // Not recovered means not back in its old room.
        const other = await connect(setup, { url: own.url, token: "bob" });
        await emitAck(other, "join", "rec-restart");
        const otherSaid = collect(other, "said");
        await emitAck(other, "say", { room: "rec-restart", text: "new server" });
        await eventually(() => otherSaid.length === 1, 3_000);
        await delay(QUIET_MS);
        assert.deepEqual(
          said.map(([body]) => body.text),
          ["before restart"],
        );
      } finally {
        await own.stop();
      }
    });
  }
});

describe("connection-state recovery", () => {
  test("a dropped websocket client recovers its room and exactly the missed messages", async () => {
    const setup = SETUPS[0];
    const a = await connect(setup, {
      token: "alice",
      reconnection: true,
      reconnectionDelay: 400,
      reconnectionDelayMax: 400,
      randomizationFactor: 0,
    });
    const b = await connect(setup, { token: "bob" });
    assert.equal(a.recovered, false);
    const firstPid = a._pid;
    assert.equal(typeof firstPid, "string");

    const [joined] = await emitAck(a, "join", "rec");
    assert.equal(joined.ok, true);
    const said = collect(a, "said");
    const say = async (text) => {
      const [ack] = await emitAck(b, "say", { room: "rec", text });
      assert.equal(ack.ok, true);
      return ack.offset;
    };
    await say("m0");
    await eventually(() => said.length === 1, 3_000);

    // A network drop: destroy the TCP socket under the WebSocket, no close frame.
    const gone = nextEvent(a, "disconnect", 5_000);
    const back = nextEvent(a, "connect", 10_000);
    a.io.engine.transport.ws._socket.destroy();
    const [reason] = await gone;
    assert.equal(reason, "transport close");
    assert.equal(a.connected, false);
    const missed = [];
    for (const text of ["m1", "m2", "m3"]) missed.push(await say(text));
    assert.equal(a.connected, false, "the missed messages must be sent while A is away");

    await back;
    assert.equal(a.recovered, true, "A must be recovered");
    assert.equal(a._pid, firstPid);
    const texts = () => said.map(([body]) => body.text);
    await eventually(() => said.length >= 4, 3_000).catch(() => {
      assert.deepEqual(texts(), ["m0", "m1", "m2", "m3"], "after recovery A must get the 3 messages it missed");
    });
    await say("m4"); // A is back in "rec" without joining again
    await eventually(() => said.length >= 5, 3_000).catch(() => {
      assert.deepEqual(texts(), ["m0", "m1", "m2", "m3", "m4"], "a recovered A is still in its room");
    });
    await delay(QUIET_MS);
    assert.deepEqual(texts(), ["m0", "m1", "m2", "m3", "m4"]);
    assert.deepEqual(
      said.slice(1, 4).map(([, offset]) => offset),
      missed.map(String),
    );
    for (const [body] of said) assert.deepEqual(Object.keys(body).sort(), ["from", "room", "text"]);
  });

  test("a CONNECT with an unknown pid is answered fresh", async () => {
    const raw = await RawSocket.open(server.url);
    try {
      await raw.handshake();
      const unknown = "AAAAAAAAAAAAAAAAAAAA";
      const answer = await raw.connect({ token: "x", pid: unknown, offset: "1" });
      assert.match(answer, /^40\{/);
      const body = JSON.parse(answer.slice(2));
      assert.equal(typeof body.pid, "string");
      assert.notEqual(body.pid, unknown);
    } finally {
      raw.close();
    }
  });
});

describe("load", () => {
  test("10,000 connect-then-emit cycles lose no message", { timeout: 120_000 }, async (t) => {
    const TOTAL = 10_000;
    const CONCURRENCY = 50;
    const CYCLE_TIMEOUT_MS = 10_000;
    const failures = new Map();
    let acked = 0;
    let wrong = 0;
    const fail = (kind) => failures.set(kind, (failures.get(kind) ?? 0) + 1);

    const cycle = (i) =>
      new Promise((resolve) => {
        const socket = io(server.url, {
          transports: ["websocket"],
          forceNew: true,
          reconnection: false,
          auth: { token: "load" },
        });
        let done = false;
        const finish = (kind) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          socket.close();
          if (kind) fail(kind);
          resolve();
        };
        const timer = setTimeout(() => finish(socket.connected ? "no ack" : "no connect"), CYCLE_TIMEOUT_MS);
        socket.on("connect", () => {
          socket.emit("echo", i, (value) => {
            if (value === i) acked += 1;
            else wrong += 1;
            finish(value === i ? null : "wrong ack");
          });
        });
        socket.on("connect_error", (err) => finish(`connect_error ${err.message}`));
        socket.on("disconnect", (reason) => {
          if (reason !== "io client disconnect") finish(`disconnect ${reason}`);
        });
      });

    let next = 0;
    const start = Date.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < TOTAL) await cycle(next++);
      }),
    );
    const elapsed = Date.now() - start;
    const lost = TOTAL - acked;
    t.diagnostic(`${acked} of ${TOTAL} acks in ${elapsed} ms`);
    assert.deepEqual(Object.fromEntries(failures), {}, `failed cycles after ${elapsed} ms`);
    assert.equal(wrong, 0);
    assert.equal(acked, TOTAL);
    assert.equal(lost, 0);
    assert.ok(elapsed < 60_000, `took ${elapsed} ms`);
  });
});

describe("slow consumers", () => {
  /** TCP state (hex, as in /proc/net/tcp: 01 ESTABLISHED) of the connection local:remote, or null. */
  function tcpState(localPort, remotePort) {
    const hex = (port) => port.toString(16).toUpperCase().padStart(4, "0");
    const want = [`:${hex(localPort)}`, `:${hex(remotePort)}`];
    for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
      let text;
      try {
        text = readFileSync(file, "utf8");
      } catch {
        continue;
      }
      for (const line of text.split("\n").slice(1)) {
        const fields = line.trim().split(/\s+/);
        if (fields.length < 4) continue;
        if (fields[1].endsWith(want[0]) && fields[2].endsWith(want[1])) return fields[3];
      }
    }
    return null;
  }

  test("a client that stops reading is cut off; the flooding client stays", { timeout: 60_000 }, async (t) => {
    assert.ok(readFileSync("/proc/net/tcp", "utf8").length > 0, "this test reads /proc/net/tcp (Linux)");
    const slow = await RawSocket.open(server.url);
    try {
      await slow.handshake();
      assert.match(await slow.connect({ token: "slow" }), /^40\{/);
      slow.send('421["join","flood"]');
      const joined = await slow.next();
      assert.match(joined, /^431\[\{"ok":true/);
      const clientPort = slow.ws._socket.localPort;
      assert.equal(tcpState(server.port, clientPort), "01", "server side of the slow connection is ESTABLISHED");

      // Stop reading: nothing more is taken from the kernel's receive buffer.
      slow.ws._socket.pause();

      const flooder = await connect(SETUPS[0], { token: "flooder" });
      let flooderDisconnected = null;
      flooder.on("disconnect", (reason) => {
        flooderDisconnected = reason;
      });
      const text = "x".repeat(60_000);
      const MAX_MESSAGES = 1_500; // ~90 MB: far more than socket buffers plus a 256-frame queue
      const DEADLINE_MS = 20_000;
      const start = Date.now();
      let sent = 0;
      let cutAt = null;
      while (sent < MAX_MESSAGES && Date.now() - start < DEADLINE_MS) {
        const batch = [];
        for (let i = 0; i < 10; i++) batch.push(emitAck(flooder, "say", { room: "flood", text, n: sent + i }));
        const acks = await Promise.all(batch);
        for (const [ack] of acks) assert.equal(ack.ok, true);
        sent += batch.length;
        const state = tcpState(server.port, clientPort);
        if (state !== "01") {
          cutAt = Date.now() - start;
          break;
        }
      }
      if (cutAt === null) {
        // Flooding is over; give the server the rest of the deadline to act.
        await eventually(() => tcpState(server.port, clientPort) !== "01", Math.max(0, DEADLINE_MS - (Date.now() - start)), 50)
          .then(() => {
            cutAt = Date.now() - start;
          })
          .catch(() => {});
      }
      assert.notEqual(
        cutAt,
        null,
        `server still has the paused connection ESTABLISHED after ${Date.now() - start} ms and ${sent} messages of 60 kB`,
      );
      assert.ok(cutAt <= DEADLINE_MS, `cut after ${cutAt} ms`);
      t.diagnostic(`paused connection closed by the server after ${cutAt} ms and ${sent} messages of 60 kB`);

      // The flooder was not affected.
      assert.equal(flooderDisconnected, null);
      assert.equal(flooder.connected, true);
      assert.deepEqual(await emitAck(flooder, "echo", "still here"), ["still here"]);

      // Reading again, the slow client finds fewer messages than were sent, then the end.
      let received = 0;
      slow.ws.on("message", (data) => {
        if (String(data).startsWith('42["said"')) received += 1;
      });
      slow.ws._socket.resume();
      await slow.closedWithin(15_000);
      assert.ok(received < sent, `slow client received ${received} of ${sent} messages`);
    } finally {
      slow.close();
    }
  });
});
