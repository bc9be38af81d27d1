// Collaborative editing across nodes joined by Redis (DESIGN.md section 5: "Updates from
// one client reach every other client of that document on every node"): stock `yjs` +
// `y-websocket` providers on different nodes converge, awareness (and its removal when a
// connection drops) crosses nodes, a node that loads a document already active elsewhere
// (a late joiner, even while edits keep coming) gets the full state, and the state
// survives a restart of every node.
//
// Needs PostgreSQL (SWITCHBOARD_TEST_POSTGRES, default postgres://root@127.0.0.1:5432/test)
// and the shared Redis at SWITCHBOARD_TEST_REDIS (default redis://127.0.0.1:6379; never
// flushed: every run uses a channel prefix of its own).
//
// Run: SWITCHBOARD_BIN=path/to/switchboard node --test --test-concurrency=1 server/collab-multinode.test.mjs

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { createPostgresDatabase, delay, freePort, startSwitchboard } from "../lib/server.mjs";
import { startRedis } from "../lib/redis.mjs";
import { QUIET_MS } from "../lib/switchboard.mjs";
import {
  AWARENESS_REMOVAL_MS,
  MESSAGE_AWARENESS,
  Peers,
  QUERY_AWARENESS_MESSAGE,
  converged,
  docState,
  until,
} from "../lib/collab.mjs";

const SHARED_REDIS = process.env.SWITCHBOARD_TEST_REDIS || "redis://127.0.0.1:6379";
const SECRET = `jwt-secret-${randomBytes(12).toString("hex")}`;
const API_KEY = `api-key-${randomBytes(12).toString("hex")}`;

/** A channel prefix no other run uses, so the shared Redis needs no flushing. */
const freshPrefix = () => `e2e-collab-${process.pid}-${randomBytes(4).toString("hex")}:`;

let counter = 0;
const fresh = (prefix) => `${prefix}-${process.pid}-${(counter += 1)}`;

let db;
before(async () => {
  db = createPostgresDatabase();
});
after(async () => {
  await db?.drop();
});

/** Starts one node on the shared database and a Redis (the shared one by default) with `prefix`. */
function startNode(prefix, extraEnv = {}, redis = SHARED_REDIS) {
  return startSwitchboard({
    database: db.url,
    secret: SECRET,
    apiKey: API_KEY,
    env: { SWITCHBOARD_BROKER: redis, SWITCHBOARD_REDIS_PREFIX: prefix, ...extraEnv },
  });
}

