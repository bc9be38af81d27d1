// Three nodes joined by a Redis Cluster with sharded pub/sub
// (`SWITCHBOARD_BROKER=redis-cluster://...`): the test starts a real 3-master
// Redis Cluster on free loopback ports, three switchboard nodes on it sharing
// one PostgreSQL database, and checks across nodes: chat (acked ids ==
// received ids), a notification, presence join/leave and typing; that the
// channels really live on the shards that serve their slots (several shards
// used, every node subscribed there and nowhere else) and that nothing uses
// classic PUBLISH/SUBSCRIBE; and that a master killed and restarted makes
// `/readyz` answer 503, then 200, with fan-out resuming on its shard by itself.
//
// Needs `redis-server` (7.0 or later) and `redis-cli` on the PATH, and PostgreSQL
// (SWITCHBOARD_TEST_POSTGRES, default postgres://root@127.0.0.1:5432/test).
// Every redis-server it starts is killed in after(), whatever happened.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard node --test server/cluster.test.mjs

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";
import { performance } from "node:perf_hooks";

import { createPostgresDatabase, delay, eventually, httpRequest, startSwitchboard, withTimeout } from "../lib/server.mjs";
import {
  Clients,
  QUIET_MS,
  assertIncreasing,
  assertMessageShape,
  collect,
  collectMessages,
  emitAck,
  expectCount,
  join,
  nextEvent,
  send,
  userToken,
} from "../lib/switchboard.mjs";
import { CONNECTED_FRAME, Streams, createNotification, parseEventFrame } from "../lib/notifications.mjs";

const SECRET = `jwt-secret-${randomBytes(12).toString("hex")}`;
const API_KEY = `api-key-${randomBytes(12).toString("hex")}`;
const PREFIX = `e2e-cluster-${process.pid}-${randomBytes(3).toString("hex")}:`;

// ---------------------------------------------------------------------------
// redis-server / redis-cli helpers.

/** Runs `redis-cli` (bounded by 5 s) and resolves with its stdout; rejects on failure. */
function redisCli(args, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    execFile("redis-cli", args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli ${args.join(" ")}: ${err.message} ${stderr}`));
      else resolve(stdout);
    });
  });
}

/** One command on the node at `port`; stdout split in lines (redis-cli prints one value a line when not on a TTY). */
async function redisCommand(port, ...args) {
  const out = await redisCli(["-h", "127.0.0.1", "-p", String(port), ...args]);
  return out.split(/\r?\n/).filter((line) => line.length > 0);
}

function canListen(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/** `count` free ports P whose cluster bus port P + 10000 is free too. */
async function freeClusterPorts(count) {
  const ports = [];
  for (let tries = 0; ports.length < count; tries += 1) {
    if (tries > 500) throw new Error("no free ports for the Redis Cluster");
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    if (ports.includes(port)) continue;
    if ((await canListen(port)) && (await canListen(port + 10_000))) ports.push(port);
  }
  return ports;
}

/** A 3-master Redis Cluster on loopback: `{ ports, url, start(port), kill(port), killAll() }`. */
async function startRedisCluster() {
  const dir = mkdtempSync(joinPath(tmpdir(), "sbe2e-cluster-"));
  const ports = await freeClusterPorts(3);
  const procs = new Map();

  const start = async (port) => {
    const proc = spawn(
      "redis-server",
      [
        "--port", String(port), "--bind", "127.0.0.1",
        "--cluster-enabled", "yes", "--cluster-config-file", joinPath(dir, `nodes-${port}.conf`),
        "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    const keep = (c) => {
      output = (output + c).slice(-20_000);
    };
    proc.stdout.on("data", keep);
    proc.stderr.on("data", keep);
    let spawnError = null;
    proc.once("error", (err) => {
      spawnError = err;
    });
    const exited = new Promise((resolve) => proc.once("close", resolve));
    const gone = () => proc.exitCode !== null || proc.signalCode !== null || spawnError !== null;
    procs.set(port, { proc, exited, gone, output: () => output });
    await eventually(async () => {
      if (gone()) throw new Error(`redis-server on ${port} exited (${spawnError?.message ?? proc.exitCode}): ${output}`);
      return (await redisCommand(port, "PING"))[0] === "PONG";
    }, 10_000, 50).catch((err) => {
      throw new Error(`redis-server on ${port} did not come up: ${err.message}\n${output}`);
    });
  };

  const kill = async (port) => {
    const node = procs.get(port);
    if (!node) return;
    procs.delete(port);
    if (!node.gone()) node.proc.kill("SIGKILL");
    await withTimeout(node.exited, 5_000, `redis-server on ${port} did not exit after SIGKILL`);
  };

  const killAll = async () => {
    await Promise.allSettled([...procs.keys()].map(kill));
    for (const { proc } of procs.values()) proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    for (const port of ports) await start(port);
    await redisCli(
      ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "0", "--cluster-yes"],
      30_000,
    );
    for (const port of ports) {
      await eventually(async () => (await redisCommand(port, "CLUSTER", "INFO")).includes("cluster_state:ok"), 20_000, 100).catch(
        (err) => {
          throw new Error(`the cluster never said cluster_state:ok on ${port}: ${err.message}`);
        },
      );
    }
  } catch (err) {
    await killAll();
    throw err;
  }
  return { ports, url: `redis-cluster://${ports.map((p) => `127.0.0.1:${p}`).join(",")}`, start, kill, killAll };
}

/** The master serving each slot, from `CLUSTER NODES`: `{ port, ranges: [[a, b]...] }[]`. */
async function clusterMasters(port) {
  const lines = await redisCommand(port, "CLUSTER", "NODES");
  return lines
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length >= 8 && f[2].includes("master"))
    .map((f) => ({
      port: Number(f[1].split("@")[0].split(":").pop()),
      ranges: f.slice(8).filter((r) => !r.startsWith("[")).map((r) => r.split("-").map(Number)).map(([a, b]) => [a, b ?? a]),
    }));
}

