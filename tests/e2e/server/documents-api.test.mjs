// The document API of the application's backend (docs/contract.md, "Document API"),
// against documents edited by stock `yjs` + `y-websocket` providers: listing (name,
// size, last update, pages), reading as a Yjs update (it applies into a fresh Y.Doc
// and equals the live doc) and as JSON of the top-level types, deleting (connected
// providers are closed with 4404 and stay away, so the document stays deleted),
// versions kept at compaction (a small SWITCHBOARD_COLLAB_COMPACT_UPDATES) and their
// restore, which reaches connected providers as an ordinary update, whether or not the
// document was open on the node. The API key is required (401), bad names and numbers
// are 400, unknown documents and versions 404. On SQLite and PostgreSQL, then on two
// nodes joined by Redis (a restore and a deletion made through one node reach the
// providers of the other).
//
// Needs PostgreSQL (SWITCHBOARD_TEST_POSTGRES, default postgres://root@127.0.0.1:5432/test)
// and Redis at SWITCHBOARD_TEST_REDIS (default redis://127.0.0.1:6379; never flushed).
//
// Run: SWITCHBOARD_BIN=path/to/switchboard node --test server/documents-api.test.mjs

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import httpClient from "node:http";

import { STORES, createPostgresDatabase, delay, startSwitchboard } from "../lib/server.mjs";
import { QUIET_MS, RFC3339_MILLIS, userToken } from "../lib/switchboard.mjs";
import { metric } from "../lib/notifications.mjs";
import { Peers, Y, converged, docState, until } from "../lib/collab.mjs";

/** Logged updates before a compaction, and versions kept, on every server here. */
const COLLAB_ENV = {
  SWITCHBOARD_COLLAB_COMPACT_UPDATES: "4",
  SWITCHBOARD_COLLAB_VERSIONS_KEPT: "3",
  SWITCHBOARD_COLLAB_UNLOAD_SECS: "1",
};
/** The close code of a deleted document's connections: permanent to y-websocket (4400-4499). */
const DELETED = 4404;

let counter = 0;
/** A workspace (or doc) name no other test of this run uses. */
const fresh = (prefix) => `${prefix}-${process.pid}-${(counter += 1)}`;

/**
 * One request on its own connection: `{ status, type, body (Buffer), json }`. Sends
 * `Authorization: Bearer <key>` with the server's API key unless `key` is given (`null`: none).
 */
