// Hostile collaborative-editing input (issue 17): what fuzzing and reading yrs found,
// sent by a raw `ws` client of an authenticated user through a live y-websocket
// connection, while stock `yjs` + `y-websocket` providers edit the same document.
//
// - fuzz/known-issues/yrs-0.28.1-use-after-free-integrate-item: the message that made
//   yrs 0.28.1 read freed memory. Its first updates now wait (a struct past its client's
//   clock), its last is refused for a clock past 2^31: 1007 for that connection only.
// - fuzz/known-issues/yrs-0.28.1-use-after-free-minimal: the same in 48 bytes; both of
//   its updates wait, the connection stays open.
// - An honest edit that arrives before the one it builds on waits on the server, reaches
//   every client once the missing one arrives, and survives a restart (the log holds
//   them out of order).
// - fuzz/known-issues/yrs-0.28.1-stack-overflow-nested-any: 40 kB of nested arrays,
//   which overflowed yrs's decoder on a tokio worker's stack and aborted the server.
// - One update that would leave more than 4096 structs waiting: refused, nothing kept.
// - fuzz/known-issues/yrs-0.28.1-leak-subdocument{,-wipe} and a stock Yjs update that
//   inserts a subdocument: updates holding a subdocument are refused from clients
//   (yrs 0.28.1 leaks documents that hold one), 1007 for that connection only.
//
// Each time: the server process is still running and ready, the other clients stay
// connected, and edits made afterwards converge, also for a client that joins then.
// SQLite only (nothing here depends on the store).
//
// Run: SWITCHBOARD_BIN=path/to/switchboard node --test server/collab-hostile.test.mjs

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as encoding from "lib0/encoding";

import { createSqliteDatabase, delay, httpRequest, startSwitchboard } from "../lib/server.mjs";
import { QUIET_MS } from "../lib/switchboard.mjs";
import { Peers, Y, assertStillConnected, converged, docState, textIs, until, updateMessage } from "../lib/collab.mjs";

let counter = 0;
/** A workspace name no other test of this run uses. */
const fresh = (prefix) => `${prefix}-${process.pid}-${(counter += 1)}`;

/** A file of fuzz/known-issues/. */
const knownIssue = (name) => readFileSync(fileURLToPath(new URL(`../../../fuzz/known-issues/${name}`, import.meta.url)));


/** Asserts the server process runs and answers /readyz with 200. */
async function assertServerUp(server, context) {
  assert.equal(server.running, true, `${context}: the server process exited; output:\n${server.output().slice(-3000)}`);
  const ready = await httpRequest(`${server.url}/readyz`, { timeoutMs: 3_000 });
  assert.equal(ready.status, 200, `${context}: GET /readyz`);
}

/**
 * Two stock providers editing `doc` in a fresh workspace, with "intact" in the text.
 * Returns `{ ws, a, b }`.
 */
async function twoEditors(server, peers, prefix) {
  const ws = fresh(prefix);
  const a = await peers.open(server, ws, "doc", { sub: "alice" });
  const b = await peers.open(server, ws, "doc", { sub: "bob" });
  a.doc.getText("text").insert(0, "intact");
  await textIs(b, "intact");
  return { ws, a, b };
}

/** After hostile input: the editors stay connected, an edit converges, a new client gets the same. */
async function editingGoesOn(server, peers, { ws, a, b }, context) {
  await assertServerUp(server, context);
  assertStillConnected([a, b], context);
  b.doc.getText("text").insert(0, "still ");
  await textIs(a, "still intact", `${context}: an edit made afterwards reaches alice`);
  const c = await peers.open(server, ws, "doc", { sub: "carol" });
  const state = await converged([a.doc, b.doc, c.doc], { what: `${context}: alice, bob and a new client converge` });
  assert.equal(state.text, "still intact");
  return c;
}

