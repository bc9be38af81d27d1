// Per-user notifications, the HTTP side (DESIGN.md sections 4 and 7):
// `POST /api/notifications` (API key) and its validation and size limit, and
// `GET /api/notifications`, `POST /api/notifications/{id}/read`,
// `POST /api/notifications/read-all`, which never show or change another
// user's notifications. Streams and long-polls are in notifications-*.test.mjs.
// Runs against SQLite and PostgreSQL.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { STORES, startSwitchboard } from "../lib/server.mjs";
import { assertHttpError, http, userToken } from "../lib/switchboard.mjs";
import { assertNotificationShape, createNotification } from "../lib/notifications.mjs";

const KIB16 = 16 * 1024;

/** `GET /api/notifications` as `sub` with `query`; asserts 200 and resolves with the list. */
async function list(server, sub, query = "") {
  const res = await http(server, "GET", `/api/notifications${query}`, { token: userToken(server.secret, sub) });
  assert.equal(res.status, 200, `GET /api/notifications${query} as ${sub}: ${res.status} ${res.text.slice(0, 300)}`);
  assert.deepEqual(Object.keys(res.json ?? {}), ["notifications"], `body: ${res.text.slice(0, 300)}`);
  assert.ok(Array.isArray(res.json.notifications));
  res.json.notifications.forEach((n, i) => assertNotificationShape(n, `notification ${i} of ${query || "the list"}`));
  return res.json.notifications;
}

const ids = (notifications) => notifications.map((n) => n.id);

