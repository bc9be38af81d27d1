// Helpers of the switchboard server tests (server/): user tokens (valid, forged,
// expired, `alg: none`), socket.io-client connections that are closed after each
// test, acknowledged emits, event collectors and HTTP calls.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import jwt from "jsonwebtoken";
import { io } from "socket.io-client";

import { delay, eventually, httpRequest } from "./server.mjs";

/** RFC 3339 in UTC with milliseconds, as the contract writes every `createdAt`. */
export const RFC3339_MILLIS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** How long a "nothing more arrives" check waits once delivery elsewhere proved the traffic went out. */
export const QUIET_MS = 300;

const nowSecs = () => Math.floor(Date.now() / 1000);

/**
 * An HS256 user token signed with `secret`: `sub`, `exp` (now + `ttlSecs`),
 * optional `workspaces` and `name`. `claims` is merged last (use it to remove
 * or change standard claims, e.g. `{ exp: undefined }`).
 */
export function userToken(secret, sub, { workspaces, name, ttlSecs = 3600, claims = {} } = {}) {
  const payload = { sub, exp: nowSecs() + ttlSecs, iat: nowSecs() };
  if (workspaces) payload.workspaces = workspaces;
  if (name) payload.name = name;
  Object.assign(payload, claims);
  for (const key of Object.keys(payload)) if (payload[key] === undefined) delete payload[key];
  return jwt.sign(payload, secret, { algorithm: "HS256", noTimestamp: true });
}

/** A well-formed token signed with another secret. */
export function forgedToken(sub, options) {
  return userToken(`not-the-secret-${randomBytes(8).toString("hex")}`, sub, options);
}

/** A token with the right secret whose `exp` is `agoSecs` in the past. */
export function expiredToken(secret, sub, { agoSecs = 120, workspaces } = {}) {
  return userToken(secret, sub, { workspaces, claims: { exp: nowSecs() - agoSecs, iat: nowSecs() - agoSecs - 3600 } });
}

const b64url = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** An unsigned token (`alg: none`, empty signature) with otherwise valid claims. */
export function algNoneToken(sub, { workspaces } = {}) {
  const payload = { sub, exp: nowSecs() + 3600 };
  if (workspaces) payload.workspaces = workspaces;
  return `${b64url({ alg: "none", typ: "JWT" })}.${b64url(payload)}.`;
}

/**
 * Sockets opened through `client()`; `closeAll()` disconnects them (call it in afterEach/after).
 */
export class Clients {
  constructor() {
    this.sockets = new Set();
  }

  /**
   * A socket (not awaited) to `server`. `token: null` sends no auth at all.
   * Default: WebSocket only, no reconnection.
   */
  socket(server, { token, transports = ["websocket"], ...extra } = {}) {
    const options = { forceNew: true, reconnection: false, timeout: 5_000, transports, ...extra };
    if (token !== null && token !== undefined) options.auth = { token };
    const socket = io(server.url, options);
    this.sockets.add(socket);
    return socket;
  }

  /** A connected socket for user `sub` (token from the server's secret unless `token` is given). */
  async connect(server, { sub = "alice", workspaces, token, ...extra } = {}) {
    const socket = this.socket(server, { token: token ?? userToken(server.secret, sub, { workspaces }), ...extra });
    await connected(socket);
    return socket;
  }

  closeAll() {
    for (const s of this.sockets) s.disconnect();
    this.sockets.clear();
  }
}

/** Resolves with the socket on `connect`; rejects on `connect_error` or after `timeoutMs`. */
export function connected(socket, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    const done = (fn, value) => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
      fn(value);
    };
    const onConnect = () => done(resolve, socket);
    const onError = (err) => done(reject, new Error(`connect_error: ${err.message}`));
    const timer = setTimeout(() => done(reject, new Error(`no connect within ${timeoutMs} ms`)), timeoutMs);
    if (socket.connected) return done(resolve, socket);
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

/** Resolves with the error of the next `connect_error`; rejects on `connect` or after `timeoutMs`. */
export function connectRefused(socket, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    const done = (fn, value) => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
      fn(value);
    };
    const onConnect = () => done(reject, new Error("the connection was accepted, expected connect_error"));
    const onError = (err) => done(resolve, err);
    const timer = setTimeout(() => done(reject, new Error(`no connect_error within ${timeoutMs} ms`)), timeoutMs);
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

/** Emits with an ack callback; resolves with the ack's first argument. */
export function emitAck(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(5_000).emit(event, ...args, (err, reply) =>
      err ? reject(new Error(`no ack for "${event}" within 5000 ms`)) : resolve(reply),
    );
  });
}

