// The two browser transports under a session. Both carry the same frames:
// - WebTransportLink: the first bidirectional stream is the control stream, the page opens
//   one stream per conversation it sends in, and the edge opens a delivery stream per
//   conversation it delivers in. Frames on streams carry a 4-byte length prefix.
// - WebSocketLink: one socket carries every frame, one frame per binary message.
//
// A link reports every inbound frame to `handlers.frame(frame, reply)`, where `reply(frame)`
// writes a frame back on the channel the frame came from (the delivery stream, or the socket),
// every inbound chunk of bytes to `handlers.bytes()`, and its end once to
// `handlers.closed({ code, reason })`.

import { decodeFrame, encodeFrame, FrameReader, lengthPrefixed } from "./codec/frames.js";
import { closeCodeFromWebSocket, WS_CLOSE_TOO_BIG } from "./codes.js";

/** Frame limit used before `Welcome` announces the edge's; it is the edge's default. */
export const DEFAULT_MAX_FRAME_BYTES = 256 * 1024;

/** Rejects with `message` when `promise` has not settled within `timeoutMs`. */
export function withTimeout(promise, timeoutMs, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function hexToBytes(hex) {
  const bytes = new Uint8Array(hex.length / 2);
  for (let index = 0; index < bytes.length; index += 1) {
    bytes[index] = Number.parseInt(hex.slice(index * 2, index * 2 + 2), 16);
  }
  return bytes;
}

/** Reads length-prefixed frames from `readable` until it ends or fails. */
async function readFrames(readable, maxFrameBytes, handlers, reply) {
  const reader = readable.getReader();
  const frames = new FrameReader(maxFrameBytes);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        return;
      }
      handlers.bytes();
      frames.push(value);
      for (let bytes = frames.next(); bytes !== null; bytes = frames.next()) {
        handlers.frame(decodeFrame(bytes), reply);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** A WebTransport session to the edge's `/v1/wt`. */
export class WebTransportLink {
  name = "WebTransport";
  #transport;
  #control;
  #handlers;
  #maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
  #maxConversationStreams = 64;
  /** Open conversation streams by conversation id (decimal string), in least-recently-used order. */
  #conversations = new Map();
  #closed = false;

  /**
   * Opens a session to `url`, pinning the certificates whose SHA-256 hashes (hex) are in
   * `hashes`, and opens the control stream. Gives up after `timeoutMs`.
   */
  static async open(url, hashes, handlers, timeoutMs) {
    if (typeof WebTransport !== "function") {
      throw new Error("this browser has no WebTransport");
    }
    const options = {};
    if (hashes.length > 0) {
      options.serverCertificateHashes = hashes.map((hex) => ({ algorithm: "sha-256", value: hexToBytes(hex) }));
    }
    const transport = new WebTransport(url, options);
    // A failed session rejects `closed` as well; this keeps that rejection from going unhandled.
    transport.closed.catch(() => {});
    try {
      const opening = transport.ready.then(() => transport.createBidirectionalStream());
      const control = await withTimeout(opening, timeoutMs, `WebTransport to ${url} timed out after ${timeoutMs} ms`);
      return new WebTransportLink(transport, control, handlers);
    } catch (error) {
      transport.close();
      throw error;
    }
  }

  constructor(transport, control, handlers) {
    this.#transport = transport;
    this.#handlers = handlers;
    this.#control = { writer: control.writable.getWriter() };
    const controlReply = (frame) => this.writeControl(frame);
    readFrames(control.readable, this.#maxFrameBytes, handlers, controlReply)
      .then(() => this.close({ reason: "the edge ended the control stream" }))
      .catch((error) => this.close({ reason: `reading the control stream failed: ${error.message}` }));
    this.#acceptDeliveryStreams();
    transport.closed.then(
      (info) => this.close({ code: info?.closeCode, reason: info?.reason || "WebTransport session closed" }),
      (error) => this.close({ reason: `WebTransport session failed: ${error.message}` }),
    );
  }

  /** Applies the limits from `Welcome` to streams opened from now on. */
  setLimits(limits) {
    this.#maxFrameBytes = Math.max(limits.maxFrameBytes, 1);
    this.#maxConversationStreams = Math.max(limits.maxConversationStreams, 1);
  }

  async #acceptDeliveryStreams() {
    const streams = this.#transport.incomingBidirectionalStreams.getReader();
    try {
      for (;;) {
        const { value: stream, done } = await streams.read();
        if (done) {
          return;
        }
        const writer = stream.writable.getWriter();
        const reply = (frame) => writer.write(lengthPrefixed(encodeFrame(frame))).catch(() => {});
        // A delivery stream ends when the edge finishes or resets it; the session goes on.
        readFrames(stream.readable, this.#maxFrameBytes, this.#handlers, reply).catch(() => {});
      }
    } catch {
      // The session ended; `closed` reports why.
    }
  }

  /** Writes a frame on the control stream. */
  async writeControl(frame) {
    await this.#control.writer.write(lengthPrefixed(encodeFrame(frame)));
  }

  /** Writes a `Send` on its conversation's stream, opening the stream on first use. */
  async writeSend(conversationId, frame) {
    const stream = await this.#conversationStream(conversationId.toString());
    await stream.writer.write(lengthPrefixed(encodeFrame(frame)));
  }

  async #conversationStream(key) {
    const open = this.#conversations.get(key);
    if (open !== undefined) {
      // Re-inserting moves the entry to the end of the least-recently-used order.
      this.#conversations.delete(key);
      this.#conversations.set(key, open);
      return open;
    }
    if (this.#conversations.size >= this.#maxConversationStreams) {
      const [oldestKey, oldest] = this.#conversations.entries().next().value;
      this.#conversations.delete(oldestKey);
      oldest.writer.close().catch(() => {});
    }
    const bidi = await this.#transport.createBidirectionalStream();
    const stream = { writer: bidi.writable.getWriter() };
    this.#conversations.set(key, stream);
    const forget = () => {
      if (this.#conversations.get(key) === stream) {
        this.#conversations.delete(key);
      }
    };
    const reply = (frame) => this.writeControl(frame);
    readFrames(bidi.readable, this.#maxFrameBytes, this.#handlers, reply).then(forget, forget);
    stream.writer.closed.then(forget, forget);
    return stream;
  }

  /** Closes the session; `handlers.closed` runs once, with the first reason given. */
  close({ code = null, reason = "closed by the page" } = {}) {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    try {
      this.#transport.close({ closeCode: 0, reason: "" });
    } catch {
      // Already closed.
    }
    this.#handlers.closed({ code: code ?? null, reason });
  }
}

/** A WebSocket to the edge's `/v1/ws`. */
export class WebSocketLink {
  name = "WebSocket";
  #socket;
  #handlers;
  #closed = false;

  /** Opens a WebSocket to `url`; gives up after `timeoutMs`. */
  static async open(url, handlers, timeoutMs) {
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    const opened = new Promise((resolve, reject) => {
      socket.addEventListener("open", resolve, { once: true });
      socket.addEventListener("close", (event) => reject(new Error(`WebSocket to ${url} closed with ${event.code} before it opened`)), { once: true });
    });
    try {
      await withTimeout(opened, timeoutMs, `WebSocket to ${url} timed out after ${timeoutMs} ms`);
    } catch (error) {
      socket.close();
      throw error;
    }
    return new WebSocketLink(socket, handlers);
  }

  constructor(socket, handlers) {
    this.#socket = socket;
    this.#handlers = handlers;
    const reply = (frame) => this.writeControl(frame);
    socket.addEventListener("message", (event) => {
      handlers.bytes();
      if (typeof event.data === "string") {
        this.close({ reason: "the edge sent a text message; frames are binary" });
        return;
      }
      let frame;
      try {
        frame = decodeFrame(new Uint8Array(event.data));
      } catch (error) {
        this.close({ reason: `invalid frame from the edge: ${error.message}` });
        return;
      }
      handlers.frame(frame, reply);
    });
    socket.addEventListener("close", (event) => {
      const reason = event.code === WS_CLOSE_TOO_BIG
        ? `the edge rejected a frame over its limit: ${event.reason}`
        : event.reason || `WebSocket closed with ${event.code}`;
      this.close({ code: closeCodeFromWebSocket(event.code), reason, webSocketCode: event.code });
    });
  }

  setLimits() {}

  async writeControl(frame) {
    // NOTE: a socket that is closing drops the frame without an error; the liveness check
    // and the reconnect resend what had no reply.
    this.#socket.send(encodeFrame(frame));
  }

  writeSend(_conversationId, frame) {
    return this.writeControl(frame);
  }

  close({ code = null, reason = "closed by the page", webSocketCode = null } = {}) {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    if (this.#socket.readyState <= WebSocket.OPEN) {
      this.#socket.close(1000);
    }
    this.#handlers.closed({ code, reason, webSocketCode });
  }
}
