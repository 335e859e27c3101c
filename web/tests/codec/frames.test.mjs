// Unit tests of web/static/codec/frames.js: encoding checks, decoding of malformed and
// newer frames, and stream framing.

import assert from "node:assert/strict";
import { test } from "node:test";

import { frameSchema } from "../../static/codec/frames_capnp.js";
import {
  FrameDecodeError,
  FrameEncodeError,
  FrameReader,
  FrameTooLargeError,
  LENGTH_PREFIX_BYTES,
  decodeFrame,
  encodeFrame,
  lengthPrefixed,
} from "../../static/codec/frames.js";
import { compileExtendedSchema } from "./extended-schema.mjs";

const hello = {
  version: 1,
  body: { which: "hello", hello: { token: "t", deviceId: "d", clientVersion: "v" } },
};

test("every frame member round-trips empty", () => {
  const root = frameSchema.structs[frameSchema.root];
  for (const member of root.fields.filter((field) => field.discriminant !== undefined)) {
    const decoded = decodeFrame(encodeFrame({ body: { which: member.name } }));
    assert.equal(decoded.version, 1);
    assert.equal(decoded.body.which, member.name);
    assert.equal(typeof decoded.body[member.name], "object", member.name);
  }
});

test("uint64 keeps precision above 2^53", () => {
  const seq = 2n ** 64n - 1n;
  const frame = {
    body: { which: "deliveryAck", deliveryAck: { conversationId: 2n ** 53n + 1n, seq } },
  };
  const decoded = decodeFrame(encodeFrame(frame));
  assert.equal(decoded.body.deliveryAck.conversationId, 2n ** 53n + 1n);
  assert.equal(decoded.body.deliveryAck.seq, seq);
});

test("send direct peer union round-trips", () => {
  const direct = {
    conversationId: 5n,
    clientMsgId: "c",
    body: "hi 👋",
    directPeer: { which: "user", user: "bob" },
  };
  const decoded = decodeFrame(encodeFrame({ body: { which: "send", send: direct } }));
  assert.deepEqual(decoded.body.send, direct);

  const group = decodeFrame(
    encodeFrame({ body: { which: "send", send: { directPeer: { which: "none" } } } }),
  );
  assert.deepEqual(group.body.send.directPeer, { which: "none" });
});

test("enums encode by schema name", () => {
  const frame = { body: { which: "heartbeat", heartbeat: { state: "away" } } };
  assert.equal(decodeFrame(encodeFrame(frame)).body.heartbeat.state, "away");
  assert.throws(
    () => encodeFrame({ body: { which: "heartbeat", heartbeat: { state: "busy" } } }),
    (error) =>
      error instanceof FrameEncodeError && /"offline", "away", "online"/.test(error.message),
  );
});

test("encode rejects invalid objects", () => {
  const cases = [
    [{ body: { which: "helo" } }, "Frame.body.which"],
    [{ version: 1 }, "Frame.body"],
    [{ body: { which: "hello", hello: { tokn: "x" } } }, "Frame.body.hello.tokn"],
    [{ body: { which: "hello", hello: { token: 5 } } }, "Frame.body.hello.token"],
    [{ body: { which: "hello", welcome: {} } }, "Frame.body.welcome"],
    [{ body: { which: "deliveryAck", deliveryAck: { seq: -1n } } }, "Frame.body.deliveryAck.seq"],
    [
      { body: { which: "deliveryAck", deliveryAck: { seq: 2n ** 64n } } },
      "Frame.body.deliveryAck.seq",
    ],
    [
      { body: { which: "deliveryAck", deliveryAck: { seq: 2 ** 53 } } },
      "Frame.body.deliveryAck.seq",
    ],
    [
      { body: { which: "historyRequest", historyRequest: { limit: 2 ** 32 } } },
      "Frame.body.historyRequest.limit",
    ],
    [
      { body: { which: "historyRequest", historyRequest: { limit: 1.5 } } },
      "Frame.body.historyRequest.limit",
    ],
    [
      { body: { which: "createGroup", createGroup: { members: "alice" } } },
      "Frame.body.createGroup.members",
    ],
    [
      { body: { which: "createGroup", createGroup: { members: ["a", 1] } } },
      "Frame.body.createGroup.members[1]",
    ],
    [{ body: { which: "typing", typing: { active: "yes" } } }, "Frame.body.typing.active"],
    [{ version: 70000, body: { which: "hello" } }, "Frame.version"],
    [null, "Frame"],
  ];
  for (const [frame, path] of cases) {
    assert.throws(
      () => encodeFrame(frame),
      (error) => error instanceof FrameEncodeError && error.path === path,
      `expected FrameEncodeError at ${path} for ${JSON.stringify(frame, (_k, v) => (typeof v === "bigint" ? `${v}n` : v))}`,
    );
  }
});

