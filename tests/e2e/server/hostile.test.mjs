// Hostile input (DESIGN.md sections 2, 4 and 8): one test per attack, each with the
// refusal the contract promises. Weak or empty secrets and API keys stop `serve`
// (and `token`) before anything listens; requests without the key, with a wrong
// one, or with forged, unsigned, expired or key-confused tokens get 401; a token
// for another workspace gets `forbidden`; CORS never pairs a wildcard with
// credentials; `/readyz` names what is down without error text; logs to a pipe
// carry no colour codes and `--log-format json` writes JSON lines; path tricks in
// collab document names, oversized headers and oversized bodies are refused
// without a 500 and without bringing the server down.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard node --test server/hostile.test.mjs

import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHmac, generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";
import jwt from "jsonwebtoken";

import {
  createSqliteDatabase,
  eventually,
  freePort,
  httpRequest,
  startSwitchboard,
  switchboardPath,
} from "../lib/server.mjs";
import { startRedis } from "../lib/redis.mjs";
import {
  Clients,
  algNoneToken,
  assertFailure,
  assertHttpError,
  connectRefused,
  emitAck,
  expiredToken,
  forgedToken,
  http,
  join,
  userToken,
} from "../lib/switchboard.mjs";

/** A key or secret of `bytes` bytes (hex text). */
const secretOf = (bytes) => randomBytes(bytes).toString("hex").slice(0, bytes);

/** The environment of this process without any SWITCHBOARD_* variable, plus `extra`. */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("SWITCHBOARD_")) env[k] = v;
  return { ...env, ...extra };
}

