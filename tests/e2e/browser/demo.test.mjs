// The demo page of `switchboard serve --dev` (web/, embedded in the binary), in
// a real browser: Debian's Chromium driven by playwright-core. Alice and Bob, in
// two browser contexts, use workspace "demo": both see each other online, chat
// both ways, Alice sees "Bob is typing…", a notification sent with the page's
// button rings Alice's bell with an unread count, both edit the shared notes at
// once and the text converges, Bob reloads and gets the chat history (and the
// notes) back, and a message over the size limit shows the `too_large` error.
// Then #team, a workspace no token grants: Alice joins it and adds Bob from the
// "Members of #team" section, #team shows up in Bob's list, they chat there,
// and when Alice removes Bob his page says so within 2 s and drops #team live.
// Every step writes a screenshot to <repo>/target/screenshots/.
//
// Run: SWITCHBOARD_BIN=path/to/switchboard node --test browser/
// (SWITCHBOARD_BIN defaults to $CARGO_TARGET_DIR/release/switchboard, as in
// scripts/test.sh). Chromium: CHROMIUM_PATH, else /usr/bin/chromium
// (`apt-get install -y chromium`); without it the test fails, it does not skip.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

import { httpRequest, startSwitchboard } from "../lib/server.mjs";

const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const SCREENSHOTS = join(REPO, "target", "screenshots");
/** The bound of every wait in the browser. */
const WAIT_MS = 10_000;

process.env.SWITCHBOARD_BIN ??= join(
  process.env.CARGO_TARGET_DIR || "/var/tmp/switchboard-target",
  "release",
  "switchboard",
);

function chromiumPath() {
  const path = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw new Error(
      `Chromium is required by the browser tests and was not found at ${path}: ` +
        "install Debian's package (apt-get install -y chromium) or point CHROMIUM_PATH at a Chromium binary.",
    );
  }
  return path;
}

