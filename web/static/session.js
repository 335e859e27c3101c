// One live connection after `Hello`/`Welcome`: its control requests waiting for replies,
// the liveness check, and how it ended. A session never outlives its link; the client's
// reconnect loop builds a new one.

import { errorName, isAuthError, isPermanentClose } from "./codes.js";
import { withTimeout } from "./links.js";

/** Maximum wait for the reply to one control request. */
export const REQUEST_TIMEOUT_MS = 10_000;
/** A session with nothing received for this long sends a probe request. */
export const PROBE_IDLE_MS = 2_500;
/**
 * A session that waits for a reply (to a request, a probe or a send) and receives no byte for
 * this long is dead, so its link is closed, which starts a reconnect.
 */
export const LIVENESS_TIMEOUT_MS = 3_500;
const LIVENESS_TICK_MS = 500;

export const PROTOCOL_VERSION = 1;
const CLIENT_VERSION = "tidings-web/0.1";

/** Builds a frame object for the codec. */
export function frame(which, payload) {
  return { version: PROTOCOL_VERSION, body: { which, [which]: payload } };
}

/** A rejection by the edge: an `Error` frame, or a `Close` frame before `Welcome`. */
export class RejectedError extends Error {
  constructor({ code, message, retryAfterMs = 0, close = false }) {
    const name = close ? `close ${code}` : errorName(code);
    super(`${name}: ${message}`);
    this.name = "RejectedError";
    this.code = code;
    this.reason = message;
    this.retryAfterMs = retryAfterMs;
    this.close = close;
    this.permanent = close ? isPermanentClose(code) : isAuthError(code);
  }
}

export class Session {
  /** The link under the session; set once it is open. */
  link = null;
  welcome = null;
  /** The `Close` frame the edge sent before ending the session, if any. */
  closeFrame = null;
  /** Why the link closed: `{ code, reason }`, once it has. */
  end = null;
  #client;
  #requests = new Map();
  #nextRequestId = 1n;
  #lastInboundMs = Date.now();
  #welcomeWaiter = null;
  #liveness = null;
  #resolveEnded;

  constructor(client) {
    this.#client = client;
    this.ended = new Promise((resolve) => {
      this.#resolveEnded = resolve;
    });
    this.handlers = {
      frame: (received, reply) => this.#onFrame(received, reply),
      bytes: () => {
        this.#lastInboundMs = Date.now();
      },
      closed: (info) => this.#onClosed(info),
    };
  }

  /** Sends `Hello` and waits up to `timeoutMs` for `Welcome`; rejects with RejectedError. */
  async handshake(token, deviceId, timeoutMs) {
    const welcome = new Promise((resolve, reject) => {
      this.#welcomeWaiter = { resolve, reject };
    });
    await this.link.writeControl(frame("hello", { token, deviceId, clientVersion: CLIENT_VERSION }));
    this.welcome = await withTimeout(welcome, timeoutMs, `no Welcome within ${timeoutMs} ms`);
    this.link.setLimits(this.welcome.limits);
    this.#liveness = setInterval(() => this.#checkLiveness(), LIVENESS_TICK_MS);
    return this.welcome;
  }

  /** Sends a control request and resolves with its reply; rejects on `Error` or timeout. */
  request(which, payload) {
    const requestId = this.#nextRequestId;
    this.#nextRequestId += 1n;
    return new Promise((resolve, reject) => {
      if (this.end !== null) {
        reject(new Error(`${which} not sent: the connection is closed`));
        return;
      }
      const timer = setTimeout(() => {
        this.#requests.delete(requestId);
        reject(new Error(`${which} got no reply within ${REQUEST_TIMEOUT_MS} ms`));
      }, REQUEST_TIMEOUT_MS);
      this.#requests.set(requestId, { resolve, reject, timer, sentMs: Date.now(), which });
      this.link.writeControl(frame(which, { requestId, ...payload })).catch((error) => {
        this.#settle(requestId, null, new Error(`writing ${which} failed: ${error.message}`));
      });
    });
  }

  /** Closes the link; `ended` resolves once it has. */
  close(reason) {
    this.link?.close({ reason });
  }

  #settle(requestId, reply, error) {
    const waiter = this.#requests.get(requestId);
    if (waiter === undefined) {
      return;
    }
    this.#requests.delete(requestId);
    clearTimeout(waiter.timer);
    if (error === null) {
      waiter.resolve(reply);
    } else {
      waiter.reject(error);
    }
  }

  #onFrame(received, reply) {
    if (received.version !== PROTOCOL_VERSION) {
      this.close(`the edge sent protocol version ${received.version}; this page speaks ${PROTOCOL_VERSION}`);
      return;
    }
    const { which } = received.body;
    const body = received.body[which];
    switch (which) {
      case "welcome":
        this.#welcomeWaiter?.resolve(body);
        return;
      case "error":
        this.#onError(body);
        return;
      case "close":
        this.closeFrame = body;
        this.#client.onCloseFrame(body);
        this.#welcomeWaiter?.reject(new RejectedError({ ...body, close: true }));
        return;
      case "sendAck":
        this.#client.onSendAck(body);
        return;
      case "deliver":
        this.#client.onDeliver(this, body.message, reply);
        return;
      case "historyPage":
      case "conversationReply":
      case "conversationList":
      case "inboxPage":
      case "gapPage":
      case "receiptList":
      case "presenceSettings":
        this.#settle(body.requestId, body, null);
        return;
      case "presenceUpdate":
        if (body.requestId !== 0n) {
          this.#settle(body.requestId, body, null);
        }
        return;
      default:
        // Receipt pushes, presence and typing are not shown by this page yet.
        return;
    }
  }

  #onError(error) {
    if (error.requestId !== 0n) {
      this.#settle(error.requestId, null, new RejectedError(error));
    } else if (error.clientMsgId !== "") {
      this.#client.onSendError(error);
    } else if (this.welcome === null) {
      this.#welcomeWaiter?.reject(new RejectedError(error));
    } else {
      this.#client.notice(`the edge reported ${errorName(error.code)}: ${error.message}`);
    }
  }

  #onClosed(info) {
    this.end = info;
    clearInterval(this.#liveness);
    this.#welcomeWaiter?.reject(new Error(`the connection closed before Welcome: ${info.reason}`));
    for (const requestId of [...this.#requests.keys()]) {
      this.#settle(requestId, null, new Error(`connection lost: ${info.reason}`));
    }
    this.#resolveEnded(info);
  }

  /** Returns the write time of the oldest request or send still waiting for its reply, or null. */
  #oldestOutstandingMs() {
    let oldest = this.#client.oldestSendInFlightMs(this);
    for (const waiter of this.#requests.values()) {
      if (oldest === null || waiter.sentMs < oldest) {
        oldest = waiter.sentMs;
      }
    }
    return oldest;
  }

  #checkLiveness() {
    if (this.end !== null) {
      return;
    }
    const now = Date.now();
    const oldest = this.#oldestOutstandingMs();
    if (oldest !== null) {
      const silentMs = now - Math.max(oldest, this.#lastInboundMs);
      if (silentMs > LIVENESS_TIMEOUT_MS) {
        this.close(`no bytes from the edge for ${silentMs} ms while waiting for an answer`);
      }
      return;
    }
    if (now - this.#lastInboundMs > PROBE_IDLE_MS) {
      // A one-entry inbox page is the cheapest request with a reply; only its arrival matters.
      this.request("inboxSync", { afterCursor: 0n, limit: 1, conversationId: 0n }).catch(() => {});
    }
  }
}
