// The chat client without the DOM: connects over WebTransport first and WebSocket second,
// reconnects with exponential backoff and full jitter, resumes every conversation from its
// cursor, and retries unacknowledged sends with their original clientMsgId. It mirrors the
// Rust client (clients/src: reconnect.rs, sync.rs, sends.rs, deliveries.rs).
//
// The page listens to three events: "change" (detail.what is "state", "conversations" or
// "messages"), "close" (a `Close` frame or a rejected sign-in, to show to the user) and
// "notice" (a one-line status message).

import { Backoff } from "./backoff.js";
import { encodeFrame } from "./codec/frames.js";
import { closeName, ErrorCode, errorName, isPermanentClose, isRetryable } from "./codes.js";
import { Conversation, HISTORY_PAGE_LIMIT } from "./conversation.js";
import { directConversationId } from "./ids.js";
import { DEFAULT_MAX_FRAME_BYTES, WebSocketLink, WebTransportLink } from "./links.js";
import { frame, Session } from "./session.js";

export const ConnectionState = Object.freeze({
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  /** The edge ended the sign-in for good (expired or invalid token), or the page stopped. */
  CLOSED: "closed",
});

/** WebTransport gets this long to open and reply to `Hello` with `Welcome` before the WebSocket is tried. */
export const WEBTRANSPORT_TIMEOUT_MS = 3_000;
const WEBSOCKET_TIMEOUT_MS = 5_000;
/** Reconnect attempts before the page gives up and requests a reload from the user. */
const MAX_RECONNECT_ATTEMPTS = 1_000;
/** Retries of a send the edge rejected as retryable, before it is marked failed. */
const MAX_SEND_RETRIES = 10;
const GAP_PAGE_LIMIT = 200;
/** Maximum pages read for one gap or one inbox sync, so a server that never reports `complete` cannot loop the page. */
const MAX_PAGES = 1_000;
/** Earlier messages fetched for a conversation this page first learns of after its first sync. */
const NEW_CONVERSATION_BACKLOG = 200n;
/** Conversations whose newest page is loaded at sign-in, for the list's previews. */
const PRELOADED_CONVERSATIONS = 50;
const MARK_READ_DELAY_MS = 300;
const LIST_REFRESH_DELAY_MS = 200;

function byteLength(text) {
  return new TextEncoder().encode(text).length;
}

export class ChatClient extends EventTarget {
  state = ConnectionState.CONNECTING;
  /** "WebTransport" or "WebSocket" while connected, else null. */
  transport = null;
  userId = null;
  limits = null;
  /** Conversations by id (decimal string). */
  conversations = new Map();
  /** Key of the conversation the page shows, whose messages count as read. */
  viewing = null;
  #token;
  #deviceId;
  #resolveEndpoints;
  #random;
  #backoff = new Backoff();
  #session = null;
  #stopped = false;
  /** Set once the client will not reconnect: later sends fail at once. */
  #ended = false;
  #wake = null;
  #synced = false;
  /** Sends waiting for their acknowledgement, by clientMsgId. */
  #outbox = new Map();
  /** Per-conversation promise chains, so deliveries and gap fills of one conversation never interleave. */
  #chains = new Map();
  #markReadTimers = new Map();
  #listRefresh = null;

  /**
   * `resolveEndpoints()` returns `{ webtransportUrl, certHashes, websocketUrl }` for the next
   * attempt; `webtransportUrl` may be null.
   */
  constructor({ token, deviceId, resolveEndpoints, random = Math.random }) {
    super();
    this.#token = token;
    this.#deviceId = deviceId;
    this.#resolveEndpoints = resolveEndpoints;
    this.#random = random;
  }

  start() {
    this.#run().catch((error) => this.notice(`the connection loop stopped: ${error.message}`));
  }

  /** Closes the connection and stops reconnecting. */
  stop() {
    this.#stopped = true;
    this.#session?.close("signed out");
    this.#wake?.();
  }

  notice(text) {
    console.info(`tidings: ${text}`);
    this.dispatchEvent(new CustomEvent("notice", { detail: { text } }));
  }

