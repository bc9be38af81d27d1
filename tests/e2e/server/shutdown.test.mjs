// SIGTERM: the server stops accepting, closes its Socket.IO connections at once
// (their clients reconnect, to another node behind a load balancer), and exits
// within SWITCHBOARD_SHUTDOWN_TIMEOUT_SECS even while an SSE stream stays open.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";

import { startSwitchboard, withTimeout } from "../lib/server.mjs";
import { Clients, join, nextEvent, userToken } from "../lib/switchboard.mjs";

const clients = new Clients();
let server;
after(async () => {
  clients.closeAll();
  await server?.stop();
});

test("SIGTERM closes Socket.IO connections at once and exits within the timeout despite an open stream", async () => {
  server = await startSwitchboard({ env: { SWITCHBOARD_SHUTDOWN_TIMEOUT_SECS: "2" } });
  const alice = await clients.connect(server, { sub: "alice", workspaces: ["w"] });
  await join(alice, "w");
  const token = userToken(server.secret, "bob");
  const stream = http.get(`${server.url}/api/notifications/stream?token=${token}`);
  const streamOpen = new Promise((resolve, reject) => {
    stream.once("response", (res) => res.once("data", resolve));
    stream.once("error", reject);
  });
  await withTimeout(streamOpen, 5_000, "the notification stream did not open");
  stream.on("error", () => {}); // it is cut when the server exits

  const disconnected = nextEvent(alice, "disconnect", 3_000);
  const exited = new Promise((resolve) => server.proc.once("exit", (code, signal) => resolve({ code, signal })));
  const signalled = Date.now();
  server.proc.kill("SIGTERM");
  const reason = await disconnected;
  const closedAfter = Date.now() - signalled;
  assert.equal(reason, "transport close", "the server closed the connection");
  assert.ok(closedAfter < 1_000, `Socket.IO connection closed ${closedAfter} ms after SIGTERM`);
  const { code } = await withTimeout(exited, 5_000, "the server did not exit after SIGTERM");
  const exitedAfter = Date.now() - signalled;
  assert.equal(code, 0);
  assert.ok(exitedAfter >= 1_500 && exitedAfter < 3_500, `exited ${exitedAfter} ms after SIGTERM (timeout 2 s, stream open)`);
  stream.destroy();
});
