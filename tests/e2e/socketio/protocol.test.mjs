// Raw protocol tests of the testbed server: Engine.IO v4 over HTTP long-polling
// (fetch) and WebSocket (ws), and Socket.IO v5 packets on top, frame by frame.
//
// The server runs with short timers: ping every 300 ms, 200 ms to answer, and
// 1 s to send a Socket.IO CONNECT.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { RawSocket } from "../lib/raw.mjs";
import { delay, startServer } from "../lib/server.mjs";

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const CONNECT_TIMEOUT = 1_000;
const MAX_PAYLOAD = 100_000;
const SEP = "\x1e";

let server;
/** Raw sockets a test opened; closed in `after`. */
const sockets = new Set();

before(async () => {
  server = await startServer({
    env: {
      PING_INTERVAL_MS: String(PING_INTERVAL),
      PING_TIMEOUT_MS: String(PING_TIMEOUT),
      CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT),
    },
  });
});

after(async () => {
  for (const s of sockets) s.close();
  await server?.stop();
});

// ---------------------------------------------------------------- helpers

/** One HTTP request to the Socket.IO path; resolves with `{ status, body, type }`. */
async function request(method, query, body, timeoutMs = 3_000) {
  const res = await fetch(`${server.url}/socket.io/?${query}`, {
    method,
    body,
    headers: body === undefined ? undefined : { "content-type": "text/plain;charset=UTF-8" },
    signal: AbortSignal.timeout(timeoutMs),
  });
  return { status: res.status, body: await res.text(), type: res.headers.get("content-type") };
}

const pollQuery = (sid) => `EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`;
const get = (sid, timeoutMs) => request("GET", pollQuery(sid), undefined, timeoutMs);
const post = (sid, body, timeoutMs) => request("POST", pollQuery(sid), body, timeoutMs);

/** Opens a polling session; returns the parsed open packet. */
async function pollingHandshake() {
  const res = await request("GET", "EIO=4&transport=polling");
  assert.equal(res.status, 200, `handshake status ${res.status}: ${res.body}`);
  assert.equal(res.body[0], "0", `handshake body ${res.body}`);
  return JSON.parse(res.body.slice(1));
}

/**
 * GETs until `count` packets other than pings have arrived (answering each ping
 * with a pong) and returns them.
 */
async function pollPackets(sid, count, timeoutMs = 3_000) {
  const deadline = Date.now() + timeoutMs;
  const packets = [];
  while (packets.length < count) {
    const left = deadline - Date.now();
    assert.ok(left > 0, `only ${packets.length} of ${count} packets within ${timeoutMs} ms: ${JSON.stringify(packets)}`);
    const res = await get(sid, left);
    assert.equal(res.status, 200, `GET status ${res.status}: ${res.body}`);
    for (const packet of res.body.split(SEP)) {
      if (packet === "2") {
        const pong = await post(sid, "3");
        assert.equal(pong.body, "ok");
      } else {
        packets.push(packet);
      }
    }
  }
  return packets;
}

/** A polling session that has joined `/`; returns its sid. */
async function pollingSession() {
  const { sid } = await pollingHandshake();
  const res = await post(sid, '40{"token":"poll"}');
  assert.equal(res.status, 200);
  assert.equal(res.body, "ok");
  const [answer] = await pollPackets(sid, 1);
  assert.match(answer, /^40\{"sid":"[^"]+","pid":"[^"]+"\}$/);
  return sid;
}

async function openWs(options) {
  const socket = await RawSocket.open(server.url, options);
  sockets.add(socket);
  return socket;
}

/** A WebSocket session that has joined `/` (pings answered automatically). */
async function wsSession(options) {
  const socket = await openWs(options);
  await socket.handshake();
  const answer = await socket.connect({ token: "raw" });
  assert.match(answer, /^40\{"sid":"[^"]+","pid":"[^"]+"\}$/);
  return socket;
}

/** Parses `<prefix><json>` where prefix matches `head` (a regexp source); returns the JSON. */
function payloadAfter(frame, head) {
  assert.equal(typeof frame, "string", `expected a text frame, got ${frame}`);
  const match = new RegExp(`^${head}(.*)$`, "s").exec(frame);
  assert.ok(match, `frame ${JSON.stringify(frame.slice(0, 200))} does not start with /${head}/`);
  return JSON.parse(match[1]);
}

