// Limits of notification streams (DESIGN.md section 7): at most
// SWITCHBOARD_MAX_STREAMS_PER_USER streams per user (429 rate_limited past it,
// a slot freed when a stream closes), and closed streams free everything:
// after 1,000 streams opened and aborted, /metrics shows no listener left.
// Runs against SQLite and PostgreSQL.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { STORES, delay, eventually, startSwitchboard } from "../lib/server.mjs";
import { QUIET_MS, userToken } from "../lib/switchboard.mjs";
import { EventSource, Streams, createNotification, metric, poll, streamUrl } from "../lib/notifications.mjs";

const LISTENERS = "switchboard_notification_listeners";

/** Asserts a 429 `{ error: "rate_limited", message }` answer of the stream endpoint. */
function assertRateLimited(res, context) {
  assert.equal(res.status, 429, `${context}: expected 429, got ${res.status} ${res.text ?? ""}`);
  assert.match(res.headers["content-type"] ?? "", /^application\/json/, `${context}: content-type`);
  assert.equal(res.json?.error, "rate_limited", `${context}: ${res.text}`);
  assert.equal(typeof res.json?.message, "string", `${context}: ${res.text}`);
}

for (const store of STORES) {
  describe(`SWITCHBOARD_MAX_STREAMS_PER_USER=2 [${store.name}]`, () => {
    let server;
    let db;
    const streams = new Streams();

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({ database: db.url, env: { SWITCHBOARD_MAX_STREAMS_PER_USER: "2" } });
    });
    afterEach(() => streams.closeAll());
    after(async () => {
      streams.closeAll();
      await server?.stop();
      await db?.drop();
    });

    test("a third concurrent stream of a user is 429 rate_limited; closing one frees its slot", async () => {
      const user = "two-tabs";
      const token = userToken(server.secret, user);
      const tabs = [streams.eventSource(streamUrl(server, { token })), streams.eventSource(streamUrl(server, { token }))];
      for (const t of tabs) await t.waitMessages(1);

      assertRateLimited(await streams.raw(server, { token }), "third stream by ?token=");
      assertRateLimited(await streams.raw(server, { bearer: token }), "third stream by header");
      const third = streams.eventSource(streamUrl(server, { token }));
      await eventually(() => third.errors.length >= 1, 5_000);
      assert.equal(third.errors[0].code, 429, JSON.stringify(third.errors));
      assert.equal(third.es.readyState, EventSource.CLOSED);

      // Per user: someone else may still open streams, and the two tabs still work.
      const other = await streams.raw(server, { token: userToken(server.secret, `${user}-other`) });
      assert.equal(other.status, 200);
      const n = await createNotification(server, user, "t", { to: "both tabs" });
      for (const t of tabs) await t.waitMessages(2);
      for (const t of tabs) assert.deepEqual(t.messages[1].json, n);

      // Closing a tab frees its slot (the server notices the closed connection).
      tabs[0].close();
      const reopened = await eventually(async () => {
        const res = await streams.raw(server, { token });
        if (res.status === 200) return res;
        assertRateLimited(res, "before the slot was freed");
        return false;
      }, 5_000, 50);
      await reopened.waitEvents(1);
      assertRateLimited(await streams.raw(server, { token }), "the limit holds again with two open");
      const m = await createNotification(server, user, "t", { to: "the remaining and the new tab" });
      await reopened.waitEvents(2);
      await tabs[1].waitMessages(3);
      assert.equal(reopened.events[1].text.startsWith(`id: ${m.id}\n`), true, reopened.events[1].text);

      // Long-polls are not streams: a user at the stream limit may still poll.
      const res = await poll(server, token, { after: m.id - 1, timeout: 1 });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json.notifications.map((x) => x.id), [m.id]);
    });
  });

  describe(`1,000 streams opened and closed [${store.name}]`, () => {
    let server;
    let db;
    const streams = new Streams();
    const PER_USER = 10;
    const USERS_PER_BATCH = 10;
    const BATCHES = 10;

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({ database: db.url, env: { SWITCHBOARD_MAX_STREAMS_PER_USER: String(PER_USER) } });
    });
    afterEach(() => streams.closeAll());
    after(async () => {
      streams.closeAll();
      await server?.stop();
      await db?.drop();
    });

    test("closed streams free everything: /metrics shows no notification listener left, and every user's slots are free again", async () => {
      assert.equal(await metric(server, LISTENERS), 0, `${LISTENERS} before any stream`);
      const started = Date.now();
      let opened = 0;
      for (let batch = 0; batch < BATCHES; batch += 1) {
        // A fresh set of users each batch, each at its limit: a slot not freed in time cannot fail the next batch.
        const users = Array.from({ length: USERS_PER_BATCH }, (_, u) => `churn-${batch}-${u}`);
        const batchStreams = await Promise.all(
          users.flatMap((u) =>
            Array.from({ length: PER_USER }, () => streams.raw(server, { token: userToken(server.secret, u) })),
          ),
        );
        for (const s of batchStreams) assert.equal(s.status, 200, `batch ${batch}: ${s.status} ${s.text ?? ""}`);
        await Promise.all(batchStreams.map((s) => s.waitEvents(1, 10_000)));
        if (batch === 0) {
          assert.equal(await metric(server, LISTENERS), USERS_PER_BATCH * PER_USER, `${LISTENERS} with the first batch open`);
        }
        for (const s of batchStreams) s.close(); // aborted right after the connected event
        opened += batchStreams.length;
      }
      assert.equal(opened, 1_000);
      let last;
      try {
        await eventually(async () => {
          last = await metric(server, LISTENERS);
          return last === 0;
        }, 5_000, 100);
      } catch {
        assert.fail(`${LISTENERS} is ${last} 5 s after 1,000 streams were closed, expected 0`);
      }
      console.log(`# [${store.name}] 1,000 streams opened and closed in ${Date.now() - started} ms`);

      // Every slot of a user of the first batch is free again, and the streams work.
      const again = await Promise.all(
        Array.from({ length: PER_USER }, () => streams.raw(server, { token: userToken(server.secret, "churn-0-0") })),
      );
      for (const s of again) assert.equal(s.status, 200, `reopening: ${s.status} ${s.text ?? ""}`);
      const n = await createNotification(server, "churn-0-0", "t", {});
      await Promise.all(again.map((s) => s.waitEvents(2)));
      await delay(QUIET_MS);
      for (const s of again) assert.deepEqual(s.events.map((f) => f.text.split("\n")[0]), ['data: {"type":"connected"}', `id: ${n.id}`]);
      assert.equal(await metric(server, LISTENERS), PER_USER);
      streams.closeAll();
      await eventually(async () => (await metric(server, LISTENERS)) === 0, 5_000, 100);
    });
  });
}
