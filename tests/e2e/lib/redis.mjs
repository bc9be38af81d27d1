// A private redis-server on a loopback port, which a test may kill and restart
// without touching the machine's shared Redis.

import { spawn } from "node:child_process";
import net from "node:net";

import { eventually, withTimeout } from "./server.mjs";

function redisPing(port, timeoutMs = 500) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    let data = "";
    const done = (ok) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.on("data", (c) => {
      data += c;
      if (data.includes("\r\n")) done(data.startsWith("+PONG"));
    });
    sock.on("error", () => done(false));
  });
}

/** Starts `redis-server` on `port` (loopback, no persistence) and waits until it answers PING. */
export async function startRedis(port) {
  const proc = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  proc.stdout.on("data", (c) => {
    output = (output + c).slice(-20_000);
  });
  proc.stderr.on("data", (c) => {
    output = (output + c).slice(-20_000);
  });
  let spawnError = null;
  proc.once("error", (err) => {
    spawnError = err;
  });
  const exited = new Promise((resolve) => proc.once("close", resolve));
  const gone = () => proc.exitCode !== null || proc.signalCode !== null || spawnError !== null;
  const redis = {
    port,
    proc,
    output: () => output,
    get running() {
      return !gone();
    },
    async kill(signal = "SIGKILL") {
      if (!gone()) proc.kill(signal);
      await withTimeout(exited, 5_000, `redis-server on ${port} did not exit after ${signal}`);
    },
  };
  try {
    await eventually(async () => {
      if (gone()) throw new Error(`redis-server exited (${spawnError?.message ?? proc.exitCode}): ${output}`);
      return redisPing(port);
    }, 10_000, 50);
  } catch (err) {
    await redis.kill().catch(() => {});
    throw new Error(`redis-server on ${port} did not come up: ${err.message}\n${output}`);
  }
  return redis;
}


/**
 * The number of subscribers Redis at `url` counts on a pub/sub channel
 * (`PUBSUB NUMSUB`), which is the number of nodes subscribed to it.
 */
export function subscriberCount(url, channel, timeoutMs = 2_000) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: hostname, port: Number(port) || 6379 });
    let data = "";
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`PUBSUB NUMSUB ${channel}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const arg = (a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
    sock.on("connect", () => sock.write(`*3\r\n${arg("PUBSUB")}${arg("NUMSUB")}${arg(channel)}`));
    sock.on("data", (c) => {
      data += c;
      const count = data.match(/:(\d+)\r\n$/);
      if (count) {
        clearTimeout(timer);
        sock.destroy();
        resolve(Number(count[1]));
      }
    });
    sock.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