function expectOpenPacket(open, upgrades) {
  assert.deepEqual(Object.keys(open).sort(), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]);
  assert.equal(typeof open.sid, "string");
  assert.ok(open.sid.length > 0);
  assert.deepEqual(open.upgrades, upgrades);
  assert.equal(open.pingInterval, PING_INTERVAL);
  assert.equal(open.pingTimeout, PING_TIMEOUT);
  assert.equal(open.maxPayload, MAX_PAYLOAD);
}

// ---------------------------------------------------------------- Engine.IO

describe("engine.io handshake", () => {
  test("polling handshake returns an open packet with exactly the expected fields", async () => {
    const res = await request("GET", "EIO=4&transport=polling");
    assert.equal(res.status, 200);
    assert.match(res.type ?? "", /^text\/plain/);
    assert.equal(res.body[0], "0");
    const open = JSON.parse(res.body.slice(1));
    expectOpenPacket(open, ["websocket"]);
    const again = await pollingHandshake();
    assert.notEqual(again.sid, open.sid, "every handshake opens a new session");
  });

  test("websocket handshake offers no upgrades", async () => {
    const socket = await openWs();
    const open = await socket.handshake();
    expectOpenPacket(open, []);
  });

  const badRequests = [
    ["GET without EIO", "GET", "transport=polling", undefined, 5],
    ["GET with EIO=3", "GET", "EIO=3&transport=polling", undefined, 5],
    ["GET with EIO=x", "GET", "EIO=x&transport=polling", undefined, 5],
    ["GET without transport", "GET", "EIO=4", undefined, 0],
    ["GET with an unknown transport", "GET", "EIO=4&transport=carrier-pigeon", undefined, 0],
    ["POST without sid", "POST", "EIO=4&transport=polling", '40{"token":"x"}', 2],
    ["GET with an unknown sid", "GET", "EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA", undefined, 1],
    ["POST with an unknown sid", "POST", "EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA", "3", 1],
    ["GET with a malformed sid", "GET", "EIO=4&transport=polling&sid=not%20a%20sid", undefined, 1],
  ];
  for (const [label, method, query, body, code] of badRequests) {
    test(`400 for ${label}`, async () => {
      const res = await request(method, query, body);
      assert.equal(res.status, 400, `status ${res.status}, body ${res.body}`);
      const error = JSON.parse(res.body);
      assert.equal(error.code, code);
      assert.equal(typeof error.message, "string");
    });
  }
});

describe("engine.io polling", () => {
  test("a POST of several packets separated by \\x1e is taken in order", async () => {
    const sid = await pollingSession();
    const res = await post(sid, ['42["echo","a"]', '421["echo","b",2]', '42["echo","ü🎉"]'].join(SEP));
    assert.equal(res.status, 200);
    assert.equal(res.body, "ok");
    assert.deepEqual(await pollPackets(sid, 3), ['42["echo","a"]', '431["b",2]', '42["echo","ü🎉"]']);
  });

  test("two GETs at once: the first gets a close packet, the second 400", async () => {
    const { sid } = await pollingHandshake();
    const first = get(sid);
    await delay(50); // let the first GET be held
    const second = await get(sid);
    assert.equal(second.status, 400);
    const held = await first;
    assert.equal(held.status, 200);
    assert.equal(held.body, "1");
    assert.equal((await get(sid)).status, 400, "the session is gone");
  });

  test("a close packet from the client ends the session", async () => {
    const { sid } = await pollingHandshake();
    const held = get(sid);
    await delay(50);
    const res = await post(sid, "1");
    assert.equal(res.status, 200);
    assert.equal(res.body, "ok");
    const last = await held;
    assert.equal(last.status, 200);
    assert.equal(last.body, "6", "the held GET ends with a noop");
    assert.equal((await get(sid)).status, 400);
    assert.equal((await post(sid, "3")).status, 400);
  });

  test("invalid UTF-8 in a POST body closes the session", async () => {
    const sid = await pollingSession();
    const res = await post(sid, Buffer.from([0x34, 0x32, 0x5b, 0x22, 0xff, 0xfe, 0x22, 0x5d])); // 42["\xff\xfe"]
    assert.equal(res.status, 400, `POST status ${res.status}: ${res.body}`);
    const next = await get(sid);
    assert.equal(next.status, 400);
  });

  test("a POST body over maxPayload is refused and closes the session", async () => {
    const sid = await pollingSession();
    const res = await post(sid, `42["echo","${"y".repeat(MAX_PAYLOAD)}"]`);
    assert.equal(res.status, 413);
    assert.equal((await get(sid)).status, 400);
  });
});