  #changed(what, key = null) {
    this.dispatchEvent(new CustomEvent("change", { detail: { what, key } }));
  }

  #setState(state, transport) {
    this.state = state;
    this.transport = transport;
    this.#changed("state");
  }

  // -------------------------------------------------------------------------------------
  // Connecting and reconnecting

  async #run() {
    let attempt = 0;
    let retryAfterMs = 0;
    let preferred = null;
    for (let round = 0; round < MAX_RECONNECT_ATTEMPTS && !this.#stopped; round += 1) {
      if (round > 0) {
        await this.#sleep(this.#backoff.delayAfter(retryAfterMs, attempt, this.#random()));
        retryAfterMs = 0;
        if (this.#stopped) {
          break;
        }
      }
      this.#setState(round === 0 ? ConnectionState.CONNECTING : ConnectionState.RECONNECTING, null);

      let session;
      try {
        session = await this.#connect(preferred);
      } catch (error) {
        if (error.permanent) {
          this.#endForGood(error.code, error.reason, error.close);
          return;
        }
        attempt += 1;
        retryAfterMs = error.retryAfterMs ?? 0;
        this.notice(`connecting failed (attempt ${attempt}): ${error.message}`);
        continue;
      }

      attempt = 0;
      preferred = session.link.name;
      this.#session = session;
      this.#setState(ConnectionState.CONNECTED, session.link.name);
      this.#onConnected(session).catch((error) => this.notice(`sync after connecting failed: ${error.message}`));

      const end = await session.ended;
      this.#session = null;
      if (this.#stopped) {
        break;
      }
      const close = session.closeFrame;
      const code = close?.code ?? end.code;
      if (code !== null && code !== undefined && isPermanentClose(code)) {
        if (close === null) {
          // Only the transport carried the code, so the banner shows the transport's reason.
          this.onCloseFrame({ code, message: end.reason, retryAfterMs: 0 });
        }
        this.#endForGood(code, close?.message ?? end.reason, true);
        return;
      }
      retryAfterMs = close?.retryAfterMs ?? 0;
      this.notice(`connection lost: ${end.reason}; reconnecting`);
      this.#setState(ConnectionState.RECONNECTING, null);
    }
    this.#ended = true;
    this.#failOutbox("reconnecting gave up");
    this.#setState(ConnectionState.CLOSED, null);
    if (!this.#stopped) {
      this.notice(`gave up after ${MAX_RECONNECT_ATTEMPTS} reconnect attempts; reload the page`);
    }
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  #endForGood(code, reason, isClose) {
    this.#ended = true;
    this.#failOutbox(isClose ? closeName(code) : errorName(code));
    this.#setState(ConnectionState.CLOSED, null);
    if (!isClose) {
      // A rejected Hello carries an error code rather than a close code.
      this.dispatchEvent(new CustomEvent("close", { detail: { code, name: errorName(code), reason, signIn: true } }));
    }
  }

  /** Tries the transport that worked last first, then the other; WebTransport only where it exists. */
  async #connect(preferred) {
    const endpoints = await this.#resolveEndpoints();
    const order = preferred === "WebSocket" ? ["WebSocket", "WebTransport"] : ["WebTransport", "WebSocket"];
    let lastError = new Error("no transport is available");
    for (const name of order) {
      if (name === "WebTransport" && (endpoints.webtransportUrl === null || typeof WebTransport !== "function")) {
        continue;
      }
      try {
        return await this.#connectWith(name, endpoints);
      } catch (error) {
        if (error.permanent) {
          throw error;
        }
        console.info(`tidings: ${name} failed: ${error.message}`);
        lastError = error;
      }
    }
    throw lastError;
  }

  async #connectWith(name, endpoints) {
    const timeoutMs = name === "WebTransport" ? WEBTRANSPORT_TIMEOUT_MS : WEBSOCKET_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const session = new Session(this);
    session.link = name === "WebTransport"
      ? await WebTransportLink.open(endpoints.webtransportUrl, endpoints.certHashes, session.handlers, timeoutMs)
      : await WebSocketLink.open(endpoints.websocketUrl, session.handlers, timeoutMs);
    try {
      await session.handshake(this.#token, this.#deviceId, Math.max(deadline - Date.now(), 500));
    } catch (error) {
      session.close(`handshake failed: ${error.message}`);
      throw error;
    }
    return session;
  }

  async #onConnected(session) {
    this.userId = session.welcome.userId;
    this.limits = session.welcome.limits;
    this.#changed("conversations");
    for (const entry of this.#outbox.values()) {
      this.#transmit(entry);
    }
    await this.#sync(session);
  }

  // -------------------------------------------------------------------------------------
  // Sync: the conversation list, unread counts and every gap since the cursors

  async #sync(session) {
    await this.#refreshList(session);

    if (!this.#synced) {
      await this.#loadUnread(session);
      const recent = [...this.conversations.values()].slice(0, PRELOADED_CONVERSATIONS);
      for (const conversation of recent) {
        await this.loadOlder(conversation.key);
      }
    }
    for (const conversation of this.conversations.values()) {
      if (conversation.lastSeq > conversation.cursor) {
        await this.#serialize(conversation.key, () => this.#fillGap(session, conversation, null));
      }
    }
    this.#synced = true;
  }

  /** Reads the conversation list: adds new conversations, updates members, drops the ones left. */
  async #refreshList(session) {
    const list = await session.request("listConversations", {});
    const listed = new Set();
    for (const info of list.conversations) {
      listed.add(info.conversationId.toString());
      this.#upsert(info, this.#synced ? backlogFloor(info.lastSeq) : info.lastSeq);
    }
    for (const [key, conversation] of this.conversations) {
      // A direct chat started on this page exists on the edge only after its first send.
      const localOnly = conversation.kind === "direct" && conversation.lastSeq === 0n;
      if (!listed.has(key) && !localOnly) {
        this.conversations.delete(key);
        if (this.viewing === key) {
          this.viewing = null;
        }
      }
    }
    this.#changed("conversations");
  }

  /** Refreshes the list soon, once for a burst of membership changes. */
  #scheduleListRefresh() {
    if (this.#listRefresh !== null) {
      return;
    }
    this.#listRefresh = setTimeout(() => {
      this.#listRefresh = null;
      if (this.#session === null) {
        // The sync after the next connect reads the list anyway.
        return;
      }
      this.#refreshList(this.#session).catch((error) => this.notice(`refreshing the conversation list failed: ${error.message}`));
    }, LIST_REFRESH_DELAY_MS);
  }

  #upsert(info, floor) {
    const key = info.conversationId.toString();
    let conversation = this.conversations.get(key);
    if (conversation === undefined) {
      conversation = new Conversation({ id: info.conversationId, cursor: floor });
      conversation.createdMs = info.createdMs;
      this.conversations.set(key, conversation);
    }
    conversation.update(info);
    return conversation;
  }

  async #loadUnread(session) {
    let after = 0n;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const inbox = await session.request("inboxSync", { afterCursor: after, limit: 0, conversationId: 0n });
      for (const entry of inbox.entries) {
        const conversation = this.conversations.get(entry.conversationId.toString());
        if (conversation !== undefined && entry.member) {
          conversation.unread = Number(entry.unreadCount);
          conversation.readSeq = entry.readSeq;
        }
      }
      if (inbox.complete || inbox.cursor <= after) {
        break;
      }
      after = inbox.cursor;
    }
    this.#changed("conversations");
  }

  /** Fetches the messages after the cursor, oldest first, stopping below `until` when given. */
  async #fillGap(session, conversation, until) {
    let after = conversation.cursor;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const reply = await session.request("gapRequest", {
        conversationId: conversation.id,
        afterSeq: after,
        limit: GAP_PAGE_LIMIT,
      });
      for (const message of reply.messages) {
        if (until !== null && message.seq >= until) {
          return;
        }
        this.#accept(conversation, message);
      }
      if (reply.complete || reply.nextAfterSeq <= after) {
        return;
      }
      after = reply.nextAfterSeq;
    }
  }

  #serialize(key, work) {
    const previous = this.#chains.get(key) ?? Promise.resolve();
    const next = previous.then(work, work);
    this.#chains.set(key, next.catch(() => {}));
    return next;
  }

  #accept(conversation, message) {
    if (!conversation.accept(message)) {
      return;
    }
    const fromOther = message.sender !== this.userId && message.kind === "user";
    if (this.viewing === conversation.key) {
      this.#scheduleMarkRead(conversation);
    } else if (fromOther && message.seq > conversation.readSeq) {
      conversation.unread += 1;
    }
    if (message.kind === "system") {
      // Membership changes arrive as system messages; the list has the new member rows.
      this.#scheduleListRefresh();
    }
    this.#changed("messages", conversation.key);
  }

  // -------------------------------------------------------------------------------------
  // Frames from the session

  /** Handles a `Deliver`: fills any gap before it, stores it once, then acknowledges it. */
  onDeliver(session, message, reply) {
    const key = message.conversationId.toString();
    const work = async () => {
      let conversation = this.conversations.get(key);
      if (conversation === undefined) {
        conversation = await this.#discover(session, message);
      }
      if (message.seq > conversation.cursor + 1n) {
        try {
          await this.#fillGap(session, conversation, message.seq);
        } catch (error) {
          // NOTE: the cursor stays below the gap, so the next sync fetches what is missing.
          this.notice(`gap fill in ${key} failed: ${error.message}`);
        }
      }
      this.#accept(conversation, message);
    };
    const ack = () => reply(frame("deliveryAck", { conversationId: message.conversationId, seq: message.seq }));
    this.#serialize(key, work).then(ack, (error) => {
      this.notice(`delivery in ${key} failed: ${error.message}`);
    });
  }

  /** Adds a conversation this page first hears of through a delivery. */
  async #discover(session, message) {
    const list = await session.request("listConversations", {});
    const floor = message.seq - 1n > NEW_CONVERSATION_BACKLOG ? message.seq - 1n - NEW_CONVERSATION_BACKLOG : 0n;
    const info = list.conversations.find((candidate) => candidate.conversationId === message.conversationId);
    const conversation = info === undefined
      ? this.#upsert({ conversationId: message.conversationId, kind: "group", name: "", members: [], createdMs: 0n, lastSeq: 0n }, floor)
      : this.#upsert(info, floor);
    this.#changed("conversations");
    return conversation;
  }

  onCloseFrame(close) {
    this.dispatchEvent(new CustomEvent("close", {
      detail: { code: close.code, reason: close.message, retryAfterMs: close.retryAfterMs, signIn: false },
    }));
  }

  onSendAck(ack) {
    const entry = this.#outbox.get(ack.clientMsgId);
    if (entry === undefined) {
      return;
    }
    this.#outbox.delete(ack.clientMsgId);
    const { conversation } = entry;
    conversation.outbox = conversation.outbox.filter((pending) => pending !== entry);
    entry.state = "sent";
    this.#accept(conversation, {
      conversationId: ack.conversationId,
      seq: ack.seq,
      messageId: ack.messageId,
      sender: this.userId,
      body: entry.body,
      hlc: ack.hlc,
      serverTimeMs: ack.serverTimeMs,
      kind: "user",
    });
    this.#changed("conversations");
  }

  onSendError(error) {
    const entry = this.#outbox.get(error.clientMsgId);
    if (entry === undefined) {
      return;
    }
    entry.session = null;
    if (isRetryable(error.code) && entry.retries < MAX_SEND_RETRIES) {
      entry.retries += 1;
      const delay = this.#backoff.delayAfter(error.retryAfterMs, entry.retries, this.#random());
      setTimeout(() => this.#transmit(entry), delay);
      return;
    }
    this.#fail(entry, `${errorName(error.code)}: ${error.message}`);
  }

  /**
   * Marks every send still waiting for its acknowledgement failed once the client will not
   * reconnect. A send already written may have been stored, and its reason states that.
   */
  #failOutbox(why) {
    for (const entry of [...this.#outbox.values()]) {
      const written = entry.sentMs > 0;
      this.#fail(entry, written
        ? `not confirmed: the session ended (${why}) before the server acknowledged it; it may have been stored, so check after signing in again`
        : `not sent: the session ended (${why})`);
    }
  }

  #fail(entry, reason) {
    this.#outbox.delete(entry.clientMsgId);
    entry.state = "failed";
    entry.error = reason;
    this.#changed("messages", entry.conversation.key);
  }

  /** Returns the write time of the oldest send on `session` still waiting for its reply, or null. */
  oldestSendInFlightMs(session) {
    let oldest = null;
    for (const entry of this.#outbox.values()) {
      if (entry.session === session && (oldest === null || entry.sentMs < oldest)) {
        oldest = entry.sentMs;
      }
    }
    return oldest;
  }

  // -------------------------------------------------------------------------------------
  // Actions of the page

  /** Queues a message; it is written now when connected, else after the next connect. */
  send(key, body) {
    const conversation = this.conversations.get(key);
    if (conversation === undefined) {
      throw new Error(`unknown conversation ${key}`);
    }
    const entry = {
      clientMsgId: crypto.randomUUID(),
      conversation,
      body,
      state: "pending",
      retries: 0,
      session: null,
      sentMs: 0,
      error: null,
    };
    conversation.outbox.push(entry);

    if (this.#ended) {
      this.#fail(entry, "not sent: the session ended; sign in again");
      return entry;
    }

    const size = encodeFrame(this.#sendFrame(entry)).length + 4;
    const maxFrameBytes = this.limits?.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (size > maxFrameBytes) {
      // NOTE: a frame over the limit closes the whole WebSocket, so it is never written.
      const bytes = byteLength(body);
      this.#fail(entry, `${errorName(ErrorCode.FRAME_TOO_LARGE)}: a body of ${bytes} bytes needs a frame of ${size} bytes; the limit is ${maxFrameBytes}`);
      return entry;
    }

    this.#outbox.set(entry.clientMsgId, entry);
    this.#transmit(entry);
    this.#changed("messages", key);
    return entry;
  }

  #sendFrame(entry) {
    const peer = entry.conversation.peer(this.userId);
    const directPeer = peer === null ? { which: "none" } : { which: "user", user: peer };
    return frame("send", {
      conversationId: entry.conversation.id,
      clientMsgId: entry.clientMsgId,
      body: entry.body,
      directPeer,
    });
  }

  #transmit(entry) {
    const session = this.#session;
    if (session === null || entry.state !== "pending" || entry.session === session || !this.#outbox.has(entry.clientMsgId)) {
      return;
    }
    entry.session = session;
    entry.sentMs = Date.now();
    session.link.writeSend(entry.conversation.id, this.#sendFrame(entry)).catch(() => {
      // The link is failing; the send is written again after the reconnect.
      entry.session = null;
    });
  }

  /** Opens (or returns) the direct conversation with `peer`; returns its key. */
  async startDirect(peer) {
    if (this.userId === null) {
      throw new Error("not signed in yet; wait for the connection");
    }
    if (peer === this.userId) {
      throw new Error("a direct chat needs another user than yourself");
    }
    const id = await directConversationId(this.userId, peer);
    const key = id.toString();
    if (!this.conversations.has(key)) {
      const conversation = new Conversation({
        id,
        kind: "direct",
        members: [{ userId: this.userId }, { userId: peer }],
      });
      conversation.directPeer = peer;
      this.conversations.set(key, conversation);
      this.#changed("conversations");
    }
    return key;
  }

  async createGroup(name, members) {
    const reply = await this.#requireSession().request("createGroup", { name, members });
    const conversation = this.#upsert(reply.conversation, reply.conversation.lastSeq);
    this.#changed("conversations");
    await this.loadOlder(conversation.key);
    return conversation.key;
  }

  async addMembers(key, users) {
    await this.#changeMembers("addMembers", key, users);
  }

  async removeMembers(key, users) {
    await this.#changeMembers("removeMembers", key, users);
  }

  async #changeMembers(which, key, users) {
    const conversation = this.#conversation(key);
    const reply = await this.#requireSession().request(which, { conversationId: conversation.id, users });
    conversation.update(reply.conversation);
    this.#changed("conversations");
  }

  async leave(key) {
    const conversation = this.#conversation(key);
    await this.#requireSession().request("leave", { conversationId: conversation.id });
    this.conversations.delete(key);
    if (this.viewing === key) {
      this.viewing = null;
    }
    this.#changed("conversations");
  }

  /** Loads the next older history page of a conversation; returns the number of new messages. */
  async loadOlder(key) {
    const conversation = this.#conversation(key);
    if (conversation.historyComplete || conversation.loadingHistory) {
      return 0;
    }
    conversation.loadingHistory = true;
    try {
      const page = await this.#requireSession().request("historyRequest", {
        conversationId: conversation.id,
        beforeSeq: conversation.historyBefore,
        limit: HISTORY_PAGE_LIMIT,
      });
      const added = conversation.addHistory(page);
      this.#changed("messages", key);
      return added;
    } catch (error) {
      if (error.code === ErrorCode.UNKNOWN_CONVERSATION) {
        // A direct chat without any message yet has no history to page.
        conversation.historyComplete = true;
        conversation.historyLoaded = true;
        return 0;
      }
      throw error;
    } finally {
      conversation.loadingHistory = false;
    }
  }

  /** Shows `key` as the open conversation: its messages count as read from now on. */
  view(key) {
    this.viewing = key;
    const conversation = this.conversations.get(key);
    if (conversation !== undefined) {
      conversation.unread = 0;
      this.#scheduleMarkRead(conversation);
      this.#changed("conversations");
    }
  }

  #scheduleMarkRead(conversation) {
    conversation.unread = 0;
    if (this.#markReadTimers.has(conversation.key)) {
      return;
    }
    const timer = setTimeout(() => {
      this.#markReadTimers.delete(conversation.key);
      const seq = conversation.lastSeq;
      if (this.#session === null || seq === 0n || seq <= conversation.readSeq) {
        return;
      }
      conversation.readSeq = seq;
      this.#session.request("markRead", { conversationId: conversation.id, seq }).catch(() => {});
    }, MARK_READ_DELAY_MS);
    this.#markReadTimers.set(conversation.key, timer);
  }

  #conversation(key) {
    const conversation = this.conversations.get(key);
    if (conversation === undefined) {
      throw new Error(`unknown conversation ${key}`);
    }
    return conversation;
  }

  #requireSession() {
    if (this.#session === null) {
      throw new Error("not connected; try again once the indicator shows connected");
    }
    return this.#session;
  }
}

function backlogFloor(lastSeq) {
  return lastSeq > NEW_CONVERSATION_BACKLOG ? lastSeq - NEW_CONVERSATION_BACKLOG : 0n;
}