async function keySlot(port, key) {
  return Number((await redisCommand(port, "CLUSTER", "KEYSLOT", key))[0]);
}

/** The port of the master that serves `key`'s slot. */
async function ownerOf(port, key) {
  const slot = await keySlot(port, key);
  const owner = (await clusterMasters(port)).find((m) => m.ranges.some(([a, b]) => a <= slot && slot <= b));
  assert.ok(owner, `no master serves slot ${slot} of ${key}`);
  return owner.port;
}

/** `PUBSUB SHARDNUMSUB channel` on one master. */
async function shardSubscribers(port, channel) {
  const [name, count] = await redisCommand(port, "PUBSUB", "SHARDNUMSUB", channel);
  assert.equal(name, channel, `SHARDNUMSUB reply on ${port}`);
  return Number(count);
}

// ---------------------------------------------------------------------------

/** `GET /readyz` status, or the network error's code. */
async function readyStatus(node) {
  try {
    return (await httpRequest(`${node.url}/readyz`, { timeoutMs: 2_000 })).status;
  } catch (err) {
    return err.code ?? err.message;
  }
}

let wsCounter = 0;
const freshWorkspace = (prefix) => `${prefix}-${process.pid}-${(wsCounter += 1)}`;
const channelOf = (ws) => `${PREFIX}ws:${ws}`;

