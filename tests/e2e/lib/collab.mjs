// Helpers of the collaborative-editing tests (DESIGN.md section 5): stock `yjs` +
// `y-websocket` providers (with `ws` as the WebSocket and BroadcastChannel off, so
// two providers in this process only ever meet through the server), raw `ws`
// clients that send hand-built y-websocket frames, the upgrade status of a refused
// connection, and bounded waits for sync and for convergence.
//
// y-websocket frames: varUint message type, then
//   0 sync:      varUint sync type (0 step 1 | 1 step 2 | 2 update), varUint8Array payload
//   1 awareness: varUint8Array(awareness update)
//   3 query-awareness: nothing (answered with an awareness message of every current state)
// An awareness update is varUint count, then per entry varUint clientID, varUint clock,
// varString JSON state (`null` = removed).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import * as encoding from "lib0/encoding";
import * as decoding from "lib0/decoding";

import { eventually } from "./server.mjs";
import { userToken } from "./switchboard.mjs";

export { Y };

// Every provider adds a process `exit` listener (to clear its awareness state); a test opens a dozen or more.
process.setMaxListeners(Math.max(process.getMaxListeners(), 100));

export const MESSAGE_SYNC = 0;
export const MESSAGE_AWARENESS = 1;
export const MESSAGE_QUERY_AWARENESS = 3;
export const SYNC_STEP1 = 0;
export const SYNC_STEP2 = 1;
export const SYNC_UPDATE = 2;

/** How long a provider may take to connect and sync. */
export const SYNC_TIMEOUT_MS = 5_000;
/** How long edits may take to reach every client. */
export const CONVERGE_TIMEOUT_MS = 5_000;
/** DESIGN.md section 5: a closed connection's awareness states are gone at the others within 3 s. */
export const AWARENESS_REMOVAL_MS = 3_000;

/** `ws://host:port/collab/{workspaceId}` (the provider appends `/{docName}`). */
export function collabBase(server, workspaceId) {
  return `${server.url.replace(/^http/, "ws")}/collab/${encodeURIComponent(workspaceId)}`;
}

/** The full endpoint URL; `token: null` leaves the query out. `docName` is put in as is (already encoded). */
export function collabUrl(server, workspaceId, docName, token) {
  const base = `${collabBase(server, workspaceId)}/${docName}`;
  return token === null || token === undefined ? base : `${base}?token=${encodeURIComponent(token)}`;
}

/** `value` with the keys of every object sorted (Y.Map keys come in no fixed order). */
function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonical(value[k])]));
  }
  return value;
}

/**
 * The observable content of a test document: the root types every test uses
 * (`text`, `map`, `array`), with map keys sorted so two states compare as strings.
 */
export function docState(doc) {
  return {
    text: doc.getText("text").toString(),
    map: canonical(doc.getMap("map").toJSON()),
    array: canonical(doc.getArray("array").toJSON()),
  };
}

/**
 * The providers, docs and raw sockets of a test; `closeAll()` destroys them all
 * (call it in afterEach/after so the process can exit).
 */
export class Peers {
  constructor() {
    this.providers = new Set();
    this.docs = new Set();
    this.raws = new Set();
  }

  /**
   * A stock `WebsocketProvider` for `docName` in `workspaceId` on `server` (not awaited).
   * The token is minted for `sub` with `workspaces` (default: just this workspace) unless given.
   * Returns `{ doc, provider, closes }`: `closes` collects every `connection-close` event code
   * (a server-side close of a healthy client shows up there).
   */
  provider(server, workspaceId, docName, { token, sub = "alice", workspaces = [workspaceId], doc, connect = true } = {}) {
    const ydoc = doc ?? new Y.Doc();
    const provider = new WebsocketProvider(collabBase(server, workspaceId), docName, ydoc, {
      WebSocketPolyfill: WebSocket,
      params: { token: token ?? userToken(server.secret, sub, { workspaces }) },
      disableBc: true,
      connect,
    });
    const closes = [];
    const errors = [];
    provider.on("connection-close", (event) => closes.push(event === null ? "local" : event.code));
    provider.on("connection-error", (event) => errors.push(event?.message ?? String(event)));
    this.providers.add(provider);
    this.docs.add(ydoc);
    return { doc: ydoc, provider, closes, errors };
  }

