// A server that drains and restarts: pages show its SERVER_SHUTDOWN close, keep a message
// typed while it is down, and resume the conversation from their cursors once it is back.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  compose,
  openConversation,
  Server,
  shownMessages,
  signInUrl,
  startFixture,
  stopFixture,
  waitForBodies,
  waitForConnection,
  withDiagnostics,
} from "./harness.js";

/** Bound of the wait for a page to reconnect to the restarted server. */
const RECONNECT_MS = 30_000;

let server;
let browser;

before(async () => {
  ({ server, browser } = await startFixture());
});

after(() => stopFixture(server, browser));

test("drained server closes pages that resume after restart", { timeout: 120_000 }, async () => {
  await withDiagnostics(browser, server, async () => {
    const [umaToken, victorToken] = await Promise.all(["uma", "victor"].map((user) => server.token(user)));
    const uma = await browser.open("uma", signInUrl(server, umaToken));
    const victor = await browser.open("victor", signInUrl(server, victorToken), { webTransport: false });
    await waitForConnection(uma, "connected", "WebTransport");
    await waitForConnection(victor, "connected", "WebSocket");

    await uma.fill("[data-testid=direct-user]", "victor");
    await uma.click("[data-testid=direct-start]");
    await compose(uma, "before restart");
    await waitForBodies(uma, ["before restart"]);
    const conversationId = await uma.getAttribute("[data-testid=conversation-item][aria-current=true]", "data-conversation-id");
    await openConversation(victor, conversationId);
    await waitForBodies(victor, ["before restart"]);

    await server.terminate();
    for (const page of [uma, victor]) {
      await page.waitForSelector("[data-testid=close-banner]:not([hidden])");
      assert.equal(await page.getAttribute("[data-testid=close-code]", "data-code"), String(0x104));
      assert.match(await page.textContent("[data-testid=close-code]"), /SERVER_SHUTDOWN/);
      assert.equal(await page.textContent("[data-testid=close-reason]"), "the edge is shutting down; reconnect");
      // SERVER_SHUTDOWN is retryable, so the page keeps trying instead of stopping.
      assert.notEqual(await page.textContent("[data-testid=connection-state]"), "closed");
    }

    await compose(uma, "typed while down");
    const pending = (await shownMessages(uma)).filter((message) => message.state === "pending");
    assert.deepEqual(pending.map((message) => message.body), ["typed while down"]);

    server = await Server.start(server);
    for (const page of [uma, victor]) {
      await page.waitForFunction(
        () => document.querySelector("[data-testid=connection-state]")?.textContent === "connected",
        null,
        { timeout: RECONNECT_MS },
      );
    }
    await compose(victor, "after restart");
    const everything = ["before restart", "typed while down", "after restart"];
    for (const [name, page] of [["uma", uma], ["victor", victor]]) {
      await waitForBodies(page, everything);
      const shown = await shownMessages(page);
      assert.deepEqual(shown.map((message) => message.body), everything, `${name} shows each message once, in order`);
      assert.deepEqual(shown.map((message) => message.seq), ["1", "2", "3"], `${name} has gapless seqs`);
    }
    await uma.context().close();
    await victor.context().close();
  });
});
