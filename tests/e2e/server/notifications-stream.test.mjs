// Per-user notifications over Server-Sent Events (DESIGN.md section 4,
// `GET /api/notifications/stream`): with the `eventsource` client (browser-like
// EventSource: `?token=`, `onmessage`, automatic reconnection with
// `Last-Event-ID`) and with raw HTTP (headers, exact framing, `:ping` interval,
// resume by header and by `?lastEventId=`, exactly-once delivery while a resume
// replays, authentication). Runs against SQLite and PostgreSQL.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { STORES, delay, eventually, startSwitchboard } from "../lib/server.mjs";
import { QUIET_MS, expiredToken, forgedToken, userToken } from "../lib/switchboard.mjs";
import {
  CONNECTED_FRAME,
  EventSource,
  Streams,
  createMany,
  createNotification,
  parseEventFrame,
  streamUrl,
} from "../lib/notifications.mjs";

const PING_MS = 300;
const ENV = { SWITCHBOARD_SSE_PING_INTERVAL_MS: String(PING_MS) };

/** Asserts an EventSource's messages: `connected` where `expected` has null, else that notification with its id as lastEventId. */
function assertMessages(client, expected, context) {
  const got = client.messages.map((m) => (m.lastEventId === "" && m.json?.type === "connected" ? null : m.json?.id ?? m.data));
  const want = expected.map((n) => (n === null ? null : n.id));
  assert.deepEqual(got, want, `${context}: messages (null = connected) ${JSON.stringify(client.messages.map((m) => m.data)).slice(0, 1500)}`);
  expected.forEach((n, i) => {
    const m = client.messages[i];
    if (n === null) {
      assert.deepEqual(m.json, { type: "connected" }, `${context}: message ${i}`);
      assert.equal(m.lastEventId, "", `${context}: the connected message has no id`);
    } else {
      assert.deepEqual(m.json, n, `${context}: message ${i}`);
      assert.equal(m.lastEventId, String(n.id), `${context}: lastEventId of message ${i}`);
    }
  });
}

/** Ids, duplicates, order and gaps of a stream's notification frames against the ids expected. */
function checkExactlyOnce(frames, expectedIds, context) {
  const got = frames.map((f) => parseEventFrame(f.text).id);
  const seen = new Set();
  const duplicates = got.filter((id) => (seen.has(id) ? true : (seen.add(id), false)));
  const missing = expectedIds.filter((id) => !seen.has(id));
  const unexpected = got.filter((id) => !expectedIds.includes(id));
  const outOfOrder = got.filter((id, i) => i > 0 && id <= got[i - 1]);
  assert.deepEqual(
    { duplicates, missing, unexpected, outOfOrder },
    { duplicates: [], missing: [], unexpected: [], outOfOrder: [] },
    `${context}: got ${got.length} notifications, expected ${expectedIds.length} (ids ${expectedIds[0]}..${expectedIds[expectedIds.length - 1]})`,
  );
}

