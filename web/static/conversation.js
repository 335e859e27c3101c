// One conversation as this page stores it: its messages by seq, the contiguous cursor that
// gap detection and resync use, the sends still waiting for their acknowledgement, the
// history paging position and the unread count.

/** Messages a page requests per history page. */
export const HISTORY_PAGE_LIMIT = 30;

function compareSeq(left, right) {
  if (left < right) {
    return -1;
  }
  return left > right ? 1 : 0;
}

export class Conversation {
  /**
   * `cursor` is the floor: this page needs every message after it, and stores or fetches
   * them in order. Older messages come only from history pages.
   */
  constructor({ id, kind = "group", name = "", members = [], lastSeq = 0n, cursor = 0n }) {
    this.id = id;
    this.key = id.toString();
    this.kind = kind;
    this.name = name;
    this.members = members;
    this.lastSeq = lastSeq;
    this.cursor = cursor;
    /** Messages by seq (BigInt), live, gap-filled and from history, each once. */
    this.messages = new Map();
    /** Sends without an acknowledgement yet, or failed for good, in the order sent. */
    this.outbox = [];
    /** Seq to pass as `beforeSeq` for the next older history page; 0n loads the newest. */
    this.historyBefore = 0n;
    this.historyComplete = false;
    this.historyLoaded = false;
    this.unread = 0;
    this.readSeq = 0n;
  }

  /** Copies name, members and last seq from a `ConversationInfo`. */
  update(info) {
    this.kind = info.kind;
    this.name = info.name;
    this.members = info.members;
    if (info.lastSeq > this.lastSeq) {
      this.lastSeq = info.lastSeq;
    }
  }

  /** Returns the other member of a direct conversation, or null for a group. */
  peer(me) {
    if (this.kind !== "direct") {
      return null;
    }
    const other = this.members.find((member) => member.userId !== me);
    return other?.userId ?? this.directPeer ?? null;
  }

  /** Returns the name shown for the conversation. */
  title(me) {
    if (this.kind === "direct") {
      return this.peer(me) ?? "direct chat";
    }
    return this.name || `group ${this.key}`;
  }

  /**
   * Stores `message` unless its seq is already held, and moves the cursor over every seq
   * now held contiguously. Returns whether the message was new.
   */
  accept(message) {
    if (this.messages.has(message.seq)) {
      return false;
    }
    this.messages.set(message.seq, message);
    if (message.seq > this.lastSeq) {
      this.lastSeq = message.seq;
    }
    this.#advanceCursor();
    return true;
  }

  #advanceCursor() {
    // NOTE: bounded by the number of held messages, because each step needs one.
    while (this.messages.has(this.cursor + 1n)) {
      this.cursor += 1n;
    }
  }

  /** Returns the messages in seq order. */
  ordered() {
    const messages = [...this.messages.values()];
    messages.sort((left, right) => compareSeq(left.seq, right.seq));
    return messages;
  }

  /** Returns the newest message held, or null. */
  last() {
    let newest = null;
    for (const message of this.messages.values()) {
      if (newest === null || message.seq > newest.seq) {
        newest = message;
      }
    }
    return newest;
  }

  /** Records a history page: its messages and where the next older page starts. */
  addHistory(page) {
    let added = 0;
    for (const message of page.messages) {
      if (this.accept(message)) {
        added += 1;
      }
    }
    this.historyLoaded = true;
    this.historyBefore = page.nextBeforeSeq;
    this.historyComplete = page.nextBeforeSeq === 0n;
    return added;
  }

  /** Returns the time of the newest activity, for sorting the conversation list. */
  activityMs() {
    const newest = this.last();
    return newest === null ? Number(this.createdMs ?? 0n) : Number(newest.serverTimeMs);
  }
}