describe("the --dev demo page in Chromium: Alice and Bob in workspace demo", { timeout: 100_000 }, () => {
  let server;
  let browser;
  /** @type {import("playwright-core").Page} */ let alice;
  /** @type {import("playwright-core").Page} */ let bob;
  const pageErrors = [];

  const shot = (page, name) => page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
  const messages = (page) => page.getByTestId("messages");
  const message = (page, text) => messages(page).locator(".message-text", { hasText: text });
  const online = (page, userId) => page.locator(`[data-testid="online"] li[data-user="${userId}"]`);
  const workspaceItem = (page, w) => page.locator(`[data-testid="workspaces"] li[data-workspace="${w}"]`);
  const memberRow = (page, userId) => page.locator(`[data-testid="members"] li[data-user="${userId}"]`);
  /** Sends `text` from the composer with Enter. */
  const say = async (page, text) => {
    const composer = page.getByTestId("composer");
    await composer.click();
    await composer.pressSequentially(text);
    await composer.press("Enter");
  };

  before(async () => {
    const executablePath = chromiumPath();
    mkdirSync(SCREENSHOTS, { recursive: true });
    server = await startSwitchboard({ args: ["--dev"] });
    const demo = await httpRequest(`${server.url}/api/dev/demo`);
    assert.equal(demo.status, 200, `GET /api/dev/demo answered ${demo.status}: ${demo.body.slice(0, 200)}`);
    browser = await chromium.launch({ executablePath, args: ["--no-sandbox"], timeout: 30_000 });
    const open = async (name) => {
      const context = await browser.newContext({ viewport: { width: 1360, height: 820 } });
      context.setDefaultTimeout(WAIT_MS);
      const page = await context.newPage();
      page.on("pageerror", (err) => pageErrors.push(`${name}: ${err.message}`));
      return page;
    };
    alice = await open("alice");
    bob = await open("bob");
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test("the page is served at / and a demo user is picked", async () => {
    const index = await httpRequest(`${server.url}/`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get("content-type") ?? "", /text\/html/);
    for (const [path, type] of [
      ["/assets/app.js", /javascript/],
      ["/assets/app.css", /text\/css/],
    ]) {
      const res = await httpRequest(`${server.url}${path}`);
      assert.equal(res.status, 200, `GET ${path}`);
      assert.match(res.headers.get("content-type") ?? "", type, `content type of ${path}`);
    }

    await alice.goto(`${server.url}/`);
    await alice.getByTestId("pick-alice").waitFor();
    await shot(alice, "01-welcome");
    await alice.getByTestId("pick-alice").click();
    await alice.getByTestId("composer").waitFor();
    assert.match(alice.url(), /[?&]user=alice\b/, "the chosen user is in the address, so a reload keeps it");
    assert.match(alice.url(), /[?&]workspace=demo\b/);

    await bob.goto(`${server.url}/?user=bob&workspace=demo`);
    await bob.getByTestId("composer").waitFor();
  });

  test("each sees the other in the online list", async () => {
    await online(alice, "bob").waitFor();
    await online(bob, "alice").waitFor();
    await online(alice, "alice").waitFor();
    assert.match(await online(alice, "bob").innerText(), /Bob/);
    assert.match(await online(bob, "alice").innerText(), /Alice/);
    await shot(alice, "02-online-alice");
  });

  test("chat both ways, sent with Enter", async () => {
    await say(alice, "Hi Bob, this is Alice");
    await message(bob, "Hi Bob, this is Alice").waitFor();
    await message(alice, "Hi Bob, this is Alice").waitFor();
    await say(bob, "Hello Alice! Bob here");
    await message(alice, "Hello Alice! Bob here").waitFor();
    assert.equal(await alice.getByTestId("composer").inputValue(), "", "the composer is cleared after sending");
    await shot(alice, "03-chat-alice");
    await shot(bob, "03-chat-bob");
  });

  test('Alice sees "Bob is typing…" while Bob types, and it ends when he stops', async () => {
    const composer = bob.getByTestId("composer");
    await composer.click();
    await composer.pressSequentially("I am typing something");
    const indicator = alice.getByTestId("typing");
    await alice.waitForFunction(
      () => /Bob is typing/.test(document.querySelector('[data-testid="typing"]')?.textContent ?? ""),
      null,
      { timeout: WAIT_MS },
    );
    assert.match(await indicator.innerText(), /Bob is typing…/);
    assert.doesNotMatch(await bob.getByTestId("typing").innerText(), /typing/, "nobody else is typing on Bob's side");
    await shot(alice, "04-typing-alice");

    await composer.fill("");
    await alice.waitForFunction(
      () => !/typing/.test(document.querySelector('[data-testid="typing"]')?.textContent ?? ""),
      null,
      { timeout: WAIT_MS },
    );
  });

  test("a notification sent with the button reaches the bell with an unread count", async () => {
    assert.equal(await alice.getByTestId("bell-count").count(), 0, "no unread notification at first");
    await bob.getByTestId("notify-to").selectOption("alice");
    await bob.getByTestId("notify-text").fill("Bob pinged you from the demo");
    await bob.getByTestId("notify-send").click();
    await bob.getByTestId("notify-result").filter({ hasText: /Sent #\d+ to Alice/ }).waitFor();

    await alice.getByTestId("bell-count").filter({ hasText: /^1$/ }).waitFor();
    await alice.getByTestId("bell").click();
    const panel = alice.getByTestId("bell-panel");
    await panel.getByText("Bob pinged you from the demo").waitFor();
    await shot(alice, "05-notification-alice");

    // A second one, to herself: the count goes to 2.
    await alice.keyboard.press("Escape");
    await panel.waitFor({ state: "detached" });
    await alice.getByTestId("notify-to").selectOption("alice");
    await alice.getByTestId("notify-text").fill("Note to self");
    await alice.getByTestId("notify-send").click();
    await alice.getByTestId("bell-count").filter({ hasText: /^2$/ }).waitFor();
    await alice.getByTestId("bell").click();
    await panel.getByText("Note to self").waitFor();
    assert.deepEqual(
      await panel.locator(".notification-text").allInnerTexts(),
      ["Note to self", "Bob pinged you from the demo"],
      "newest first",
    );

    await panel.getByRole("button", { name: "Mark all read" }).click();
    await alice.getByTestId("bell-count").waitFor({ state: "detached" });
    await alice.keyboard.press("Escape");
    await panel.waitFor({ state: "detached" });
  });

  test("both edit the shared notes at once and the text converges; each sees the other editing", async () => {
    const aliceEditor = alice.getByTestId("editor");
    const bobEditor = bob.getByTestId("editor");
    await alice.locator('[data-testid="peers"] [data-peer="bob"]').waitFor();
    await bob.locator('[data-testid="peers"] [data-peer="alice"]').waitFor();

    await aliceEditor.click();
    await aliceEditor.pressSequentially("Agenda: ");
    await bob.waitForFunction(
      () => document.querySelector('[data-testid="editor"]')?.value.includes("Agenda: "),
      null,
      { timeout: WAIT_MS },
    );

    // Bob appends at the end while Alice inserts at the start.
    await bobEditor.click();
    await bobEditor.press("Control+End");
    await aliceEditor.click();
    await aliceEditor.press("Control+Home");
    await Promise.all([
      aliceEditor.pressSequentially("[alice] ", { delay: 15 }),
      bobEditor.pressSequentially("ship the demo page [bob]", { delay: 15 }),
    ]);

    const valueOf = (page) => page.getByTestId("editor").inputValue();
    const deadline = Date.now() + WAIT_MS;
    let a;
    let b;
    for (;;) {
      [a, b] = await Promise.all([valueOf(alice), valueOf(bob)]);
      if (a === b && a.includes("[alice] ") && a.includes("ship the demo page [bob]")) break;
      if (Date.now() > deadline) assert.fail(`the notes did not converge: alice ${JSON.stringify(a)}, bob ${JSON.stringify(b)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(a, "[alice] Agenda: ship the demo page [bob]");
    await shot(alice, "06-editor-alice");
    await shot(bob, "06-editor-bob");
  });

  test("a reload brings back the chat history and the notes", async () => {
    await bob.reload();
    await message(bob, "Hi Bob, this is Alice").waitFor();
    await message(bob, "Hello Alice! Bob here").waitFor();
    const texts = await messages(bob).locator(".message-text").allInnerTexts();
    assert.deepEqual(texts, ["Hi Bob, this is Alice", "Hello Alice! Bob here"], "history, oldest first, once each");
    await bob.waitForFunction(
      () => document.querySelector('[data-testid="editor"]')?.value === "[alice] Agenda: ship the demo page [bob]",
      null,
      { timeout: WAIT_MS },
    );
    await online(bob, "alice").waitFor();
    await shot(bob, "07-reloaded-bob");
  });

  test("a message over the size limit shows the too_large error and keeps the text", async () => {
    const composer = alice.getByTestId("composer");
    const tooLong = "x".repeat(5001);
    await composer.fill(tooLong);
    await composer.press("Enter");
    const error = alice.getByTestId("chat-error");
    await error.waitFor();
    assert.match(await error.innerText(), /too_large/);
    assert.equal(await composer.inputValue(), tooLong, "the refused text is given back to be edited");
    await shot(alice, "08-too-large-alice");
    assert.equal(await message(bob, "xxxxxxxxxx").count(), 0, "nothing of it reached Bob");
    assert.deepEqual(pageErrors, [], "no uncaught error in either page");
  });

  test("Alice joins #team and adds Bob; #team appears in Bob's list and they chat there", async () => {
    // Leave the refused text of the previous test behind.
    await alice.getByTestId("composer").fill("");
    await alice.getByTestId("chat-error").getByRole("button", { name: "Dismiss" }).click();

    // Nobody is a member yet: #team is in no list.
    for (const page of [alice, bob]) {
      for (const user of ["alice", "bob", "carol"]) {
        await memberRow(page, user).and(page.locator('[data-member="no"]')).waitFor();
      }
      assert.equal(await workspaceItem(page, "team").count(), 0, "#team is listed only for its members");
    }

    await alice.getByRole("button", { name: "Join #team" }).click();
    await workspaceItem(alice, "team").waitFor();
    await alice.getByRole("button", { name: "Add Bob to #team" }).click();
    await memberRow(alice, "bob").and(alice.locator('[data-member="yes"]')).waitFor();
    // Bob's page learns it from the notification the add sends, without a reload.
    await workspaceItem(bob, "team").waitFor();
    await bob.getByTestId("bell-count").filter({ hasText: /^1$/ }).waitFor(); // "Alice added you to #team"

    await workspaceItem(alice, "team").getByRole("button").click();
    await workspaceItem(bob, "team").getByRole("button").click();
    assert.match(alice.url(), /[?&]workspace=team\b/);
    await online(alice, "bob").waitFor();
    await online(bob, "alice").waitFor();
    await say(bob, "Bob made it into #team");
    await message(alice, "Bob made it into #team").waitFor();
    await message(bob, "Bob made it into #team").waitFor();
    assert.equal(await message(alice, "Hi Bob, this is Alice").count(), 0, "#team has its own messages");
    await shot(alice, "09-team-alice");
    await shot(bob, "09-team-bob");
  });

  test("Alice removes Bob: within 2 s Bob's page says so and #team leaves his list", async () => {
    const notice = bob.getByTestId("removed-notice");
    assert.equal(await notice.count(), 0);
    const removedAt = Date.now();
    await alice.getByRole("button", { name: "Remove Bob from #team" }).click();
    await notice.waitFor({ timeout: 2_000 });
    await workspaceItem(bob, "team").waitFor({ state: "detached", timeout: Math.max(1, 2_000 - (Date.now() - removedAt)) });
    const elapsed = Date.now() - removedAt;
    assert.ok(elapsed <= 2_000, `the removal reached Bob's page after ${elapsed} ms`);
    assert.match(await notice.innerText(), /You were removed from #team/);

    // Bob is back in #demo, with its messages; Alice's #team no longer lists him online.
    await bob.waitForURL(/[?&]workspace=demo\b/);
    await message(bob, "Hi Bob, this is Alice").waitFor();
    assert.equal(await message(bob, "Bob made it into #team").count(), 0);
    await online(alice, "bob").waitFor({ state: "detached" });
    await memberRow(alice, "bob").and(alice.locator('[data-member="no"]')).waitFor();
    await workspaceItem(alice, "team").waitFor(); // Alice is still a member
    await shot(bob, "10-removed-bob");

    await notice.getByRole("button", { name: "Dismiss" }).click();
    await notice.waitFor({ state: "detached" });
    assert.deepEqual(pageErrors, [], "no uncaught error in either page");
  });
});