  /** Like `provider()`, and waits until it has synced with the server. */
  async open(server, workspaceId, docName, options) {
    const peer = this.provider(server, workspaceId, docName, options);
    await synced(peer);
    return peer;
  }

  /** A raw WebSocket to the endpoint, open (rejects with the HTTP status if the upgrade is refused). */
  async raw(server, workspaceId, docName, { token, sub = "raw", workspaces = [workspaceId], timeoutMs = 5_000 } = {}) {
    const url = collabUrl(server, workspaceId, docName, token ?? userToken(server.secret, sub, { workspaces }));
    const raw = new RawCollab(url);
    this.raws.add(raw);
    await raw.opened(timeoutMs);
    return raw;
  }

  closeAll() {
    for (const p of this.providers) {
      try {
        p.destroy();
      } catch {
        // already destroyed
      }
    }
    for (const d of this.docs) d.destroy();
    for (const r of this.raws) r.terminate();
    this.providers.clear();
    this.docs.clear();
    this.raws.clear();
  }
}

/** Waits (bounded) until `peer.provider` is synced; the error says how its connections ended. */
export async function synced(peer, timeoutMs = SYNC_TIMEOUT_MS) {
  const { provider } = peer;
  try {
    await eventually(() => provider.synced, timeoutMs, 10);
  } catch {
    assert.fail(
      `provider ${provider.url.replace(/token=[^&]*/, "token=…")} did not sync within ${timeoutMs} ms ` +
        `(connection closes: ${JSON.stringify(peer.closes)}, errors: ${JSON.stringify(peer.errors)})`,
    );
  }
  return peer;
}

/**
 * Waits (bounded) until `check()` is truthy; on timeout fails with `what` and, when
 * given, the last value of `describe()`.
 */
export async function until(what, check, { timeoutMs = CONVERGE_TIMEOUT_MS, describe } = {}) {
  try {
    return await eventually(check, timeoutMs, 10);
  } catch (err) {
    const detail = describe ? `; now: ${JSON.stringify(describe()).slice(0, 3000)}` : "";
    assert.fail(`${what}: not within ${timeoutMs} ms (${err.cause?.message ?? err.message})${detail}`);
  }
}

/** Waits until `peer`'s text is `expected`. */
export async function textIs(peer, expected, what) {
  await until(what ?? `text becomes ${JSON.stringify(expected).slice(0, 80)}`, () => peer.doc.getText("text").toString() === expected, {
    describe: () => peer.doc.getText("text").toString().slice(0, 300),
  });
}

/** Asserts the server closed none of these providers' connections (and they are still connected). */
export function assertStillConnected(peers, context) {
  for (const [i, p] of peers.entries()) {
    assert.deepEqual(p.closes, [], `${context}: connection of client ${i + 1} was closed (codes ${JSON.stringify(p.closes)})`);
    assert.equal(p.provider.wsconnected, true, `${context}: client ${i + 1} is no longer connected`);
  }
}

/** Waits (bounded) until every doc has the same `docState`; asserts it and returns it. */
export async function converged(docs, { timeoutMs = CONVERGE_TIMEOUT_MS, what = "documents converge" } = {}) {
  const states = () => docs.map((d) => docState(d));
  await until(
    what,
    () => {
      const all = states().map((s) => JSON.stringify(s));
      return all.every((s) => s === all[0]);
    },
    { timeoutMs, describe: states },
  );
  const [first, ...rest] = states();
  for (const s of rest) assert.deepEqual(s, first);
  return first;
}

// ---------------------------------------------------------------------------
// Raw frames.

const bytes = (build) => {
  const encoder = encoding.createEncoder();
  build(encoder);
  return encoding.toUint8Array(encoder);
};

