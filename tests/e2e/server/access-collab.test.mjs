// Access on collaborative-editing connections (DESIGN.md §8), with the stock
// `yjs` + `y-websocket` clients: a viewer (by the token claim's object form, or
// by a membership row `PUT .../members/U { role: "viewer" }`) receives the
// document and the others' awareness, shows its own awareness, but its edits
// reach neither the other clients nor the stored document, and its connection
// stays; a role change to viewer makes a live connection read-only;
// `DELETE .../members/U` closes that user's connections to the workspace's
// documents with 1008 within 1 s (and only those); a connection closes with
// 1008 at its token's `exp`.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard node --test server/access-collab.test.mjs

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";

import { createSqliteDatabase, delay, startSwitchboard } from "../lib/server.mjs";
import { QUIET_MS, http, userToken } from "../lib/switchboard.mjs";
import { metric } from "../lib/notifications.mjs";
import { Peers, collabUrl, converged, until, upgradeStatus } from "../lib/collab.mjs";

const SECRET = `jwt-secret-${randomBytes(12).toString("hex")}`;
const API_KEY = `api-key-${randomBytes(12).toString("hex")}`;

let counter = 0;
const fresh = (prefix) => `${prefix}-${process.pid}-${(counter += 1)}`;

const putMember = (server, workspace, user, body) =>
  http(server, "PUT", `/api/workspaces/${workspace}/members/${user}`, { token: API_KEY, body });
const deleteMember = (server, workspace, user) =>
  http(server, "DELETE", `/api/workspaces/${workspace}/members/${user}`, { token: API_KEY });

const textOf = (peer) => peer.doc.getText("text").toString();

function insertText(peer, index, content) {
  peer.doc.getText("text").insert(index, content);
}

async function textIs(peer, expected, what) {
  await until(what ?? `text becomes ${JSON.stringify(expected)}`, () => textOf(peer) === expected, {
    describe: () => textOf(peer),
  });
}

/** Asserts the server closed none of these connections and they are still connected. */
function assertStillConnected(peer, context) {
  assert.deepEqual(peer.closes, [], `${context}: the connection was closed (codes ${JSON.stringify(peer.closes)})`);
  assert.equal(peer.provider.wsconnected, true, `${context}: no longer connected`);
}

/** Records when and with which code each server-side close of `peer` happened. */
function recordCloses(peer) {
  const seen = [];
  peer.provider.on("connection-close", (event) => {
    if (event !== null) seen.push({ code: event.code, at: performance.now(), wall: Date.now() });
  });
  return seen;
}

/**
 * The viewer's part, the same for a viewer by claim and by membership row:
 * `member` and `viewer` are synced providers of one document.
 */
async function viewerReadsButDoesNotWrite(member, viewer, context) {
  insertText(member, 0, "from the member");
  await textIs(viewer, "from the member", `${context}: the viewer receives the member's edit`);

  // Awareness both ways.
  member.provider.awareness.setLocalState({ user: { name: "member" } });
  viewer.provider.awareness.setLocalState({ user: { name: "viewer" } });
  await until(`${context}: the viewer sees the member's awareness`, () => viewer.provider.awareness.getStates().get(member.doc.clientID)?.user?.name === "member", { timeoutMs: 3_000 });
  await until(`${context}: the member sees the viewer's awareness`, () => member.provider.awareness.getStates().get(viewer.doc.clientID)?.user?.name === "viewer", { timeoutMs: 3_000 });

  // The viewer edits; then the member edits after it. Once the member's second
  // edit reached the viewer, the viewer's would have reached the member.
  const dropped = (await metric(member.server, 'switchboard_collab_updates_dropped_total')) ?? 0;
  insertText(viewer, 0, "VIEWER WAS HERE ");
  viewer.doc.getMap("map").set("viewer", true);
  await delay(QUIET_MS);
  insertText(member, textOf(member).length, " and more");
  await until(`${context}: the viewer receives the member's second edit`, () => textOf(viewer).endsWith(" and more"), { describe: () => textOf(viewer) });
  await delay(QUIET_MS);
  assert.equal(textOf(member), "from the member and more", `${context}: the viewer's edit must not reach the member`);
  assert.equal(member.doc.getMap("map").get("viewer"), undefined, `${context}: nor its map entry`);
  await until(`${context}: the dropped updates are counted`, async () => ((await metric(member.server, "switchboard_collab_updates_dropped_total")) ?? 0) > dropped, { timeoutMs: 3_000 });

  assertStillConnected(viewer, `${context}: viewer`);
  assertStillConnected(member, `${context}: member`);
}

