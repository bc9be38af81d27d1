// Every snippet of the README runs, against the server binary under test, so the
// README stays true. Each fenced `sh` or `js` block of README.md is preceded by a
// marker comment, `<!-- readme-test: NAME -->`; this file runs the block of each
// NAME it knows, and fails on a block without a marker or a marker it does not know.
//
// The snippets run as written, with two substitutions: the address
// 127.0.0.1:3000 becomes a free port, and `cargo run --release [-q] -p switchboard
// -- ARGS` runs the binary under test with ARGS (a shell function named `cargo`
// checks the rest of the command). Shell snippets run in bash with `set -euo
// pipefail`, and curl with `--fail-with-body`, so a failing command fails the test.
// JavaScript snippets run with node, with this folder's node_modules.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard node --test readme/

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";

import { eventually, freePort, httpRequest, switchboardPath } from "../lib/server.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const E2E = join(HERE, "..");
const ROOT = join(E2E, "../..");
const README_ADDRESS = "127.0.0.1:3000";
const WAIT_MS = 15_000;

/**
 * The fenced blocks of a Markdown text: `[{ name, lang, code, line }]`, `name`
 * being the marker of the block (the `readme-test` comment on the last non-blank
 * line before it) or null.
 */
export function fencedBlocks(markdown) {
  const lines = markdown.split("\n");
  const blocks = [];
  let previous = "";
  for (let i = 0; i < lines.length; i += 1) {
    const open = /^```(\S*)\s*$/.exec(lines[i]);
    if (!open) {
      if (lines[i].trim() !== "") previous = lines[i].trim();
      continue;
    }
    const start = i;
    const body = [];
    for (i += 1; i < lines.length && lines[i] !== "```"; i += 1) body.push(lines[i]);
    const marker = /^<!--\s*readme-test:\s*([\w-]+)\s*-->$/.exec(previous);
    blocks.push({ name: marker ? marker[1] : null, lang: open[1], code: body.join("\n"), line: start + 1 });
    previous = "";
  }
  return blocks;
}

const CODE_LANGS = new Set(["sh", "bash", "shell", "console", "js", "javascript", "mjs"]);
const KNOWN = ["dev-server", "test-command", "quickstart", "client", "notifications", "backend", "collab"];

const blocks = fencedBlocks(readFileSync(join(ROOT, "README.md"), "utf8"));
const snippet = (name) => {
  const found = blocks.filter((b) => b.name === name);
  assert.equal(found.length, 1, `README.md has one block marked readme-test: ${name}`);
  return found[0].code;
};

/** The snippet with the README's address replaced by `port`'s. */
function onPort(code, port) {
  assert.ok(code.includes(README_ADDRESS), `the snippet names ${README_ADDRESS}:\n${code}`);
  return code.replaceAll(README_ADDRESS, `127.0.0.1:${port}`);
}

const SHELL_PRELUDE = String.raw`set -euo pipefail
cargo() {
  local command=""
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do command="$command $1"; shift; done
  case "$command" in
    " run --release -p switchboard" | " run --release -q -p switchboard") ;;
    *) echo "readme test: unexpected command: cargo$command" >&2; return 2 ;;
  esac
  shift
  "$README_SWITCHBOARD_BIN" "$@"
}
curl() { command curl --fail-with-body --silent --show-error "$@"; }
`;

/** This process's environment without SWITCHBOARD_* variables, plus `extra`. */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith("SWITCHBOARD_")) env[key] = value;
  return { ...env, RUST_LOG: process.env.RUST_LOG ?? "warn", ...extra };
}

const running = new Set();
const scratch = [];

/** A fresh directory that resolves packages from this folder's node_modules. */
function scratchDir() {
  const dir = mkdtempSync(join(tmpdir(), "sb-readme-"));
  symlinkSync(join(E2E, "node_modules"), join(dir, "node_modules"), "dir");
  scratch.push(dir);
  return dir;
}

/**
 * Spawns a process in its own process group and collects its output.
 * Returns `{ proc, output(), exited, stop() }`; `stop()` ends the whole group.
 */