for (const store of STORES) {
  describe(`notification stream [${store.name}]`, () => {
    let server;
    let db;
    const streams = new Streams();

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({ database: db.url, env: ENV });
    });
    afterEach(() => streams.closeAll());
    after(async () => {
      streams.closeAll();
      await server?.stop();
      await db?.drop();
    });

    test("EventSource with ?token=: connected first, then each notification on every tab of its user and on no other user's", async () => {
      const alice = "es-alice";
      const bob = "es-bob";
      const tabs = [0, 1, 2].map(() => streams.eventSource(streamUrl(server, { token: userToken(server.secret, alice) })));
      const bobTab = streams.eventSource(streamUrl(server, { token: userToken(server.secret, bob) }));
      for (const c of [...tabs, bobTab]) await c.waitMessages(1);
      for (const c of [...tabs, bobTab]) assert.equal(c.es.readyState, EventSource.OPEN);

      const sent = [
        await createNotification(server, alice, "mention", { by: "carol", text: "hi ünïcödé 😀", list: [1, null, true] }),
        await createNotification(server, alice, "invite", "a plain string"),
        await createNotification(server, alice, "count", 3),
      ];
      for (const [i, tab] of tabs.entries()) await tab.waitMessages(4);
      await delay(QUIET_MS);
      for (const [i, tab] of tabs.entries()) assertMessages(tab, [null, ...sent], `alice's tab ${i}`);
      assertMessages(bobTab, [null], "bob's stream while alice got hers");

      // Bob's stream was live all along: his own notification reaches it, and no tab of alice's.
      const bobs = await createNotification(server, bob, "mention", { for: "bob" });
      await bobTab.waitMessages(2);
      await delay(QUIET_MS);
      assertMessages(bobTab, [null, bobs], "bob's stream");
      for (const [i, tab] of tabs.entries()) assertMessages(tab, [null, ...sent], `alice's tab ${i} after bob's`);
      for (const c of [...tabs, bobTab]) assert.deepEqual(c.errors, [], "no errors");
    });

    test("raw stream: SSE headers, exact framing, and a :ping comment every SWITCHBOARD_SSE_PING_INTERVAL_MS=300", async () => {
      const user = "raw-frames";
      const s = await streams.raw(server, { token: userToken(server.secret, user) });
      assert.equal(s.status, 200);
      assert.match(s.headers["content-type"] ?? "", /^text\/event-stream\s*(;.*)?$/, "content-type");
      assert.equal(s.headers["cache-control"], "no-cache", "cache-control");
      assert.equal(s.headers["x-accel-buffering"], "no", "x-accel-buffering");
      await s.waitEvents(1);
      assert.ok(s.raw.startsWith(CONNECTED_FRAME), `the body starts with ${JSON.stringify(CONNECTED_FRAME)}: ${JSON.stringify(s.raw.slice(0, 200))}`);

      // Idle: only pings, at the configured interval.
      await delay(5 * PING_MS + 250);
      const pings = s.frames.filter((f) => f.text === ":ping");
      assert.deepEqual(
        s.frames.map((f) => f.text),
        ['data: {"type":"connected"}', ...pings.map(() => ":ping")],
        "an idle stream has the connected frame, then only :ping comments",
      );
      const times = [s.openedAt, ...pings.map((p) => p.at)];
      const gaps = times.slice(1).map((t, i) => Math.round(t - times[i]));
      console.log(`# [${store.name}] :ping gaps (ms, the first from the response head): ${JSON.stringify(gaps)}`);
      assert.ok(pings.length >= 4 && pings.length <= 7, `expected 4 to 7 pings in ${5 * PING_MS + 250} ms at ${PING_MS} ms, got ${pings.length}: gaps ${JSON.stringify(gaps)}`);
      for (const gap of gaps) assert.ok(gap >= PING_MS - 100 && gap <= PING_MS + 400, `ping gap ${gap} ms, expected about ${PING_MS}: ${JSON.stringify(gaps)}`);

      const n = await createNotification(server, user, "framed", { a: [1, 2], s: "quote \" and backslash \\ and newline \n inside" });
      await s.waitEvents(2);
      const frame = parseEventFrame(s.events[1].text);
      assert.equal(frame.id, n.id);
      assert.deepEqual(frame.json, n, "the data line is the notification");
      // The whole body, pings aside, is exactly these two frames.
      await delay(50);
      assert.equal(
        s.raw.replaceAll(":ping\n\n", ""),
        `${CONNECTED_FRAME}id: ${n.id}\ndata: ${frame.text}\n\n`,
        "exact bytes of the stream, :ping frames removed",
      );
      assert.equal(s.ended, false, "the stream stays open");
    });

    test("Last-Event-ID header and ?lastEventId= replay the user's newer notifications in order, then live ones", async () => {
      const user = "resume-raw";
      const token = userToken(server.secret, user);
      const mine = [];
      for (let i = 0; i < 5; i += 1) {
        mine.push(await createNotification(server, user, "r", { i }));
        await createNotification(server, `${user}-other`, "r", { i }); // interleaved ids of someone else
      }
      // Without Last-Event-ID nothing is replayed.
      const plain = await streams.raw(server, { token });
      await plain.waitEvents(1);
      await delay(QUIET_MS);
      assert.deepEqual(plain.events.map((f) => f.text), ['data: {"type":"connected"}'], "a fresh stream replays nothing");
      plain.close();

      const ways = [
        ["Last-Event-ID header", (id) => ({ lastEventIdHeader: id })],
        ["?lastEventId=", (id) => ({ lastEventId: id })],
      ];
      for (const [how, option] of ways) {
        const from = mine[1].id;
        const s = await streams.raw(server, { token, ...option(from) });
        assert.equal(s.status, 200, how);
        const expected = mine.filter((n) => n.id > from);
        await s.waitEvents(1 + expected.length);
        assert.equal(s.events[0].text, 'data: {"type":"connected"}', `${how}: connected comes first on a resumed stream too`);
        assert.deepEqual(s.events.slice(1).map((f) => parseEventFrame(f.text).json), expected, `${how}: the missed ones, oldest first`);
        const live = await createNotification(server, user, "r", { live: how });
        mine.push(live);
        await s.waitEvents(2 + expected.length);
        await delay(QUIET_MS);
        assert.deepEqual(
          s.events.slice(1).map((f) => parseEventFrame(f.text).json),
          [...expected, live],
          `${how}: then the live one, each once`,
        );
        assert.ok(s.raw.startsWith(CONNECTED_FRAME), how);
        s.close();
      }

      // From the newest id: nothing to replay; from 0: everything of the user's.
      const newest = await streams.raw(server, { token, lastEventIdHeader: mine[mine.length - 1].id });
      const all = await streams.raw(server, { token, lastEventIdHeader: 0 });
      await all.waitEvents(1 + mine.length);
      await delay(QUIET_MS);
      assert.deepEqual(newest.events.map((f) => f.text), ['data: {"type":"connected"}'], "resumed from the newest id");
      assert.deepEqual(all.events.slice(1).map((f) => parseEventFrame(f.text).json), mine, "resumed from 0");
    });

    test("a notification created while a resume replays is delivered exactly once, in id order, none missing", async () => {
      const user = "burst";
      const token = userToken(server.secret, user);
      const pre = await createMany(server, user, 520, { concurrency: 8 }); // more than one replay page (500)
      const preIds = pre.map((n) => n.id).sort((a, b) => a - b);
      const live = await streams.raw(server, { token }); // a tab that is just live
      await live.waitEvents(1);

      const from = [preIds[4], preIds[9], preIds[14]];
      const burst = createMany(server, user, 60, { concurrency: 6, type: "burst" }); // fewer than a listener's queue (64)
      const resumed = [];
      for (const id of from) {
        resumed.push(await streams.raw(server, { token, lastEventIdHeader: id }));
        await delay(15);
      }
      const burstIds = (await burst).map((n) => n.id);
      const allIds = [...preIds, ...burstIds].sort((a, b) => a - b);
      const byId = new Map([...pre, ...(await burst)].map((n) => [n.id, n]));

      const cases = [
        ["the live tab", live, burstIds.slice().sort((a, b) => a - b)],
        ...resumed.map((s, i) => [`the stream resumed after ${from[i]}`, s, allIds.filter((id) => id > from[i])]),
      ];
      // Settled when each stream has its newest expected id (or ended); bounded.
      const settled = () =>
        cases.every(([, s, expected]) => s.ended || s.events.some((f) => f.text.startsWith(`id: ${expected[expected.length - 1]}\n`)));
      await eventually(settled, 10_000).catch(() => {});
      await delay(QUIET_MS);
      const failures = [];
      for (const [what, s, expected] of cases) {
        try {
          assert.equal(s.events[0]?.text, 'data: {"type":"connected"}', `${what}: connected first`);
          checkExactlyOnce(s.events.slice(1), expected, what);
          for (const f of s.events.slice(1)) {
            const { id, json } = parseEventFrame(f.text);
            assert.deepEqual(json, byId.get(id), `${what}: notification ${id}`);
          }
          assert.equal(s.ended, false, `${what}: the stream is still open`);
        } catch (err) {
          const detail = err.actual && typeof err.actual === "object" && !Array.isArray(err.actual) ? ` ${JSON.stringify(err.actual)}` : "";
          failures.push(`${err.message.split("\n")[0]}${detail}`);
        }
      }
      assert.deepEqual(failures, [], `streams that did not get each notification exactly once, in order:\n${failures.join("\n")}`);
    });

    test("Authorization: Bearer works too; no or bad token is 401 JSON; EventSource gives up on 401", async () => {
      const user = "auth-user";
      const byHeader = await streams.raw(server, { bearer: userToken(server.secret, user) });
      assert.equal(byHeader.status, 200);
      const esByHeader = streams.eventSource(streamUrl(server), { headers: { authorization: `Bearer ${userToken(server.secret, user)}` } });
      await byHeader.waitEvents(1);
      await esByHeader.waitMessages(1);
      const n = await createNotification(server, user, "t", { via: "header" });
      await byHeader.waitEvents(2);
      await esByHeader.waitMessages(2);
      assert.deepEqual(parseEventFrame(byHeader.events[1].text).json, n);
      assertMessages(esByHeader, [null, n], "EventSource with an Authorization header");

      const bad = [
        ["no token", {}],
        ["garbage ?token=", { token: "garbage" }],
        ["empty ?token=", { token: "" }],
        ["token of another secret", { token: forgedToken(user) }],
        ["expired token", { token: expiredToken(server.secret, user) }],
        ["the API key as token", { token: server.apiKey }],
        ["garbage bearer", { bearer: "garbage" }],
        ["expired bearer", { bearer: expiredToken(server.secret, user) }],
      ];
      for (const [what, options] of bad) {
        const res = await streams.raw(server, options);
        assert.equal(res.status, 401, `${what}: ${res.status} ${res.text?.slice(0, 200)}`);
        assert.match(res.headers["content-type"] ?? "", /^application\/json/, `${what}: content-type`);
        assert.equal(res.json?.error, "unauthorized", `${what}: ${res.text}`);
        assert.equal(typeof res.json?.message, "string", `${what}: ${res.text}`);
      }

      const refused = streams.eventSource(streamUrl(server, { token: forgedToken(user) }));
      await eventually(() => refused.errors.length >= 1, 5_000);
      assert.equal(refused.errors[0].code, 401, JSON.stringify(refused.errors));
      assert.equal(refused.es.readyState, EventSource.CLOSED, "a 401 fails the EventSource (no reconnection)");
      assert.deepEqual(refused.messages, []);
    });
  });

  describe(`notification stream across a server restart [${store.name}]`, () => {
    let db;
    const servers = [];
    const streams = new Streams();

    before(async () => {
      db = await store.create();
    });
    after(async () => {
      streams.closeAll();
      for (const s of servers) await s.stop();
      await db?.drop();
    });

    test("EventSource reconnects by itself with Last-Event-ID: exactly the missed ones in order, then live ones", async () => {
      const secret = `restart-${randomBytes(6).toString("hex")}`;
      const apiKey = `key-${randomBytes(6).toString("hex")}`;
      const user = "comeback";
      const first = await startSwitchboard({ database: db.url, secret, apiKey, env: ENV });
      servers.push(first);
      const client = streams.eventSource(streamUrl(first, { token: userToken(secret, user) }));
      await client.waitMessages(1);
      const seen = [
        await createNotification(first, user, "before", { n: 1 }),
        await createNotification(first, user, "before", { n: 2 }),
      ];
      await client.waitMessages(3);
      assertMessages(client, [null, ...seen], "before the restart");

      // The server goes away (killed: a graceful stop waits for open streams), and
      // the client's reconnection is held until the next server has stored more.
      client.holdReconnects();
      first.proc.kill("SIGKILL");
      await first.stop();
      await eventually(() => client.errors.length >= 1, 5_000);
      assert.equal(client.es.readyState, EventSource.CONNECTING, "the EventSource is reconnecting, not closed");

      const second = await startSwitchboard({ database: db.url, secret, apiKey, port: first.port, env: ENV });
      servers.push(second);
      const missed = [];
      for (let i = 0; i < 3; i += 1) {
        missed.push(await createNotification(second, user, "missed", { i }));
        await createNotification(second, `${user}-other`, "missed", { i });
      }
      client.releaseReconnects();
      await client.waitMessages(3 + 1 + missed.length, 10_000); // the EventSource's own retry delay is 3 s
      const live = [await createNotification(second, user, "live", { n: 1 }), await createNotification(second, user, "live", { n: 2 })];
      await client.waitMessages(3 + 1 + missed.length + live.length);
      await delay(QUIET_MS);
      assertMessages(client, [null, ...seen, null, ...missed, ...live], "across the restart");

      const resumes = client.requests.slice(1);
      assert.ok(resumes.length >= 1, "the EventSource reconnected");
      assert.equal(client.requests[0].headers["Last-Event-ID"], undefined, "the first request has no Last-Event-ID");
      for (const r of resumes) {
        assert.equal(r.headers["Last-Event-ID"], String(seen[1].id), `reconnection sent Last-Event-ID: ${JSON.stringify(r.headers)}`);
      }
      assert.equal(client.es.readyState, EventSource.OPEN);
    });
  });
}