function api(server, method, path, { key = server.apiKey } = {}) {
  return new Promise((resolve, reject) => {
    const headers = key === null ? {} : { authorization: `Bearer ${key}` };
    // Host and path apart, not a URL: a URL would resolve `%2E%2E` segments before sending.
    const options = { hostname: "127.0.0.1", port: server.port, path, method, headers, agent: false };
    const req = httpClient.request(options, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const body = Buffer.concat(chunks);
        let json;
        try {
          json = JSON.parse(body.toString("utf8"));
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, type: res.headers["content-type"], body, json });
      });
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${path}: no answer within 10 s`)));
    req.on("error", reject);
    req.end();
  });
}

const enc = encodeURIComponent;
const docPath = (ws, name) => `/api/workspaces/${enc(ws)}/documents/${enc(name)}`;

/** Asserts `{ error: code, message }` with `status`. */
function assertError(res, status, code, context) {
  assert.equal(res.status, status, `${context}: expected ${status}, got ${res.status} ${res.body.toString().slice(0, 200)}`);
  assert.equal(res.json?.error, code, `${context}: ${res.body.toString().slice(0, 200)}`);
  assert.equal(typeof res.json?.message, "string", context);
}

/** `value` with the keys of every object sorted, as `docState` has them. */
function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonical(value[k])]));
  }
  return value;
}

/** The API's JSON of a document in the shape of `docState` (a type with no content is left out). */
function stateOfJson(json) {
  return canonical({ text: json.text ?? "", map: json.map ?? {}, array: json.array ?? [] });
}

/** Whether two document states hold the same content. */
const same = (x, y) => JSON.stringify(canonical(x)) === JSON.stringify(canonical(y));

/** Waits until every peer's document is `expected` (after a restore, say). */
async function reach(list, expected, what) {
  for (const [k, p] of list.entries()) {
    await until(`${what} (client ${k + 1})`, () => same(docState(p.doc), expected), {
      describe: () => docState(p.doc),
    });
  }
}

/** A fresh Y.Doc holding `update`, as `docState` sees it. */
function stateOfUpdate(update) {
  const doc = new Y.Doc();
  Y.applyUpdate(doc, new Uint8Array(update));
  const state = docState(doc);
  doc.destroy();
  return state;
}

/** Edit number `i` of a test document: one transaction, so one update; some edits delete. */
function edit(doc, i) {
  doc.transact(() => {
    const text = doc.getText("text");
    const map = doc.getMap("map");
    const array = doc.getArray("array");
    text.insert(text.length, `<${i}>`);
    map.set(`k${i}`, i);
    array.push([i]);
    if (i % 3 === 2) {
      text.delete(0, 3);
      map.delete(`k${i - 1}`);
      array.delete(0, 1);
    }
  });
}

/** The document's kept versions, newest first (`[]` when it has none or does not exist). */
async function versionsOf(server, ws, name) {
  const res = await api(server, "GET", `${docPath(ws, name)}/versions`);
  return res.status === 200 ? res.json.versions : [];
}

/**
 * Edits `peer.doc` in rounds of 4 updates (one compaction's worth), each round until a new
 * version is kept; returns every state the document went through (JSON strings of `canonical(docState)`).
 */
async function editThroughCompactions(server, ws, name, peer, other, rounds) {
  const states = [JSON.stringify(canonical(docState(peer.doc)))];
  let i = 0;
  for (let round = 0; round < rounds; round += 1) {
    const before = (await versionsOf(server, ws, name))[0]?.version ?? 0;
    for (let k = 0; k < 4; k += 1) {
      edit(peer.doc, (i += 1));
      states.push(JSON.stringify(canonical(docState(peer.doc))));
    }
    await converged([peer.doc, other.doc], { what: `round ${round + 1} reaches the other client` });
    await until(`a version after ${before} is kept`, async () => ((await versionsOf(server, ws, name))[0]?.version ?? 0) > before);
  }
  return states;
}

/** Records the `closed` events (the server closed for good) of a peer's provider. */
function recordClosed(peer) {
  peer.finalCloses = [];
  peer.provider.on("closed", (event) => peer.finalCloses.push(event));
  return peer;
}

for (const store of STORES) {
  describe(`document API [${store.name}]`, () => {
    let server;
    let db;
    const peers = new Peers();

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({ database: db.url, env: COLLAB_ENV });
    });
    afterEach(() => peers.closeAll());
    after(async () => {
      peers.closeAll();
      await server?.stop();
      await db?.drop();
    });

    test("a workspace's documents are listed with size and last update; one reads as an update and as JSON", async () => {
      const ws = fresh("list");
      const startedAt = Date.now();
      const a = await peers.open(server, ws, "notes", { sub: "alice" });
      const b = await peers.open(server, ws, "notes", { sub: "bob" });
      const o = await peers.open(server, ws, "other", { sub: "alice" });
      a.doc.transact(() => {
        a.doc.getText("text").insert(0, "hello");
        a.doc.getMap("map").set("nested", new Y.Map([["n", 1]]));
        a.doc.getMap("map").set("flag", true);
        a.doc.getArray("array").push(["x", 2]);
      });
      o.doc.getText("text").insert(0, "other");
      const live = await converged([a.doc, b.doc], { what: "notes reaches bob" });

      const listed = await api(server, "GET", `/api/workspaces/${enc(ws)}/documents`);
      assert.equal(listed.status, 200, listed.body.toString());
      const docs = listed.json.documents;
      assert.deepEqual(docs.map((d) => d.name), ["notes", "other"]);
      for (const d of docs) {
        assert.deepEqual(Object.keys(d).sort(), ["name", "size", "updatedAt"]);
        assert.ok(Number.isSafeInteger(d.size) && d.size > 0, JSON.stringify(d));
        assert.match(d.updatedAt, RFC3339_MILLIS);
        const at = Date.parse(d.updatedAt);
        assert.ok(at >= startedAt - 1_000 && at <= Date.now() + 1_000, `${d.updatedAt} is about now`);
      }
      const page = await api(server, "GET", `/api/workspaces/${enc(ws)}/documents?limit=1`);
      assert.deepEqual(page.json.documents.map((d) => d.name), ["notes"]);
      const next = await api(server, "GET", `/api/workspaces/${enc(ws)}/documents?limit=1&after=notes`);
      assert.deepEqual(next.json.documents.map((d) => d.name), ["other"]);
      const none = await api(server, "GET", `/api/workspaces/${enc(fresh("empty"))}/documents`);
      assert.deepEqual(none.json, { documents: [] });

      const update = await api(server, "GET", docPath(ws, "notes"));
      assert.equal(update.status, 200);
      assert.equal(update.type, "application/octet-stream");
      assert.deepEqual(stateOfUpdate(update.body), live, "the update applied to a fresh Y.Doc equals the live doc");
      const same = await api(server, "GET", `${docPath(ws, "notes")}?format=update`);
      assert.deepEqual(stateOfUpdate(same.body), live);

      const asJson = await api(server, "GET", `${docPath(ws, "notes")}?format=json`);
      assert.equal(asJson.status, 200);
      assert.match(asJson.type, /^application\/json/);
      assert.deepEqual(asJson.json, {
        text: "hello",
        map: { nested: { n: 1 }, flag: true },
        array: ["x", 2],
      });
    });

    test("versions are kept at compaction, newest first, as many as the setting says", async () => {
      const ws = fresh("versions");
      const a = await peers.open(server, ws, "doc", { sub: "alice" });
      const b = await peers.open(server, ws, "doc", { sub: "bob" });
      const states = await editThroughCompactions(server, ws, "doc", a, b, 4);

      const versions = await versionsOf(server, ws, "doc");
      assert.equal(versions.length, 3, `SWITCHBOARD_COLLAB_VERSIONS_KEPT=3: ${JSON.stringify(versions)}`);
      for (const [k, v] of versions.entries()) {
        assert.deepEqual(Object.keys(v).sort(), ["createdAt", "size", "version"]);
        assert.match(v.createdAt, RFC3339_MILLIS);
        assert.ok(v.size > 0);
        if (k > 0) assert.equal(v.version, versions[k - 1].version - 1, "consecutive, newest first");
        const asJson = await api(server, "GET", `${docPath(ws, "doc")}/versions/${v.version}?format=json`);
        assert.equal(asJson.status, 200);
        const state = stateOfJson(asJson.json);
        assert.ok(states.includes(JSON.stringify(state)), `version ${v.version} is a state the document went through: ${JSON.stringify(state)}`);
        const update = await api(server, "GET", `${docPath(ws, "doc")}/versions/${v.version}`);
        assert.equal(update.type, "application/octet-stream");
        assert.deepEqual(stateOfUpdate(update.body), state, "the version as an update and as JSON agree");
      }
      const dropped = await api(server, "GET", `${docPath(ws, "doc")}/versions/${versions[2].version - 1}`);
      assertError(dropped, 404, "not_found", "a version no longer kept");
    });

    test("a restore reaches connected clients as an ordinary update, and works on a document no node has open", async () => {
      const ws = fresh("restore");
      const a = recordClosed(await peers.open(server, ws, "doc", { sub: "alice" }));
      const b = recordClosed(await peers.open(server, ws, "doc", { sub: "bob" }));
      await editThroughCompactions(server, ws, "doc", a, b, 3);
      edit(a.doc, 100); // something after the last version, restored away too
      await converged([a.doc, b.doc]);

      const versions = await versionsOf(server, ws, "doc");
      const oldest = versions.at(-1);
      const oldestState = stateOfJson((await api(server, "GET", `${docPath(ws, "doc")}/versions/${oldest.version}?format=json`)).json);
      assert.notDeepEqual(docState(a.doc), oldestState, "the version differs from the live doc");

      const restored = await api(server, "POST", `${docPath(ws, "doc")}/versions/${oldest.version}/restore`);
      assert.equal(restored.status, 204, restored.body.toString());
      await reach([a, b], oldestState, "the clients take the restore");
      for (const p of [a, b]) {
        assert.deepEqual(p.closes, [], "no connection was closed");
        assert.deepEqual(p.finalCloses, []);
        assert.equal(p.provider.wsconnected, true);
      }
      const read = await api(server, "GET", `${docPath(ws, "doc")}?format=json`);
      assert.deepEqual(stateOfJson(read.json), oldestState, "the stored document is the version's");
      // Editing goes on as before.
      a.doc.getText("text").insert(0, "after ");
      await converged([a.doc, b.doc], { what: "an edit after the restore" });

      // Nobody has it open any more: the server opens it to restore the newest version.
      peers.closeAll();
      await until("no document is open on the server", async () => (await metric(server, "switchboard_collab_documents")) === 0, {
        timeoutMs: 5_000,
      });
      const newest = versions[0];
      const newestState = stateOfJson((await api(server, "GET", `${docPath(ws, "doc")}/versions/${newest.version}?format=json`)).json);
      const again = await api(server, "POST", `${docPath(ws, "doc")}/versions/${newest.version}/restore`);
      assert.equal(again.status, 204, again.body.toString());
      const late = await peers.open(server, ws, "doc", { sub: "carol" });
      await reach([late], newestState, "a client that joins later has the restored version");
    });

    test("a deleted document is gone: connected clients close with 4404 and do not bring it back", async () => {
      const ws = fresh("delete");
      const a = recordClosed(await peers.open(server, ws, "doc", { sub: "alice" }));
      const b = recordClosed(await peers.open(server, ws, "doc", { sub: "bob" }));
      const kept = await peers.open(server, ws, "kept", { sub: "alice" });
      await editThroughCompactions(server, ws, "doc", a, b, 1);
      kept.doc.getText("text").insert(0, "stays");
      await until("kept is stored", async () => (await api(server, "GET", docPath(ws, "kept"))).status === 200);

      const deleted = await api(server, "DELETE", docPath(ws, "doc"));
      assert.equal(deleted.status, 204, deleted.body.toString());
      for (const [who, p] of [["alice", a], ["bob", b]]) {
        await until(`${who}'s provider is closed for good`, () => p.finalCloses.length > 0, { describe: () => p.closes });
        assert.deepEqual(p.finalCloses, [{ code: DELETED, reason: "document deleted" }]);
        assert.equal(p.provider.shouldConnect, false, "y-websocket does not reconnect after 4404");
      }
      await delay(QUIET_MS * 2);
      assertError(await api(server, "GET", docPath(ws, "doc")), 404, "not_found", "reading it");
      assertError(await api(server, "GET", `${docPath(ws, "doc")}/versions`), 404, "not_found", "its versions");
      assertError(await api(server, "GET", `${docPath(ws, "doc")}/versions/1`), 404, "not_found", "a version of it");
      assertError(await api(server, "DELETE", docPath(ws, "doc")), 404, "not_found", "deleting it again");
      const listed = await api(server, "GET", `/api/workspaces/${enc(ws)}/documents`);
      assert.deepEqual(listed.json.documents.map((d) => d.name), ["kept"]);
      assert.equal(kept.provider.wsconnected, true, "another document's client stays");

      // The name is free: a new client starts an empty document.
      const c = await peers.open(server, ws, "doc", { sub: "carol" });
      assert.deepEqual(docState(c.doc), { text: "", map: {}, array: [] });

      // A document no client has open is deleted straight from the store.
      peers.closeAll();
      await until("no document is open on the server", async () => (await metric(server, "switchboard_collab_documents")) === 0, {
        timeoutMs: 5_000,
      });
      assert.equal((await api(server, "DELETE", docPath(ws, "kept"))).status, 204);
      assertError(await api(server, "GET", docPath(ws, "kept")), 404, "not_found", "kept, deleted");
    });

    test("unknown documents and versions are 404", async () => {
      const ws = fresh("unknown");
      const p = await peers.open(server, ws, "doc", { sub: "alice" });
      p.doc.getText("text").insert(0, "x");
      await until("doc is stored", async () => (await api(server, "GET", docPath(ws, "doc"))).status === 200);
      for (const [method, path] of [
        ["GET", docPath(ws, "nope")],
        ["GET", `${docPath(ws, "nope")}?format=json`],
        ["DELETE", docPath(ws, "nope")],
        ["GET", `${docPath(ws, "nope")}/versions`],
        ["GET", `${docPath(ws, "nope")}/versions/1`],
        ["POST", `${docPath(ws, "nope")}/versions/1/restore`],
        ["GET", `${docPath(ws, "doc")}/versions/99`],
        ["POST", `${docPath(ws, "doc")}/versions/99/restore`],
        ["GET", docPath(fresh("other-ws"), "doc")],
      ]) {
        assertError(await api(server, method, path), 404, "not_found", `${method} ${path}`);
      }
      const versions = await api(server, "GET", `${docPath(ws, "doc")}/versions`);
      assert.deepEqual(versions.json, { versions: [] }, "a document before its first compaction has no versions");
    });

    test("the API key is required: none, a wrong one or a user token is 401", async () => {
      const ws = fresh("auth");
      const userJwt = userToken(server.secret, "alice", { workspaces: [ws] });
      for (const [method, path] of [
        ["GET", `/api/workspaces/${enc(ws)}/documents`],
        ["GET", docPath(ws, "doc")],
        ["DELETE", docPath(ws, "doc")],
        ["GET", `${docPath(ws, "doc")}/versions`],
        ["GET", `${docPath(ws, "doc")}/versions/1`],
        ["POST", `${docPath(ws, "doc")}/versions/1/restore`],
      ]) {
        for (const [what, key] of [["no key", null], ["a wrong key", `${server.apiKey}x`], ["a user token", userJwt]]) {
          assertError(await api(server, method, path, { key }), 401, "unauthorized", `${method} ${path} with ${what}`);
        }
      }
    });

    test("bad workspace ids, document names, versions and parameters are 400", async () => {
      const ws = fresh("bad");
      for (const [method, path] of [
        ["GET", "/api/workspaces/%2E%2E/documents"],
        ["GET", `/api/workspaces/${enc(ws)}/documents/%2E%2E`],
        ["GET", `/api/workspaces/${enc(ws)}/documents/%2E`],
        ["GET", `/api/workspaces/${enc(ws)}/documents/a%2Fb`],
        ["DELETE", `/api/workspaces/${enc(ws)}/documents/a%5Cb`],
        ["GET", `/api/workspaces/a%2Fb/documents/doc`],
        ["GET", `/api/workspaces/${enc(ws)}/documents/${"n".repeat(200)}`],
        ["GET", `/api/workspaces/${enc(ws)}/documents/a%00b`],
        ["GET", `${docPath(ws, "doc")}/versions/abc`],
        ["GET", `${docPath(ws, "doc")}/versions/0`],
        ["POST", `${docPath(ws, "doc")}/versions/-1/restore`],
        ["GET", `${docPath(ws, "doc")}?format=xml`],
        ["GET", `/api/workspaces/${enc(ws)}/documents?limit=0`],
        ["GET", `/api/workspaces/${enc(ws)}/documents?limit=many`],
      ]) {
        assertError(await api(server, method, path), 400, "invalid", `${method} ${path}`);
      }
    });
  });
}