describe("collaborative editing on two nodes joined by Redis, and a third joining late", () => {
  let prefix;
  const nodes = [];
  const peers = new Peers();

  before(async () => {
    prefix = freshPrefix();
    nodes.push(await startNode(prefix), await startNode(prefix));
  });
  afterEach(() => peers.closeAll());
  after(async () => {
    peers.closeAll();
    await Promise.all(nodes.map((n) => n.stop()));
  });

  test("clients of one document on two nodes converge on concurrent edits", async () => {
    const [n1, n2] = nodes;
    const ws = fresh("mn-text");
    const a = await peers.open(n1, ws, "doc", { sub: "alice" });
    const a2 = await peers.open(n1, ws, "doc", { sub: "alice2" });
    const b = await peers.open(n2, ws, "doc", { sub: "bob" });
    const b2 = await peers.open(n2, ws, "doc", { sub: "bob2" });
    const all = [a, a2, b, b2];

    a.doc.getText("text").insert(0, "written on node 1");
    await until("bob on node 2 gets alice's edit", () => b.doc.getText("text").toString() === "written on node 1", {
      describe: () => b.doc.getText("text").toString(),
    });

    for (let i = 0; i < 15; i += 1) {
      for (const [k, p] of all.entries()) {
        const text = p.doc.getText("text");
        text.insert(i % 2 === 0 ? 0 : text.length, `<${k}.${i}>`);
        p.doc.getMap("map").set(`${k}-${i}`, i);
        p.doc.getArray("array").push([`${k}.${i}`]);
      }
    }
    const state = await converged(all.map((p) => p.doc), { what: "four clients on two nodes converge" });
    assert.equal(state.array.length, 60);
    for (let k = 0; k < 4; k += 1) for (let i = 0; i < 15; i += 1) assert.ok(state.text.includes(`<${k}.${i}>`), `<${k}.${i}> in the text`);
    assert.ok(state.text.includes("written on node 1"));
    assert.equal(Object.keys(state.map).length, 60);

    // A fresh client on each node gets the same state at sync.
    for (const n of nodes) {
      const fresh1 = await peers.open(n, ws, "doc", { sub: "carol" });
      assert.deepEqual(docState(fresh1.doc), state, `a fresh client on ${n.url}`);
    }
  });

  test("awareness crosses nodes; query-awareness on one node answers the states of the other; a dropped connection's state is removed across nodes within 3 s", async () => {
    const [n1, n2] = nodes;
    const ws = fresh("mn-aw");
    const a = await peers.open(n1, ws, "doc", { sub: "alice" });
    const b = await peers.open(n2, ws, "doc", { sub: "bob" });
    a.provider.awareness.setLocalState({ user: { name: "alice", node: 1 } });
    b.provider.awareness.setLocalState({ user: { name: "bob", node: 2 } });
    const statesOf = (p) => Object.fromEntries(p.provider.awareness.getStates());
    await until("bob on node 2 sees alice's state", () => b.provider.awareness.getStates().get(a.doc.clientID)?.user?.name === "alice", { timeoutMs: 3_000, describe: () => statesOf(b) });
    await until("alice on node 1 sees bob's state", () => a.provider.awareness.getStates().get(b.doc.clientID)?.user?.name === "bob", { timeoutMs: 3_000, describe: () => statesOf(a) });
    a.provider.awareness.setLocalStateField("cursor", { index: 3 });
    await until("bob sees alice's cursor", () => b.provider.awareness.getStates().get(a.doc.clientID)?.cursor?.index === 3, { timeoutMs: 3_000 });

    // query-awareness on node 2 answers every current state, alice's (node 1) included.
    const raw = await peers.raw(n2, ws, "doc");
    await delay(QUIET_MS);
    const from = raw.messages.length;
    raw.send(QUERY_AWARENESS_MESSAGE);
    await raw.next((m) => raw.messages.indexOf(m) >= from && m.type === MESSAGE_AWARENESS, 3_000, "the answer to query-awareness");
    await delay(QUIET_MS);
    const answer = {};
    for (const m of raw.messages.slice(from)) if (m.type === MESSAGE_AWARENESS) for (const e of m.entries) answer[e.clientID] = e.state;
    assert.deepEqual(answer[a.doc.clientID], { user: { name: "alice", node: 1 }, cursor: { index: 3 } }, `alice's state in the answer on node 2: ${JSON.stringify(answer)}`);
    assert.deepEqual(answer[b.doc.clientID], { user: { name: "bob", node: 2 } }, `bob's state in the answer: ${JSON.stringify(answer)}`);

    // Alice's connection to node 1 drops: bob on node 2 loses her state within 3 s.
    const aliceId = a.doc.clientID;
    a.provider.shouldConnect = false;
    const droppedAt = Date.now();
    a.provider.ws.terminate();
    await until("alice's state is removed at bob on node 2", () => !b.provider.awareness.getStates().has(aliceId), {
      timeoutMs: AWARENESS_REMOVAL_MS,
      describe: () => statesOf(b),
    });
    const elapsed = Date.now() - droppedAt;
    assert.ok(elapsed <= AWARENESS_REMOVAL_MS, `removed after ${elapsed} ms`);
    assert.equal(b.provider.wsconnected, true);
  });

  test("a third node started while the document is active on two others gets the full state, also while edits keep coming", async () => {
    const [n1, n2] = nodes;
    const ws = fresh("mn-late");
    const a = await peers.open(n1, ws, "doc", { sub: "alice" });
    const b = await peers.open(n2, ws, "doc", { sub: "bob" });
    for (let i = 0; i < 20; i += 1) {
      a.doc.getText("text").insert(a.doc.getText("text").length, `a${i} `);
      b.doc.getArray("array").push([i]);
    }
    a.doc.getMap("map").set("title", "three nodes");
    const before3 = await converged([a.doc, b.doc], { what: "nodes 1 and 2 converge" });

    const n3 = await startNode(prefix);
    nodes.push(n3);
    const c = await peers.open(n3, ws, "doc", { sub: "carol" });
    assert.deepEqual(docState(c.doc), before3, "the late node's client right after sync");

    // Edits from the late node reach the others, and theirs reach it.
    c.doc.getText("text").insert(0, "[from node 3] ");
    b.doc.getMap("map").set("from", "node 2");
    await converged([a.doc, b.doc, c.doc], { what: "three nodes converge" });

    // A document the third node has not loaded yet, joined while node 1 keeps editing it.
    const ws2 = fresh("mn-late-busy");
    const writer = await peers.open(n1, ws2, "doc", { sub: "alice" });
    const watcher = await peers.open(n2, ws2, "doc", { sub: "bob" });
    let stop = false;
    let written = 0;
    const typing = (async () => {
      while (!stop) {
        writer.doc.getText("text").insert(writer.doc.getText("text").length, `${written};`);
        written += 1;
        await delay(5);
      }
    })();
    try {
      await until("some edits are flowing", () => written >= 20);
      const joiner = await peers.open(n3, ws2, "doc", { sub: "carol" });
      await delay(300);
      stop = true;
      await typing;
      const final = await converged([writer.doc, watcher.doc, joiner.doc], { what: "the joiner on node 3 converges with a document that was being edited while it loaded" });
      assert.equal(final.text.split(";").length - 1, written, "every edit is in the text once");
    } finally {
      stop = true;
      await typing;
    }
  });

  test("the document survives a restart of every node", async () => {
    const ws = fresh("mn-restart");
    const a = await peers.open(nodes[0], ws, "doc", { sub: "alice" });
    const b = await peers.open(nodes[1], ws, "doc", { sub: "bob" });
    a.doc.getText("text").insert(0, "durable across nodes");
    b.doc.getMap("map").set("k", "v");
    const expected = await converged([a.doc, b.doc]);
    peers.closeAll();
    for (const n of nodes.splice(0)) await n.stop();

    nodes.push(await startNode(prefix), await startNode(prefix));
    const c = await peers.open(nodes[1], ws, "doc", { sub: "carol" });
    assert.deepEqual(docState(c.doc), expected, "after every node restarted");
    const d = await peers.open(nodes[0], ws, "doc", { sub: "dave" });
    c.doc.getArray("array").push(["after restart"]);
    await converged([c.doc, d.doc], { what: "the restarted nodes still relay to each other" });
    assert.deepEqual(d.doc.getArray("array").toJSON(), ["after restart"]);
  });
});