describe("three nodes joined by a 3-master Redis Cluster (sharded pub/sub)", () => {
  let redis;
  let db;
  let nodes = [];
  const clients = new Clients();
  const streams = new Streams();

  before(async () => {
    redis = await startRedisCluster();
    db = createPostgresDatabase();
    for (let i = 0; i < 3; i += 1) {
      nodes.push(
        await startSwitchboard({
          database: db.url,
          secret: SECRET,
          apiKey: API_KEY,
          env: { SWITCHBOARD_BROKER: redis.url, SWITCHBOARD_REDIS_PREFIX: PREFIX },
        }),
      );
    }
  });
  after(async () => {
    clients.closeAll();
    streams.closeAll();
    try {
      await Promise.allSettled(nodes.map((n) => n.stop()));
      await db?.drop();
    } finally {
      await redis?.killAll();
    }
  });

  /** `count` fresh workspaces whose channels are served by every master in turn. */
  async function workspacesOnEveryShard(count, name) {
    const seed = redis.ports[0];
    const byMaster = new Map(redis.ports.map((p) => [p, []]));
    for (let tries = 0; [...byMaster.values()].some((list) => list.length < count / 3); tries += 1) {
      assert.ok(tries < 200, "could not find workspaces on every shard");
      const ws = freshWorkspace(name);
      const list = byMaster.get(await ownerOf(seed, channelOf(ws)));
      if (list.length < count / 3) list.push(ws);
    }
    return [...byMaster.values()].flat();
  }

  describe("across the nodes", () => {
    afterEach(() => {
      clients.closeAll();
      streams.closeAll();
    });

    test("chat in workspaces on every shard: each member on each node receives exactly the acked ids, in order", async () => {
      const [n1, n2, n3] = nodes;
      const workspaces = await workspacesOnEveryShard(6, "chat");
      const alice = await clients.connect(n1, { sub: "alice", workspaces });
      const bob = await clients.connect(n2, { sub: "bob", workspaces });
      const carol = await clients.connect(n3, { sub: "carol", workspaces });
      const members = { alice, bob, carol };
      for (const s of Object.values(members)) for (const ws of workspaces) await join(s, ws);
      const seen = Object.fromEntries(Object.entries(members).map(([who, s]) => [who, collectMessages(s)]));

      const acked = new Map(workspaces.map((ws) => [ws, []]));
      for (const ws of workspaces) {
        for (const [who, socket] of Object.entries(members)) {
          const ack = await send(socket, ws, `${who} in ${ws}`, `${who}-${ws}`);
          acked.get(ws).push(ack.id);
        }
      }
      const total = workspaces.length * 3;
      for (const [who, list] of Object.entries(seen)) {
        await expectCount(list, total, `messages at ${who}`);
        for (const ws of workspaces) {
          const got = list.filter((e) => e.message.workspaceId === ws).map((e) => e.message.id);
          assert.deepEqual(got, acked.get(ws), `${who}: acked ids == received ids in ${ws}`);
        }
        for (const { message } of list) {
          const who = message.userId;
          assertMessageShape(message, { content: `${who} in ${message.workspaceId}`, clientMsgId: `${who}-${message.workspaceId}` });
        }
        assertIncreasing(list.map((e) => e.message.id), `ids at ${who}`);
      }
    });

    test("every node subscribes on the master of each channel's slot, several shards are used, and no classic pub/sub is used", async () => {
      const [n1, n2, n3] = nodes;
      const workspaces = await workspacesOnEveryShard(6, "spread");
      for (const [i, node] of [n1, n2, n3].entries()) {
        const socket = await clients.connect(node, { sub: `spread-${i}`, workspaces });
        for (const ws of workspaces) await join(socket, ws);
      }
      const owners = new Set();
      for (const ws of workspaces) {
        const channel = channelOf(ws);
        const owner = await ownerOf(redis.ports[0], channel);
        owners.add(owner);
        for (const port of redis.ports) {
          const n = await shardSubscribers(port, channel);
          assert.equal(n, port === owner ? 3 : 0, `${channel}: subscribers on master ${port} (its slot's master is ${owner})`);
        }
      }
      assert.equal(owners.size, 3, "the workspaces' channels live on all three masters");

      const perMaster = {};
      for (const port of redis.ports) {
        perMaster[port] = (await redisCommand(port, "PUBSUB", "SHARDCHANNELS", `${PREFIX}*`)).length;
        assert.deepEqual(await redisCommand(port, "PUBSUB", "CHANNELS"), [], `no classic SUBSCRIBE on master ${port}`);
        assert.deepEqual(await redisCommand(port, "PUBSUB", "NUMPAT"), ["0"], `no PSUBSCRIBE on master ${port}`);
      }
      assert.ok(
        Object.values(perMaster).filter((n) => n > 0).length >= 2,
        `shard channels on more than one master: ${JSON.stringify(perMaster)}`,
      );

      // What the earlier traffic used: SPUBLISH, never PUBLISH.
      let spublish = 0;
      for (const port of redis.ports) {
        const stats = (await redisCommand(port, "INFO", "commandstats")).join("\n");
        assert.ok(!/^cmdstat_publish:/m.test(stats), `PUBLISH was used on master ${port}:\n${stats}`);
        const m = /^cmdstat_spublish:calls=(\d+)/m.exec(stats);
        spublish += m ? Number(m[1]) : 0;
      }
      assert.ok(spublish > 0, "the chat traffic went through SPUBLISH");
    });

    test("a notification created through node 1 reaches an SSE stream on node 3", async () => {
      const [n1, , n3] = nodes;
      const user = `notif-${randomBytes(3).toString("hex")}`;
      const stream = await streams.raw(n3, { token: userToken(SECRET, user) });
      assert.equal(stream.status, 200, `stream on node 3: ${stream.status} ${stream.text ?? ""}`);
      await stream.waitEvents(1);
      assert.equal(stream.events[0].text + "\n\n", CONNECTED_FRAME);

      const created = await createNotification(n1, user, "mention", { by: "bob", via: "cluster" });
      await stream.waitEvents(2);
      const frame = parseEventFrame(stream.events[1].text);
      assert.equal(frame.id, created.id);
      assert.deepEqual(frame.json, created, "the SSE frame on node 3");
      await delay(QUIET_MS);
      assert.equal(stream.events.length, 2, `no other frames: ${JSON.stringify(stream.events.map((f) => f.text))}`);
    });

    test("presence: a join on node 2 and the leave are seen on node 1, and both nodes list the same users", async () => {
      const [n1, n2] = nodes;
      const ws = freshWorkspace("presence");
      const carol = await clients.connect(n1, { sub: "carol", workspaces: [ws] });
      await join(carol, ws);
      const joins = collect(carol, "presence_join");
      const leaves = collect(carol, "presence_leave");

      const dave = await clients.connect(n2, { sub: "dave", workspaces: [ws] });
      await join(dave, ws);
      await eventually(() => joins.some((e) => e?.userId === "dave"), 5_000).catch(() =>
        assert.fail(`carol on node 1 saw no presence_join of dave (node 2): ${JSON.stringify(joins)}`),
      );
      assert.deepEqual(joins.filter((e) => e?.userId === "dave"), [{ workspaceId: ws, userId: "dave" }]);

      const users = async (socket) => {
        const ack = await emitAck(socket, "presence", { workspaceId: ws });
        assert.equal(ack?.ok, true, `presence ack: ${JSON.stringify(ack)}`);
        return ack.users.map((u) => u.userId).sort();
      };
      assert.deepEqual({ node1: await users(carol), node2: await users(dave) }, { node1: ["carol", "dave"], node2: ["carol", "dave"] });

      dave.disconnect();
      await eventually(() => leaves.some((e) => e?.userId === "dave"), 5_000).catch(() =>
        assert.fail(`carol on node 1 saw no presence_leave of dave: ${JSON.stringify(leaves)}`),
      );
      assert.deepEqual(leaves, [{ workspaceId: ws, userId: "dave" }]);
      assert.deepEqual(await users(carol), ["carol"]);
    });

    test("typing on node 3 reaches a member on node 1, and not the sender", async () => {
      const [n1, , n3] = nodes;
      const ws = freshWorkspace("typing");
      const eve = await clients.connect(n3, { sub: "eve", workspaces: [ws] });
      const frank = await clients.connect(n1, { sub: "frank", workspaces: [ws] });
      for (const s of [eve, frank]) await join(s, ws);
      const atEve = collect(eve, "user_typing");
      const atFrank = collect(frank, "user_typing");

      assert.equal((await emitAck(eve, "typing_start", { workspaceId: ws }))?.ok, true);
      await expectCount(atFrank, 1, "user_typing at frank (node 1)");
      assert.deepEqual(atFrank[0], { workspaceId: ws, userId: "eve" });
      assert.equal(atEve.length, 0, `the sender gets no user_typing: ${JSON.stringify(atEve)}`);

      const stopped = nextEvent(frank, "user_stopped_typing", 5_000);
      assert.equal((await emitAck(eve, "typing_stop", { workspaceId: ws }))?.ok, true);
      assert.deepEqual(await stopped, { workspaceId: ws, userId: "eve" });
    });

  });

  // Last: it takes a master down and back up. Its own describe: an afterEach
  // would close the clients after each step (subtest).
  describe("a master restart", () => {
    test("a master killed and restarted: /readyz 503 then 200, other shards go on, its shard resumes by itself", async (t) => {
      const [n1, n2] = nodes;
      const [victimWs, otherWs] = await (async () => {
        const victim = redis.ports[1];
        let onVictim;
        let elsewhere;
        for (let tries = 0; !(onVictim && elsewhere); tries += 1) {
          assert.ok(tries < 200, "could not find workspaces on and off the victim shard");
          const ws = freshWorkspace("restart");
          const owner = await ownerOf(redis.ports[0], channelOf(ws));
          if (owner === victim) onVictim ??= ws;
          else elsewhere ??= ws;
        }
        return [onVictim, elsewhere];
      })();
      const victim = redis.ports[1];
      const alice = await clients.connect(n1, { sub: "alice", workspaces: [victimWs, otherWs] });
      const bob = await clients.connect(n2, { sub: "bob", workspaces: [victimWs, otherWs] });
      for (const s of [alice, bob]) for (const ws of [victimWs, otherWs]) await join(s, ws);
      const atBob = collectMessages(bob);
      const before = await send(alice, victimWs, "before the outage");
      await eventually(() => atBob.some((e) => e.message.id === before.id), 5_000);

      await redis.kill(victim);
      const killedAt = performance.now();
      const step = (name, fn) => t.test(name, fn).catch(() => {});

      await step("/readyz answers 503 on every node within 6 s of the master dying", async () => {
        for (const [i, n] of nodes.entries()) {
          await eventually(async () => (await readyStatus(n)) === 503, 6_000, 100).catch(async () =>
            assert.fail(`/readyz on node ${i + 1}: expected 503, it answers ${await readyStatus(n)}`),
          );
        }
        t.diagnostic(`readyz 503 everywhere ${Math.round(performance.now() - killedAt)} ms after SIGKILL`);
      });

      await step("a message in a workspace on a live shard still goes across; one on the dead shard is still acked", async () => {
        const other = await send(alice, otherWs, "other shard during the outage");
        await eventually(() => atBob.some((e) => e.message.id === other.id), 5_000).catch(() =>
          assert.fail(`bob never got ${other.id} from a live shard during the outage`),
        );
        const started = performance.now();
        await withTimeout(send(alice, victimWs, "dead shard during the outage"), 5_000, "no ack within 5 s");
        t.diagnostic(`ack on the dead shard after ${Math.round(performance.now() - started)} ms`);
      });

      await redis.start(victim);
      const restartedAt = performance.now();
      await step("/readyz is 200 again on every node within 15 s of the restart", async () => {
        for (const [i, n] of nodes.entries()) {
          await eventually(async () => (await readyStatus(n)) === 200, 15_000, 100).catch(async () =>
            assert.fail(`/readyz on node ${i + 1}: expected 200, it answers ${await readyStatus(n)}`),
          );
        }
        t.diagnostic(`readyz 200 everywhere ${Math.round(performance.now() - restartedAt)} ms after the restart`);
      });

      const afterAck = await send(alice, victimWs, "after the restart");
      await eventually(() => atBob.some((e) => e.message.id === afterAck.id), 5_000).catch(() =>
        assert.fail(`bob on node 2 never got ${afterAck.id} on the restarted shard; he got ${JSON.stringify(atBob.map((e) => e.message.id))}`),
      );
      assert.equal(await shardSubscribers(victim, channelOf(victimWs)), 2, "both nodes subscribed again on the restarted master");
      const ids = atBob.map((e) => e.message.id);
      assert.equal(new Set(ids).size, ids.length, `no duplicates at bob: ${JSON.stringify(ids)}`);
    });
  });
});
