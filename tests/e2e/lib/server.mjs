// Helpers shared by the end-to-end tests: start/stop the server binary under
// test on a loopback port (the socketio testbed, or the switchboard server with
// a fresh SQLite or PostgreSQL database), and wait for things with a bounded timeout.

import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import httpClient from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";

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
          const timeout = quietDelay(STOP_TIMEOUT_MS).then(() => "timeout");
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

/** Like `delay`, but its timer does not keep the process alive (for races against an exit). */
function quietDelay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
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

// ---------------------------------------------------------------------------
// The `switchboard` server binary (crates/server), for the tests in server/.

const SWITCHBOARD_READY_TIMEOUT_MS = 15_000;

/** The server binary from `SWITCHBOARD_BIN`; throws when it is unset or missing. */
export function switchboardPath() {
  const path = process.env.SWITCHBOARD_BIN;
  if (!path) {
    throw new Error(
      "SWITCHBOARD_BIN is not set: point it at the built server binary " +
        "(e.g. target/release/switchboard; build it with `cargo build --release -p switchboard`)",
    );
  }
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw new Error(`SWITCHBOARD_BIN=${path} does not exist or is not a file`);
  }
  return path;
}

let uniqueCounter = 0;
/** A name no other test run on this machine uses: [a-z0-9_] only. */
export function uniqueName(prefix = "sbe2e") {
  uniqueCounter += 1;
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${uniqueCounter}_${randomBytes(3).toString("hex")}`;
}

/** A fresh SQLite database: `{ url, drop() }` (drop removes the file and its -wal/-shm). */
export function createSqliteDatabase() {
  const file = joinPath(tmpdir(), `${uniqueName()}.db`);
  return {
    kind: "sqlite",
    url: `sqlite://${file}`,
    async drop() {
      for (const suffix of ["", "-wal", "-shm", "-journal"]) rmSync(file + suffix, { force: true });
    },
  };
}

/**
 * The administrative connection used to create and drop test databases:
 * `SWITCHBOARD_TEST_POSTGRES` (as in scripts/test.sh), default
 * postgres://root@127.0.0.1:5432/test (trust auth).
 */
export function postgresAdminUrl() {
  return process.env.SWITCHBOARD_TEST_POSTGRES || "postgres://root@127.0.0.1:5432/test";
}

function psql(sql) {
  const admin = postgresAdminUrl();
  try {
    execFileSync("psql", [admin, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-c", sql], {
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 15_000,
    });
  } catch (err) {
    const detail = err.stderr?.toString().trim() || err.message;
    throw new Error(
      `PostgreSQL at ${admin} is required by the server tests and could not run ${JSON.stringify(sql)}: ${detail}` +
        (process.env.CI === "true" ? " (CI=true: PostgreSQL must be available)" : "") +
        ". Start PostgreSQL (trust auth) or point SWITCHBOARD_TEST_POSTGRES at a server where you may create databases.",
    );
  }
}

