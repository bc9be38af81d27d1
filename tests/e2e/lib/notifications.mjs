// Helpers of the notification tests (server/notifications*.test.mjs): creating
// notifications with the API key, raw SSE streams read frame by frame with
// node:http, the `eventsource` client (a browser-like EventSource) with a
// recording and gateable `fetch`, long-polls, and Prometheus samples.

import assert from "node:assert/strict";
import httpClient from "node:http";
import { performance } from "node:perf_hooks";

import { EventSource } from "eventsource";

import { eventually, httpRequest } from "./server.mjs";
import { RFC3339_MILLIS, http } from "./switchboard.mjs";

export { EventSource };

/** The exact first frame of every stream, resumed or not. */
export const CONNECTED_FRAME = 'data: {"type":"connected"}\n\n';

/**
 * `POST /api/notifications` with the API key; asserts 201 `{ id, createdAt }` and
 * resolves with the notification as every reader must see it:
 * `{ id, userId, type, data, createdAt, read: false }`.
 */
export async function createNotification(server, userId, type, data) {
  const res = await http(server, "POST", "/api/notifications", {
    token: server.apiKey,
    body: { userId, type, data },
  });
  assert.equal(res.status, 201, `create ${JSON.stringify({ userId, type }).slice(0, 200)}: ${res.status} ${res.text.slice(0, 300)}`);
  assert.deepEqual(Object.keys(res.json ?? {}).sort(), ["createdAt", "id"], `201 body: ${res.text.slice(0, 300)}`);
  assert.ok(Number.isSafeInteger(res.json.id) && res.json.id > 0, `id must be a positive integer: ${res.text}`);
  assert.match(res.json.createdAt, RFC3339_MILLIS, `createdAt: ${res.text}`);
  return { id: res.json.id, userId, type, data, createdAt: res.json.createdAt, read: false };
}

/** Runs `count` creations with at most `concurrency` in flight; resolves with them in creation-call order. */
export async function createMany(server, userId, count, { concurrency = 8, type = "bulk", data = (i) => ({ i }) } = {}) {
  const out = new Array(count);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next;
      next += 1;
      if (i >= count) return;
      out[i] = await createNotification(server, userId, type, data(i));
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return out;
}

/** Asserts `n` is a notification of the wire contract with exactly its six fields. */
export function assertNotificationShape(n, context = "notification") {
  assert.equal(typeof n, "object", `${context}: ${JSON.stringify(n)}`);
  assert.ok(n !== null, `${context} is null`);
  assert.deepEqual(Object.keys(n).sort(), ["createdAt", "data", "id", "read", "type", "userId"], `${context} fields: ${JSON.stringify(n)}`);
  assert.ok(Number.isSafeInteger(n.id) && n.id > 0, `${context}: id ${n.id}`);
  assert.match(n.createdAt, RFC3339_MILLIS, `${context}: createdAt`);
  assert.equal(typeof n.read, "boolean", `${context}: read`);
}

function streamPath({ token, lastEventId } = {}) {
  const q = new URLSearchParams();
  if (token !== undefined) q.set("token", token);
  if (lastEventId !== undefined) q.set("lastEventId", String(lastEventId));
  const s = q.toString();
  return `/api/notifications/stream${s ? `?${s}` : ""}`;
}

/** The URL of the stream of `server` (query `token` and `lastEventId` when given). */
export function streamUrl(server, options) {
  return server.url + streamPath(options);
}

/** `id: N\ndata: JSON` (a frame without its blank line) → `{ id, json, text }`; asserts the framing. */
export function parseEventFrame(frame) {
  const m = /^id: (\d+)\ndata: ([^\n]*)$/.exec(frame);
  assert.ok(m, `expected a frame "id: N\\ndata: <json>", got ${JSON.stringify(frame.slice(0, 300))}`);
  let json;
  try {
    json = JSON.parse(m[2]);
  } catch (err) {
    assert.fail(`data of frame ${JSON.stringify(frame.slice(0, 300))} is not JSON: ${err.message}`);
  }
  assert.equal(json.id, Number(m[1]), `the id line and the JSON id differ in ${JSON.stringify(frame.slice(0, 300))}`);
  return { id: Number(m[1]), json, text: m[2] };
}

/**
 * Raw SSE streams (node:http, one connection each) and `eventsource` clients,
 * all closed by `closeAll()` (call it in afterEach: an open stream keeps the
 * server from exiting on SIGTERM).
 */
export class Streams {
  constructor() {
    this.open = new Set();
  }