/** `[0, 0, stateVector]`: sync step 1 for `doc` (an empty state vector for a new doc). */
export function syncStep1Message(doc = new Y.Doc()) {
  return bytes((e) => {
    encoding.writeVarUint(e, MESSAGE_SYNC);
    encoding.writeVarUint(e, SYNC_STEP1);
    encoding.writeVarUint8Array(e, Y.encodeStateVector(doc));
  });
}

/** `[0, 2, update]`: a sync update carrying `update` (any bytes, valid or not). */
export function updateMessage(update) {
  return bytes((e) => {
    encoding.writeVarUint(e, MESSAGE_SYNC);
    encoding.writeVarUint(e, SYNC_UPDATE);
    encoding.writeVarUint8Array(e, update);
  });
}

/** The awareness update bytes of `entries` `[{ clientID, clock, state }]` (state null = removed). */
export function encodeAwareness(entries) {
  return bytes((e) => {
    encoding.writeVarUint(e, entries.length);
    for (const { clientID, clock, state } of entries) {
      encoding.writeVarUint(e, clientID);
      encoding.writeVarUint(e, clock);
      encoding.writeVarString(e, JSON.stringify(state));
    }
  });
}

/** `[1, awarenessUpdate]`. */
export function awarenessMessage(entries) {
  return bytes((e) => {
    encoding.writeVarUint(e, MESSAGE_AWARENESS);
    encoding.writeVarUint8Array(e, encodeAwareness(entries));
  });
}

/** `[3]`. */
export const QUERY_AWARENESS_MESSAGE = Uint8Array.of(MESSAGE_QUERY_AWARENESS);

/**
 * Decodes one server frame: `{ type, syncType?, payload? }` for sync, `{ type, entries }`
 * for awareness (`[{ clientID, clock, state }]`), `{ type }` otherwise.
 */
export function decodeMessage(data) {
  const decoder = decoding.createDecoder(new Uint8Array(data));
  const type = decoding.readVarUint(decoder);
  if (type === MESSAGE_SYNC) {
    const syncType = decoding.readVarUint(decoder);
    const payload = decoding.readVarUint8Array(decoder);
    return { type, syncType, payload };
  }
  if (type === MESSAGE_AWARENESS) {
    const inner = decoding.createDecoder(decoding.readVarUint8Array(decoder));
    const count = decoding.readVarUint(inner);
    const entries = [];
    for (let i = 0; i < count; i += 1) {
      const clientID = decoding.readVarUint(inner);
      const clock = decoding.readVarUint(inner);
      const state = JSON.parse(decoding.readVarString(inner));
      entries.push({ clientID, clock, state });
    }
    return { type, entries };
  }
  return { type };
}

/** A Yjs update made on a fresh doc by `edit(doc)` (independent of anything else: applies anywhere). */
export function makeUpdate(edit) {
  const doc = new Y.Doc();
  edit(doc);
  const update = Y.encodeStateAsUpdate(doc);
  doc.destroy();
  return update;
}

/**
 * A raw `ws` client of the collab endpoint. Every binary frame is decoded into
 * `messages` (and sync step 2 / update payloads are applied to `doc`); text frames go
 * to `texts`. `closed` resolves with `{ code, reason }`.
 */
