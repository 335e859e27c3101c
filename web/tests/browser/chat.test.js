// The web client in headless Chromium against a real `tidings serve`: WebTransport and
// WebSocket pages, the command-line client in the same conversation, history paging,
// groups, the close banner and oversized messages.

import assert from "node:assert/strict";
import dgram from "node:dgram";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";

import {
  compose,
  openConversation,
  REPO_ROOT,
  shownMessages,
  signInUrl,
  startFixture,
  stopFixture,
  WAIT_MS,
  waitForBodies,
  waitForConnection,
  withDiagnostics,
} from "./harness.js";

const ARTIFACTS = path.join(REPO_ROOT, "target/web-artifacts");

let server;
let browser;

before(async () => {
  ({ server, browser } = await startFixture());
});

after(() => stopFixture(server, browser));

/** Returns the seqs of sent messages as numbers, in page order. */
function seqsOf(messages) {
  return messages.filter((message) => message.state === "sent").map((message) => Number(message.seq));
}

function assertGapless(seqs, label) {
  for (let index = 1; index < seqs.length; index += 1) {
    assert.equal(seqs[index], seqs[index - 1] + 1, `${label}: seqs ${seqs.join(",")} have a gap or a repeat`);
  }
}

test("two pages chat over WebTransport", { timeout: 90_000 }, async () => {
  await withDiagnostics(browser, server, async () => {
    // The links `tidings serve` prints sign in alice and bob.
    const alice = await browser.open("alice", server.signInLinks.alice);
    const bob = await browser.open("bob", server.signInLinks.bob);
    await waitForConnection(alice, "connected", "WebTransport");
    await waitForConnection(bob, "connected", "WebTransport");
    assert.equal(new URL(alice.url()).hash, "", "the token is removed from the address bar");
    assert.equal(await alice.textContent("[data-testid=user-id]"), "alice");

    await alice.fill("[data-testid=direct-user]", "bob");
    await alice.click("[data-testid=direct-start]");
    await compose(alice, "hello bob");
    await waitForBodies(alice, ["hello bob"]);

    // The direct conversation id is the same on both sides, so bob's list shows it unread.
    const conversationId = await alice.getAttribute("[data-testid=conversation-item][aria-current=true]", "data-conversation-id");
    assert.equal(conversationId, "17709311867916754363", "direct id of alice and bob from the protocol's test vector");
    const bobItem = `[data-testid=conversation-item][data-conversation-id="${conversationId}"]`;
    await bob.waitForSelector(`${bobItem} [data-testid=unread-badge][data-count="1"]`);
    assert.equal(await bob.textContent(`${bobItem} [data-testid=conversation-preview]`), "alice: hello bob");

    await openConversation(bob, conversationId);
    await waitForBodies(bob, ["hello bob"]);
    await bob.waitForSelector(`${bobItem} [data-testid=unread-badge][data-count="0"]`, { state: "attached" });
    await compose(bob, "hi alice");
    await waitForBodies(alice, ["hello bob", "hi alice"]);
    await waitForBodies(bob, ["hello bob", "hi alice"]);

    const seen = await shownMessages(alice);
    assert.deepEqual(seen.map((message) => message.body), ["hello bob", "hi alice"]);
    assert.deepEqual(seqsOf(seen), [1, 2]);
    assert.deepEqual(seqsOf(await shownMessages(bob)), [1, 2]);
    assert.equal(await alice.textContent("[data-testid=transport]"), "WebTransport");
    assert.equal(await bob.textContent("[data-testid=transport]"), "WebTransport");

    mkdirSync(ARTIFACTS, { recursive: true });
    await alice.screenshot({ path: path.join(ARTIFACTS, "conversation.png"), fullPage: true });
    await alice.context().close();
    await bob.context().close();
  });
});