describe("collaborative editing through a Redis restart (a private redis-server)", () => {
  let redis;
  let port;
  const nodes = [];
  const peers = new Peers();

  before(async () => {
    port = await freePort();
    redis = await startRedis(port);
    const prefix = freshPrefix();
    const url = `redis://127.0.0.1:${port}`;
    nodes.push(await startNode(prefix, {}, url), await startNode(prefix, {}, url));
  });
  after(async () => {
    peers.closeAll();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.kill();
  });

  test("edits made on one node while Redis is down reach the other node's connected clients once it is back", async () => {
    const [n1, n2] = nodes;
    const ws = fresh("mn-outage");
    const a = await peers.open(n1, ws, "doc", { sub: "alice" });
    const b = await peers.open(n2, ws, "doc", { sub: "bob" });
    a.doc.getText("text").insert(0, "before;");
    await until("bob gets alice's edit before the outage", () => b.doc.getText("text").toString() === "before;");
    const bobSocket = b.provider.ws;

    await redis.kill("SIGKILL");
    a.doc.getText("text").insert(7, "during;");
    a.doc.getText("text").delete(0, 7); // a deletion too: it changes no state vector
    a.doc.getMap("map").set("outage", true);
    await delay(500);
    assert.equal(b.doc.getText("text").toString(), "before;", "nothing crosses nodes while Redis is down");

    redis = await startRedis(port);
    const expected = docState(a.doc);
    await until("bob, still connected, gets the edits made during the outage", () => JSON.stringify(docState(b.doc)) === JSON.stringify(expected), {
      timeoutMs: 15_000,
      describe: () => JSON.stringify(docState(b.doc)),
    });
    assert.equal(b.provider.ws, bobSocket, "bob's connection was never replaced: the node caught up by itself");
    assert.equal(b.doc.getText("text").toString(), "during;");

    a.doc.getText("text").insert(0, "after;");
    await until("edits cross nodes again after the outage", () => b.doc.getText("text").toString() === "after;during;");
  });
});