export class RawCollab {
  constructor(url) {
    this.url = url;
    this.ws = new WebSocket(url);
    this.ws.binaryType = "nodebuffer";
    this.doc = new Y.Doc();
    this.messages = [];
    this.texts = [];
    this.undecodable = [];
    this.closeInfo = null;
    this.status = null;
    this.ws.on("error", (err) => {
      this.error = err;
    });
    this.ws.on("unexpected-response", (req, res) => {
      this.status = res.statusCode;
      res.resume();
      req.destroy();
    });
    this.closed = new Promise((resolve) => {
      this.ws.on("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
      });
    });
    this.ws.on("message", (data, isBinary) => {
      if (!isBinary) {
        this.texts.push(data.toString());
        return;
      }
      try {
        const message = decodeMessage(data);
        this.messages.push(message);
        if (message.type === MESSAGE_SYNC && message.syncType !== SYNC_STEP1) {
          Y.applyUpdate(this.doc, message.payload, "server");
        }
      } catch (err) {
        this.undecodable.push({ bytes: [...data.subarray(0, 64)], error: err.message });
      }
    });
  }

  /** Resolves once open; rejects with the HTTP status when the upgrade is refused, or after `timeoutMs`. */
  opened(timeoutMs = 5_000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(reject, new Error(`${this.url}: not open within ${timeoutMs} ms`)), timeoutMs);
      const onOpen = () => done(resolve, this);
      const onResponse = () =>
        setImmediate(() => done(reject, Object.assign(new Error(`upgrade refused with HTTP ${this.status}`), { status: this.status })));
      const onClose = () => done(reject, new Error(`closed before opening (code ${this.closeInfo?.code}, error ${this.error?.message})`));
      const done = (fn, value) => {
        clearTimeout(timer);
        this.ws.off("open", onOpen);
        this.ws.off("unexpected-response", onResponse);
        this.ws.off("close", onClose);
        fn(value);
      };
      if (this.ws.readyState === WebSocket.OPEN) return done(resolve, this);
      this.ws.on("open", onOpen);
      this.ws.on("unexpected-response", onResponse);
      this.ws.on("close", onClose);
    });
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(data) {
    this.ws.send(data);
  }

  /** Waits (bounded) for a decoded message matching `predicate`, looking at those already received too. */
  async next(predicate, timeoutMs = 3_000, what = "a matching message") {
    return until(`${what} on the raw socket`, () => this.messages.find(predicate), {
      timeoutMs,
      describe: () => ({ messages: this.messages.map(summary), close: this.closeInfo }),
    });
  }

  /** Resolves with `{ code, reason }` once closed; fails after `timeoutMs`. */
  async closedWithin(timeoutMs = 3_000) {
    let timer;
    try {
      return await Promise.race([
        this.closed,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`websocket still open after ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  terminate() {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
    this.doc.destroy();
  }
}

/** A short description of a decoded message, for failure output. */
export function summary(m) {
  if (m.type === MESSAGE_SYNC) return { type: "sync", syncType: m.syncType, payloadBytes: m.payload.length };
  if (m.type === MESSAGE_AWARENESS) return { type: "awareness", entries: m.entries };
  return m;
}

/**
 * Tries the upgrade at `url` and resolves with the HTTP status of the refusal, or
 * with 101 when a WebSocket opened (it is closed at once).
 */
export async function upgradeStatus(url, timeoutMs = 5_000) {
  const raw = new RawCollab(url);
  try {
    await raw.opened(timeoutMs);
    return 101;
  } catch (err) {
    if (err.status) return err.status;
    throw err;
  } finally {
    raw.terminate();
  }
}

// ---------------------------------------------------------------------------
// A provider in a child process, to see what the server does when a client's process dies.

const PEER_SCRIPT = fileURLToPath(new URL("./collab-peer.mjs", import.meta.url));

/**
 * Runs lib/collab-peer.mjs: a stock provider in its own Node process that syncs, sets its
 * awareness state to `state` and prints `{ clientID }` as a JSON line. Resolves with
 * `{ proc, clientID, kill() }` once it has synced.
 */
export function spawnPeer({ url, docName, token, state, timeoutMs = 10_000 }) {
  const proc = spawn(process.execPath, [PEER_SCRIPT, JSON.stringify({ url, docName, token, state })], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`the peer process did not sync within ${timeoutMs} ms; output:\n${output}`));
    }, timeoutMs);
    proc.stderr.on("data", (c) => {
      output += c;
    });
    proc.stdout.on("data", (c) => {
      output += c;
      const line = output.split("\n").find((l) => l.startsWith("{"));
      if (!line) return;
      clearTimeout(timer);
      const { clientID } = JSON.parse(line);
      const exited = new Promise((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once("exit", r)));
      resolve({
        proc,
        clientID,
        async kill() {
          if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
          await exited;
        },
      });
    });
    proc.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the peer process exited (code ${code}, signal ${signal}); output:\n${output}`));
    });
  });
}