describe("engine.io heartbeat", () => {
  test("polling: pings every 300 ms; answering keeps the session across 3 pings", async () => {
    const opened = Date.now();
    const { sid } = await pollingHandshake();
    assert.equal((await post(sid, '40{"token":"beat"}')).body, "ok");
    const first = await get(sid);
    assert.match(first.body, /^40\{/);
    let since = opened;
    for (let beat = 1; beat <= 3; beat++) {
      const res = await get(sid, 2_000);
      const at = Date.now();
      assert.equal(res.status, 200);
      assert.equal(res.body, "2", `ping ${beat}`);
      const gap = at - since;
      assert.ok(gap >= PING_INTERVAL - 50 && gap <= PING_INTERVAL + 400, `ping ${beat} came ${gap} ms after the last pong`);
      const pong = await post(sid, "3");
      assert.equal(pong.body, "ok");
      since = Date.now();
    }
    // Still alive after three beats: it echoes, and a fourth ping comes.
    assert.equal((await post(sid, '421["echo","alive"]')).body, "ok");
    assert.deepEqual(await pollPackets(sid, 1), ['431["alive"]']);
    const fourth = await get(sid, 2_000);
    assert.equal(fourth.body, "2");
  });

  test("polling: without a pong, a GET after the timeout gets 400", async () => {
    const opened = Date.now();
    const { sid } = await pollingHandshake();
    const ping = await get(sid, 2_000);
    assert.equal(ping.body, "2");
    const pingAt = Date.now();
    assert.ok(pingAt - opened < PING_INTERVAL + 400, `ping after ${pingAt - opened} ms`);
    await delay(Math.max(0, opened + PING_INTERVAL + PING_TIMEOUT + 50 - Date.now()));
    assert.ok(Date.now() - opened >= 500);
    const late = await get(sid);
    assert.equal(late.status, 400, `GET ${Date.now() - opened} ms after the handshake: ${late.status} ${late.body}`);
  });

  test("websocket: pings every 300 ms; answering keeps it open across 3 pings", async () => {
    const socket = await openWs({ autoPong: false });
    const opened = Date.now();
    await socket.handshake();
    assert.match(await socket.connect(), /^40\{/);
    let since = opened;
    for (let beat = 1; beat <= 3; beat++) {
      assert.equal(await socket.next(2_000), "2", `ping ${beat}`);
      const gap = Date.now() - since;
      assert.ok(gap >= PING_INTERVAL - 50 && gap <= PING_INTERVAL + 400, `ping ${beat} came ${gap} ms after the last pong`);
      socket.send("3");
      since = Date.now();
    }
    socket.send('421["echo","alive"]');
    assert.equal(await socket.next(), '431["alive"]');
    assert.equal(await socket.next(2_000), "2");
    assert.equal(socket.isOpen, true);
  });

  test("websocket: without a pong the server closes the connection", async () => {
    const socket = await openWs({ autoPong: false });
    await socket.handshake();
    assert.match(await socket.connect(), /^40\{/); // so the connect timeout plays no part
    assert.equal(await socket.next(2_000), "2");
    const pingAt = Date.now();
    const closed = await socket.closedWithin(2_000);
    const after = closed.at - pingAt;
    assert.ok(after >= PING_TIMEOUT - 100, `closed ${after} ms after the ping, before the pong was due`);
    assert.ok(after <= PING_TIMEOUT + 800, `closed ${after} ms after the ping`);
  });
});

describe("engine.io websocket", () => {
  test("a close packet from the client closes the websocket", async () => {
    const socket = await wsSession();
    socket.send("1");
    await socket.closedWithin(1_000);
  });

  test("polling upgrades to websocket", async () => {
    const sid = await pollingSession();
    // A GET is held while the upgrade is probed.
    const held = (async () => {
      for (;;) {
        const res = await get(sid, 3_000);
        if (res.body !== "2") return res;
        await post(sid, "3");
      }
    })();
    await delay(50);
    const ws = await openWs({ query: `&sid=${encodeURIComponent(sid)}` });
    ws.send("2probe");
    assert.equal(await ws.next(), "3probe");
    const noop = await held;
    assert.equal(noop.status, 200);
    assert.equal(noop.body, "6", "the held GET is released with a noop");
    ws.send("5");
    await delay(50);
    ws.send('42["echo","over websocket"]');
    assert.equal(await ws.next(), '42["echo","over websocket"]');
    ws.send('427["echo",{"n":1}]');
    assert.equal(await ws.next(), '437[{"n":1}]');
    const afterGet = await get(sid);
    assert.equal(afterGet.status, 400, "polling is over for an upgraded session");
    const afterPost = await post(sid, '42["echo","x"]');
    assert.equal(afterPost.status, 400);
    assert.equal(ws.isOpen, true);
  });

  test("a message over maxPayload closes the websocket; one under it is echoed", async () => {
    const socket = await wsSession();
    const fits = `421["echo","${"a".repeat(MAX_PAYLOAD - 1_000)}"]`;
    socket.send(fits);
    const echoed = await socket.next();
    assert.equal(echoed, `431["${"a".repeat(MAX_PAYLOAD - 1_000)}"]`);
    socket.send(`42["echo","${"b".repeat(MAX_PAYLOAD + 1)}"]`);
    const closed = await socket.closedWithin(2_000);
    assert.equal(closed.code, 1009, "closed as Message Too Big");
  });
});

// WebSocket framing (RFC 6455) as the server implements it: fragments, control
// frames, and the close codes of bad frames.
describe("websocket framing", () => {
  test("a text message sent in three fragments arrives as one", async () => {
    const socket = await wsSession();
    socket.ws.send('42["echo",', { fin: false });
    socket.ws.send('"in ', { fin: false });
    socket.ws.send('pieces"]', { fin: true });
    assert.equal(await socket.next(), '42["echo","in pieces"]');
    assert.equal(socket.isOpen, true);
  });

  test("a binary attachment sent in fragments arrives whole", async () => {
    const socket = await wsSession();
    socket.send('451-["binary",{"_placeholder":true,"num":0}]');
    socket.ws.send(Buffer.from([1, 2]), { binary: true, fin: false });
    socket.ws.send(Buffer.from([3]), { binary: true, fin: true });
    assert.equal(await socket.next(), '451-["binary-back",{"_placeholder":true,"num":0}]');
    assert.deepEqual([...(await socket.next())], [1, 2, 3]);
  });

  test("a websocket ping is answered with a pong carrying its payload", async () => {
    const socket = await wsSession();
    const pong = new Promise((resolve) => socket.ws.once("pong", (data) => resolve(data.toString())));
    socket.ws.ping("are you there");
    assert.equal(await pong, "are you there");
    socket.send('42["echo","after the ping"]');
    assert.equal(await socket.next(), '42["echo","after the ping"]');
  });

  test("a text frame with invalid UTF-8 closes with 1007", async () => {
    const socket = await wsSession();
    socket.ws.send(Buffer.from([0x34, 0xff, 0xfe]), { binary: false });
    const closed = await socket.closedWithin(2_000);
    assert.equal(closed.code, 1007);
  });

  test("a client close frame is answered and the connection ends", async () => {
    const socket = await wsSession();
    socket.ws.close(1000, "bye");
    const closed = await socket.closedWithin(2_000);
    assert.equal(closed.code, 1000);
  });
});

// ---------------------------------------------------------------- Socket.IO

describe("socket.io packets", () => {
  test("CONNECT to / answers sid and pid", async () => {
    const socket = await openWs();
    await socket.handshake();
    const answer = await socket.connect({ token: "x" });
    const body = payloadAfter(answer, "40");
    assert.deepEqual(Object.keys(body).sort(), ["pid", "sid"]);
    assert.equal(typeof body.sid, "string");
    assert.equal(typeof body.pid, "string");
    assert.notEqual(body.sid, body.pid);
  });

  test("CONNECT without auth is refused", async () => {
    const socket = await openWs();
    await socket.handshake();
    socket.send("40");
    assert.deepEqual(payloadAfter(await socket.next(), "44"), { message: "Authentication failed" });
    socket.send('40{"token":"refuse"}');
    assert.deepEqual(payloadAfter(await socket.next(), "44"), { message: "Authentication failed" });
    // The connection stays usable for another try.
    assert.match(await socket.connect({ token: "x" }), /^40\{/);
  });

  test("CONNECT to /admin and to an unknown namespace", async () => {
    const socket = await openWs();
    await socket.handshake();
    socket.send("40/nope,");
    assert.deepEqual(payloadAfter(await socket.next(), "44/nope,"), { message: "Invalid namespace" });
    socket.send('40/admin,{"token":"x"}');
    const admin = payloadAfter(await socket.next(), "40/admin,");
    assert.deepEqual(Object.keys(admin).sort(), ["pid", "sid"]);
    socket.send('42/admin,5["echo","in admin"]');
    assert.equal(await socket.next(), '43/admin,5["in admin"]');
  });

  test("an event with an ack id is acknowledged with that id", async () => {
    const socket = await wsSession();
    socket.send('421["echo",1]');
    assert.equal(await socket.next(), "431[1]");
    socket.send('4212345["echo","x",{"y":[null]}]');
    assert.equal(await socket.next(), '4312345["x",{"y":[null]}]');
    socket.send('42["echo",1,2]');
    assert.equal(await socket.next(), '42["echo",1,2]');
  });

  test("a binary event comes back as binary-back with the same attachment", async () => {
    const socket = await wsSession();
    const data = Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]);
    socket.send('451-["binary",{"_placeholder":true,"num":0}]');
    socket.send(data);
    assert.deepEqual(payloadAfter(await socket.next(), "451-"), ["binary-back", { _placeholder: true, num: 0 }]);
    const back = await socket.next();
    assert.ok(Buffer.isBuffer(back), "the attachment follows as a binary frame");
    assert.deepEqual(back, data);
  });

  test("a binary event with two attachments and an ack id", async () => {
    const socket = await wsSession();
    const one = Buffer.from("first");
    const two = Buffer.alloc(5_000, 7);
    socket.send('452-9["binary",{"_placeholder":true,"num":0},"mid",{"_placeholder":true,"num":1}]');
    socket.send(one);
    socket.send(two);
    const args = [{ _placeholder: true, num: 0 }, "mid", { _placeholder: true, num: 1 }];
    assert.deepEqual(payloadAfter(await socket.next(), "452-"), ["binary-back", ...args]);
    assert.deepEqual(await socket.next(), one);
    assert.deepEqual(await socket.next(), two);
    assert.deepEqual(payloadAfter(await socket.next(), "462-9"), args);
    assert.deepEqual(await socket.next(), one);
    assert.deepEqual(await socket.next(), two);
  });

  for (const bad of ["4abc", "42{}", '42abc["x"]', "49", '43["no ack id"]', "451-[\"binary\"]x"]) {
    test(`the invalid packet ${JSON.stringify(bad)} closes the connection`, async () => {
      const socket = await wsSession();
      socket.send(bad);
      await socket.closedWithin(1_000);
    });
  }

  test("binary data nobody announced closes the connection", async () => {
    const socket = await wsSession();
    socket.send(Buffer.from([1, 2, 3]));
    await socket.closedWithin(1_000);
  });

  test("no CONNECT within 1 s closes the connection", async () => {
    const socket = await openWs();
    const opened = Date.now();
    await socket.handshake();
    const closed = await socket.closedWithin(CONNECT_TIMEOUT + 1_500);
    const after = closed.at - opened;
    assert.ok(after >= CONNECT_TIMEOUT - 150, `closed after ${after} ms, before the connect timeout`);
  });

  test("no CONNECT within 1 s closes a polling session too", async () => {
    const opened = Date.now();
    const { sid } = await pollingHandshake();
    let res;
    for (;;) {
      res = await get(sid, 3_000);
      if (res.status !== 200 || res.body !== "2") break;
      await post(sid, "3");
    }
    const after = Date.now() - opened;
    assert.ok(after >= CONNECT_TIMEOUT - 150, `closed after ${after} ms`);
    assert.ok(after <= CONNECT_TIMEOUT + 1_500, `closed after ${after} ms`);
    assert.ok(res.status === 400 || res.body.split(SEP).at(-1) === "1", `last GET: ${res.status} ${res.body}`);
    assert.equal((await get(sid)).status, 400);
  });
});

// ---------------------------------------------------------------- robustness

/** A small seeded PRNG (mulberry32), so a failing run can be replayed. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function garbageFrame(random) {
  const int = (n) => Math.floor(random() * n);
  const pick = (list) => list[int(list.length)];
  const chars = '0123456789-,/[]{}":abcxyz_ \\\x1e\u0000é日🎉';
  const noise = (n) => Array.from({ length: int(n) }, () => pick([...chars])).join("");
  switch (int(6)) {
    case 0: // random bytes in a binary frame
      return Buffer.from(Array.from({ length: int(300) }, () => int(256)));
    case 1: // random text
      return noise(80);
    case 2: // an Engine.IO type and noise
      return `${int(10)}${noise(40)}`;
    case 3: // a Socket.IO packet with mangled parts
      return `4${int(10)}${pick(["", "1-", "2-", "99-", "-", "65-"])}${pick(["", "/", "/admin,", "/nope,", "/x"])}${pick(["", "1", "18446744073709551616", "007"])}${pick(["", "[", '["echo"', '["binary",{"_placeholder":true,"num":5}]', '{"token":1}', "[]", "null", noise(20)])}`;
    case 4: // a binary header announcing attachments that may or may not come
      return `45${int(4)}-["binary",{"_placeholder":true,"num":${int(4) - 1}}]`;
    default: // deeply nested JSON
      return `42["echo",${"[".repeat(int(200))}${"]".repeat(int(200))}]`;
  }
}

describe("robustness", () => {
  test("500 random frames on fresh connections never crash the server", { timeout: 60_000 }, async (t) => {
    const seed = Number(process.env.GARBAGE_SEED ?? Date.now() % 1_000_000);
    t.diagnostic(`GARBAGE_SEED=${seed}`);
    const random = prng(seed);
    const TOTAL_FRAMES = 500;
    const WORKERS = 10;
    let frames = 0;
    let connections = 0;
    // Each worker opens fresh connections and sends frames until the server
    // closes the connection (most garbage does) or 5 frames went out.
    await Promise.all(
      Array.from({ length: WORKERS }, async () => {
        while (frames < TOTAL_FRAMES) {
          const socket = await openWs();
          connections += 1;
          await socket.handshake();
          if (connections % 2 === 0) await socket.connect({ token: "fuzz" });
          for (let f = 0; f < 5 && socket.isOpen && frames < TOTAL_FRAMES; f++) {
            socket.send(garbageFrame(random));
            frames += 1;
            await delay(2);
          }
          socket.close();
          sockets.delete(socket);
        }
      }),
    );
    // Garbage over polling too: random bodies on fresh sessions.
    for (let i = 0; i < 20; i++) {
      const { sid } = await pollingHandshake();
      const body = Array.from({ length: 1 + Math.floor(random() * 4) }, () => {
        const frame = garbageFrame(random);
        return Buffer.isBuffer(frame) ? `b${frame.toString("base64")}` : frame;
      }).join(SEP);
      const res = await post(sid, body);
      assert.ok([200, 400].includes(res.status), `POST status ${res.status}`);
    }
    t.diagnostic(`${frames} websocket frames on ${connections} connections, and 20 polling bodies sent`);
    assert.equal(frames, TOTAL_FRAMES);

    assert.equal(server.running, true, "the server process is still running");
    const socket = await wsSession();
    socket.send('421["echo","still alive"]');
    assert.equal(await socket.next(), '431["still alive"]');
  });
});