/** Resolves with the first argument of the next `event`; rejects after `timeoutMs`. */
export function nextEvent(socket, event, timeoutMs = 3_000) {
  return new Promise((resolve, reject) => {
    const listener = (value) => {
      clearTimeout(timer);
      resolve(value);
    };
    const timer = setTimeout(() => {
      socket.off(event, listener);
      reject(new Error(`no "${event}" event within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once(event, listener);
  });
}

/** Collects the first argument of every `event` on `socket`. */
export function collect(socket, event) {
  const seen = [];
  socket.on(event, (value) => seen.push(value));
  return seen;
}

/** Collects every `message` event as `{ message, offset }` (the offset is the extra argument). */
export function collectMessages(socket) {
  const seen = [];
  socket.on("message", (message, ...rest) => seen.push({ message, offset: rest[0], extra: rest }));
  return seen;
}

/** Waits until `list` has `count` items (bounded), then a quiet period, then checks it still has exactly `count`. */
export async function expectCount(list, count, what = "events", timeoutMs = 5_000) {
  await eventually(() => list.length >= count, timeoutMs).catch(() => {
    assert.fail(`expected ${count} ${what}, got ${list.length} within ${timeoutMs} ms: ${JSON.stringify(list).slice(0, 2000)}`);
  });
  await delay(QUIET_MS);
  assert.equal(list.length, count, `expected exactly ${count} ${what}, got ${list.length}: ${JSON.stringify(list).slice(0, 2000)}`);
}

/** Joins `workspaceId` and asserts the ack is `{ ok: true }`. */
export async function join(socket, workspaceId, since) {
  const payload = since === undefined ? { workspaceId } : { workspaceId, since };
  const ack = await emitAck(socket, "join_workspace", payload);
  assert.deepEqual(ack, { ok: true }, `join_workspace ${JSON.stringify(payload)}`);
  return ack;
}

/** Sends a message and asserts a successful ack; resolves with the ack `{ ok, id, createdAt }`. */
export async function send(socket, workspaceId, content, clientMsgId) {
  const payload = { workspaceId, content };
  if (clientMsgId !== undefined) payload.clientMsgId = clientMsgId;
  const ack = await emitAck(socket, "message", payload);
  assert.equal(ack?.ok, true, `message ${JSON.stringify(payload).slice(0, 200)} was refused: ${JSON.stringify(ack)}`);
  return ack;
}

/** The `history` ack of `query`; asserts success and resolves with its `messages`. */
export async function history(socket, query) {
  const ack = await emitAck(socket, "history", query);
  assert.equal(ack?.ok, true, `history ${JSON.stringify(query)} was refused: ${JSON.stringify(ack)}`);
  assert.ok(Array.isArray(ack.messages), `history ack without messages: ${JSON.stringify(ack)}`);
  return ack.messages;
}

/** Asserts a failure ack `{ ok: false, error: code, message: <non-empty string> }`. */
export function assertFailure(ack, code, context = "") {
  assert.equal(typeof ack, "object", `${context}: expected a failure ack, got ${JSON.stringify(ack)}`);
  assert.ok(ack !== null, `${context}: ack is null`);
  assert.equal(ack.ok, false, `${context}: expected ok:false, got ${JSON.stringify(ack)}`);
  assert.equal(ack.error, code, `${context}: expected error ${code}, got ${JSON.stringify(ack)}`);
  assert.equal(typeof ack.message, "string", `${context}: failure without a message text: ${JSON.stringify(ack)}`);
  assert.ok(ack.message.length > 0, `${context}: empty message text`);
  assert.deepEqual(Object.keys(ack).sort(), ["error", "message", "ok"], `${context}: unexpected fields in ${JSON.stringify(ack)}`);
}

/**
 * An HTTP call to the server. `token` sends `Authorization: Bearer <token>`;
 * `body` is sent as JSON, `rawBody` as is (with `contentType`).
 * Resolves with `{ status, headers, text, json }` (`json` undefined when not JSON).
 */
export async function http(server, method, path, { token, body, rawBody, contentType, headers = {} } = {}) {
  const h = { ...headers };
  if (token !== undefined) h.authorization = `Bearer ${token}`;
  let payload;
  if (rawBody !== undefined) {
    payload = rawBody;
    if (contentType) h["content-type"] = contentType;
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    h["content-type"] = contentType ?? "application/json";
  }
  const response = await httpRequest(server.url + path, { method, headers: h, body: payload, timeoutMs: 10_000 });
  const text = response.body;
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

/** Asserts an HTTP error answer `{ error: code, message }` with `status`. */
export function assertHttpError(res, status, code, context = "") {
  assert.equal(res.status, status, `${context}: expected HTTP ${status}, got ${res.status} ${res.text.slice(0, 300)}`);
  assert.equal(res.json?.error, code, `${context}: expected { error: "${code}" }, got ${res.text.slice(0, 300)}`);
  assert.equal(typeof res.json?.message, "string", `${context}: error without a message: ${res.text.slice(0, 300)}`);
}

/** Asserts `m` is a chat message of the wire contract, with exactly its fields. */
export function assertMessageShape(m, { workspaceId, userId, content, clientMsgId } = {}) {
  assert.equal(typeof m, "object");
  const keys = ["content", "createdAt", "id", "userId", "workspaceId"];
  if (clientMsgId !== undefined) keys.push("clientMsgId");
  assert.deepEqual(Object.keys(m).sort(), keys.sort(), `fields of ${JSON.stringify(m)}`);
  assert.ok(Number.isSafeInteger(m.id) && m.id > 0, `id must be a positive integer: ${JSON.stringify(m)}`);
  assert.match(m.createdAt, RFC3339_MILLIS);
  if (workspaceId !== undefined) assert.equal(m.workspaceId, workspaceId);
  if (userId !== undefined) assert.equal(m.userId, userId);
  if (content !== undefined) assert.equal(m.content, content);
  if (clientMsgId !== undefined) assert.equal(m.clientMsgId, clientMsgId);
}

/** Strictly increasing? */
export function assertIncreasing(ids, context = "ids") {
  for (let i = 1; i < ids.length; i += 1) {
    assert.ok(ids[i] > ids[i - 1], `${context} must increase: ${JSON.stringify(ids)}`);
  }
}
