// Unit tests of the web client's pure modules, run by node without a browser: backoff
// bounds, the conversation cursor, close code mapping and the direct conversation id.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../../static/backoff.js";
import { closeCodeFromWebSocket, isPermanentClose, isRetryable } from "../../static/codes.js";
import { Conversation } from "../../static/conversation.js";
import { directConversationId } from "../../static/ids.js";

function message(seq) {
  return { seq: BigInt(seq), sender: "alice", body: `m${seq}`, kind: "user", serverTimeMs: 0n };
}

test("backoff doubles up to its cap", () => {
  const backoff = new Backoff();
  assert.equal(backoff.ceiling(0), 100);
  assert.equal(backoff.ceiling(1), 200);
  assert.equal(backoff.ceiling(4), 1_600);
  assert.equal(backoff.ceiling(6), 5_000);
  assert.equal(backoff.ceiling(1_000), 5_000);
});

test("backoff jitter stays within bounds", () => {
  const backoff = new Backoff();
  assert.equal(backoff.delay(2, 0), 0);
  assert.equal(backoff.delay(2, 0.5), 200);
  assert.equal(backoff.delay(0, 7), 100, "a sample above 1 is clamped");
  assert.equal(backoff.delayAfter(750, 0, 0), 750, "retry_after_ms is a minimum");
  assert.equal(backoff.delayAfter(750, 1, 0.5), 850);
});

test("cursor advances only over contiguous seqs", () => {
  const conversation = new Conversation({ id: 7n, cursor: 3n });
  assert.equal(conversation.accept(message(5)), true);
  assert.equal(conversation.cursor, 3n, "seq 4 is missing, so the cursor stays");
  assert.equal(conversation.accept(message(4)), true);
  assert.equal(conversation.cursor, 5n, "the filled gap lets the cursor pass both");
  assert.equal(conversation.accept(message(5)), false, "a repeated seq is dropped");
  assert.equal(conversation.messages.size, 2);
  assert.equal(conversation.lastSeq, 5n);
});

test("history below the cursor keeps it", () => {
  const conversation = new Conversation({ id: 7n, cursor: 10n, lastSeq: 10n });
  const added = conversation.addHistory({ messages: [message(10), message(9)], nextBeforeSeq: 9n });
  assert.equal(added, 2);
  assert.equal(conversation.cursor, 10n);
  assert.equal(conversation.historyBefore, 9n);
  assert.equal(conversation.historyComplete, false);
  conversation.addHistory({ messages: [message(8)], nextBeforeSeq: 0n });
  assert.equal(conversation.historyComplete, true);
  assert.deepEqual(conversation.ordered().map((held) => held.seq), [8n, 9n, 10n]);
});

test("WebSocket close codes map to Tidings codes", () => {
  assert.equal(closeCodeFromWebSocket(1000), 0x0);
  assert.equal(closeCodeFromWebSocket(4003), 0x103);
  assert.equal(closeCodeFromWebSocket(4004), 0x104);
  assert.equal(closeCodeFromWebSocket(1006), null);
  assert.equal(closeCodeFromWebSocket(1009), null);
  assert.equal(isPermanentClose(0x103), true);
  assert.equal(isPermanentClose(0x104), false);
  assert.equal(isRetryable(30), true);
  assert.equal(isRetryable(5), false, "MESSAGE_TOO_LARGE is final");
});

test("direct id matches the protocol vector", async () => {
  assert.equal(await directConversationId("alice", "bob"), 17709311867916754363n);
  assert.equal(await directConversationId("bob", "alice"), 17709311867916754363n);
});