/** A Yjs update of client `client`: `count` structs, each one character at clock 1 (after a missing clock 0). */
function structsPastTheirClock(count, firstClient) {
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, count);
  for (let i = 0; i < count; i += 1) {
    encoding.writeVarUint(e, 1); // one struct
    encoding.writeVarUint(e, firstClient + i); // client
    encoding.writeVarUint(e, 1); // from clock 1: clock 0 is missing
    encoding.writeUint8(e, 4); // string content, no origins
    encoding.writeVarUint(e, 1); // the parent is a root type, by name
    encoding.writeVarString(e, "text");
    encoding.writeVarString(e, "x");
  }
  encoding.writeVarUint(e, 0); // empty delete set
  return encoding.toUint8Array(e);
}

describe("hostile collaborative-editing input [sqlite]", () => {
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

  test("the message that made yrs read freed memory closes only the connection that sent it (1007); the server stays up and the others converge", async () => {
    const editors = await twoEditors(server, peers, "uaf-kept");
    const raw = await peers.raw(server, editors.ws, "doc");
    raw.send(knownIssue("yrs-0.28.1-use-after-free-integrate-item"));
    const closed = await raw.closedWithin(3_000).catch((err) => ({ error: err.message }));
    assert.equal(closed.code ?? closed.error, 1007, "its last update declares a clock past 2^31: malformed");
    await editingGoesOn(server, peers, editors, "after the kept use-after-free input");
  });

  test("the reduced input (a struct past its client's clock, then one over it) waits on the server; the connection stays open and the others converge", async () => {
    const editors = await twoEditors(server, peers, "uaf-minimal");
    const raw = await peers.raw(server, editors.ws, "doc");
    raw.send(knownIssue("yrs-0.28.1-use-after-free-minimal"));
    await delay(QUIET_MS);
    assert.equal(raw.isOpen, true, `both updates are well formed and wait: ${JSON.stringify(raw.closeInfo)}`);
    await editingGoesOn(server, peers, editors, "after the reduced use-after-free input");
    // The missing clocks 0..8 of client 1 arrive: what waited is integrated, and the
    // server is still up and in step with the clients.
    const prefix = Uint8Array.of(1, 1, 1, 0, 0x04, 1, 1, 0x74, 8, ...Buffer.from("01234567"), 0);
    raw.send(updateMessage(prefix));
    await delay(QUIET_MS);
    assert.equal(raw.isOpen, true, `the missing clocks are accepted: ${JSON.stringify(raw.closeInfo)}`);
    await assertServerUp(server, "after the missing clocks");
    assertStillConnected([editors.a, editors.b], "after the missing clocks");
    const d = await peers.open(server, editors.ws, "doc", { sub: "dave" });
    await converged([editors.a.doc, editors.b.doc, d.doc], { what: "after the missing clocks, every client has the same text" });
  });

  test("an edit that arrives before the one it builds on waits on the server, reaches every client once that one arrives, and survives a restart", async () => {
    const db = createSqliteDatabase();
    let first;
    let second;
    try {
      first = await startSwitchboard({ database: db.url });
      const editors = await twoEditors(first, peers, "out-of-order");
      // An author whose two edits reach the server in reverse order (as a second node's
      // relay or a reconnecting client could deliver them).
      const author = new Y.Doc();
      author.clientID = 424242;
      author.getArray("array").push(["first"]);
      const afterFirst = Y.encodeStateVector(author);
      const u1 = Y.encodeStateAsUpdate(author);
      author.getArray("array").push(["second"]);
      const u2 = Y.encodeStateAsUpdate(author, afterFirst);

      const raw = await peers.raw(first, editors.ws, "doc");
      raw.send(updateMessage(u2));
      await delay(QUIET_MS);
      assert.equal(raw.isOpen, true, `an edit waiting for its predecessor is no error: ${JSON.stringify(raw.closeInfo)}`);
      assert.deepEqual(docState(editors.a.doc).array, [], "nothing to show before the first edit arrives");
      // A client joining now gets the waiting edit in its sync, and keeps it pending too.
      const c = await peers.open(first, editors.ws, "doc", { sub: "carol" });

      raw.send(updateMessage(u1));
      for (const [who, peer] of [["alice", editors.a], ["bob", editors.b], ["carol", c]]) {
        await until(`${who} gets both edits`, () => peer.doc.getArray("array").length === 2, {
          describe: () => docState(peer.doc),
        });
      }
      const state = await converged([editors.a.doc, editors.b.doc, c.doc], { what: "both edits reach every client" });
      assert.deepEqual(state.array, ["first", "second"]);
      const d = await peers.open(first, editors.ws, "doc", { sub: "dave" });
      assert.deepEqual(docState(d.doc), state, "a client joining afterwards gets both from the server");
      assertStillConnected([editors.a, editors.b, c, d], "after the reordered edits");

      // The log holds the second edit before the first; a restart rebuilds the document from it.
      peers.closeAll();
      await first.stop();
      second = await startSwitchboard({ database: db.url });
      const e = await peers.open(second, editors.ws, "doc", { sub: "erin" });
      assert.deepEqual(docState(e.doc), state, "the document after a restart");
    } finally {
      peers.closeAll();
      await first?.stop();
      await second?.stop();
      await db.drop();
    }
  });

  test("an update holding a subdocument closes the connection that sent it (1007); the kept leak inputs too; the others converge", async () => {
    const editors = await twoEditors(server, peers, "subdoc");
    const author = new Y.Doc();
    author.getMap("m").set("sub", new Y.Doc());
    const inputs = [
      ["a stock Yjs update inserting a subdocument", Buffer.from(updateMessage(Y.encodeStateAsUpdate(author)))],
      ["yrs-0.28.1-leak-subdocument", knownIssue("yrs-0.28.1-leak-subdocument")],
      ["yrs-0.28.1-leak-subdocument-wipe", knownIssue("yrs-0.28.1-leak-subdocument-wipe")],
    ];
    for (const [what, bytes] of inputs) {
      const raw = await peers.raw(server, editors.ws, "doc");
      raw.send(bytes);
      const closed = await raw.closedWithin(3_000).catch((err) => ({ error: err.message }));
      assert.equal(closed.code ?? closed.error, 1007, `${what}: refused as unsupported`);
    }
    const carol = await editingGoesOn(server, peers, editors, "after updates holding subdocuments");
    assert.deepEqual(carol.doc.getMap("m").toJSON(), {}, "nothing of them was kept");
  });

  test("40 kB of nested arrays in one update closes that connection (1007); the server does not overflow its stack", async () => {
    const editors = await twoEditors(server, peers, "nested");
    const raw = await peers.raw(server, editors.ws, "doc");
    raw.send(knownIssue("yrs-0.28.1-stack-overflow-nested-any"));
    const closed = await raw.closedWithin(3_000).catch((err) => ({ error: err.message }));
    assert.equal(closed.code ?? closed.error, 1007, "values nested deeper than 128 levels: malformed");
    await editingGoesOn(server, peers, editors, "after the nested update");
  });

  test("an update that would leave more than 4096 structs waiting is refused (1007) and leaves nothing behind; fewer wait", async () => {
    const editors = await twoEditors(server, peers, "waiting-limit");
    const raw = await peers.raw(server, editors.ws, "doc");
    raw.send(updateMessage(structsPastTheirClock(5_000, 1_000_000)));
    const closed = await raw.closedWithin(3_000).catch((err) => ({ error: err.message }));
    assert.equal(closed.code ?? closed.error, 1007, "more than the waiting limit");
    const c = await editingGoesOn(server, peers, editors, "after the refused update");
    assert.deepEqual(docState(c.doc), docState(editors.a.doc));

    const within = await peers.raw(server, editors.ws, "doc");
    within.send(updateMessage(structsPastTheirClock(100, 2_000_000)));
    await delay(QUIET_MS);
    assert.equal(within.isOpen, true, `100 waiting structs are within the limit: ${JSON.stringify(within.closeInfo)}`);
    await assertServerUp(server, "after 100 waiting structs");
  });
});