describe("access on collab connections [sqlite]", () => {
  let server;
  let db;
  const peers = new Peers();

  /** A synced stock provider; `server` is kept on the peer for metrics. */
  async function open(workspace, docName, options) {
    const peer = await peers.open(server, workspace, docName, options);
    peer.server = server;
    return peer;
  }

  before(async () => {
    db = createSqliteDatabase();
    server = await startSwitchboard({ database: db.url, secret: SECRET, apiKey: API_KEY });
  });
  afterEach(() => peers.closeAll());
  after(async () => {
    peers.closeAll();
    await server?.stop();
    await db?.drop();
  });

  test("a viewer by token claim (object form) receives edits and awareness; its edits reach no one and are not stored", async () => {
    const ws = fresh("claim");
    const doc = fresh("doc");
    const alice = await open(ws, doc, { sub: "alice", workspaces: [ws] });
    const vera = await open(ws, doc, { sub: "vera", workspaces: { [ws]: "viewer" } });
    await viewerReadsButDoesNotWrite(alice, vera, "viewer by claim");

    // The stored document has none of it: after a restart on the same database.
    peers.closeAll();
    await server.stop();
    server = await startSwitchboard({ database: db.url, secret: SECRET, apiKey: API_KEY });
    const late = await open(ws, doc, { sub: "carol", workspaces: [ws] });
    assert.equal(textOf(late), "from the member and more", "the stored document after a restart");
    assert.equal(late.doc.getMap("map").get("viewer"), undefined, "no map entry of the viewer's stored");
  });

  test("a viewer by membership row receives edits and awareness; its edits reach no one, not even a late joiner", async () => {
    const ws = fresh("row");
    const doc = fresh("doc");
    const put = await putMember(server, ws, "vic", { role: "viewer" });
    assert.equal(put.status, 204, `PUT member: ${put.status} ${put.text}`);
    const alice = await open(ws, doc, { sub: "alice", workspaces: [ws] });
    const vic = await open(ws, doc, { token: userToken(SECRET, "vic") });
    await viewerReadsButDoesNotWrite(alice, vic, "viewer by membership");

    const late = await open(ws, doc, { sub: "carol", workspaces: [ws] });
    assert.equal(textOf(late), "from the member and more", "a late joiner gets the document without the viewer's edits");
    assertStillConnected(vic, "viewer after the late joiner");
  });

  test("a role change to viewer makes a live connection read-only without closing it", async () => {
    const ws = fresh("demote");
    const doc = fresh("doc");
    assert.equal((await putMember(server, ws, "mel", { role: "member" })).status, 204);
    const alice = await open(ws, doc, { sub: "alice", workspaces: [ws] });
    const mel = await open(ws, doc, { token: userToken(SECRET, "mel") });
    insertText(mel, 0, "mel writes");
    await textIs(alice, "mel writes", "a member's edit reaches alice");

    assert.equal((await putMember(server, ws, "mel", { role: "viewer" })).status, 204);
    await delay(1_000); // the change reaches live connections within 1 s
    mel.doc.getMap("map").set("demoted", "still writing");
    await delay(QUIET_MS);
    insertText(alice, textOf(alice).length, "; alice writes");
    await textIs(mel, "mel writes; alice writes", "mel still receives");
    await delay(QUIET_MS);
    assert.equal(alice.doc.getMap("map").get("demoted"), undefined, "a demoted user's edit must not reach alice");
    assertStillConnected(mel, "demoted");
  });

  test("DELETE of a membership closes that user's collab connections to the workspace with 1008 within 1 s, and only those", async () => {
    const ws = fresh("revoke");
    const other = fresh("other");
    for (const w of [ws, other]) assert.equal((await putMember(server, w, "rob", undefined)).status, 204);
    const docs = [fresh("doc"), fresh("doc")];
    const robs = [];
    for (const d of docs) robs.push(await open(ws, d, { token: userToken(SECRET, "rob") }));
    const robElsewhere = await open(other, fresh("doc"), { token: userToken(SECRET, "rob") });
    const alice = await open(ws, docs[0], { sub: "alice", workspaces: [ws] });
    const closes = robs.map(recordCloses);

    const startedAt = performance.now();
    const res = await deleteMember(server, ws, "rob");
    assert.equal(res.status, 204, `DELETE member: ${res.status} ${res.text}`);
    await until("both of rob's connections to the workspace close", () => closes.every((c) => c.length > 0), { timeoutMs: 2_000, describe: () => closes });
    for (const peer of robs) peer.provider.disconnect(); // no reconnecting meanwhile
    for (const [i, seen] of closes.entries()) {
      assert.equal(seen[0].code, 1008, `rob's connection ${i + 1}: close code`);
      const after = seen[0].at - startedAt;
      assert.ok(after < 1_000, `rob's connection ${i + 1} closed ${Math.round(after)} ms after the DELETE was sent`);
    }

    // A new connection is refused; the other workspace and the other user are untouched.
    const status = await upgradeStatus(collabUrl(server, ws, docs[0], userToken(SECRET, "rob")));
    assert.equal(status, 403, "rob's new connection to the workspace");
    await delay(QUIET_MS);
    assertStillConnected(robElsewhere, "rob in another workspace");
    assertStillConnected(alice, "alice");
    insertText(robElsewhere, 0, "still here");
    const watcher = await open(other, robElsewhere.provider.roomname, { sub: "walt", workspaces: [other] });
    await converged([robElsewhere.doc, watcher.doc]);
    assert.equal(textOf(watcher), "still here");
  });

  test("a collab connection closes with 1008 at its token's exp", async () => {
    const ws = fresh("exp");
    const doc = fresh("doc");
    const exp = Math.floor(Date.now() / 1000) + 3;
    const token = userToken(SECRET, "eve", { workspaces: [ws], claims: { exp } });
    const eve = await open(ws, doc, { token });
    const closes = recordCloses(eve);
    await until("the connection closes", () => closes.length > 0, { timeoutMs: 5_000 });
    eve.provider.disconnect();
    assert.equal(closes[0].code, 1008, "close code at exp");
    const late = closes[0].wall - exp * 1000;
    assert.ok(late >= -50 && late < 1_000, `closed ${late} ms after exp (expected at exp)`);
    const status = await upgradeStatus(collabUrl(server, ws, doc, token));
    assert.equal(status, 401, "the expired token is refused");
  });
});
