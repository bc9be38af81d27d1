// Collaborative editing (DESIGN.md section 5) with the stock npm `yjs` + `y-websocket`
// clients (BroadcastChannel off, so providers in this process meet only through the
// server) and raw `ws` clients for exact frames: convergence of concurrent and offline
// edits, late joiners, awareness and its removal when a connection ends, isolation of
// documents, the upgrade refusals (401/403/400/429), the close codes of bad input
// (1003/1007/1008/1009), and persistence (restart, SIGKILL, compaction, unload).
// Runs against SQLite and PostgreSQL (awareness and the client limit, which touch no
// store, against SQLite only).
//
// Run: SWITCHBOARD_BIN=path/to/switchboard node --test server/collab.test.mjs

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { STORES, delay, startSwitchboard } from "../lib/server.mjs";
import { QUIET_MS, algNoneToken, expiredToken, forgedToken, http, userToken } from "../lib/switchboard.mjs";
import { metric } from "../lib/notifications.mjs";
import {
  AWARENESS_REMOVAL_MS,
  MESSAGE_AWARENESS,
  Peers,
  QUERY_AWARENESS_MESSAGE,
  Y,
  assertStillConnected,
  awarenessMessage,
  collabBase,
  collabUrl,
  converged,
  docState,
  makeUpdate,
  spawnPeer,
  synced,
  textIs,
  until,
  updateMessage,
  upgradeStatus,
} from "../lib/collab.mjs";

let counter = 0;
/** A workspace (or doc) name no other test of this run uses. */
const fresh = (prefix) => `${prefix}-${process.pid}-${(counter += 1)}`;

/** Sets the text of `doc` to `content` in one transaction (replacing what was there). */
function setText(doc, content) {
  doc.transact(() => {
    const text = doc.getText("text");
    text.delete(0, text.length);
    text.insert(0, content);
  });
}