for (const store of STORES) {
  describe(`POST /api/notifications [${store.name}]`, () => {
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

    test("creates with 201 { id, createdAt }: any JSON data, type up to 64 characters, data up to 16 KiB of JSON", async () => {
      const user = "creator";
      const created = [];
      const datas = [
        { text: "You were mentioned", nested: { list: [1, "two", null, true, 2.5] }, unicode: "ünïcödé 😀" },
        42,
        "plain text",
        [1, [2, [3]]],
        null,
        true,
        {},
        "x".repeat(KIB16 - 2), // "…" quoted: exactly 16384 bytes of JSON
        "é".repeat((KIB16 - 2) / 2), // 8191 two-byte characters, quoted: 16384 bytes
      ];
      for (const data of datas) created.push(await createNotification(server, user, "mention", data));
      created.push(await createNotification(server, user, "t".repeat(64), { edge: "type of 64 characters" }));
      created.push(await createNotification(server, user, "é".repeat(64), { edge: "64 two-byte characters" }));
      created.push(await createNotification(server, user, "a", 0));
      const createdIds = ids(created);
      for (let i = 1; i < createdIds.length; i += 1) assert.ok(createdIds[i] > createdIds[i - 1], `ids increase: ${createdIds}`);
      // Stored as given: the list (newest first) has each with its data, type and createdAt.
      const stored = await list(server, user, "?limit=200");
      assert.deepEqual(stored, [...created].reverse());
    });

    test("refuses a missing or wrong API key with 401 and stores nothing", async () => {
      const user = "guarded";
      const body = { userId: user, type: "mention", data: { x: 1 } };
      const cases = [
        ["no key", {}],
        ["wrong key", { token: "wrong" }],
        ["key with an extra character", { token: `${server.apiKey}x` }],
        ["a user's JWT", { token: userToken(server.secret, user) }],
        ["key without Bearer", { headers: { authorization: server.apiKey } }],
      ];
      for (const [what, options] of cases) {
        assertHttpError(await http(server, "POST", "/api/notifications", { body, ...options }), 401, "unauthorized", what);
      }
      assert.deepEqual(await list(server, user), [], "nothing was stored");
    });

    test("refuses invalid bodies with 400 invalid and stores nothing", async () => {
      const user = "validated";
      const key = server.apiKey;
      const bad = [
        ["missing userId", { body: { type: "t", data: {} } }],
        ["userId a number", { body: { userId: 7, type: "t", data: {} } }],
        ["userId null", { body: { userId: null, type: "t", data: {} } }],
        ["empty userId", { body: { userId: "", type: "t", data: {} } }],
        ["missing type", { body: { userId: user, data: {} } }],
        ["type null", { body: { userId: user, type: null, data: {} } }],
        ["type a number", { body: { userId: user, type: 5, data: {} } }],
        ["type an object", { body: { userId: user, type: { a: 1 }, data: {} } }],
        ["empty type", { body: { userId: user, type: "", data: {} } }],
        ["type of 65 characters", { body: { userId: user, type: "t".repeat(65), data: {} } }],
        ["type of 65 two-byte characters", { body: { userId: user, type: "é".repeat(65), data: {} } }],
        ["body not JSON", { rawBody: "{ not json", contentType: "application/json" }],
        ["body a JSON array", { rawBody: JSON.stringify([user, "t", {}]), contentType: "application/json" }],
        ["body a JSON string", { rawBody: JSON.stringify("hello"), contentType: "application/json" }],
        ["empty body", { rawBody: "", contentType: "application/json" }],
      ];
      // Every case is tried and every wrong answer reported together.
      const wrong = [];
      for (const [what, options] of bad) {
        const res = await http(server, "POST", "/api/notifications", { token: key, ...options });
        try {
          assertHttpError(res, 400, "invalid", what);
        } catch (err) {
          wrong.push(err.message.split("\n")[0]);
        }
      }
      const stored = await list(server, user);
      if (stored.length > 0) wrong.push(`refused bodies stored notifications: ${JSON.stringify(stored)}`);
      assert.deepEqual(wrong, [], `wrong answers to invalid bodies:\n${wrong.join("\n")}`);
    });

    test("refuses data over 16 KiB of JSON with 413 too_large and stores nothing", async () => {
      const user = "bulky";
      const key = server.apiKey;
      const tooBig = [
        ["16385 bytes of JSON string", "x".repeat(KIB16 - 1)],
        ["8192 two-byte characters (16386 bytes)", "é".repeat(KIB16 / 2)],
        ["an object of 20 KiB", { blob: "y".repeat(20 * 1024) }],
        ["an array of 17 KiB", Array.from({ length: 17 * 1024 / 8 }, () => "abcde")],
      ];
      for (const [what, data] of tooBig) {
        assertHttpError(
          await http(server, "POST", "/api/notifications", { token: key, body: { userId: user, type: "big", data } }),
          413,
          "too_large",
          what,
        );
      }
      // A request body over the API's 64 KiB is too large too.
      assertHttpError(
        await http(server, "POST", "/api/notifications", { token: key, body: { userId: user, type: "big", data: "z".repeat(70 * 1024) } }),
        413,
        "too_large",
        "70 KiB body",
      );
      assert.deepEqual(await list(server, user), [], "nothing was stored");
      // Exactly 16 KiB still fits.
      const fits = await createNotification(server, user, "big", "x".repeat(KIB16 - 2));
      assert.deepEqual(ids(await list(server, user)), [fits.id]);
    });
  });

  describe(`SWITCHBOARD_MAX_NOTIFICATION_BYTES=100 [${store.name}]`, () => {
    let server;
    let db;

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({ database: db.url, env: { SWITCHBOARD_MAX_NOTIFICATION_BYTES: "100" } });
    });
    after(async () => {
      await server?.stop();
      await db?.drop();
    });

    test("data of 100 bytes of JSON passes, 101 is 413 too_large", async () => {
      const user = "small";
      const fits = [
        await createNotification(server, user, "t", "a".repeat(98)),
        await createNotification(server, user, "t", { k: "b".repeat(90) }), // {"k":"…"} = 8 + 90 bytes
      ];
      const cases = [
        ["a 101-byte string", "a".repeat(99)],
        ["a 101-byte object", { k: "b".repeat(93) }],
        ["a 102-byte string of two-byte characters", "é".repeat(50)],
        ["the default limit's 16 KiB", "c".repeat(KIB16 - 2)],
      ];
      for (const [what, data] of cases) {
        assertHttpError(
          await http(server, "POST", "/api/notifications", { token: server.apiKey, body: { userId: user, type: "t", data } }),
          413,
          "too_large",
          what,
        );
      }
      assert.deepEqual(await list(server, user), [...fits].reverse(), "only the two that fit were stored");
    });
  });

  describe(`GET /api/notifications and marking read [${store.name}]`, () => {
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

    test("lists the user's own notifications newest first, with unread, before and limit", async () => {
      const alice = [];
      const bob = [];
      for (let i = 0; i < 7; i += 1) {
        alice.push(await createNotification(server, "l-alice", `type-${i}`, { i }));
        if (i % 2 === 0) bob.push(await createNotification(server, "l-bob", "other", { i }));
      }
      const newestFirst = [...alice].reverse();
      assert.deepEqual(await list(server, "l-alice"), newestFirst, "all of alice's, newest first, none of bob's");
      assert.deepEqual(await list(server, "l-bob"), [...bob].reverse(), "all of bob's, none of alice's");
      assert.deepEqual(await list(server, "l-nobody"), []);

      assert.deepEqual(ids(await list(server, "l-alice", "?limit=3")), ids(newestFirst.slice(0, 3)), "limit=3: the newest three");
      assert.deepEqual(ids(await list(server, "l-alice", "?limit=1")), [alice[6].id], "limit=1");
      assert.deepEqual(
        ids(await list(server, "l-alice", `?before=${alice[4].id}`)),
        ids([alice[3], alice[2], alice[1], alice[0]]),
        "before: strictly older ones",
      );
      assert.deepEqual(
        ids(await list(server, "l-alice", `?before=${alice[4].id}&limit=2`)),
        ids([alice[3], alice[2]]),
        "before and limit",
      );
      assert.deepEqual(await list(server, "l-alice", `?before=${alice[0].id}`), [], "nothing before the first");

      // Paging with before walks everything once, newest first.
      const paged = [];
      let cursor;
      for (let page = 0; page < 10; page += 1) {
        const got = await list(server, "l-alice", `?limit=2${cursor === undefined ? "" : `&before=${cursor}`}`);
        if (got.length === 0) break;
        assert.ok(got.length <= 2);
        paged.push(...got);
        cursor = got[got.length - 1].id;
      }
      assert.deepEqual(paged, newestFirst, "paging with before=<last id>&limit=2");

      assert.deepEqual(await list(server, "l-alice", "?unread=true"), newestFirst, "all unread at first");
    });

    test("POST /api/notifications/{id}/read and /read-all answer 204 and change only the caller's notifications", async () => {
      const alice = [];
      const bob = [];
      for (let i = 0; i < 4; i += 1) {
        alice.push(await createNotification(server, "r-alice", "t", { i }));
        bob.push(await createNotification(server, "r-bob", "t", { i }));
      }
      const aliceToken = userToken(server.secret, "r-alice");

      const marked = await http(server, "POST", `/api/notifications/${alice[1].id}/read`, { token: aliceToken });
      assert.equal(marked.status, 204, marked.text);
      assert.equal(marked.text, "", "204 has no body");
      const all = await list(server, "r-alice");
      assert.deepEqual(
        all.map((n) => [n.id, n.read]),
        [...alice].reverse().map((n) => [n.id, n.id === alice[1].id]),
        "only that one is read",
      );
      assert.deepEqual(ids(await list(server, "r-alice", "?unread=true")), ids([alice[3], alice[2], alice[0]]), "unread=true leaves it out");
      assert.deepEqual(ids(await list(server, "r-alice", `?unread=true&before=${alice[3].id}&limit=1`)), [alice[2].id], "unread with before and limit");

      const again = await http(server, "POST", `/api/notifications/${alice[1].id}/read`, { token: aliceToken });
      assert.equal(again.status, 204, `marking a read notification read again: ${again.status} ${again.text}`);

      // Bob's notifications are not alice's to mark: 404, and they stay unread.
      for (const n of bob) {
        assertHttpError(
          await http(server, "POST", `/api/notifications/${n.id}/read`, { token: aliceToken }),
          404,
          "not_found",
          `alice marking bob's ${n.id}`,
        );
      }
      assertHttpError(await http(server, "POST", "/api/notifications/999999999/read", { token: aliceToken }), 404, "not_found", "no such id");
      assert.deepEqual(await list(server, "r-bob", "?unread=true"), [...bob].reverse(), "bob's are all still unread");

      const readAll = await http(server, "POST", "/api/notifications/read-all", { token: aliceToken });
      assert.equal(readAll.status, 204, readAll.text);
      assert.equal(readAll.text, "", "204 has no body");
      assert.deepEqual(await list(server, "r-alice", "?unread=true"), [], "alice has nothing unread");
      assert.ok((await list(server, "r-alice")).every((n) => n.read === true), "every one of alice's is read");
      assert.deepEqual(await list(server, "r-bob", "?unread=true"), [...bob].reverse(), "read-all by alice left bob's unread");
      assert.ok((await list(server, "r-bob")).every((n) => n.read === false));

      // A notification created after read-all is unread.
      const later = await createNotification(server, "r-alice", "t", { later: true });
      assert.deepEqual(await list(server, "r-alice", "?unread=true"), [later]);

      // Bob marks his own: fine.
      const bobMarks = await http(server, "POST", `/api/notifications/${bob[0].id}/read`, { token: userToken(server.secret, "r-bob") });
      assert.equal(bobMarks.status, 204, bobMarks.text);
      assert.deepEqual(ids(await list(server, "r-bob", "?unread=true")), ids([bob[3], bob[2], bob[1]]));
    });

    test("the user endpoints refuse a missing or bad token with 401", async () => {
      const n = await createNotification(server, "a-alice", "t", {});
      const bad = [
        ["no token", undefined],
        ["garbage", "not-a-jwt"],
        ["the API key", server.apiKey],
        ["another secret", userToken("some-other-secret", "a-alice")],
        ["expired", userToken(server.secret, "a-alice", { ttlSecs: -120 })],
      ];
      for (const [what, token] of bad) {
        for (const [method, path] of [
          ["GET", "/api/notifications"],
          ["POST", `/api/notifications/${n.id}/read`],
          ["POST", "/api/notifications/read-all"],
        ]) {
          assertHttpError(await http(server, method, path, { token }), 401, "unauthorized", `${method} ${path} with ${what}`);
        }
      }
      assert.deepEqual(await list(server, "a-alice", "?unread=true"), [n], "still unread");
    });
  });
}