test("WebSocket page and command-line client share a group", { timeout: 120_000 }, async () => {
  await withDiagnostics(browser, server, async () => {
    const [carolToken, daveToken, erinToken] = await Promise.all(["carol", "dave", "erin"].map((user) => server.token(user)));
    const carol = await browser.open("carol", signInUrl(server, carolToken));
    const dave = await browser.open("dave", signInUrl(server, daveToken), { webTransport: false });
    await waitForConnection(carol, "connected", "WebTransport");
    await waitForConnection(dave, "connected", "WebSocket");

    // Carol creates the group in the page, with dave (WebSocket page) and erin (command line).
    await carol.click("summary");
    await carol.fill("[data-testid=group-name]", "trio");
    await carol.fill("[data-testid=group-members]", "dave, erin");
    await carol.click("[data-testid=group-create]");
    const groupId = await carol.getAttribute("[data-testid=conversation-item][aria-current=true]", "data-conversation-id");
    assert.match(groupId, /^\d+$/);
    assert.equal(await carol.textContent("[data-testid=conversation-view] [data-testid=conversation-title]"), "trio");
    const members = await carol.$$eval("[data-testid=member]", (items) => items.map((item) => item.dataset.user).sort());
    assert.deepEqual(members, ["carol", "dave", "erin"]);

    const pageBodies = ["from carol 1", "from dave 1", "from carol 2", "from dave 2"];
    const listener = server.cliListen(erinToken, groupId, pageBodies.length);
    await listener.ready;

    await compose(carol, pageBodies[0]);
    await waitForBodies(carol, [pageBodies[0]]);
    await openConversation(dave, groupId);
    await compose(dave, pageBodies[1]);
    await waitForBodies(dave, [pageBodies[1]]);
    await compose(carol, pageBodies[2]);
    await waitForBodies(carol, [pageBodies[2]]);
    await compose(dave, pageBodies[3]);

    const heard = await listener.messages;
    assert.deepEqual(heard.map((message) => message.body), pageBodies, "the command-line client sees every page message in order");

    const cliBodies = ["from erin 1", "from erin 2"];
    for (const body of cliBodies) {
      await server.cliSend(erinToken, groupId, body);
    }
    const everything = [...pageBodies, ...cliBodies];
    await waitForBodies(carol, everything);
    await waitForBodies(dave, everything);
    for (const [name, page] of [["carol", carol], ["dave", dave]]) {
      const shown = (await shownMessages(page)).filter((message) => message.sender !== "");
      const userMessages = shown.filter((message) => everything.includes(message.body));
      assert.deepEqual(userMessages.map((message) => message.body), everything, `${name} shows each message once, in order`);
      assertGapless(seqsOf(shown), name);
    }
    assert.equal(await dave.textContent("[data-testid=transport]"), "WebSocket");
    await carol.context().close();
    await dave.context().close();
  });
});

test("group members are added, removed and leave", { timeout: 90_000 }, async () => {
  await withDiagnostics(browser, server, async () => {
    const [frankToken, graceToken, heidiToken] = await Promise.all(["frank", "grace", "heidi"].map((user) => server.token(user)));
    const frank = await browser.open("frank", signInUrl(server, frankToken));
    const grace = await browser.open("grace", signInUrl(server, graceToken));
    await waitForConnection(frank, "connected");
    await waitForConnection(grace, "connected");

    await frank.click("summary");
    await frank.fill("[data-testid=group-name]", "club");
    await frank.fill("[data-testid=group-members]", "grace");
    await frank.click("[data-testid=group-create]");
    const groupId = await frank.getAttribute("[data-testid=conversation-item][aria-current=true]", "data-conversation-id");
    await compose(frank, "welcome");
    await waitForBodies(frank, ["welcome"]);

    await frank.fill("[data-testid=add-member-input]", "heidi");
    await frank.click("[data-testid=add-member-submit]");
    await frank.waitForSelector("[data-testid=member][data-user=heidi]");
    await frank.click("[data-testid=remove-member][data-user=heidi]");
    await frank.waitForSelector("[data-testid=member][data-user=heidi]", { state: "detached" });

    await openConversation(grace, groupId);
    await waitForBodies(grace, ["welcome"]);
    await grace.click("[data-testid=leave]");
    await grace.waitForSelector(`[data-testid=conversation-item][data-conversation-id="${groupId}"]`, { state: "detached" });
    // Frank's page learns the membership change from the group's system message.
    await frank.waitForSelector("[data-testid=member][data-user=grace]", { state: "detached" });
    const left = await frank.$$eval("[data-testid=member]", (items) => items.map((item) => item.dataset.user));
    assert.deepEqual(left, ["frank"]);
    assert.ok(heidiToken.length > 0);
    await frank.context().close();
    await grace.context().close();
  });
});