  /**
   * Opens `GET /api/notifications/stream`. Resolves once the response head is
   * in: for a non-200 answer, after the whole body, with `{ status, headers, text, json }`;
   * for 200 with a live stream object:
   * `{ status, headers, raw, frames: [{ text, at }], events (frames other than
   * ":ping"), ended, waitEvents(n), close() }` where `text` is a frame without
   * its terminating blank line and `at` its arrival (performance.now()).
   *
   * @param {{ token?: string, bearer?: string, lastEventId?: string|number,
   *           lastEventIdHeader?: string|number, headers?: Record<string,string>, timeoutMs?: number }} options
   */
  raw(server, { token, bearer, lastEventId, lastEventIdHeader, headers = {}, timeoutMs = 5_000 } = {}) {
    const h = { accept: "text/event-stream", ...headers };
    if (bearer !== undefined) h.authorization = `Bearer ${bearer}`;
    if (lastEventIdHeader !== undefined) h["last-event-id"] = String(lastEventIdHeader);
    const url = server.url + streamPath({ token, lastEventId });
    return new Promise((resolve, reject) => {
      const req = httpClient.get(url, { headers: h, agent: false });
      const timer = setTimeout(() => req.destroy(new Error(`GET ${url}: no response head within ${timeoutMs} ms`)), timeoutMs);
      req.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.once("response", (res) => {
        clearTimeout(timer);
        res.setEncoding("utf8");
        if (res.statusCode !== 200) {
          let text = "";
          res.on("data", (c) => {
            text += c;
          });
          res.on("end", () => {
            let json;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            resolve({ status: res.statusCode, headers: res.headers, text, json });
          });
          res.on("error", reject);
          return;
        }
        const stream = {
          status: res.statusCode,
          headers: res.headers,
          raw: "",
          frames: [],
          events: [],
          ended: false,
          openedAt: performance.now(),
          close: () => {
            req.destroy();
            this.open.delete(stream);
          },
          /** Waits until at least `n` non-ping frames arrived (bounded). */
          waitEvents: (n, ms = 5_000) =>
            eventually(() => stream.events.length >= n, ms).catch(() =>
              assert.fail(`expected ${n} frames other than pings within ${ms} ms, got ${stream.events.length}: ${JSON.stringify(stream.events.map((f) => f.text)).slice(0, 1500)}`),
            ),
        };
        let buffer = "";
        res.on("data", (chunk) => {
          stream.raw += chunk;
          buffer += chunk;
          for (let i = buffer.indexOf("\n\n"); i >= 0; i = buffer.indexOf("\n\n")) {
            const frame = { text: buffer.slice(0, i), at: performance.now() };
            buffer = buffer.slice(i + 2);
            stream.frames.push(frame);
            if (frame.text !== ":ping") stream.events.push(frame);
          }
        });
        res.on("end", () => {
          stream.ended = true;
        });
        res.on("error", () => {
          stream.ended = true;
        });
        res.on("close", () => {
          stream.ended = true;
        });
        this.open.add(stream);
        resolve(stream);
      });
    });
  }

  /**
   * An `eventsource` EventSource on `url` whose `fetch` records every request's
   * headers in `requests` (so a reconnection's `Last-Event-ID` can be checked),
   * adds `headers`, and waits for `holdReconnects()`'s gate before fetching.
   * Resolves with `{ es, messages: [{ data, lastEventId, json }], errors: [{ code, message, readyState }],
   * requests, holdReconnects(), releaseReconnects(), waitMessages(n), close() }`
   * (not awaiting the connection).
   */
  eventSource(url, { headers = {} } = {}) {
    let gate = null;
    let release = null;
    const requests = [];
    const client = {
      messages: [],
      errors: [],
      requests,
      opens: 0,
      holdReconnects() {
        gate = new Promise((resolve) => {
          release = resolve;
        });
      },
      releaseReconnects() {
        const r = release;
        gate = null;
        release = null;
        r?.();
      },
      waitMessages: (n, ms = 5_000) =>
        eventually(() => client.messages.length >= n, ms).catch(() =>
          assert.fail(`expected ${n} messages within ${ms} ms, got ${client.messages.length}: ${JSON.stringify(client.messages.map((m) => m.data)).slice(0, 1500)}; errors ${JSON.stringify(client.errors)}`),
        ),
      close: () => {
        client.releaseReconnects();
        client.es.close();
        this.open.delete(client);
      },
    };
    client.es = new EventSource(url, {
      fetch: async (input, init) => {
        requests.push({ url: String(input), headers: { ...(init?.headers ?? {}) }, at: performance.now() });
        if (gate) await gate;
        return fetch(input, { ...init, headers: { ...(init?.headers ?? {}), ...headers } });
      },
    });
    client.es.onopen = () => {
      client.opens += 1;
    };
    client.es.onmessage = (event) => {
      let json;
      try {
        json = JSON.parse(event.data);
      } catch {
        json = undefined;
      }
      client.messages.push({ data: event.data, lastEventId: event.lastEventId, json, at: performance.now() });
    };
    client.es.onerror = (event) => {
      client.errors.push({ code: event.code, message: event.message, readyState: client.es.readyState });
    };
    this.open.add(client);
    return client;
  }

  closeAll() {
    for (const s of this.open) s.close();
    this.open.clear();
  }
}

/**
 * `GET /api/notifications/poll` with `token` (`?token=` unless `bearer` is true).
 * Resolves with `{ status, json, text, startedAt, doneAt, elapsed }` (performance.now() ms).
 */
export async function poll(server, token, { after, timeout, bearer = false, timeoutMs = 40_000 } = {}) {
  const q = new URLSearchParams();
  if (after !== undefined) q.set("after", String(after));
  if (timeout !== undefined) q.set("timeout", String(timeout));
  const headers = {};
  if (bearer) headers.authorization = `Bearer ${token}`;
  else if (token !== undefined) q.set("token", token);
  const s = q.toString();
  const startedAt = performance.now();
  const res = await httpRequest(`${server.url}/api/notifications/poll${s ? `?${s}` : ""}`, { headers, timeoutMs });
  const doneAt = performance.now();
  let json;
  try {
    json = JSON.parse(res.body);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text: res.body, startedAt, doneAt, elapsed: doneAt - startedAt };
}

/** The value of a Prometheus sample (summed over label sets), or undefined when absent. */
export function sampleValue(text, name) {
  let total = 0;
  let found = false;
  for (const line of text.split("\n")) {
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (m && m[1] === name) {
      found = true;
      total += Number(m[3]);
    }
  }
  return found ? total : undefined;
}

/** `GET /metrics` and the value of `name` in it. */
export async function metric(server, name) {
  const res = await http(server, "GET", "/metrics");
  assert.equal(res.status, 200, `/metrics: ${res.status}`);
  return sampleValue(res.text, name);
}
