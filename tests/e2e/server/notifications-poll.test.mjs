// Per-user notifications by long-poll (DESIGN.md section 4,
// `GET /api/notifications/poll?after=ID&timeout=S`): answers at once when newer
// ones exist, wakes within 50 ms of a creation, holds about S seconds otherwise,
// clamps S to SWITCHBOARD_MAX_POLL_SECS, and `lastId` is the last id returned.
// Runs against SQLite and PostgreSQL.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";

import { STORES, delay, startSwitchboard } from "../lib/server.mjs";
import { assertHttpError, userToken } from "../lib/switchboard.mjs";
import { createMany, createNotification, poll } from "../lib/notifications.mjs";

/** Asserts a 200 poll answer `{ notifications, lastId }` with exactly those notifications. */
function assertPoll(res, notifications, lastId, context) {
  assert.equal(res.status, 200, `${context}: ${res.status} ${res.text.slice(0, 300)}`);
  assert.deepEqual(Object.keys(res.json ?? {}).sort(), ["lastId", "notifications"], `${context}: ${res.text.slice(0, 300)}`);
  assert.deepEqual(res.json.notifications, notifications, `${context}: notifications`);
  assert.equal(res.json.lastId, lastId, `${context}: lastId`);
}

const latencies = [];

for (const store of STORES) {
  describe(`notification long-poll [${store.name}]`, () => {
    let server;
    let db;

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({ database: db.url });
    });
    after(async () => {
      await server?.stop();
      await db?.drop();
    });

    test("answers at once with the newer notifications, oldest first, lastId the last returned", async () => {
      const user = "p-now";
      const token = userToken(server.secret, user);
      const mine = [];
      for (let i = 0; i < 4; i += 1) {
        mine.push(await createNotification(server, user, "p", { i }));
        await createNotification(server, `${user}-other`, "p", { i });
      }
      await poll(server, token, { after: mine[3].id, timeout: 0 }); // warm the path once
      const cases = [
        ["after=0", { after: 0, timeout: 10 }, mine],
        ["after=<second>", { after: mine[1].id, timeout: 10 }, mine.slice(2)],
        ["after=<second>, token by header", { after: mine[1].id, timeout: 10, bearer: true }, mine.slice(2)],
        ["after=<last-1>", { after: mine[2].id, timeout: 30 }, mine.slice(3)],
      ];
      const times = [];
      for (const [what, options, expected] of cases) {
        const res = await poll(server, token, options);
        times.push(Math.round(res.elapsed));
        assertPoll(res, expected, expected[expected.length - 1].id, what);
        assert.ok(res.elapsed < 200, `${what}: answered in ${res.elapsed.toFixed(1)} ms, expected at once (< 200 ms)`);
      }
      console.log(`# [${store.name}] immediate poll answers (ms): ${JSON.stringify(times)}`);
    });

    test("a held poll answers within 50 ms of the creation of a notification (slack: < 100 ms)", async () => {
      const user = "p-wake";
      const token = userToken(server.secret, user);
      let last = (await createNotification(server, user, "p", { warm: true })).id;
      const measured = [];
      for (let trial = 0; trial < 5; trial += 1) {
        const pending = poll(server, token, { after: last, timeout: 10 });
        let settled = false;
        pending.then(() => {
          settled = true;
        }, () => {});
        await delay(300);
        assert.equal(settled, false, `trial ${trial}: the poll answered before anything was created`);
        const n = await createNotification(server, user, "p", { trial });
        const created = performance.now();
        const res = await pending;
        const latency = res.doneAt - created;
        measured.push(Number(latency.toFixed(1)));
        assertPoll(res, [n], n.id, `trial ${trial}`);
        assert.ok(res.elapsed >= 290, `trial ${trial}: the poll was held (${res.elapsed.toFixed(0)} ms)`);
        last = n.id;
      }
      latencies.push({ store: store.name, ms: measured });
      console.log(`# [${store.name}] poll wake-up latency, POST response -> poll response (ms): ${JSON.stringify(measured)}, max ${Math.max(...measured)}`);
      for (const l of measured) assert.ok(l < 100, `poll answered ${l} ms after the POST's response; expected within 50 ms (+ slack): ${JSON.stringify(measured)}`);
    });

    test("nothing newer: { notifications: [], lastId: after } after about timeout=1 s; another user's notification does not wake it", async () => {
      const user = "p-idle";
      const token = userToken(server.secret, user);
      const own = await createNotification(server, user, "p", {});
      const held = poll(server, token, { after: own.id, timeout: 1 });
      const future = poll(server, token, { after: 1_000_000_000, timeout: 1 });
      await delay(300);
      await createNotification(server, `${user}-other`, "p", { not: "yours" });
      for (const [what, res, after] of [
        ["after=<own newest>", await held, own.id],
        ["after=<beyond every id>", await future, 1_000_000_000],
      ]) {
        assertPoll(res, [], after, what);
        assert.ok(res.elapsed >= 950 && res.elapsed < 2_000, `${what}: answered after ${res.elapsed.toFixed(0)} ms, expected about 1000`);
      }
    });

    test("clients polling in a loop with after=lastId while notifications are created concurrently get each once, in order", async () => {
      const user = "p-loop";
      const token = userToken(server.secret, user);
      const start = (await createNotification(server, user, "p", { start: true })).id;
      let done = false;
      // Three clients of the user (tabs), each polling from the same start.
      const pollers = [0, 1, 2].map(() => {
        const poller = { got: [] };
        poller.finished = (async () => {
          let last = start;
          const deadline = performance.now() + 15_000;
          while (!done && performance.now() < deadline) {
            const res = await poll(server, token, { after: last, timeout: 1 });
            assert.equal(res.status, 200, res.text);
            const ids = res.json.notifications.map((n) => n.id);
            assert.equal(res.json.lastId, ids.length ? ids[ids.length - 1] : last, `lastId of ${JSON.stringify(ids)}`);
            poller.got.push(...ids);
            last = res.json.lastId;
          }
        })().then(() => null, (err) => err);
        return poller;
      });
      const burst = await createMany(server, user, 120, { concurrency: 8 });
      const expected = burst.map((n) => n.id).sort((a, b) => a - b);
      const newest = expected[expected.length - 1];
      // Stop once each has the newest (or after a bound), after one more poll round.
      const deadline = performance.now() + 10_000;
      while (!pollers.every((p) => p.got.includes(newest)) && performance.now() < deadline) await delay(20);
      await delay(300);
      done = true;
      const failures = [];
      for (const [i, { got, finished }] of pollers.entries()) {
        const loopError = await finished;
        if (loopError) throw loopError;
        const seen = new Set();
        const duplicates = got.filter((id) => (seen.has(id) ? true : (seen.add(id), false)));
        const missing = expected.filter((id) => !seen.has(id));
        const outOfOrder = got.filter((id, j) => j > 0 && id <= got[j - 1]);
        if (duplicates.length || missing.length || outOfOrder.length) {
          failures.push(`poller ${i} got ${got.length} of ${expected.length} (ids ${expected[0]}..${newest}): ${JSON.stringify({ duplicates, missing, outOfOrder })}`);
        }
      }
      assert.deepEqual(failures, [], `pollers that did not get each notification exactly once, in order:\n${failures.join("\n")}`);
    });

    test("no or bad token is 401; a malformed after or timeout is 400", async () => {
      const user = "p-auth";
      for (const [what, token] of [
        ["no token", undefined],
        ["garbage", "garbage"],
        ["the API key", server.apiKey],
        ["another secret", userToken("another-secret", user)],
      ]) {
        const res = await poll(server, token, { after: 0, timeout: 1 });
        assertHttpError({ ...res, json: res.json }, 401, "unauthorized", what);
      }
      const token = userToken(server.secret, user);
      for (const [what, options] of [
        ["after=abc", { after: "abc", timeout: 1 }],
        ["timeout=abc", { after: 0, timeout: "abc" }],
        ["timeout=-1", { after: 0, timeout: -1 }],
      ]) {
        const res = await poll(server, token, options);
        assertHttpError(res, 400, "invalid", what);
      }
    });
  });

  describe(`SWITCHBOARD_MAX_POLL_SECS=1 [${store.name}]`, () => {
    let server;
    let db;

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({ database: db.url, env: { SWITCHBOARD_MAX_POLL_SECS: "1" } });
    });
    after(async () => {
      await server?.stop();
      await db?.drop();
    });

    test("timeout=30 is clamped to 1 s, and no timeout holds the maximum", async () => {
      const token = userToken(server.secret, "p-clamp");
      const [clamped, unset] = await Promise.all([poll(server, token, { after: 0, timeout: 30 }), poll(server, token, { after: 0 })]);
      for (const [what, res] of [
        ["timeout=30", clamped],
        ["no timeout", unset],
      ]) {
        assertPoll(res, [], 0, what);
        assert.ok(res.elapsed >= 950 && res.elapsed < 2_500, `${what}: answered after ${res.elapsed.toFixed(0)} ms, expected about 1000`);
      }
      // A notification still wakes a clamped poll.
      const pending = poll(server, token, { after: 0, timeout: 30 });
      await delay(200);
      const n = await createNotification(server, "p-clamp", "p", {});
      const res = await pending;
      assertPoll(res, [n], n.id, "woken");
      assert.ok(res.elapsed < 900, `woken after ${res.elapsed.toFixed(0)} ms`);
    });
  });
}

after(() => {
  if (latencies.length) console.log(`# poll wake-up latency summary: ${JSON.stringify(latencies)}`);
});