function launch(command, args, { cwd, env }) {
  const proc = spawn(command, args, { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  proc.stdout.on("data", (chunk) => (output += chunk));
  proc.stderr.on("data", (chunk) => (output += chunk));
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  const handle = {
    proc,
    output: () => output,
    exited,
    async stop() {
      running.delete(handle);
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      const signalGroup = (signal) => {
        try {
          process.kill(-proc.pid, signal);
        } catch {
          // the group is gone
        }
      };
      signalGroup("SIGTERM");
      const timer = setTimeout(() => signalGroup("SIGKILL"), 5_000);
      const result = await exited;
      clearTimeout(timer);
      signalGroup("SIGKILL"); // anything the shell left behind
      return result;
    },
  };
  running.add(handle);
  return handle;
}

/** Runs a shell snippet in the background (`launch`). */
function launchShell(code, { cwd, env }) {
  return launch("bash", ["-c", SHELL_PRELUDE + code], { cwd, env });
}

/** Runs a JavaScript snippet with node in the background (`launch`). */
function launchNode(name, code, env) {
  const dir = scratchDir();
  const file = join(dir, `${name}.mjs`);
  writeFileSync(file, code);
  return launch(process.execPath, [file], { cwd: dir, env });
}

/** Waits until `pattern` shows in the output of `handle`; fails with that output. */
async function outputShows(handle, pattern, what) {
  try {
    await eventually(() => {
      if (handle.proc.exitCode !== null) throw new Error(`exited with ${handle.proc.exitCode}`);
      return pattern.test(handle.output());
    }, WAIT_MS);
  } catch (err) {
    assert.fail(`${what}: ${err.message}; output:\n${handle.output()}`);
  }
}

async function ready(url) {
  await eventually(async () => (await httpRequest(`${url}/readyz`, { timeoutMs: 1_000 })).status === 200, WAIT_MS, 50);
}

after(async () => {
  await Promise.all([...running].map((h) => h.stop()));
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

describe("README.md", () => {
  const bin = switchboardPath();

  test("every sh and js block is marked with a snippet this test runs", () => {
    for (const block of blocks) {
      if (!CODE_LANGS.has(block.lang)) continue;
      assert.ok(block.name, `README.md line ${block.line}: a ${block.lang} block without <!-- readme-test: NAME -->`);
      assert.ok(KNOWN.includes(block.name), `README.md line ${block.line}: no test runs the snippet "${block.name}"`);
    }
    for (const name of KNOWN) snippet(name);
    for (const block of blocks) {
      assert.ok(block.lang !== "", `README.md line ${block.line}: a fenced block without a language`);
    }
  });

  test("dev-server: `serve --dev` prints the demo tokens and serves the demo page", async () => {
    const port = await freePort();
    const cwd = scratchDir();
    const server = launchShell(snippet("dev-server"), {
      cwd,
      env: cleanEnv({ README_SWITCHBOARD_BIN: bin, SWITCHBOARD_BIND: `127.0.0.1:${port}` }),
    });
    try {
      await outputShows(server, /token for alice \(workspaces demo, design\): \S+/, "the dev banner");
      const url = `http://127.0.0.1:${port}`;
      await ready(url);
      const page = await httpRequest(`${url}/`);
      assert.equal(page.status, 200);
      assert.match(page.headers.get("content-type"), /text\/html/);
      const demo = await httpRequest(`${url}/api/dev/demo`);
      assert.equal(demo.status, 200);
      assert.deepEqual(
        JSON.parse(demo.body).users.map((u) => u.id),
        ["alice", "bob", "carol"],
      );
    } finally {
      await server.stop();
    }
  });

  test("test-command: the test script exists, is executable, parses, and is what CI runs", () => {
    const code = snippet("test-command").trim();
    assert.equal(code, "./scripts/test.sh");
    const script = join(ROOT, "scripts/test.sh");
    accessSync(script, constants.X_OK);
    execFileSync("bash", ["-n", script]);
    assert.match(readFileSync(join(ROOT, ".ci/run"), "utf8"), /exec \.\/scripts\/test\.sh/);
  });

  describe("quick start, in order", () => {
    let port;
    let url;
    let quickstart;
    let shell; // what the quick-start shell exported: TOKEN and SWITCHBOARD_API_KEY
    let client;
    let notifications;

    test("quickstart: starts the server in the background and mints a token", async () => {
      port = await freePort();
      url = `http://127.0.0.1:${port}`;
      const code = snippet("quickstart");
      quickstart = launchShell(
        `${code}\nprintf 'README-TEST TOKEN=%s API_KEY=%s\\n' "$TOKEN" "$SWITCHBOARD_API_KEY"\nwait\n`,
        { cwd: scratchDir(), env: cleanEnv({ README_SWITCHBOARD_BIN: bin, SWITCHBOARD_BIND: `127.0.0.1:${port}` }) },
      );
      await outputShows(quickstart, /README-TEST TOKEN=\S+ API_KEY=\S+/, "the token");
      const [, token, apiKey] = /README-TEST TOKEN=(\S+) API_KEY=(\S+)/.exec(quickstart.output());
      assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, "TOKEN is a JWT");
      shell = { TOKEN: token, SWITCHBOARD_API_KEY: apiKey };
      await ready(url);
    });

    test("client: joins w1, sends hello and gets the ack and the message back", async () => {
      assert.ok(shell, "the quick start ran");
      client = launchNode("client", onPort(snippet("client"), port), cleanEnv({ TOKEN: shell.TOKEN }));
      await outputShows(client, /ok: true, id: \d+, createdAt: '\d{4}-/, "the ack");
      await outputShows(client, /^alice: hello$/m, "the broadcast message");
    });

    test("notifications: the stream opens", async () => {
      assert.ok(shell, "the quick start ran");
      notifications = launchNode(
        "notifications",
        onPort(snippet("notifications"), port),
        cleanEnv({ TOKEN: shell.TOKEN }),
      );
      await outputShows(notifications, /type: 'connected'/, "the connected event");
    });

    test("backend: notification, membership and publish reach alice", async () => {
      assert.ok(shell, "the quick start ran");
      const backend = launchShell(onPort(snippet("backend"), port), {
        cwd: scratchDir(),
        env: cleanEnv({ README_SWITCHBOARD_BIN: bin, ...shell }),
      });
      const { code } = await backend.exited;
      running.delete(backend);
      assert.equal(code, 0, `the backend snippet failed:\n${backend.output()}`);
      assert.match(backend.output(), /"notifications":\[\{"id":\d+,"userId":"alice","type":"mention"/);
      await outputShows(notifications, /type: 'mention'/, "the notification on the stream");
      await outputShows(client, /^announcement: deploy at 5$/m, "the published event");
      const w2 = await httpRequest(`${url}/api/workspaces/w2/messages`, {
        headers: { Authorization: `Bearer ${shell.TOKEN}` },
      });
      assert.equal(w2.status, 200, `alice, now a member, reads w2: ${w2.body}`);
    });

    test("collab: the Node.js Yjs client writes to the shared document", async () => {
      assert.ok(shell, "the quick start ran");
      const notes = launchNode("notes", onPort(snippet("collab"), port), cleanEnv({ TOKEN: shell.TOKEN }));
      await outputShows(notes, /^hello $/m, "the local document");
      // Another client sees it through the server.
      const doc = new Y.Doc();
      const provider = new WebsocketProvider(`ws://127.0.0.1:${port}/collab/w1`, "notes", doc, {
        params: { token: shell.TOKEN },
        WebSocketPolyfill: WebSocket,
        disableBc: true,
      });
      try {
        await eventually(() => provider.synced && doc.getText("body").toString() === "hello ", WAIT_MS);
      } finally {
        provider.destroy();
        doc.destroy();
        await notes.stop();
      }
    });

    after(async () => {
      await client?.stop();
      await notifications?.stop();
      await quickstart?.stop();
    });
  });
});