for (const store of STORES) {
  describe(`collaborative editing [${store.name}]`, () => {
    let server;
    let db;
    const peers = new Peers();

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({ database: db.url });
    });
    afterEach(() => peers.closeAll());
    after(async () => {
      peers.closeAll();
      await server?.stop();
      await db?.drop();
    });

    test("concurrent edits to Y.Text, Y.Map and Y.Array from three clients converge", async () => {
      const ws = fresh("concurrent");
      const a = await peers.open(server, ws, "doc", { sub: "alice" });
      const b = await peers.open(server, ws, "doc", { sub: "bob" });
      const c = await peers.open(server, ws, "doc", { sub: "carol" });
      const all = [a, b, c];
      const names = ["a", "b", "c"];
      const rounds = 20;
      // Every client edits without waiting for the others: the edits are truly concurrent.
      for (let i = 0; i < rounds; i += 1) {
        for (const [k, p] of all.entries()) {
          const who = `${names[k]}${i}`;
          p.doc.transact(() => {
            const text = p.doc.getText("text");
            text.insert(i % 2 === 0 ? 0 : text.length, `<${who}>`);
            const map = p.doc.getMap("map");
            map.set(`${names[k]}-${i}`, i);
            map.set("conflict", who);
            p.doc.getArray("array").push([who]);
          });
        }
      }
      // Nested shared types, one per client.
      for (const [k, p] of all.entries()) {
        const nested = new Y.Map();
        p.doc.getMap("map").set(`nested-${names[k]}`, nested);
        nested.set("list", Y.Array.from([1, 2, 3]));
        nested.set("owner", names[k]);
      }
      const state = await converged(all.map((p) => p.doc), { what: "three concurrently edited docs converge" });

      const tokens = all.flatMap((_, k) => Array.from({ length: rounds }, (_, i) => `${names[k]}${i}`));
      assert.deepEqual([...state.array].sort(), [...tokens].sort(), "every array push is there once");
      for (const t of tokens) assert.ok(state.text.includes(`<${t}>`), `text contains <${t}>: ${state.text.slice(0, 200)}`);
      assert.equal(state.text.length, tokens.reduce((n, t) => n + t.length + 2, 0), "text has exactly the inserted characters");
      for (const [k] of all.entries()) {
        for (let i = 0; i < rounds; i += 1) assert.equal(state.map[`${names[k]}-${i}`], i);
        assert.deepEqual(state.map[`nested-${names[k]}`], { list: [1, 2, 3], owner: names[k] });
      }
      assert.ok(tokens.includes(state.map.conflict), `the conflicting key resolved to one of the written values: ${state.map.conflict}`);

      // Deletions converge too.
      a.doc.getText("text").delete(0, 10);
      b.doc.getArray("array").delete(0, 5);
      c.doc.getMap("map").delete("conflict");
      const afterDelete = await converged(all.map((p) => p.doc), { what: "deletions converge" });
      assert.equal(afterDelete.text.length, state.text.length - 10);
      assert.equal(afterDelete.array.length, state.array.length - 5);
      assert.equal("conflict" in afterDelete.map, false);

      // The server holds the same state: a fresh client gets it at sync.
      const d = await peers.open(server, ws, "doc", { sub: "dave" });
      assert.deepEqual(docState(d.doc), afterDelete, "a fresh client's doc right after sync");
    });

    test("a late joiner gets the full state (text with formatting and deletions, map, array, nested types) at sync", async () => {
      const ws = fresh("late");
      const a = await peers.open(server, ws, "notes", { sub: "alice" });
      const observer = await peers.open(server, ws, "notes", { sub: "bob" });
      const text = a.doc.getText("text");
      text.insert(0, "Hello world, this is a shared note.");
      text.format(0, 5, { bold: true });
      text.delete(5, 6); // " world"
      text.insert(text.length, " Appended.");
      for (let i = 0; i < 50; i += 1) a.doc.getArray("array").push([{ i, label: `item ${i}` }]);
      a.doc.getArray("array").delete(10, 20);
      const map = a.doc.getMap("map");
      map.set("title", "Notes");
      map.set("tags", ["x", "y"]);
      const sub = new Y.Text("nested text");
      map.set("body", sub);
      map.set("gone", 1);
      map.delete("gone");
      const expected = docState(a.doc);
      const expectedDelta = text.toDelta();
      // Once the observer has everything, the server has everything.
      await converged([a.doc, observer.doc], { what: "the observer has alice's edits" });

      const late = await peers.open(server, ws, "notes", { sub: "carol" });
      assert.deepEqual(docState(late.doc), expected, "the late joiner's doc right after sync");
      assert.deepEqual(late.doc.getText("text").toDelta(), expectedDelta, "formatting attributes too");
      assert.equal(late.doc.getMap("map").get("body").toString(), "nested text");
      assert.equal(late.doc.getArray("array").length, 30);

      // Still true once every client has left (within the unload delay, so the document is still loaded).
      peers.closeAll();
      const later = await peers.open(server, ws, "notes", { sub: "dave" });
      assert.deepEqual(docState(later.doc), expected, "a client joining after everyone left");
    });

    test("edits made offline merge after reconnecting", async () => {
      const ws = fresh("offline");
      const a = await peers.open(server, ws, "doc", { sub: "alice" });
      const b = await peers.open(server, ws, "doc", { sub: "bob" });
      setText(a.doc, "hello");
      await textIs(b, "hello");

      a.provider.disconnect();
      await until("alice's provider is disconnected", () => !a.provider.wsconnected && a.provider.ws === null);
      // Alice edits offline; bob edits online at the same time.
      a.doc.getText("text").insert(5, " from-a");
      a.doc.getMap("map").set("a", 1);
      a.doc.getArray("array").push(["a"]);
      b.doc.transact(() => {
        const t = b.doc.getText("text");
        t.delete(0, 1);
        t.insert(0, "b-J");
      });
      b.doc.getMap("map").set("b", 2);
      b.doc.getArray("array").push(["b"]);
      // A third client sees bob's edits and not alice's: the server does not have them yet.
      const c = await peers.open(server, ws, "doc", { sub: "carol" });
      await textIs(c, "b-Jello", "carol sees bob's online edit");
      assert.deepEqual(docState(c.doc).map, { b: 2 });

      a.provider.connect();
      await synced(a);
      const merged = await converged([a.doc, b.doc, c.doc], { what: "alice's offline edits merge" });
      assert.equal(merged.text, "b-Jello from-a");
      assert.deepEqual(merged.map, { a: 1, b: 2 });
      assert.deepEqual([...merged.array].sort(), ["a", "b"]);

      // Both sides offline at once, conflicting edits on both, then both reconnect.
      a.provider.disconnect();
      b.provider.disconnect();
      await until("both providers are disconnected", () => !a.provider.wsconnected && !b.provider.wsconnected);
      a.doc.getText("text").insert(0, "[A]");
      a.doc.getMap("map").set("both", "from-a");
      b.doc.getText("text").insert(b.doc.getText("text").length, "[B]");
      b.doc.getMap("map").set("both", "from-b");
      b.doc.getArray("array").delete(0, 1);
      a.provider.connect();
      b.provider.connect();
      const again = await converged([a.doc, b.doc, c.doc], { what: "two offline sides merge" });
      assert.equal(again.text, "[A]b-Jello from-a[B]");
      assert.ok(["from-a", "from-b"].includes(again.map.both), `map conflict resolved to one value: ${again.map.both}`);
      assert.equal(again.array.length, 1);
    });

    test("the same doc name in two workspaces, and two doc names in one workspace, do not mix", async () => {
      const p = fresh("iso");
      // Also two (workspace, doc) pairs whose plain concatenation is the same string.
      const pairs = [
        [`${p}-w1`, "shared"],
        [`${p}-w2`, "shared"],
        [`${p}-w1`, "other"],
        [`${p}-a`, "bc"],
        [`${p}-ab`, "c"],
      ];
      const workspaces = [...new Set(pairs.map(([w]) => w))];
      const writers = [];
      const readers = [];
      for (const [w, d] of pairs) {
        writers.push(await peers.open(server, w, d, { sub: "alice", workspaces }));
        readers.push(await peers.open(server, w, d, { sub: "bob", workspaces }));
      }
      for (const [i, [w, d]] of pairs.entries()) {
        setText(writers[i].doc, `content of ${w}/${d}`);
        writers[i].doc.getMap("map").set("key", i);
        writers[i].doc.getArray("array").push([i]);
      }
      for (const [i, [w, d]] of pairs.entries()) await textIs(readers[i], `content of ${w}/${d}`, `reader of ${w}/${d}`);
      await delay(QUIET_MS);
      for (const [i, [w, d]] of pairs.entries()) {
        const expected = { text: `content of ${w}/${d}`, map: { key: i }, array: [i] };
        assert.deepEqual(docState(readers[i].doc), expected, `reader of ${w}/${d} got only its own document`);
        assert.deepEqual(docState(writers[i].doc), expected, `writer of ${w}/${d} got nothing from the others`);
      }
      // A fresh client of each gets only that document's state.
      for (const [i, [w, d]] of pairs.entries()) {
        const late = await peers.open(server, w, d, { sub: "carol", workspaces });
        assert.deepEqual(docState(late.doc), { text: `content of ${w}/${d}`, map: { key: i }, array: [i] }, `late joiner of ${w}/${d}`);
      }
    });

    test("the upgrade is refused with 401 for a missing, empty, forged, expired or alg:none token", async () => {
      const ws = fresh("auth");
      const cases = [
        ["no token", null],
        ["an empty token", ""],
        ["a token that is not a JWT", "not-a-jwt"],
        ["a forged token (wrong secret)", forgedToken("mallory", { workspaces: [ws] })],
        ["an expired token", expiredToken(server.secret, "alice", { workspaces: [ws] })],
        ["an alg:none token", algNoneToken("alice", { workspaces: [ws] })],
        ["a token without sub", userToken(server.secret, "alice", { workspaces: [ws], claims: { sub: undefined } })],
      ];
      const got = {};
      for (const [what, token] of cases) got[what] = await upgradeStatus(collabUrl(server, ws, "doc", token));
      assert.deepEqual(got, Object.fromEntries(cases.map(([what]) => [what, 401])));
      // A good token opens, and its client syncs.
      assert.equal(await upgradeStatus(collabUrl(server, ws, "doc", userToken(server.secret, "alice", { workspaces: [ws] }))), 101);
      await peers.open(server, ws, "doc");
    });

    test("the upgrade is refused with 403 without access; a membership row opens it, removing it closes it again", async () => {
      const ws = fresh("members");
      const user = "erin";
      const noClaim = userToken(server.secret, user);
      const otherClaim = userToken(server.secret, user, { workspaces: [`${ws}-other`] });
      assert.deepEqual(
        {
          noClaim: await upgradeStatus(collabUrl(server, ws, "doc", noClaim)),
          otherClaim: await upgradeStatus(collabUrl(server, ws, "doc", otherClaim)),
        },
        { noClaim: 403, otherClaim: 403 },
        "a valid token without access to the workspace",
      );

      const put = await http(server, "PUT", `/api/workspaces/${ws}/members/${user}`, { token: server.apiKey });
      assert.equal(put.status, 204, put.text);
      assert.equal(await upgradeStatus(collabUrl(server, ws, "doc", noClaim)), 101, "member by membership row");
      const member = await peers.open(server, ws, "doc", { token: noClaim });
      setText(member.doc, "written by a member");
      const check = await peers.open(server, ws, "doc", { sub: "frank" });
      await textIs(check, "written by a member");

      const del = await http(server, "DELETE", `/api/workspaces/${ws}/members/${user}`, { token: server.apiKey });
      assert.equal(del.status, 204, del.text);
      assert.equal(await upgradeStatus(collabUrl(server, ws, "doc", noClaim)), 403, "after the membership is removed");
      // Another user never gained access through erin's membership.
      assert.equal(await upgradeStatus(collabUrl(server, ws, "doc", userToken(server.secret, "gina"))), 403);
    });

    test("the upgrade is refused with 400 for an empty doc name", async () => {
      const ws = fresh("empty-name");
      const token = userToken(server.secret, "alice", { workspaces: [ws] });
      assert.equal(await upgradeStatus(collabUrl(server, ws, "", token)), 400, `status for ${collabUrl(server, ws, "", null)}`);
    });

    test("the upgrade is refused with 400 for a doc name over 128 characters or with control characters", async () => {
      const ws = fresh("names");
      const token = userToken(server.secret, "alice", { workspaces: [ws] });
      const cases = [
        ["129 characters", "a".repeat(129)],
        ["1000 characters", "b".repeat(1000)],
        ["U+0001", "bad%01name"],
        ["newline", "bad%0Aname"],
        ["NUL", "bad%00name"],
        ["DEL (U+007F)", "bad%7Fname"],
      ];
      const got = {};
      for (const [what, name] of cases) got[what] = await upgradeStatus(collabUrl(server, ws, name, token));
      assert.deepEqual(got, Object.fromEntries(cases.map(([what]) => [what, 400])));
      // 128 characters is still a valid name, and works.
      assert.equal(await upgradeStatus(collabUrl(server, ws, "c".repeat(128), token)), 101, "a 128-character doc name");
      const a = await peers.open(server, ws, "c".repeat(128));
      setText(a.doc, "long name");
      const b = await peers.open(server, ws, "c".repeat(128), { sub: "bob" });
      await textIs(b, "long name");
    });

    test("bad input closes that connection (1003/1007), the others on the document stay connected and unaffected", async () => {
      const ws = fresh("bad");
      const a = await peers.open(server, ws, "doc", { sub: "alice" });
      const b = await peers.open(server, ws, "doc", { sub: "bob" });
      setText(a.doc, "intact");
      await textIs(b, "intact");

      const valid = makeUpdate((d) => d.getText("text").insert(0, "SHOULD-NOT-APPEAR ".repeat(5)));
      const cases = [
        ["a text frame", "hello", 1003],
        ["bytes ff ff ff (truncated varint)", Uint8Array.of(0xff, 0xff, 0xff), 1007],
        ["a sync update whose payload is a truncated Yjs update", updateMessage(valid.subarray(0, Math.floor(valid.length / 2))), 1007],
        ["a sync update whose payload is garbage", updateMessage(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)), 1007],
        ["an unknown message type [9]", Uint8Array.of(9), 1007],
        ["a sync message with an unknown sync type [0, 7, 0]", Uint8Array.of(0, 7, 0), 1007],
        ["a sync message cut after its type [0]", Uint8Array.of(0), 1007],
        ["an awareness message whose payload is cut [1, 5, 1]", Uint8Array.of(1, 5, 1), 1007],
      ];
      const results = {};
      for (const [what, frame] of cases) {
        const raw = await peers.raw(server, ws, "doc");
        raw.send(frame);
        const closed = await raw.closedWithin(3_000).catch((err) => ({ error: err.message }));
        results[what] = closed.code ?? closed.error;
      }
      assert.deepEqual(results, Object.fromEntries(cases.map(([what, , code]) => [what, code])), "close code for each bad input");

      assertStillConnected([a, b], "after the bad input");
      assert.deepEqual(docState(b.doc), { text: "intact", map: {}, array: [] }, "nothing of the bad input reached bob");
      a.doc.getText("text").insert(6, " and working");
      await textIs(b, "intact and working", "an edit after the bad input reaches bob");
      const c = await peers.open(server, ws, "doc", { sub: "carol" });
      assert.deepEqual(docState(c.doc), { text: "intact and working", map: {}, array: [] }, "the server's state after the bad input");
    });

    test("an update that makes yrs fail while applying it closes that connection (1007); the document is rebuilt and goes on", async () => {
      // Found by fuzzing the server's decoder: among these messages is an update that
      // makes yrs index out of bounds while applying it.
      const breaking = Buffer.from(
        "0001370103f188920901040111740b776c65686f206c6f726c602803000002000000020002000002000000656c6c740b0068656c6c6f20776f" +
          "010001380103f18a8792ff04ffffffffffff030032000101e0ff000000010100000501000000017d027601016177016208010161037701787d037800",
        "hex",
      );
      const ws = fresh("breaking");
      const a = await peers.open(server, ws, "doc", { sub: "alice" });
      const b = await peers.open(server, ws, "doc", { sub: "bob" });
      setText(a.doc, "intact");
      await textIs(b, "intact");

      const raw = await peers.raw(server, ws, "doc");
      raw.send(breaking);
      const closed = await raw.closedWithin(3_000).catch((err) => ({ error: err.message }));
      assert.equal(closed.code ?? closed.error, 1007, "the connection that sent it is closed as malformed");

      assertStillConnected([a, b], "after the breaking update");
      a.doc.getText("text").insert(6, " and working");
      await textIs(b, "intact and working", "an edit after the breaking update reaches bob");
      const c = await peers.open(server, ws, "doc", { sub: "carol" });
      assert.equal(c.doc.getText("text").toString(), "intact and working", "a new client gets the document");
      assert.deepEqual(docState(c.doc), docState(b.doc), "the rebuilt document is what the clients hold");
    });

    test("an update over the default 1 MiB limit closes that connection with 1009; one of 900 KB passes", async () => {
      const ws = fresh("big-default");
      const a = await peers.open(server, ws, "doc", { sub: "alice" });
      const raw = await peers.raw(server, ws, "doc");
      raw.send(updateMessage(makeUpdate((d) => d.getText("text").insert(0, "x".repeat(900_000)))));
      await until("alice gets the 900 KB update", () => a.doc.getText("text").length === 900_000, { timeoutMs: 10_000 });
      assert.equal(raw.isOpen, true, `the 900 KB update must not close the connection (${JSON.stringify(raw.closeInfo)})`);

      const raw2 = await peers.raw(server, ws, "doc");
      raw2.send(updateMessage(makeUpdate((d) => d.getArray("array").push(["y".repeat(1_100_000)]))));
      const closed = await raw2.closedWithin(5_000);
      assert.equal(closed.code, 1009, `close code for a 1.1 MB update: ${JSON.stringify(closed)}`);
      await delay(QUIET_MS);
      assert.equal(a.doc.getArray("array").length, 0, "the refused update reached nobody");
      assertStillConnected([a], "after the oversized update");
    });
  });

  describe(`collab limits: SWITCHBOARD_COLLAB_MAX_UPDATE_BYTES=4096, SWITCHBOARD_COLLAB_MAX_DOCUMENT_BYTES=16384 [${store.name}]`, () => {
    let server;
    let db;
    const peers = new Peers();

    before(async () => {
      db = await store.create();
      server = await startSwitchboard({
        database: db.url,
        env: { SWITCHBOARD_COLLAB_MAX_UPDATE_BYTES: "4096", SWITCHBOARD_COLLAB_MAX_DOCUMENT_BYTES: "16384" },
      });
    });
    afterEach(() => peers.closeAll());
    after(async () => {
      peers.closeAll();
      await server?.stop();
      await db?.drop();
    });

    test("an update larger than the max update size closes that connection with 1009; a smaller one passes", async () => {
      const ws = fresh("max-update");
      const a = await peers.open(server, ws, "doc", { sub: "alice" });
      const b = await peers.open(server, ws, "doc", { sub: "bob" });
      const raw = await peers.raw(server, ws, "doc");
      raw.send(updateMessage(makeUpdate((d) => d.getText("text").insert(0, "s".repeat(3_000)))));
      await textIs(b, "s".repeat(3_000), "a 3000-byte update passes");
      assert.equal(raw.isOpen, true, "the connection that sent it stays open");

      raw.send(updateMessage(makeUpdate((d) => d.getArray("array").push(["L".repeat(6_000)]))));
      const closed = await raw.closedWithin(3_000);
      assert.equal(closed.code, 1009, `close code for a 6000-byte update: ${JSON.stringify(closed)}`);
      await delay(QUIET_MS);
      assert.deepEqual(b.doc.getArray("array").toJSON(), [], "the refused update reached nobody");
      assertStillConnected([a, b], "after the oversized update");
      // The same big content from a stock client: its connection is closed with 1009 too, and it reaches nobody.
      a.doc.getArray("array").push(["M".repeat(6_000)]);
      await until("alice's connection is closed with 1009", () => a.closes.length > 0);
      assert.equal(a.closes[0], 1009, `alice's connection closes: ${JSON.stringify(a.closes)}`);
      assertStillConnected([b], "bob after alice's oversized update");
      b.doc.getMap("map").set("still", "working");
      const c = await peers.open(server, ws, "doc", { sub: "carol" });
      await until("carol gets bob's edit", () => c.doc.getMap("map").get("still") === "working");
      await delay(QUIET_MS);
      assert.deepEqual(docState(c.doc), { text: "s".repeat(3_000), map: { still: "working" }, array: [] }, "the server's state");
    });

    test("an update that would push the document over the max document size closes that connection with 1008", async () => {
      const ws = fresh("max-doc");
      const b = await peers.open(server, ws, "doc", { sub: "bob" });
      const raw = await peers.raw(server, ws, "doc");
      const chunk = (i) => makeUpdate((d) => d.getArray("array").push([String(i).repeat(3_500)]));
      for (let i = 1; i <= 4; i += 1) {
        raw.send(updateMessage(chunk(i)));
        await until(`bob gets chunk ${i} (document about ${i * 3.5} KB)`, () => b.doc.getArray("array").length === i);
      }
      assert.equal(raw.isOpen, true, "four chunks (about 14 KB) fit in 16384 bytes");
      raw.send(updateMessage(chunk(5)));
      const closed = await raw.closedWithin(3_000);
      assert.equal(closed.code, 1008, `close code for the chunk that passes 16384 bytes: ${JSON.stringify(closed)}`);
      await delay(QUIET_MS);
      assert.equal(b.doc.getArray("array").length, 4, "the refused chunk reached nobody");
      assertStillConnected([b], "after the refused chunk");
      // Small edits still fit, and the state is intact.
      b.doc.getMap("map").set("small", "edit");
      const c = await peers.open(server, ws, "doc", { sub: "carol" });
      await until("carol gets bob's small edit", () => c.doc.getMap("map").get("small") === "edit");
      assert.equal(c.doc.getArray("array").length, 4);
      assert.deepEqual(c.doc.getMap("map").toJSON(), { small: "edit" });
      // Another document of the workspace is not affected by this one's size.
      const other = await peers.open(server, ws, "other-doc", { sub: "bob" });
      const rawOther = await peers.raw(server, ws, "other-doc");
      rawOther.send(updateMessage(chunk(9)));
      await until("the other document takes a 3.5 KB chunk", () => other.doc.getArray("array").length === 1);
    });
  });

  describe(`collab persistence [${store.name}]`, () => {
    const peers = new Peers();
    const servers = [];
    const dbs = [];
    const newDb = async () => {
      const db = await store.create();
      dbs.push(db);
      return db;
    };
    const start = async (db, env = {}) => {
      const s = await startSwitchboard({ database: db.url, secret: "collab-persist-secret-0123456789", apiKey: "collab-persist-api-key-0123456789", env });
      servers.push(s);
      return s;
    };
    const kill = async (s) => {
      s.proc.kill("SIGKILL");
      await until("the server is gone after SIGKILL", () => !s.running);
    };

    afterEach(async () => {
      peers.closeAll();
      for (const s of servers.splice(0)) await s.stop();
    });
    after(async () => {
      peers.closeAll();
      for (const s of servers) await s.stop();
      for (const db of dbs) await db.drop();
    });

    test("document state survives a restart", async () => {
      const db = await newDb();
      const ws = fresh("restart");
      const first = await start(db);
      const a = await peers.open(first, ws, "doc", { sub: "alice" });
      const b = await peers.open(first, ws, "doc", { sub: "bob" });
      const other = await peers.open(first, ws, "doc-2", { sub: "alice" });
      setText(a.doc, "survives a restart");
      a.doc.getText("text").format(0, 8, { italic: true });
      a.doc.getMap("map").set("k", { nested: [1, 2] });
      b.doc.getArray("array").push(["from bob"]);
      setText(other.doc, "the second document");
      const expected = await converged([a.doc, b.doc], { what: "alice and bob converge before the restart" });
      const delta = a.doc.getText("text").toDelta();
      const other2 = await peers.open(first, ws, "doc-2", { sub: "bob" });
      await textIs(other2, "the second document");
      peers.closeAll();

      const stopped = await first.stop();
      assert.ok(stopped.code === 0 || stopped.signal === "SIGTERM", `clean stop: ${JSON.stringify(stopped)}`);
      const second = await start(db);
      const c = await peers.open(second, ws, "doc", { sub: "carol" });
      assert.deepEqual(docState(c.doc), expected, "the document after the restart, right after sync");
      assert.deepEqual(c.doc.getText("text").toDelta(), delta, "with its formatting");
      const c2 = await peers.open(second, ws, "doc-2", { sub: "carol" });
      assert.deepEqual(docState(c2.doc), { text: "the second document", map: {}, array: [] });

      // Editing goes on from there.
      c.doc.getText("text").insert(0, ">> ");
      const d = await peers.open(second, ws, "doc", { sub: "dave" });
      await textIs(d, ">> survives a restart");
    });

    test("an edit another client has observed survives a SIGKILL of the server", async () => {
      const db = await newDb();
      const ws = fresh("sigkill");
      const first = await start(db);
      const a = await peers.open(first, ws, "doc", { sub: "alice" });
      const b = await peers.open(first, ws, "doc", { sub: "bob" });
      setText(a.doc, "base");
      await textIs(b, "base");
      // A burst of separate updates; SIGKILL the moment bob has seen the last one.
      for (let i = 0; i < 30; i += 1) {
        a.doc.getArray("array").push([i]);
        a.doc.getMap("map").set(`k${i}`, i);
      }
      a.doc.getText("text").insert(4, " + last edit");
      await until("bob observes the last edit", () => b.doc.getText("text").toString() === "base + last edit", { timeoutMs: 5_000 });
      const observed = docState(b.doc);
      await kill(first);
      assert.equal(observed.array.length, 30, "bob had observed the whole burst");

      peers.closeAll();
      const second = await start(db);
      const c = await peers.open(second, ws, "doc", { sub: "carol" });
      assert.deepEqual(docState(c.doc), observed, "everything bob had observed is there after the SIGKILL");
    });

    for (const ending of ["SIGTERM", "SIGKILL"]) {
      test(`compaction (SWITCHBOARD_COLLAB_COMPACT_UPDATES=5) loses nothing across 60 edits and a ${ending}`, async () => {
        const db = await newDb();
        const ws = fresh("compact");
        const env = { SWITCHBOARD_COLLAB_COMPACT_UPDATES: "5" };
        const first = await start(db, env);
        const a = await peers.open(first, ws, "doc", { sub: "alice" });
        const b = await peers.open(first, ws, "doc", { sub: "bob" });
        // 60 edits, one update each, alternating between the two clients, each seen by the other before the next.
        for (let i = 0; i < 60; i += 1) {
          const [writer, reader] = i % 2 === 0 ? [a, b] : [b, a];
          const text = writer.doc.getText("text");
          if (i % 10 === 9) text.delete(0, 2);
          else text.insert(i % 3 === 0 ? 0 : text.length, `${i};`);
          if (i % 4 === 0) writer.doc.getMap("map").set(`m${i}`, i);
          if (i % 6 === 0) writer.doc.getArray("array").push([i]);
          const want = JSON.stringify(docState(writer.doc));
          await until(`edit ${i} reaches the other client`, () => JSON.stringify(docState(reader.doc)) === want);
        }
        const expected = docState(a.doc);
        assert.ok(expected.text.length > 100, `a text of some size: ${expected.text}`);
        if (ending === "SIGKILL") await kill(first);
        else await first.stop();
        peers.closeAll();

        const second = await start(db, env);
        const c = await peers.open(second, ws, "doc", { sub: "carol" });
        assert.deepEqual(docState(c.doc), expected, `the full document after the ${ending} and restart`);
        // More edits after the restart (more compactions), then another restart.
        for (let i = 0; i < 12; i += 1) c.doc.getText("text").insert(0, `r${i};`);
        const d = await peers.open(second, ws, "doc", { sub: "dave" });
        const expected2 = await converged([c.doc, d.doc], { what: "edits after the restart" });
        if (ending === "SIGKILL") await kill(second);
        else await second.stop();
        peers.closeAll();
        const third = await start(db, env);
        const e = await peers.open(third, ws, "doc", { sub: "erin" });
        assert.deepEqual(docState(e.doc), expected2, "the full document after the second restart");
      });
    }

    test("a document unloaded after its last client left (SWITCHBOARD_COLLAB_UNLOAD_SECS=1) reloads from the store intact", async () => {
      const db = await newDb();
      const ws = fresh("unload");
      const server = await start(db, { SWITCHBOARD_COLLAB_UNLOAD_SECS: "1" });
      const a = await peers.open(server, ws, "doc", { sub: "alice" });
      const b = await peers.open(server, ws, "doc", { sub: "bob" });
      setText(a.doc, "before unload");
      a.doc.getMap("map").set("x", 1);
      const expected = await converged([a.doc, b.doc]);
      // Bob leaves for good; alice goes offline and keeps editing.
      // Where the server exports the gauge of loaded documents, it shows the unload happened.
      const loaded = () => metric(server, "switchboard_collab_documents");
      const gauge = await loaded();
      const hasGauge = gauge !== undefined;
      if (hasGauge) assert.equal(gauge, 1, "one document loaded while its clients are connected");
      b.provider.destroy();
      a.provider.disconnect();
      a.doc.getText("text").insert(0, "offline: ");
      await delay(2_500);
      if (hasGauge) assert.equal(await loaded(), 0, "switchboard_collab_documents 1.5 s past the unload delay");

      const c = await peers.open(server, ws, "doc", { sub: "carol" });
      assert.deepEqual(docState(c.doc), expected, "the reloaded document, right after sync");
      a.provider.connect();
      const merged = await converged([a.doc, c.doc], { what: "alice's offline edit merges into the reloaded document" });
      assert.equal(merged.text, "offline: before unload");

      // Unload once more, then reload.
      peers.closeAll();
      await delay(2_500);
      if (hasGauge) assert.equal(await loaded(), 0, "unloaded again");
      const d = await peers.open(server, ws, "doc", { sub: "dave" });
      assert.deepEqual(docState(d.doc), merged, "after a second unload");
    });
  });
}