/** A fresh PostgreSQL database (via `psql`): `{ url, drop() }`. Throws when PostgreSQL is unreachable. */
export function createPostgresDatabase() {
  const name = uniqueName();
  psql(`CREATE DATABASE ${name}`);
  const url = new URL(postgresAdminUrl());
  url.pathname = `/${name}`;
  let dropped = false;
  return {
    kind: "postgres",
    url: url.toString(),
    async drop() {
      if (dropped) return;
      dropped = true;
      psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}

/** The stores every chat test file runs against. `create()` returns `{ url, drop() }`. */
export const STORES = [
  { name: "sqlite", create: async () => createSqliteDatabase() },
  { name: "postgres", create: async () => createPostgresDatabase() },
];

/**
 * Runs `switchboard serve` from `SWITCHBOARD_BIN` on a free loopback port with a
 * JWT secret, an API key (random ones of 32 bytes or more unless given; the server
 * refuses to start with one shorter than 16) and a fresh SQLite database (unless `database` is given),
 * in a fresh temporary working directory (unless `cwd` is given), and waits until
 * `GET /readyz` answers 200.
 *
 * Inherited `SWITCHBOARD_*` variables are dropped; `env` is applied last, and a
 * `null` value there removes a variable (e.g. `{ SWITCHBOARD_BIND: null }` with
 * `port` set to the port a config file names).
 *
 * Returns `{ url, port, proc, secret, apiKey, databaseUrl, cwd, output(), stop() }`.
 *
 * @param {{ env?: Record<string,string|null>, args?: string[], port?: number,
 *           database?: string, cwd?: string, secret?: string, apiKey?: string,
 *           readyTimeoutMs?: number }} [options]
 */
export async function startSwitchboard(options = {}) {
  const binary = switchboardPath();
  const port = options.port ?? (await freePort());
  const secret = options.secret ?? `jwt-secret-${randomBytes(12).toString("hex")}`;
  const apiKey = options.apiKey ?? `api-key-${randomBytes(12).toString("hex")}`;
  const ownDatabase = options.database ? null : createSqliteDatabase();
  const databaseUrl = options.database ?? ownDatabase.url;
  const ownCwd = options.cwd ? null : mkdtempSync(joinPath(tmpdir(), "sbe2e-cwd-"));
  const cwd = options.cwd ?? ownCwd;

  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("SWITCHBOARD_")) env[key] = value;
  }
  Object.assign(env, {
    SWITCHBOARD_BIND: `127.0.0.1:${port}`,
    SWITCHBOARD_JWT_SECRET: secret,
    SWITCHBOARD_API_KEY: apiKey,
    SWITCHBOARD_DATABASE_URL: databaseUrl,
    RUST_LOG: process.env.RUST_LOG ?? "info",
  });
  for (const [key, value] of Object.entries(options.env ?? {})) {
    if (value === null || value === undefined) delete env[key];
    else env[key] = String(value);
  }

  const args = ["serve", ...(options.args ?? [])];
  const proc = spawn(binary, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keep = (chunk) => {
    output += chunk.toString();
    if (output.length > 200_000) output = output.slice(-100_000);
  };
  proc.stdout.on("data", keep);
  proc.stderr.on("data", keep);
  let spawnError = null;
  proc.once("error", (err) => {
    spawnError = err;
  });
  const exited = new Promise((resolve) => proc.once("close", (code, signal) => resolve({ code, signal })));
  const hasExited = () => proc.exitCode !== null || proc.signalCode !== null || spawnError !== null;
  const url = `http://127.0.0.1:${port}`;

  const cleanup = async () => {
    if (ownDatabase) await ownDatabase.drop();
    if (ownCwd) rmSync(ownCwd, { recursive: true, force: true });
  };

  const readyTimeout = options.readyTimeoutMs ?? SWITCHBOARD_READY_TIMEOUT_MS;
  const deadline = Date.now() + readyTimeout;
  let last = "no answer yet";
  for (;;) {
    if (hasExited()) {
      await Promise.race([exited, quietDelay(1_000)]);
      await cleanup();
      throw new Error(
        `switchboard ${args.join(" ")} exited before it was ready ` +
          `(code ${proc.exitCode}, signal ${proc.signalCode}${spawnError ? `, ${spawnError.message}` : ""}); output:\n${output}`,
      );
    }
    try {
      const response = await httpRequest(`${url}/readyz`, { timeoutMs: 1_000 });
      if (response.status === 200) break;
      last = `GET /readyz answered ${response.status}`;
    } catch (err) {
      last = `GET /readyz failed: ${err.code ?? err.message}`;
    }
    if (Date.now() >= deadline) {
      proc.kill("SIGKILL");
      await Promise.race([exited, quietDelay(2_000)]);
      await cleanup();
      throw new Error(`switchboard was not ready on ${url} within ${readyTimeout} ms (${last}); output:\n${output}`);
    }
    await delay(50);
  }

  let stopping;
  return {
    url,
    port,
    proc,
    secret,
    apiKey,
    databaseUrl,
    cwd,
    /** Everything the process printed so far (stdout and stderr). */
    output: () => output,
    get running() {
      return !hasExited();
    },
    /** SIGTERM, SIGKILL after a bounded wait; removes its own database and directory. */
    stop() {
      if (!stopping) {
        stopping = (async () => {
          let result;
          if (hasExited()) {
            result = await Promise.race([exited, quietDelay(1_000).then(() => ({}))]);
          } else {
            proc.kill("SIGTERM");
            const timeout = quietDelay(STOP_TIMEOUT_MS).then(() => "timeout");
            result = await Promise.race([exited, timeout]);
            if (result === "timeout") {
              proc.kill("SIGKILL");
              result = await exited;
            }
          }
          await cleanup();
          return result;
        })();
      }
      return stopping;
    },
  };
}

/**
 * One HTTP request on its own connection (no keep-alive, so nothing keeps the
 * test process alive afterwards). Resolves with `{ status, headers, body }`
 * (`headers` a `Headers`, `body` a string); rejects on a network error or after `timeoutMs`.
 *
 * @param {string} url
 * @param {{ method?: string, headers?: Record<string,string>, body?: string|Buffer, timeoutMs?: number }} [options]
 */
export function httpRequest(url, { method = "GET", headers = {}, body, timeoutMs = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = httpClient.request(url, { method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) {
          for (const value of Array.isArray(v) ? v : [v]) h.append(k, value);
        }
        resolve({ status: res.statusCode, headers: h, body: Buffer.concat(chunks).toString("utf8") });
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${url}: no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(body);
  });
}
