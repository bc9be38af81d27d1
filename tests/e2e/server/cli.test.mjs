// The command line and configuration (DESIGN.md section 6): `switchboard token`,
// `switchboard serve` without a secret, and the precedence file < environment < flag.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard npm run test:server

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";
import jwt from "jsonwebtoken";

import { createSqliteDatabase, freePort, httpRequest, startSwitchboard, switchboardPath } from "../lib/server.mjs";
import { Clients, assertFailure, connectRefused, emitAck, join, send } from "../lib/switchboard.mjs";

/** The environment of this process without any SWITCHBOARD_* variable, plus `extra`. */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("SWITCHBOARD_")) env[k] = v;
  return { ...env, ...extra };
}

/** Runs the binary to completion (bounded); resolves with `{ code, signal, stdout, stderr }`. */
function run(args, { env = {}, cwd, timeoutMs = 15_000 } = {}) {
  return new Promise((resolve) => {
    execFile(
      switchboardPath(),
      args,
      { env: cleanEnv(env), cwd, timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 4 * 1024 * 1024 },
      (err, stdout, stderr) => {
        resolve({
          code: err ? (typeof err.code === "number" ? err.code : null) : 0,
          signal: err?.signal ?? null,
          killed: Boolean(err?.killed),
          stdout: stdout.toString(),
          stderr: stderr.toString(),
        });
      },
    );
  });
}

/** Whether something answers HTTP on 127.0.0.1:port. */
async function answers(port) {
  try {
    await httpRequest(`http://127.0.0.1:${port}/healthz`, { timeoutMs: 1_000 });
    return true;
  } catch {
    return false;
  }
}