test("history pages load as the view scrolls up", { timeout: 120_000 }, async () => {
  await withDiagnostics(browser, server, async () => {
    const [ivanToken, judyToken] = await Promise.all(["ivan", "judy"].map((user) => server.token(user)));
    const ivan = await browser.open("ivan", signInUrl(server, ivanToken));
    await waitForConnection(ivan, "connected");
    await ivan.fill("[data-testid=direct-user]", "judy");
    await ivan.click("[data-testid=direct-start]");
    const total = 75;
    const bodies = Array.from({ length: total }, (_, index) => `line ${index + 1}`);
    for (const body of bodies) {
      await compose(ivan, body);
    }
    await waitForBodies(ivan, [bodies[total - 1]]);
    const conversationId = await ivan.getAttribute("[data-testid=conversation-item][aria-current=true]", "data-conversation-id");

    // A fresh page has no messages yet: it shows the newest page and loads older ones on scroll.
    const judy = await browser.open("judy", signInUrl(server, judyToken));
    await openConversation(judy, conversationId);
    await waitForBodies(judy, [bodies[total - 1]]);
    const firstShown = (await shownMessages(judy)).length;
    assert.ok(firstShown < total, `the first view shows one or a few pages, not all ${total} messages`);

    for (let scroll = 0; scroll < 10; scroll += 1) {
      if (await judy.getAttribute("[data-testid=history-state]", "data-complete") === "true") {
        break;
      }
      const count = (await shownMessages(judy)).length;
      await judy.$eval("[data-testid=messages]", (view) => {
        view.scrollTop = 0;
      });
      await judy.waitForFunction(
        (before) => document.querySelectorAll("[data-testid=message]").length > before
          || document.querySelector("[data-testid=history-state]").dataset.complete === "true",
        count,
        { timeout: WAIT_MS },
      );
    }
    const shown = await shownMessages(judy);
    assert.deepEqual(shown.map((message) => message.body), bodies);
    assert.deepEqual(seqsOf(shown), bodies.map((_, index) => index + 1));
    await ivan.context().close();
    await judy.context().close();
  });
});

test("oversized message fails and the next one is sent", { timeout: 90_000 }, async () => {
  await withDiagnostics(browser, server, async () => {
    for (const webTransport of [true, false]) {
      const user = webTransport ? "mallory" : "mallory-ws";
      const transport = webTransport ? "WebTransport" : "WebSocket";
      const page = await browser.open(user, signInUrl(server, await server.token(user)), { webTransport });
      await waitForConnection(page, "connected", transport);
      await page.fill("[data-testid=direct-user]", "oscar");
      await page.click("[data-testid=direct-start]");
      await compose(page, "first");
      await waitForBodies(page, ["first"]);

      // Above the edge's 64 KiB message limit, below its 256 KiB frame limit: the edge rejects it.
      await compose(page, "x".repeat(70_000));
      const failed = await page.waitForSelector("[data-testid=message][data-state=failed]");
      const error = await failed.$eval("[data-testid=message-error]", (node) => node.textContent);
      assert.match(error, /MESSAGE_TOO_LARGE/, `${transport}: ${error}`);
      assert.equal(await failed.getAttribute("data-seq"), null);

      await compose(page, "after the big one");
      await waitForBodies(page, ["first", "after the big one"]);
      const shown = await shownMessages(page);
      assert.deepEqual(seqsOf(shown), [1, 2], `${transport}: the rejected message took no seq`);
      assert.equal(shown.filter((message) => message.state === "failed").length, 1);
      assert.equal(await page.textContent("[data-testid=connection-state]"), "connected");
      await page.context().close();
    }
  });
});

