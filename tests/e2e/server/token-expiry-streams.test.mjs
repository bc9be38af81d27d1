// Notification streams live no longer than their token (DESIGN.md §8): an SSE
// stream (`GET /api/notifications/stream`) finishes at the token's `exp` (the
// HTTP response ends cleanly; EventSource then reconnects and must present a
// fresh token), and a held long-poll answers at `min(timeout, exp)` with an
// empty list when nothing came.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard node --test server/token-expiry-streams.test.mjs

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import httpClient from "node:http";

import { createSqliteDatabase, startSwitchboard } from "../lib/server.mjs";
import { userToken } from "../lib/switchboard.mjs";
import { CONNECTED_FRAME, poll, streamUrl } from "../lib/notifications.mjs";

const nowSecs = () => Math.floor(Date.now() / 1000);

/**
 * Opens a raw SSE stream and resolves, once the response is over, with
 * `{ status, body, complete, endedAt }`: `complete` is true when the whole
 * response arrived (a clean end, not a dropped connection), `endedAt` the
 * wall-clock time in ms.
 */
function streamUntilEnd(url, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = httpClient.get(url, { headers: { accept: "text/event-stream" }, agent: false });
    const timer = setTimeout(() => req.destroy(new Error(`the stream did not end within ${timeoutMs} ms`)), timeoutMs);
    req.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.once("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => {
        body += chunk;
      });
      res.once("end", () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode, body, complete: res.complete, endedAt: Date.now() });
      });
      res.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  });
}

describe("notification streams end with their token [sqlite]", () => {
  let server;
  let db;

  before(async () => {
    db = createSqliteDatabase();
    server = await startSwitchboard({ database: db.url });
  });
  after(async () => {
    await server?.stop();
    await db?.drop();
  });

  test("an SSE stream whose token expires in 3 s ends at exp", async () => {
    const exp = nowSecs() + 3;
    const token = userToken(server.secret, "sse-exp", { claims: { exp } });
    const result = await streamUntilEnd(streamUrl(server, { token }), 8_000);
    assert.equal(result.status, 200);
    assert.ok(result.body.startsWith(CONNECTED_FRAME), `the stream began: ${JSON.stringify(result.body.slice(0, 200))}`);
    assert.equal(result.complete, true, "the response ended cleanly");
    const late = result.endedAt - exp * 1000;
    assert.ok(late >= -50 && late < 1_000, `ended ${late} ms after exp (expected at exp)`);

    // Reconnecting with the same token is refused; a fresh one is welcome.
    const again = await new Promise((resolve, reject) => {
      httpClient.get(streamUrl(server, { token }), { agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode);
      }).once("error", reject);
    });
    assert.equal(again, 401, "the expired token");
  });

  test("a poll with timeout 30 and a token expiring in 2 s answers at exp with an empty list", async () => {
    const exp = nowSecs() + 2;
    const token = userToken(server.secret, "poll-exp", { claims: { exp } });
    const res = await poll(server, token, { timeout: 30 });
    const answeredAt = Date.now();
    assert.equal(res.status, 200, `${res.status} ${res.text.slice(0, 300)}`);
    assert.deepEqual(res.json, { notifications: [], lastId: 0 });
    const late = answeredAt - exp * 1000;
    assert.ok(late >= -50 && late < 1_000, `answered ${late} ms after exp (after ${Math.round(res.elapsed)} ms; expected at exp)`);
    assert.ok(res.elapsed < 3_000, `held ${Math.round(res.elapsed)} ms`);
  });
});
