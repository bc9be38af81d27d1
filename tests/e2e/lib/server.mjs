// Helpers shared by the end-to-end tests: start/stop the server binary under
// test on a loopback port, and wait for things with a bounded timeout.

import { spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import net from "node:net";

const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;

/** The testbed binary from `SWITCHBOARD_TESTBED`; throws when it is missing. */
export function testbedPath() {
  const path = process.env.SWITCHBOARD_TESTBED;
  if (!path) {
    throw new Error(
      "SWITCHBOARD_TESTBED is not set: point it at the built testbed example " +
        "(e.g. target/release/examples/testbed; build it with `cargo build --release -p switchboard-socketio --example testbed`)",
    );
  }
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw new Error(`SWITCHBOARD_TESTBED=${path} does not exist or is not a file`);
  }
  return path;
}

/** A free TCP port on 127.0.0.1 (listen on port 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/**
 * Spawns the server binary on `port` (a free one when omitted) and waits for its
 * `listening on` line. Returns `{ url, port, proc, stop() }`.
 *
 * @param {{ binary?: string, port?: number, env?: Record<string,string> }} [options]
 */
export async function startServer(options = {}) {
  const binary = options.binary ?? testbedPath();
  const port = options.port ?? (await freePort());
  const proc = spawn(binary, [String(port)], {
    env: { ...process.env, ...(options.env ?? {}) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));

  await new Promise((resolve, reject) => {
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      proc.stdout.off("data", onData);
      proc.off("exit", onExit);
      proc.off("error", onError);
      if (err) {
        proc.kill("SIGKILL");
        reject(err);
      } else {
        resolve();
      }
    };
    const onData = (chunk) => {
      output += chunk.toString();
      if (/listening on \S+:\d+/.test(output)) finish();
    };
    const onExit = (code, signal) =>
      finish(new Error(`server ${binary} exited early (code ${code}, signal ${signal}); output:\n${output}`));
    const onError = (err) => finish(new Error(`could not start ${binary}: ${err.message}`));
    const timer = setTimeout(
      () => finish(new Error(`server did not print "listening on" within ${READY_TIMEOUT_MS} ms; output:\n${output}`)),
      READY_TIMEOUT_MS,
    );
    proc.stdout.on("data", onData);
    proc.stderr.on("data", (chunk) => {
      output += chunk.toString();
    });
    proc.once("exit", onExit);
    proc.once("error", onError);
  });
  // Keep draining the pipes so the child never blocks on a full pipe.
  proc.stdout.resume();
  proc.stderr.resume();

  let stopping;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    proc,
    /** True while the process runs. */
    get running() {
      return proc.exitCode === null && proc.signalCode === null;
    },
    /** Kills the server and waits for it to exit. */
    stop() {
      if (!stopping) {
        stopping = (async () => {
          if (proc.exitCode !== null || proc.signalCode !== null) return exited;
          proc.kill("SIGTERM");
          const timeout = delay(STOP_TIMEOUT_MS).then(() => "timeout");
          if ((await Promise.race([exited, timeout])) === "timeout") {
            proc.kill("SIGKILL");
          }
          return exited;
        })();
      }
      return stopping;
    },
  };
}

export function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Resolves with the arguments of the next `event` of `emitter` (an array when the
 * event has several, else the single value); rejects after `timeoutMs`.
 * Works with Node EventEmitters and socket.io-client's emitters.
 */
export function waitFor(emitter, event, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    const on = emitter.on ?? emitter.addEventListener;
    const off = emitter.off ?? emitter.removeListener ?? emitter.removeEventListener;
    const listener = (...args) => {
      clearTimeout(timer);
      off.call(emitter, event, listener);
      resolve(args.length > 1 ? args : args[0]);
    };
    const timer = setTimeout(() => {
      off.call(emitter, event, listener);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}"`));
    }, timeoutMs);
    on.call(emitter, event, listener);
  });
}

/**
 * Calls `check` (sync or async) until it returns a truthy value and resolves with
 * it; rejects with the last failure after `timeoutMs`. Assertion errors thrown by
 * `check` count as "not yet".
 */
export async function eventually(check, timeoutMs = 5_000, intervalMs = 20) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = new Error(`condition still false after ${timeoutMs} ms`);
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      const error = new Error(`eventually: gave up after ${timeoutMs} ms: ${last?.message}`);
      error.cause = last;
      throw error;
    }
    await delay(intervalMs);
  }
}

/** Rejects after `ms` with `message` unless `promise` settles first. */
export function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message ?? `timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