describe("switchboard token", () => {
  let dir;
  const servers = [];
  const clients = new Clients();

  before(() => {
    dir = mkdtempSync(joinPath(tmpdir(), "sbe2e-cli-"));
  });
  afterEach(() => clients.closeAll());
  after(async () => {
    clients.closeAll();
    for (const s of servers) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("mints a token with the configured secret that the server accepts", async () => {
    const secret = "cli-secret-0123456789";
    const result = await run(["token", "--sub", "alice", "--workspace", "w1", "--ttl", "1h"], {
      env: { SWITCHBOARD_JWT_SECRET: secret },
      cwd: dir,
    });
    assert.equal(result.code, 0, `exit code; stderr: ${result.stderr}`);
    const token = result.stdout.trim();
    assert.match(token, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, `one JWT on stdout: ${JSON.stringify(result.stdout)}`);

    const now = Math.floor(Date.now() / 1000);
    const header = jwt.decode(token, { complete: true }).header;
    assert.equal(header.alg, "HS256");
    const claims = jwt.verify(token, secret, { algorithms: ["HS256"] });
    assert.equal(claims.sub, "alice");
    assert.deepEqual(claims.workspaces, ["w1"]);
    assert.ok(Math.abs(claims.exp - (now + 3600)) <= 10, `exp about 1 h ahead: exp ${claims.exp}, now ${now}`);

    const server = await startSwitchboard({ secret });
    servers.push(server);
    const socket = await clients.connect(server, { token });
    await join(socket, "w1");
    await send(socket, "w1", "minted by the CLI");
    assert.deepEqual(await emitAck(socket, "join_workspace", "w2"), { ok: false, error: "forbidden", message: "Access denied" });
    const other = await startSwitchboard(); // another secret
    servers.push(other);
    const refused = await connectRefused(clients.socket(other, { token }));
    assert.equal(refused.message, "Authentication failed");
  });

  test("repeats --workspace, defaults --ttl to 1h, and reads the secret from a flag", async () => {
    const secret = "flag-secret-0123456789";
    const result = await run(["token", "--sub", "bob", "--workspace", "a", "--workspace", "b", "--jwt-secret", secret], { cwd: dir });
    assert.equal(result.code, 0, result.stderr);
    const claims = jwt.verify(result.stdout.trim(), secret, { algorithms: ["HS256"] });
    assert.equal(claims.sub, "bob");
    assert.deepEqual(claims.workspaces, ["a", "b"]);
    const now = Math.floor(Date.now() / 1000);
    assert.ok(Math.abs(claims.exp - (now + 3600)) <= 10, `default ttl 1h: ${claims.exp - now}`);

    const short = await run(["token", "--sub", "bob", "--ttl", "90s"], { env: { SWITCHBOARD_JWT_SECRET: secret }, cwd: dir });
    assert.equal(short.code, 0, short.stderr);
    const shortClaims = jwt.verify(short.stdout.trim(), secret, { algorithms: ["HS256"] });
    assert.ok(Math.abs(shortClaims.exp - (now + 90)) <= 10, `ttl 90s: ${shortClaims.exp - now}`);
  });

  test("without a secret it exits non-zero and says so", async () => {
    const result = await run(["token", "--sub", "alice"], { cwd: dir });
    assert.notEqual(result.code, 0, `exit code; stdout ${result.stdout}`);
    assert.equal(result.stdout.trim(), "", "no token printed");
    assert.match(result.stderr, /jwt secret|SWITCHBOARD_JWT_SECRET/i);
  });
});

describe("switchboard serve", () => {
  let dir;
  const servers = [];
  const clients = new Clients();

  before(() => {
    dir = mkdtempSync(joinPath(tmpdir(), "sbe2e-cfg-"));
  });
  afterEach(() => clients.closeAll());
  after(async () => {
    clients.closeAll();
    for (const s of servers) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("without a JWT secret and without --dev it exits non-zero with a message about the secret", async () => {
    const port = await freePort();
    const db = createSqliteDatabase();
    try {
      const result = await run(["serve"], {
        env: { SWITCHBOARD_BIND: `127.0.0.1:${port}`, SWITCHBOARD_API_KEY: "cli-api-key-0123456789", SWITCHBOARD_DATABASE_URL: db.url },
        cwd: dir,
        timeoutMs: 10_000,
      });
      assert.equal(result.killed, false, `it must exit by itself, not run: ${result.stdout}${result.stderr}`);
      assert.notEqual(result.code, 0);
      assert.match(`${result.stdout}${result.stderr}`, /jwt secret|SWITCHBOARD_JWT_SECRET/i);
      assert.equal(await answers(port), false, "nothing listening");
    } finally {
      await db.drop();
    }
  });

  /** A server run in `dir` (where switchboard.toml is) that is reachable on `port`. */
  async function serveIn(port, { env = {}, args = [] } = {}) {
    const server = await startSwitchboard({ cwd: dir, port, env: { SWITCHBOARD_BIND: null, ...env }, args });
    servers.push(server);
    return server;
  }

  /** Asserts `limit` characters pass and `limit + 1` are too_large. */
  async function assertMaxChars(server, limit) {
    const socket = await clients.connect(server, { sub: "alice", workspaces: ["cfg"] });
    await join(socket, "cfg");
    await send(socket, "cfg", "x".repeat(limit));
    assertFailure(await emitAck(socket, "message", { workspaceId: "cfg", content: "x".repeat(limit + 1) }), "too_large", `limit ${limit}`);
    socket.disconnect();
  }

  test("switchboard.toml < SWITCHBOARD_* environment < flags", async () => {
    const [filePort, envPort, flagPort] = [await freePort(), await freePort(), await freePort()];
    writeFileSync(joinPath(dir, "switchboard.toml"), `bind = "127.0.0.1:${filePort}"\nmax_message_chars = 10\n`);

    // The file alone.
    const fromFile = await serveIn(filePort);
    await assertMaxChars(fromFile, 10);
    await fromFile.stop();

    // The environment over the file.
    const fromEnv = await serveIn(envPort, { env: { SWITCHBOARD_BIND: `127.0.0.1:${envPort}`, SWITCHBOARD_MAX_MESSAGE_CHARS: "20" } });
    assert.equal(await answers(filePort), false, "the file's bind is overridden by SWITCHBOARD_BIND");
    await assertMaxChars(fromEnv, 20);
    await fromEnv.stop();

    // Flags over the environment.
    const fromFlags = await serveIn(flagPort, {
      env: { SWITCHBOARD_BIND: `127.0.0.1:${envPort}`, SWITCHBOARD_MAX_MESSAGE_CHARS: "20" },
      args: ["--bind", `127.0.0.1:${flagPort}`, "--max-message-chars", "30"],
    });
    assert.equal(await answers(envPort), false, "SWITCHBOARD_BIND is overridden by --bind");
    assert.equal(await answers(filePort), false);
    await assertMaxChars(fromFlags, 30);
    await fromFlags.stop();

    // The environment alone over the file, the file's bind kept.
    const envOnlyLimit = await serveIn(filePort, { env: { SWITCHBOARD_MAX_MESSAGE_CHARS: "15" } });
    await assertMaxChars(envOnlyLimit, 15);
    await envOnlyLimit.stop();
  });

  test("an unknown key in switchboard.toml is refused at start", async () => {
    const bad = mkdtempSync(joinPath(tmpdir(), "sbe2e-badcfg-"));
    const db = createSqliteDatabase();
    try {
      writeFileSync(joinPath(bad, "switchboard.toml"), `max_mesage_chars = 10\n`);
      const result = await run(["serve"], {
        env: { SWITCHBOARD_JWT_SECRET: "cli-secret-0123456789", SWITCHBOARD_BIND: `127.0.0.1:${await freePort()}`, SWITCHBOARD_DATABASE_URL: db.url },
        cwd: bad,
        timeoutMs: 10_000,
      });
      assert.equal(result.killed, false, "it must exit by itself");
      assert.notEqual(result.code, 0);
      assert.match(`${result.stdout}${result.stderr}`, /switchboard\.toml|max_mesage_chars/);
    } finally {
      rmSync(bad, { recursive: true, force: true });
      await db.drop();
    }
  });
});
