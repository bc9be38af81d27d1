// The shipped nginx example (examples/nginx/nginx.conf) in front of three nodes
// joined by Redis: a polling-only client and a WebSocket client chat through it,
// with a third client connected straight to another node; and clients from
// different loopback addresses (127.0.0.x) are spread over the nodes by the
// example's address hash, each polling client staying on its node.
//
// Needs nginx on the PATH (CI installs Debian's package).
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";
import { fileURLToPath } from "node:url";

import { createPostgresDatabase, delay, eventually, freePort, startSwitchboard } from "../lib/server.mjs";
import { metric } from "../lib/notifications.mjs";
import { Clients, collectMessages, join, send } from "../lib/switchboard.mjs";

const EXAMPLE = fileURLToPath(new URL("../../../examples/nginx/nginx.conf", import.meta.url));
const SECRET = `jwt-secret-${randomBytes(12).toString("hex")}`;
const API_KEY = `api-key-${randomBytes(12).toString("hex")}`;
const clients = new Clients();
const nodes = [];
let db;
let nginx;
let dir;
let proxyUrl;

function nginxBinary() {
  try {
    return execFileSync("sh", ["-c", "command -v nginx"]).toString().trim();
  } catch {
    throw new Error("nginx is not installed (apt-get install nginx); this test needs it");
  }
}

function portOpen(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

before(async () => {
  const binary = nginxBinary();
  db = createPostgresDatabase();
  const prefix = `e2e-nginx-${randomBytes(4).toString("hex")}:`;
  for (let i = 0; i < 3; i += 1) {
    nodes.push(
      await startSwitchboard({
        database: db.url,
        secret: SECRET,
        apiKey: API_KEY,
        env: { SWITCHBOARD_BROKER: "redis://127.0.0.1:6379", SWITCHBOARD_REDIS_PREFIX: prefix },
      }),
    );
  }
  const listen = await freePort();
  let config = readFileSync(EXAMPLE, "utf8");
  for (const [i, node] of nodes.entries()) config = config.replace(`127.0.0.1:300${i + 1};`, `127.0.0.1:${node.port};`);
  config = config.replace("listen 127.0.0.1:8080;", `listen 127.0.0.1:${listen};`);
  assert.ok(nodes.every((n) => config.includes(`127.0.0.1:${n.port};`)), "the example's upstreams were replaced");
  dir = mkdtempSync(joinPath(tmpdir(), "switchboard-nginx-"));
  writeFileSync(joinPath(dir, "nginx.conf"), config);
  nginx = spawn(binary, ["-p", dir, "-c", joinPath(dir, "nginx.conf"), "-g", "daemon off;"], { stdio: "ignore" });
  await eventually(() => portOpen(listen), 10_000);
  proxyUrl = `http://127.0.0.1:${listen}`;
});

after(async () => {
  clients.closeAll();
  if (nginx && nginx.exitCode === null) {
    const exited = new Promise((resolve) => nginx.once("exit", resolve));
    nginx.kill("SIGTERM");
    await Promise.race([exited, delay(5_000)]);
  }
  for (const node of nodes) await node.stop();
  await db?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("a polling-only client and a WebSocket client chat through nginx, and with a client on another node", async () => {
  const proxy = { url: proxyUrl, secret: SECRET };
  const polling = await clients.connect(proxy, { sub: "alice", workspaces: ["lb"], transports: ["polling"] });
  const websocket = await clients.connect(proxy, { sub: "bob", workspaces: ["lb"], transports: ["websocket"] });
  const direct = await clients.connect({ url: nodes[2].url, secret: SECRET }, { sub: "carol", workspaces: ["lb"] });
  assert.equal(polling.io.engine.transport.name, "polling");
  for (const socket of [polling, websocket, direct]) await join(socket, "lb");
  const seen = [polling, websocket, direct].map(collectMessages);

  const ids = [];
  ids.push((await send(polling, "lb", "from the polling client")).id);
  ids.push((await send(websocket, "lb", "from the websocket client")).id);
  ids.push((await send(direct, "lb", "from a node behind no proxy")).id);
  for (const list of seen) {
    await eventually(() => list.length >= 3, 5_000);
    assert.deepEqual(list.map((e) => e.message.id), ids);
  }
  // Long-polling kept working for a while (each poll reached the node holding the session).
  await delay(1_000);
  ids.push((await send(websocket, "lb", "later")).id);
  await eventually(() => seen[0].length >= 4, 5_000);
  assert.deepEqual(seen[0].map((e) => e.message.id), ids);
});

test("clients from different addresses are spread over the nodes, and polling clients stay on theirs", async () => {
  const proxy = { url: proxyUrl, secret: SECRET };
  const connections = () => Promise.all(nodes.map(async (n) => (await metric(n, "switchboard_connections")) ?? 0));
  const placed = [];
  for (let i = 2; i < 14; i += 1) {
    const address = `127.0.0.${i}`;
    const before = await connections();
    // Both transports take the source address from an agent bound to it.
    const agent = new http.Agent({ localAddress: address, keepAlive: true });
    const transports = i % 2 === 0 ? ["polling"] : ["websocket"];
    const socket = await clients.connect(proxy, { sub: `u${i}`, workspaces: ["spread"], transports, agent });
    let node = -1;
    await eventually(async () => {
      const after = await connections();
      node = after.findIndex((count, k) => count > before[k]);
      return node >= 0;
    }, 5_000);
    placed.push({ address, node, socket, transport: transports[0] });
  }
  const used = new Set(placed.map((p) => p.node));
  assert.ok(used.size >= 2, `12 client addresses all landed on one node: ${JSON.stringify(placed.map((p) => [p.address, p.node]))}`);

  for (const { socket } of placed) await join(socket, "spread");
  const seen = placed.map(({ socket }) => collectMessages(socket));
  const ids = [];
  for (const { socket } of [placed[0], placed[1]]) ids.push((await send(socket, "spread", "across the nodes")).id);
  // Polling clients keep polling through nginx for a while: a poll that reached
  // another node would find no session there and end the connection.
  await delay(1_500);
  ids.push((await send(placed[2].socket, "spread", "later")).id);
  for (const [k, list] of seen.entries()) {
    await eventually(() => list.length >= 3, 5_000).catch(() => {});
    assert.deepEqual(list.map((e) => e.message.id), ids, `${placed[k].transport} client from ${placed[k].address} on node ${placed[k].node + 1}`);
    assert.ok(placed[k].socket.connected, `the client from ${placed[k].address} is still connected`);
  }
});
