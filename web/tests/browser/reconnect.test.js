// A page whose network path dies without a close: it must notice the silence, reconnect,
// resend its unacknowledged message with the original clientMsgId, and fill the gap of
// messages others sent meanwhile, each exactly once.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  compose,
  openConversation,
  runTidings,
  shownMessages,
  signInUrl,
  startFixture,
  stopFixture,
  waitForBodies,
  waitForConnection,
  withDiagnostics,
} from "./harness.js";
import { CutProxy } from "./proxy.js";

/** Bound of the wait for a page to notice the dead path, and later to come back. */
const RECOVERY_MS = 30_000;

let server;
let browser;
let proxy;

before(async () => {
  ({ server, browser } = await startFixture());
  proxy = await CutProxy.start({
    udpTarget: { host: "127.0.0.1", port: server.quicPort },
    tcpTarget: { host: "127.0.0.1", port: server.httpPort },
  });
});

after(async () => {
  proxy?.close();
  await stopFixture(server, browser);
});

async function waitForState(page, states) {
  await page.waitForFunction(
    (expected) => expected.includes(document.querySelector("[data-testid=connection-state]")?.textContent),
    states,
    { timeout: RECOVERY_MS },
  );
}

test("cut link reconnects and fills the gap exactly", { timeout: 150_000 }, async () => {
  await withDiagnostics(browser, server, async () => {
    const [quinnToken, ritaToken, samToken] = await Promise.all(["quinn", "rita", "sam"].map((user) => server.token(user)));
    const viaProxy = {
      wt: `https://127.0.0.1:${proxy.udpPort}/v1/wt`,
      ws: `ws://127.0.0.1:${proxy.tcpPort}/v1/ws`,
    };
    const quinn = await browser.open("quinn", signInUrl(server, quinnToken, viaProxy));
    const rita = await browser.open("rita", signInUrl(server, ritaToken, viaProxy), { webTransport: false });
    await waitForConnection(quinn, "connected", "WebTransport");
    await waitForConnection(rita, "connected", "WebSocket");

    const created = await runTidings(["client", "group", "create", ...server.clientArgs(samToken, "cli-admin"), "--name", "cut", "--members", "quinn,rita"]);
    const groupId = created.trim();
    assert.match(groupId, /^\d+$/, `group create printed ${created}`);
    await server.cliSend(samToken, groupId, "before the cut");
    for (const page of [quinn, rita]) {
      await openConversation(page, groupId);
      await waitForBodies(page, ["before the cut"]);
    }

    // Downstream only: quinn's send reaches the edge and is committed, but its SendAck is lost.
    const listener = server.cliListen(samToken, groupId, 1);
    await listener.ready;
    proxy.cut("downstream");
    const cutAt = Date.now();
    await compose(quinn, "sent during the cut");
    const [committed] = await listener.messages;
    assert.equal(committed.body, "sent during the cut", "the edge committed the send");
    const pending = (await shownMessages(quinn)).filter((message) => message.state === "pending");
    assert.deepEqual(pending.map((message) => message.body), ["sent during the cut"], "no SendAck reached the page");

    const meanwhile = ["while cut 1", "while cut 2", "while cut 3"];
    for (const body of meanwhile) {
      await server.cliSend(samToken, groupId, body);
    }
    await waitForState(quinn, ["reconnecting", "connecting"]);
    await waitForState(rita, ["reconnecting", "connecting"]);
    const detectedMs = Date.now() - cutAt;
    assert.ok(detectedMs < 15_000, `the dead path was noticed after ${detectedMs} ms`);

    proxy.restore();
    await waitForState(quinn, ["connected"]);
    await waitForState(rita, ["connected"]);
    const everything = ["before the cut", "sent during the cut", ...meanwhile];
    for (const [name, page] of [["quinn", quinn], ["rita", rita]]) {
      await waitForBodies(page, everything);
      const shown = await shownMessages(page);
      const bodies = shown.filter((message) => everything.includes(message.body)).map((message) => message.body);
      assert.deepEqual([...bodies].sort(), [...everything].sort(), `${name} shows each message exactly once`);
      assert.equal(shown.filter((message) => message.state !== "sent").length, 0, `${name} has no pending or failed message`);
      const seqs = shown.map((message) => Number(message.seq));
      for (let index = 1; index < seqs.length; index += 1) {
        assert.equal(seqs[index], seqs[index - 1] + 1, `${name}: seqs ${seqs.join(",")} have a gap or a repeat`);
      }
    }

    // The history on the edge contains the resent message once: the retry reused its clientMsgId.
    const history = await runTidings(["client", "history", ...server.clientArgs(samToken, "cli-admin"), "--conversation", groupId]);
    const copies = history.split("\n").filter((line) => line.includes("sent during the cut"));
    assert.equal(copies.length, 1, `history has ${copies.length} copies:\n${history}`);
    await quinn.context().close();
    await rita.context().close();
  });
});