describe("awareness [sqlite]", () => {
  let server;
  const peers = new Peers();

  before(async () => {
    server = await startSwitchboard();
  });
  afterEach(() => peers.closeAll());
  after(async () => {
    peers.closeAll();
    await server?.stop();
  });

  const statesOf = (peer) => Object.fromEntries(peer.provider.awareness.getStates());

  test("awareness states reach the other clients, and so do their changes", async () => {
    const ws = fresh("aw");
    const a = await peers.open(server, ws, "doc", { sub: "alice" });
    const b = await peers.open(server, ws, "doc", { sub: "bob" });
    const aliceId = a.doc.clientID;
    const bobId = b.doc.clientID;
    a.provider.awareness.setLocalState({ user: { name: "alice", color: "#f00" }, cursor: null });
    await until("bob sees alice's state", () => JSON.stringify(b.provider.awareness.getStates().get(aliceId)) === JSON.stringify({ user: { name: "alice", color: "#f00" }, cursor: null }), { timeoutMs: 3_000, describe: () => statesOf(b) });
    a.provider.awareness.setLocalStateField("cursor", { index: 7 });
    await until("bob sees alice's cursor move", () => b.provider.awareness.getStates().get(aliceId)?.cursor?.index === 7, { timeoutMs: 3_000, describe: () => statesOf(b) });
    b.provider.awareness.setLocalState({ user: { name: "bob" } });
    await until("alice sees bob's state", () => a.provider.awareness.getStates().get(bobId)?.user?.name === "bob", { timeoutMs: 3_000, describe: () => statesOf(a) });
    // A client of another document sees none of it.
    const other = await peers.open(server, ws, "other-doc", { sub: "carol" });
    a.provider.awareness.setLocalStateField("cursor", { index: 8 });
    await until("bob sees the next move", () => b.provider.awareness.getStates().get(aliceId)?.cursor?.index === 8, { timeoutMs: 3_000 });
    await delay(QUIET_MS);
    assert.deepEqual([...other.provider.awareness.getStates().keys()], [other.doc.clientID], "nothing from another document");
  });

  test("a client that connects later receives the awareness states already there (as the reference y-websocket server sends them)", async () => {
    const ws = fresh("aw-late");
    const a = await peers.open(server, ws, "doc", { sub: "alice" });
    a.provider.awareness.setLocalState({ user: { name: "alice" } });
    const b = await peers.open(server, ws, "doc", { sub: "bob" });
    b.provider.awareness.setLocalState({ user: { name: "bob" } });
    await until("alice sees bob", () => a.provider.awareness.getStates().has(b.doc.clientID), { timeoutMs: 3_000 });
    const c = await peers.open(server, ws, "doc", { sub: "carol" });
    await until(
      "the late client gets alice's and bob's states without asking",
      () => c.provider.awareness.getStates().get(a.doc.clientID)?.user?.name === "alice" && c.provider.awareness.getStates().get(b.doc.clientID)?.user?.name === "bob",
      { timeoutMs: 3_000, describe: () => statesOf(c) },
    );
  });

  test("query-awareness (3) is answered with an awareness message carrying every current state", async () => {
    const ws = fresh("aw-query");
    const a = await peers.open(server, ws, "doc", { sub: "alice" });
    const b = await peers.open(server, ws, "doc", { sub: "bob" });
    a.provider.awareness.setLocalState({ user: { name: "alice" } });
    b.provider.awareness.setLocalState({ user: { name: "bob" } });
    await until("alice and bob see each other", () => a.provider.awareness.getStates().has(b.doc.clientID) && b.provider.awareness.getStates().has(a.doc.clientID), { timeoutMs: 3_000 });

    const raw = await peers.raw(server, ws, "doc");
    const ask = async (what) => {
      await delay(QUIET_MS); // let whatever the server sends on connect arrive first
      const from = raw.messages.length;
      raw.send(QUERY_AWARENESS_MESSAGE);
      await raw.next((m) => raw.messages.indexOf(m) >= from && m.type === MESSAGE_AWARENESS, 3_000, `the answer to query-awareness (${what})`);
      // Several awareness messages may answer; take every entry that arrived after the query.
      await delay(QUIET_MS);
      const states = {};
      for (const m of raw.messages.slice(from)) {
        if (m.type !== MESSAGE_AWARENESS) continue;
        for (const e of m.entries) states[e.clientID] = e.state;
      }
      return states;
    };
    const answer = await ask("first");
    assert.deepEqual(answer[a.doc.clientID], { user: { name: "alice" } }, `alice's state in the answer: ${JSON.stringify(answer)}`);
    assert.deepEqual(answer[b.doc.clientID], { user: { name: "bob" } }, `bob's state in the answer: ${JSON.stringify(answer)}`);

    b.provider.awareness.setLocalState({ user: { name: "bob", typing: true } });
    await until("alice sees bob's new state", () => a.provider.awareness.getStates().get(b.doc.clientID)?.user?.typing === true, { timeoutMs: 3_000 });
    const second = await ask("after bob's change");
    assert.deepEqual(second[b.doc.clientID], { user: { name: "bob", typing: true } }, `the answer has bob's current state: ${JSON.stringify(second)}`);
    assert.deepEqual(second[a.doc.clientID], { user: { name: "alice" } });
    assert.equal(raw.isOpen, true);
  });

  test("states of a connection that closes without a goodbye are removed at the others within 3 s", async () => {
    const ws = fresh("aw-close");
    const a = await peers.open(server, ws, "doc", { sub: "alice" });
    const b = await peers.open(server, ws, "doc", { sub: "bob" });
    b.provider.awareness.setLocalState({ user: { name: "bob" } });
    const raw = await peers.raw(server, ws, "doc");
    // One connection controlling two awareness client ids (as a client with several docs may).
    raw.send(awarenessMessage([
      { clientID: 424242, clock: 1, state: { user: { name: "raw-1" } } },
      { clientID: 434343, clock: 3, state: { user: { name: "raw-2" } } },
    ]));
    await until("alice sees both raw states and bob's", () => ["raw-1", "raw-2", "bob"].every((n) => [...a.provider.awareness.getStates().values()].some((s) => s?.user?.name === n)), { timeoutMs: 3_000, describe: () => statesOf(a) });

    const closedAt = Date.now();
    raw.ws.close(1000); // a clean WebSocket close, but no awareness removal sent by the client
    await until(
      "both states of the closed connection are removed at alice",
      () => !a.provider.awareness.getStates().has(424242) && !a.provider.awareness.getStates().has(434343),
      { timeoutMs: AWARENESS_REMOVAL_MS, describe: () => statesOf(a) },
    );
    const elapsed = Date.now() - closedAt;
    assert.ok(elapsed <= AWARENESS_REMOVAL_MS, `removed after ${elapsed} ms`);
    assert.equal(a.provider.awareness.getStates().get(b.doc.clientID)?.user?.name, "bob", "bob's state stays");
    assert.ok(!b.provider.awareness.getStates().has(424242), "removed at bob too");
  });

  test("the state of a provider whose socket is terminated abruptly is removed at the others within 3 s", async () => {
    const ws = fresh("aw-terminate");
    const a = await peers.open(server, ws, "doc", { sub: "alice" });
    const b = await peers.open(server, ws, "doc", { sub: "bob" });
    const bobId = b.doc.clientID;
    b.provider.awareness.setLocalState({ user: { name: "bob" } });
    await until("alice sees bob", () => a.provider.awareness.getStates().get(bobId)?.user?.name === "bob", { timeoutMs: 3_000 });

    b.provider.shouldConnect = false; // no reconnection that would announce bob again
    const closedAt = Date.now();
    b.provider.ws.terminate(); // the TCP connection just ends: no close frame, no awareness removal
    await until("bob's state is removed at alice", () => !a.provider.awareness.getStates().has(bobId), {
      timeoutMs: AWARENESS_REMOVAL_MS,
      describe: () => statesOf(a),
    });
    const elapsed = Date.now() - closedAt;
    assert.ok(elapsed <= AWARENESS_REMOVAL_MS, `removed after ${elapsed} ms`);
    assert.equal(a.provider.wsconnected, true);
  });

  test("the state of a client whose process is killed (SIGKILL) is removed at the others within 3 s", async () => {
    const ws = fresh("aw-kill");
    const a = await peers.open(server, ws, "doc", { sub: "alice" });
    const peer = await spawnPeer({
      url: collabBase(server, ws),
      docName: "doc",
      token: userToken(server.secret, "zed", { workspaces: [ws] }),
      state: { user: { name: "zed" } },
    });
    try {
      await until("alice sees the other process's state", () => a.provider.awareness.getStates().get(peer.clientID)?.user?.name === "zed", { timeoutMs: 3_000, describe: () => statesOf(a) });
      const killedAt = Date.now();
      await peer.kill();
      await until("the killed process's state is removed at alice", () => !a.provider.awareness.getStates().has(peer.clientID), {
        timeoutMs: AWARENESS_REMOVAL_MS,
        describe: () => statesOf(a),
      });
      const elapsed = Date.now() - killedAt;
      assert.ok(elapsed <= AWARENESS_REMOVAL_MS, `removed after ${elapsed} ms`);
    } finally {
      await peer.kill();
    }
  });
});

