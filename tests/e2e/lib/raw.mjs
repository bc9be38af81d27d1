// A bare Engine.IO WebSocket client built on `ws`, for tests that need to see
// or send exact frames. Messages are queued and read with `next()`.

import WebSocket from "ws";

export class RawSocket {
  /**
   * @param {string} url ws:// URL
   * @param {{ autoPong?: boolean }} [options] answer every `2` with `3` (default true)
   */
  constructor(url, { autoPong = true } = {}) {
    this.ws = new WebSocket(url);
    this.autoPong = autoPong;
    this.pings = 0;
    this.queue = [];
    this.waiters = [];
    this.closeInfo = null;
    this.error = null;
    this.closed = new Promise((resolve) => {
      this.ws.on("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString(), at: Date.now() };
        resolve(this.closeInfo);
        this.#flush();
      });
    });
    this.ws.on("error", (err) => {
      this.error = err;
    });
    this.ws.on("message", (data, isBinary) => {
      const message = isBinary ? Buffer.from(data) : data.toString();
      if (message === "2") {
        this.pings += 1;
        if (this.autoPong) {
          this.ws.send("3");
          return;
        }
      }
      this.queue.push(message);
      this.#flush();
    });
  }

  /** Opens a raw WebSocket to the Socket.IO path of `baseUrl` (http://host:port). */
  static async open(baseUrl, { query = "", autoPong = true, timeoutMs = 5_000 } = {}) {
    const url = `${baseUrl.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket${query}`;
    const socket = new RawSocket(url, { autoPong });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`websocket ${url} did not open within ${timeoutMs} ms`)), timeoutMs);
      socket.ws.once("open", () => {
        clearTimeout(timer);
        resolve();
      });
      socket.ws.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.closed.then((info) => {
        clearTimeout(timer);
        reject(new Error(`websocket closed before opening (code ${info.code})`));
      });
    });
    return socket;
  }

  #flush() {
    while (this.waiters.length && (this.queue.length || this.closeInfo)) {
      const waiter = this.waiters.shift();
      clearTimeout(waiter.timer);
      if (this.queue.length) waiter.resolve(this.queue.shift());
      else waiter.reject(new Error(`websocket closed (code ${this.closeInfo.code}) while waiting for a message`));
    }
  }

  /** The next message (string for text, Buffer for binary). */
  next(timeoutMs = 3_000) {
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          reject(new Error(`no message within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this.waiters.push(waiter);
      this.#flush();
    });
  }

  /** Resolves with `{code, reason, at}` when the socket closes; rejects after `timeoutMs`. */
  closedWithin(timeoutMs) {
    let timer;
    return Promise.race([
      this.closed,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`websocket still open after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(data) {
    this.ws.send(data);
  }

  /** Reads the Engine.IO open packet and returns its JSON. */
  async handshake(timeoutMs = 3_000) {
    const open = await this.next(timeoutMs);
    if (typeof open !== "string" || !open.startsWith("0")) {
      throw new Error(`expected an open packet, got ${JSON.stringify(String(open))}`);
    }
    return JSON.parse(open.slice(1));
  }

  /** Sends a Socket.IO CONNECT to `/` with `auth` and returns the answer packet. */
  async connect(auth = { token: "raw" }, timeoutMs = 3_000) {
    this.send(`40${JSON.stringify(auth)}`);
    return this.next(timeoutMs);
  }

  close() {
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) {
      this.ws.terminate();
    }
  }
}