test("expired session shows the close code and reason", { timeout: 90_000 }, async () => {
  await withDiagnostics(browser, server, async () => {
    // The edge ends a session when its token expires, with a Close frame first. Both
    // transports run at once, so the test waits for one expiry only.
    const pages = await Promise.all([true, false].map(async (webTransport) => {
      const user = webTransport ? "peggy" : "peggy-ws";
      const page = await browser.open(user, signInUrl(server, await server.token(user, "6s")), { webTransport });
      await waitForConnection(page, "connected", webTransport ? "WebTransport" : "WebSocket");
      return page;
    }));
    for (const page of pages) {
      await page.waitForSelector("[data-testid=close-banner]:not([hidden])", { timeout: 15_000 });
      assert.equal(await page.getAttribute("[data-testid=close-code]", "data-code"), String(0x103));
      assert.match(await page.textContent("[data-testid=close-code]"), /TOKEN_EXPIRED/);
      assert.equal(await page.textContent("[data-testid=close-reason]"), "the token expired; reconnect with a new one");
      // TOKEN_EXPIRED is final: the page stops instead of reconnecting with the same token.
      await waitForConnection(page, "closed");
      await page.context().close();
    }
  });
});

test("kicked session shows the close code and reason", { timeout: 90_000 }, async () => {
  await withDiagnostics(browser, server, async () => {
    // One user on both transports; an operator ends both sessions at once.
    const token = await server.token("quinn");
    const pages = [];
    for (const webTransport of [true, false]) {
      const page = await browser.open(`quinn-${webTransport ? "wt" : "ws"}`, signInUrl(server, token), { webTransport });
      await waitForConnection(page, "connected", webTransport ? "WebTransport" : "WebSocket");
      pages.push(page);
    }
    const reply = await server.kick("quinn", "account under review");
    assert.deepEqual(reply, { user: "quinn", sessions: 2 });
    for (const page of pages) {
      await page.waitForSelector("[data-testid=close-banner]:not([hidden])", { timeout: 15_000 });
      assert.equal(await page.getAttribute("[data-testid=close-code]", "data-code"), String(0x108));
      assert.match(await page.textContent("[data-testid=close-code]"), /KICKED/);
      assert.equal(await page.textContent("[data-testid=close-reason]"), "account under review");
      // KICKED is final: the page does not come back on its own, takes no new message and
      // offers the sign-in form.
      await waitForConnection(page, "closed");
      assert.equal(await page.isDisabled("[data-testid=composer-input]"), true);
      assert.equal(await page.isVisible("[data-testid=sign-in]"), true);
      await page.context().close();
    }
  });
});

test("rejected token shows only the sign-in form", { timeout: 60_000 }, async () => {
  await withDiagnostics(browser, server, async () => {
    const page = await browser.open("rita", signInUrl(server, "not-a-token"));
    await page.waitForSelector("[data-testid=close-banner]:not([hidden])", { timeout: 15_000 });
    assert.match(await page.textContent("[data-testid=close-code]"), /INVALID_TOKEN/);
    assert.equal(await page.isVisible("[data-testid=sign-in]"), true);
    assert.equal(await page.isVisible("#chat"), false);

    // A good token in the form signs in.
    await page.fill("[data-testid=sign-in] textarea", await server.token("rita"));
    await page.click("[data-testid=sign-in-submit]");
    await waitForConnection(page, "connected", "WebTransport");
    assert.equal(await page.isVisible("#chat"), true);
    await page.context().close();
  });
});

test("silent WebTransport falls back to WebSocket", { timeout: 60_000 }, async () => {
  await withDiagnostics(browser, server, async () => {
    // A UDP socket that reads and never replies: the QUIC handshake gets no reply at all.
    const blackhole = dgram.createSocket("udp4");
    await new Promise((resolve) => blackhole.bind(0, "127.0.0.1", resolve));
    try {
      const wt = `https://127.0.0.1:${blackhole.address().port}/v1/wt`;
      const page = await browser.open("trent", signInUrl(server, await server.token("trent"), { wt }));
      const started = Date.now();
      await waitForConnection(page, "connected", "WebSocket");
      const elapsedMs = Date.now() - started;
      // 3 s for WebTransport, then the WebSocket on loopback; the rest is slack for a busy machine.
      assert.ok(elapsedMs < 8_000, `connected over WebSocket after ${elapsedMs} ms`);
      assert.ok(browser.consoleLog().includes("[trent] info: tidings: WebTransport failed"), "the page logged the failed attempt");
      await page.context().close();
    } finally {
      blackhole.close();
    }
  });
});