test("safe integer Number accepted for uint64", () => {
  const frame = { body: { which: "deliveryAck", deliveryAck: { seq: 42 } } };
  assert.equal(decodeFrame(encodeFrame(frame)).body.deliveryAck.seq, 42n);
});

test("decode rejects malformed bytes", () => {
  assert.throws(() => decodeFrame([1, 2, 3]), TypeError);
  assert.throws(() => decodeFrame(new Uint8Array(0)), FrameDecodeError);
  assert.throws(() => decodeFrame(new Uint8Array(12)), FrameDecodeError);

  // A segment table that claims far more words than the bytes hold.
  const lying = encodeFrame(hello);
  new DataView(lying.buffer).setUint32(4, 1_000_000, true);
  assert.throws(() => decodeFrame(lying), FrameDecodeError);
});

test("decode reports unknown member as unknown", async () => {
  const extended = await compileExtendedSchema();
  const message = new extended.Message();
  const root = message.initRoot(extended.Frame);
  root.version = 1;
  root._initFuture().token = "from a newer server";
  const bytes = new Uint8Array(message.toArrayBuffer());

  const decoded = decodeFrame(bytes);
  assert.equal(decoded.version, 1);
  assert.deepEqual(decoded.body, { which: "unknown", ordinal: 31 });
});

test("decode rejects unknown enum value", async () => {
  const extended = await compileExtendedSchema();
  const message = new extended.Message();
  const root = message.initRoot(extended.Frame);
  root.version = 1;
  root._initDeliver()._initMessage().kind = extended.MessageKind.BOT;
  const bytes = new Uint8Array(message.toArrayBuffer());

  assert.throws(
    () => decodeFrame(bytes),
    (error) => error instanceof FrameDecodeError && /MessageKind value 2/.test(error.message),
  );
});

test("lengthPrefixed writes big-endian length", () => {
  const framed = lengthPrefixed(new Uint8Array([9, 8, 7]));
  assert.deepEqual([...framed], [0, 0, 0, 3, 9, 8, 7]);
  assert.equal(LENGTH_PREFIX_BYTES, 4);
});

test("reader splits frames across chunks", () => {
  const first = encodeFrame(hello);
  const second = encodeFrame({ body: { which: "deliveryAck", deliveryAck: { seq: 7n } } });
  const stream = new Uint8Array([...lengthPrefixed(first), ...lengthPrefixed(second)]);

  // One byte at a time: every split point of both prefixes and bodies.
  const reader = new FrameReader(1024);
  const frames = [];
  for (const byte of stream) {
    reader.push(new Uint8Array([byte]));
    for (let frame = reader.next(); frame !== null; frame = reader.next()) {
      frames.push(frame);
    }
  }
  assert.equal(frames.length, 2);
  assert.deepEqual(decodeFrame(frames[0]), hello);
  assert.equal(decodeFrame(frames[1]).body.deliveryAck.seq, 7n);
  assert.equal(reader.bufferedBytes, 0);

  // All in one chunk.
  const whole = new FrameReader(1024);
  whole.push(stream);
  assert.deepEqual(whole.next(), first);
  assert.deepEqual(whole.next(), second);
  assert.equal(whole.next(), null);
});

test("reader accepts frame at the limit", () => {
  const body = encodeFrame(hello);
  const reader = new FrameReader(body.length);
  reader.push(lengthPrefixed(body));
  assert.deepEqual(reader.next(), body);
});

test("reader rejects oversize frame from prefix", () => {
  const reader = new FrameReader(16);
  // Only the prefix arrives: the limit is enforced before the body is buffered.
  reader.push(new Uint8Array([0, 0, 0, 17]));
  assert.throws(
    () => reader.next(),
    (error) =>
      error instanceof FrameTooLargeError &&
      error.length === 17 &&
      error.maxFrameBytes === 16 &&
      /17 bytes exceeds the limit of 16 bytes/.test(error.message),
  );
  // The stream cannot be resynchronised, so the reader stays failed.
  assert.throws(() => reader.next(), FrameTooLargeError);
  assert.throws(() => reader.push(new Uint8Array(1)), FrameTooLargeError);
});

test("reader rejects invalid limit", () => {
  assert.throws(() => new FrameReader(0), RangeError);
  assert.throws(() => new FrameReader(1.5), RangeError);
  assert.throws(() => new FrameReader(2 ** 32), RangeError);
});