/** Runs the binary to completion (bounded); resolves with `{ code, killed, stdout, stderr }`. */
function run(args, { env = {}, cwd, timeoutMs = 15_000 } = {}) {
  return new Promise((resolve) => {
    execFile(
      switchboardPath(),
      args,
      { env: cleanEnv(env), cwd, timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 4 * 1024 * 1024 },
      (err, stdout, stderr) => {
        resolve({
          code: err ? (typeof err.code === "number" ? err.code : null) : 0,
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

/**
 * One raw HTTP/1.1 exchange on its own connection: writes `head` (and `body`),
 * resolves with `{ status, head }` of the answer, or `{ status: null, error }`
 * when the server closed or reset the connection without one.
 */
function rawRequest(port, head, { body, timeoutMs = 10_000 } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    let data = "";
    let settled = false;
    const done = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ status: null, error: "timeout" }), timeoutMs);
    sock.on("connect", () => {
      sock.write(head);
      if (body) sock.write(body);
    });
    sock.on("data", (chunk) => {
      data += chunk.toString("latin1");
      const end = data.indexOf("\r\n\r\n");
      if (end >= 0) {
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? NaN);
        done({ status, head: data.slice(0, end) });
      }
    });
    sock.on("error", (err) => done({ status: null, error: err.code ?? err.message }));
    sock.on("close", () => done({ status: null, error: "closed" }));
  });
}

/** Asserts the server still answers /healthz (it did not crash or hang). */
async function assertAlive(server, context) {
  const health = await httpRequest(`${server.url}/healthz`, { timeoutMs: 5_000 });
  assert.equal(health.status, 200, `${context}: /healthz after the attack`);
  assert.equal(server.running, true, `${context}: the server process still runs`);
}

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** An HS256 token signed by hand with `key` (any bytes, e.g. a PEM text) as the HMAC secret. */
function hmacToken(key, payload) {
  const signing = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(payload)}`;
  return `${signing}.${createHmac("sha256", key).update(signing).digest("base64url")}`;
}

// ---------------------------------------------------------------------------

describe("weak secrets stop `serve` before anything listens", () => {
  let db;
  let dir;
  before(() => {
    db = createSqliteDatabase();
    dir = mkdtempSync(joinPath(tmpdir(), "sbe2e-hostile-"));
  });
  after(async () => {
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs `serve` with `env` and asserts a non-zero exit, one output line matching `names`, nothing listening. */
  async function assertRefused(env, names) {
    const port = await freePort();
    const result = await run(["serve"], {
      env: { SWITCHBOARD_BIND: `127.0.0.1:${port}`, SWITCHBOARD_DATABASE_URL: db.url, ...env },
      cwd: dir,
      timeoutMs: 10_000,
    });
    const output = `${result.stdout}${result.stderr}`;
    assert.equal(result.killed, false, `it must exit by itself, not run: ${output}`);
    assert.notEqual(result.code, 0, `non-zero exit; output: ${output}`);
    const lines = output.split("\n").filter((line) => line.trim() !== "");
    assert.equal(lines.length, 1, `one line of output: ${JSON.stringify(output)}`);
    assert.match(lines[0], names);
    assert.match(lines[0], /16 bytes/, "the line says what is required");
    assert.equal(await answers(port), false, "nothing listening");
  }

  const goodSecret = secretOf(32);
  const goodKey = secretOf(32);

  test("an empty JWT secret", async () => {
    await assertRefused({ SWITCHBOARD_JWT_SECRET: "", SWITCHBOARD_API_KEY: goodKey }, /SWITCHBOARD_JWT_SECRET/);
  });

  test("a JWT secret of 15 bytes", async () => {
    await assertRefused({ SWITCHBOARD_JWT_SECRET: secretOf(15), SWITCHBOARD_API_KEY: goodKey }, /SWITCHBOARD_JWT_SECRET/);
  });

  test("a JWT secret of 15 bytes in switchboard.toml", async () => {
    const file = joinPath(dir, "short-secret.toml");
    writeFileSync(file, `jwt_secret = "${secretOf(15)}"\n`);
    await assertRefused({ SWITCHBOARD_CONFIG: file }, /SWITCHBOARD_JWT_SECRET/);
  });

  test("an empty API key", async () => {
    await assertRefused({ SWITCHBOARD_JWT_SECRET: goodSecret, SWITCHBOARD_API_KEY: "" }, /SWITCHBOARD_API_KEY/);
  });

  test("an API key of 15 bytes", async () => {
    await assertRefused({ SWITCHBOARD_JWT_SECRET: goodSecret, SWITCHBOARD_API_KEY: secretOf(15) }, /SWITCHBOARD_API_KEY/);
  });

  test("a good API key next to an empty or short one in the list", async () => {
    for (const keys of [`${goodKey},`, `,${goodKey}`, `${goodKey},${secretOf(15)}`]) {
      await assertRefused({ SWITCHBOARD_JWT_SECRET: goodSecret, SWITCHBOARD_API_KEY: keys }, /SWITCHBOARD_API_KEY/);
    }
  });

  test("`switchboard token` refuses a short secret too", async () => {
    for (const secret of ["", secretOf(15)]) {
      const result = await run(["token", "--sub", "alice"], { env: { SWITCHBOARD_JWT_SECRET: secret }, cwd: dir });
      assert.notEqual(result.code, 0, `exit code with a ${secret.length}-byte secret`);
      assert.equal(result.stdout, "", "no token printed");
      assert.match(result.stderr.trim(), /^[^\n]*SWITCHBOARD_JWT_SECRET[^\n]*16 bytes[^\n]*$/);
    }
  });
});

// ---------------------------------------------------------------------------

describe("credentials", () => {
  const secret = secretOf(32);
  const keys = [secretOf(32), secretOf(24)];
  const { publicKey, privateKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });
  let dir;
  let server;
  let noKey;
  const clients = new Clients();

  before(async () => {
    dir = mkdtempSync(joinPath(tmpdir(), "sbe2e-hostile-keys-"));
    const pem = joinPath(dir, "public.pem");
    writeFileSync(pem, publicKey);
    server = await startSwitchboard({
      secret,
      apiKey: keys.join(","),
      env: { SWITCHBOARD_JWT_PUBLIC_KEY_FILE: pem },
    });
    noKey = await startSwitchboard({ env: { SWITCHBOARD_API_KEY: null } });
  });
  afterEach(() => clients.closeAll());
  after(async () => {
    clients.closeAll();
    await server?.stop();
    await noKey?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Every API-key endpoint, as `[method, path, body]`. */
  const keyed = () => [
    ["POST", "/api/publish", { workspaceId: "w1", event: "news", data: {} }],
    ["POST", "/api/notifications", { userId: "alice", type: "t", data: {} }],
    ["PUT", "/api/workspaces/w1/members/alice", undefined],
    ["DELETE", "/api/workspaces/w1/members/alice", undefined],
  ];

  test("no Authorization header, an empty bearer and a wrong key get 401 on every API-key endpoint", async () => {
    for (const target of [server, noKey]) {
      for (const [method, path, body] of keyed()) {
        for (const headers of [{}, { authorization: "Bearer " }, { authorization: "Bearer  " }, { authorization: `Bearer ${secretOf(32)}` }]) {
          const res = await http(target, method, path, { body, headers });
          assertHttpError(res, 401, "unauthorized", `${method} ${path} with ${JSON.stringify(headers)}`);
        }
      }
    }
  });

  test("the whole comma-separated list, or a key with a prefix or suffix, is not a key", async () => {
    for (const wrong of [keys.join(","), `${keys[0]}x`, keys[0].slice(1), `x${keys[1]}`]) {
      const res = await http(server, "PUT", "/api/workspaces/w1/members/alice", { token: wrong });
      assertHttpError(res, 401, "unauthorized", `key ${wrong}`);
    }
  });

  test("two configured keys are both accepted, a third is refused", async () => {
    for (const key of keys) {
      const put = await http(server, "PUT", "/api/workspaces/w1/members/alice", { token: key });
      assert.equal(put.status, 204, `key ${keys.indexOf(key) + 1}: ${put.text}`);
      const created = await http(server, "POST", "/api/notifications", { token: key, body: { userId: "alice", type: "t", data: {} } });
      assert.equal(created.status, 201, `key ${keys.indexOf(key) + 1}: ${created.text}`);
    }
    const third = await http(server, "PUT", "/api/workspaces/w1/members/alice", { token: secretOf(32) });
    assertHttpError(third, 401, "unauthorized", "a third key");
  });

  /** Asserts a socket with `token` gets connect_error and the HTTP API 401. */
  async function assertTokenRefused(token, what) {
    const refused = await connectRefused(clients.socket(server, { token }));
    assert.ok(refused.message, `${what}: connect_error with a message`);
    const res = await http(server, "GET", "/api/notifications", { token });
    assertHttpError(res, 401, "unauthorized", what);
    const stream = await http(server, "GET", `/api/notifications/poll?timeout=0&token=${encodeURIComponent(token)}`);
    assertHttpError(stream, 401, "unauthorized", `${what} in ?token=`);
  }

  test("a token signed with another secret is refused", async () => {
    await assertTokenRefused(forgedToken("alice", { workspaces: ["w1"] }), "forged");
  });

  test("an unsigned token (alg: none) is refused", async () => {
    await assertTokenRefused(algNoneToken("alice", { workspaces: ["w1"] }), "alg none");
    // The same with the signature of a valid token pasted on.
    const valid = userToken(secret, "alice", { workspaces: ["w1"] });
    await assertTokenRefused(`${algNoneToken("alice", { workspaces: ["w1"] })}${valid.split(".")[2]}`, "alg none, signature pasted");
  });

  test("an expired token is refused", async () => {
    await assertTokenRefused(expiredToken(secret, "alice", { agoSecs: 5, workspaces: ["w1"] }), "expired");
  });

  test("RS256/HS256 key confusion: an HS256 token keyed with the RSA public key text is refused", async () => {
    const claims = { sub: "mallory", workspaces: ["w1"], exp: Math.floor(Date.now() / 1000) + 3600 };
    // The control: the configured public key does verify RS256 tokens of its private key.
    const rs256 = jwt.sign(claims, privateKey, { algorithm: "RS256", noTimestamp: true });
    const socket = await clients.connect(server, { token: rs256 });
    await join(socket, "w1");
    socket.disconnect();
    for (const key of [publicKey, publicKey.trim(), Buffer.from(publicKey)]) {
      await assertTokenRefused(hmacToken(key, claims), "HS256 with the public key as secret");
    }
  });

  test("a token for another workspace: join and its HTTP endpoints are forbidden", async () => {
    const socket = await clients.connect(server, { sub: "eve", workspaces: ["eve-ws"] });
    assertFailure(await emitAck(socket, "join_workspace", { workspaceId: "victim-ws" }), "forbidden", "join");
    const token = userToken(secret, "eve", { workspaces: ["eve-ws"] });
    for (const path of ["/api/workspaces/victim-ws/messages", "/api/workspaces/victim-ws/presence"]) {
      assertHttpError(await http(server, "GET", path, { token }), 403, "forbidden", path);
    }
  });
});

// ---------------------------------------------------------------------------

describe("CORS never pairs a wildcard with credentials", () => {
  const servers = [];
  after(async () => {
    for (const s of servers) await s.stop();
  });

  const preflight = (server, origin) =>
    httpRequest(`${server.url}/api/notifications`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "GET", "access-control-request-headers": "authorization" },
    });

  test("`*` lets any origin in without credentials", async () => {
    const server = await startSwitchboard({ env: { SWITCHBOARD_CORS_ORIGINS: "*" } });
    servers.push(server);
    for (const res of [
      await preflight(server, "http://evil.example"),
      await httpRequest(`${server.url}/healthz`, { headers: { origin: "http://evil.example" } }),
      await httpRequest(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin: "http://evil.example" } }),
    ]) {
      assert.equal(res.headers.get("access-control-allow-origin"), "*");
      assert.notEqual(res.headers.get("access-control-allow-credentials"), "true", "no credentials with a wildcard");
    }
  });

  test("a list gives its origins credentials and other origins nothing", async () => {
    const server = await startSwitchboard({ env: { SWITCHBOARD_CORS_ORIGINS: "http://app.example" } });
    servers.push(server);
    const allowed = await preflight(server, "http://app.example");
    assert.equal(allowed.headers.get("access-control-allow-origin"), "http://app.example");
    assert.equal(allowed.headers.get("access-control-allow-credentials"), "true");
    for (const origin of ["http://evil.example", "http://app.example.evil.example", "null"]) {
      const other = await preflight(server, origin);
      assert.equal(other.headers.get("access-control-allow-origin"), null, `${origin} gets no allow-origin`);
      const simple = await httpRequest(`${server.url}/healthz`, { headers: { origin } });
      assert.equal(simple.headers.get("access-control-allow-origin"), null, `${origin} gets no allow-origin`);
    }
  });
});

// ---------------------------------------------------------------------------

describe("/readyz and logs", () => {
  test("/readyz names the broker that is down but carries no error text", async () => {
    const redisPort = await freePort();
    const redis = await startRedis(redisPort);
    let server;
    try {
      server = await startSwitchboard({ env: { SWITCHBOARD_BROKER: `redis://127.0.0.1:${redisPort}` } });
      const up = await http(server, "GET", "/readyz");
      assert.equal(up.status, 200);
      assert.deepEqual(up.json, { status: "ready", store: "ok", broker: "ok" });
      await redis.kill();
      const down = await eventually(async () => {
        const res = await http(server, "GET", "/readyz");
        return res.status === 503 ? res : null;
      }, 10_000, 100);
      assert.deepEqual(down.json, { status: "not ready", store: "ok", broker: "down" }, down.text);
      assert.doesNotMatch(down.text, /redis|127\.0\.0\.1|refused|error|\d{4,}/i, "no error text, host or port");
      await eventually(() => /WARN.*readiness: the broker does not answer/.test(server.output()), 5_000);
    } finally {
      await server?.stop();
      await redis.kill().catch(() => {});
    }
  });

  test("logs written to a pipe carry no terminal colour codes", async () => {
    const server = await startSwitchboard({ env: { RUST_LOG: "info" } });
    try {
      await http(server, "GET", "/readyz");
      await server.stop();
      assert.match(server.output(), /INFO/, "there are log lines");
      assert.equal(server.output().includes("\x1b["), false, `no escape codes in ${JSON.stringify(server.output().slice(0, 300))}`);
    } finally {
      await server.stop();
    }
  });

  test("--log-format json and SWITCHBOARD_LOG_FORMAT=json write one JSON object per line", async () => {
    for (const options of [{ args: ["--log-format", "json"] }, { env: { SWITCHBOARD_LOG_FORMAT: "json" } }]) {
      const server = await startSwitchboard({ ...options, env: { RUST_LOG: "info", ...options.env } });
      await server.stop();
      const lines = server.output().split("\n").filter((line) => line.trim() !== "");
      assert.ok(lines.length > 0, "there are log lines");
      for (const line of lines) {
        const entry = JSON.parse(line);
        assert.equal(typeof entry.level, "string", line);
        assert.equal(typeof entry.timestamp, "string", line);
      }
      assert.ok(lines.some((line) => JSON.parse(line).fields?.message === "switchboard listening"), "the listening line is there");
    }
  });

  test("an unknown log format is refused at start", async () => {
    const result = await run(["serve", "--log-format", "xml"], {
      env: { SWITCHBOARD_JWT_SECRET: secretOf(32), SWITCHBOARD_BIND: `127.0.0.1:${await freePort()}` },
      cwd: tmpdir(),
      timeoutMs: 10_000,
    });
    assert.equal(result.killed, false);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /log_format/);
  });
});