describe("SWITCHBOARD_COLLAB_MAX_CLIENTS=2 [sqlite]", () => {
  let server;
  const peers = new Peers();

  before(async () => {
    server = await startSwitchboard({ env: { SWITCHBOARD_COLLAB_MAX_CLIENTS: "2" } });
  });
  afterEach(() => peers.closeAll());
  after(async () => {
    peers.closeAll();
    await server?.stop();
  });

  test("a third client of one document is refused with 429; other documents are not; a place frees up when a client leaves", async () => {
    const ws = fresh("max-clients");
    const token = userToken(server.secret, "carol", { workspaces: [ws, `${ws}-2`] });
    const a = await peers.open(server, ws, "doc", { sub: "alice" });
    const b = await peers.open(server, ws, "doc", { sub: "bob" });
    assert.equal(await upgradeStatus(collabUrl(server, ws, "doc", token)), 429, "a third client of the document");
    assert.equal(await upgradeStatus(collabUrl(server, ws, "doc", token)), 429, "and again");
    assert.equal(await upgradeStatus(collabUrl(server, ws, "doc-2", token)), 101, "another document of the workspace");
    assert.equal(await upgradeStatus(collabUrl(server, `${ws}-2`, "doc", token)), 101, "the same doc name in another workspace");
    // The two clients in are unaffected.
    setText(a.doc, "two is enough");
    await textIs(b, "two is enough");
    assertStillConnected([a, b], "after the refusals");

    b.provider.destroy();
    await until("a place frees up once bob has left", async () => (await upgradeStatus(collabUrl(server, ws, "doc", token))) === 101, { timeoutMs: 3_000 });
    const c = await peers.open(server, ws, "doc", { token });
    assert.equal(c.doc.getText("text").toString(), "two is enough");
  });
});