describe("document API on two nodes joined by Redis [postgres]", () => {
  const SHARED_REDIS = process.env.SWITCHBOARD_TEST_REDIS || "redis://127.0.0.1:6379";
  const secret = `jwt-secret-${randomBytes(12).toString("hex")}`;
  const apiKey = `api-key-${randomBytes(12).toString("hex")}`;
  const prefix = `e2e-docs-${process.pid}-${randomBytes(4).toString("hex")}:`;
  let db;
  const nodes = [];
  const peers = new Peers();

  before(async () => {
    db = createPostgresDatabase();
    const env = { ...COLLAB_ENV, SWITCHBOARD_BROKER: SHARED_REDIS, SWITCHBOARD_REDIS_PREFIX: prefix };
    for (let i = 0; i < 2; i += 1) {
      nodes.push(await startSwitchboard({ database: db.url, secret, apiKey, env }));
    }
  });
  afterEach(() => peers.closeAll());
  after(async () => {
    peers.closeAll();
    await Promise.all(nodes.map((n) => n.stop()));
    await db?.drop();
  });

  test("a restore and a deletion made through one node reach the clients of the other", async () => {
    const [n1, n2] = nodes;
    const ws = fresh("two-nodes");
    const a = recordClosed(await peers.open(n2, ws, "doc", { sub: "alice" }));
    const b = recordClosed(await peers.open(n2, ws, "doc", { sub: "bob" }));
    await editThroughCompactions(n2, ws, "doc", a, b, 2);
    edit(a.doc, 100);
    await converged([a.doc, b.doc]);

    const versions = await versionsOf(n1, ws, "doc");
    const oldest = versions.at(-1);
    const expected = stateOfJson((await api(n1, "GET", `${docPath(ws, "doc")}/versions/${oldest.version}?format=json`)).json);
    assert.notDeepEqual(docState(a.doc), expected);
    const restored = await api(n1, "POST", `${docPath(ws, "doc")}/versions/${oldest.version}/restore`);
    assert.equal(restored.status, 204, restored.body.toString());
    await reach([a, b], expected, "the other node's clients take the restore");
    assert.deepEqual(a.closes, []);

    // Once node 1 has unloaded the document it opened for the restore, delete through it.
    await until("node 1 unloads the document", async () => (await metric(n1, "switchboard_collab_documents")) === 0, {
      timeoutMs: 5_000,
    });
    const deleted = await api(n1, "DELETE", docPath(ws, "doc"));
    assert.equal(deleted.status, 204, deleted.body.toString());
    for (const p of [a, b]) {
      await until("the other node's client is closed for good", () => p.finalCloses.length > 0, { describe: () => p.closes });
      assert.deepEqual(p.finalCloses, [{ code: DELETED, reason: "document deleted" }]);
    }
    await delay(QUIET_MS * 2);
    assertError(await api(n2, "GET", docPath(ws, "doc")), 404, "not_found", "read through the other node");
  });
});