// ---------------------------------------------------------------------------

describe("malformed and oversized requests", () => {
  let server;
  before(async () => {
    server = await startSwitchboard();
  });
  after(async () => server?.stop());

  /** A raw WebSocket upgrade of `path` (sent exactly as written) with a valid token. */
  function upgrade(path) {
    const token = userToken(server.secret, "alice", { workspaces: ["w1", ".."] });
    const sep = path.includes("?") ? "&" : "?";
    return rawRequest(
      server.port,
      `GET ${path}${sep}token=${encodeURIComponent(token)} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n` +
        `Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n\r\n`,
    );
  }

  test("collab document names with an encoded NUL or control character are refused with 400", async () => {
    for (const path of ["/collab/w1/%00", "/collab/w1/a%00b", "/collab/w1/%0d%0a", "/collab/%00/doc"]) {
      const res = await upgrade(path);
      assert.equal(res.status, 400, `${path}: ${res.head ?? res.error}`);
    }
    await assertAlive(server, "NUL in names");
  });

  test("collab paths with `..` or an encoded slash never give a 500", async () => {
    for (const path of [
      "/collab/w1/..",
      "/collab/w1/../../etc/passwd",
      "/collab/../w1/doc",
      "/collab/w1/%2e%2e",
      "/collab/w1/..%2F..%2Fetc%2Fpasswd",
      "/collab/w1/%2F",
      "/collab/w1/a%2Fb",
      "/collab/w1%2Fdoc",
      "/collab/w1/%ff%fe",
      "/collab/w1/%",
    ]) {
      const res = await upgrade(path);
      assert.ok(res.status !== null && res.status < 500, `${path}: ${res.head ?? res.error}`);
    }
    await assertAlive(server, "path tricks");
  });

  test(
    "collab document names `..` and with an encoded slash are refused with 400 or 404",
    async () => {
      for (const path of ["/collab/w1/..", "/collab/w1/%2e%2e", "/collab/w1/%2F", "/collab/w1/a%2Fb", "/collab/w1/..%2F..%2Fx"]) {
        const res = await upgrade(path);
        assert.ok(res.status === 400 || res.status === 404, `${path}: ${res.head ?? res.error}`);
      }
    },
  );

  test(
    "a 100 KB header gets 431 or a closed connection, and the server lives on",
    async () => {
    const res = await rawRequest(
      server.port,
      `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${"a".repeat(100 * 1024)}\r\nConnection: close\r\n\r\n`,
    );
    assert.ok(res.status === 431 || res.status === null, `answered ${res.status}: ${res.head?.slice(0, 200)}`);
    await assertAlive(server, "100 KB header");
  },
  );

  test("a 1 MB header and 1000 small headers never crash the server", async () => {
    const big = await rawRequest(server.port, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${"a".repeat(1 << 20)}\r\n\r\n`);
    assert.ok(big.status === 431 || big.status === null, `1 MB header answered ${big.status}`);
    const many = Array.from({ length: 1000 }, (_, i) => `X-H${i}: v\r\n`).join("");
    const lots = await rawRequest(server.port, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n${many}\r\n`);
    assert.ok(lots.status === 431 || lots.status === null, `1000 headers answered ${lots.status}`);
    await assertAlive(server, "huge headers");
  });

  /** Every POST/PUT endpoint of the HTTP API, with the credentials it wants. */
  const bodied = () => {
    const user = userToken(server.secret, "alice", { workspaces: ["w1"] });
    return [
      ["POST", "/api/publish", server.apiKey],
      ["POST", "/api/notifications", server.apiKey],
      ["PUT", "/api/workspaces/w1/members/alice", server.apiKey],
      ["POST", "/api/notifications/read-all", user],
      ["POST", "/api/notifications/1/read", user],
    ];
  };
  const hugeJson = () => JSON.stringify({ workspaceId: "w1", userId: "alice", type: "t", event: "e", data: { pad: "x".repeat(200 * 1024) } });

  test("oversized JSON bodies on the endpoints that read one get 413 too_large", async () => {
    for (const [method, path, token] of bodied().slice(0, 2)) {
      const res = await http(server, method, path, { token, rawBody: hugeJson(), contentType: "application/json" });
      assertHttpError(res, 413, "too_large", `${method} ${path}`);
    }
    await assertAlive(server, "big bodies");
  });

  test(
    "oversized bodies on every POST/PUT endpoint get 413 too_large",
    async () => {
      for (const [method, path, token] of bodied()) {
        const res = await http(server, method, path, { token, rawBody: hugeJson(), contentType: "application/json" });
        assertHttpError(res, 413, "too_large", `${method} ${path}`);
      }
    },
  );

  test("oversized bodies never give a 500 or bring the server down, chunked or with a false length", async () => {
    for (const [method, path, token] of bodied()) {
      const chunk = "x".repeat(64 * 1024);
      const chunked = await rawRequest(
        server.port,
        `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\n` +
          `Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n`,
        { body: `${chunk.length.toString(16)}\r\n${chunk}\r\n`.repeat(4) + "0\r\n\r\n" },
      );
      assert.ok(chunked.status === null || chunked.status < 500, `${method} ${path} chunked: ${chunked.head ?? chunked.error}`);
      const lying = await rawRequest(
        server.port,
        `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\n` +
          `Content-Length: 1000000000\r\nConnection: close\r\n\r\n`,
        { body: "{", timeoutMs: 2_000 },
      );
      assert.ok(lying.status === null || lying.status < 500, `${method} ${path} Content-Length 1e9: ${lying.head ?? lying.error}`);
    }
    await assertAlive(server, "chunked and lying bodies");
  });

  test("an oversized Socket.IO polling body is refused and the server lives on", async () => {
    const open = await httpRequest(`${server.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(open.status, 200);
    const sid = JSON.parse(open.body.slice(1)).sid;
    const res = await httpRequest(`${server.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
      method: "POST",
      headers: { "content-type": "text/plain;charset=UTF-8" },
      body: `4${"x".repeat(2_000_000)}`,
    }).catch((err) => ({ status: null, error: err.code ?? err.message }));
    assert.ok(res.status === null || (res.status >= 400 && res.status < 500), `answered ${res.status}`);
    await assertAlive(server, "big polling body");
  });
});
