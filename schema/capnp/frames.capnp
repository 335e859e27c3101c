# Client frames: what a client and an edge exchange on QUIC streams, WebTransport
# streams and WebSocket messages. The Rust views are in `src/frame.rs`; `src/codec.rs`
# maps between the two.
#
# Compatibility rules: fields and union members are only ever added, with the next
# ordinal, never renumbered or removed. A reader that meets a union member it does not
# know rejects the frame with UNKNOWN_FRAME.

@0x9b3d7591af2fc23f;

struct Frame {
  # One frame of the client protocol.

  version @0 :UInt16;
  # Protocol version of the sender. A frame with another version than the reader's is
  # rejected with UNSUPPORTED_VERSION.

  union {
    hello @1 :Hello;
    welcome @2 :Welcome;
    send @3 :Send;
    sendAck @4 :SendAck;
    deliver @5 :Deliver;
    deliveryAck @6 :DeliveryAck;
    historyRequest @7 :HistoryRequest;
    historyPage @8 :HistoryPage;
    createGroup @9 :CreateGroup;
    addMembers @10 :MembersChange;
    removeMembers @11 :MembersChange;
    leave @12 :Leave;
    conversationReply @13 :ConversationReply;
    listConversations @14 :ListConversations;
    conversationList @15 :ConversationList;
    error @16 :ErrorFrame;
    close @17 :Close;
    heartbeat @18 :Heartbeat;
    presenceSubscribe @19 :PresenceSubscribe;
    presenceUpdate @20 :PresenceUpdate;
    typing @21 :Typing;
    presenceSettings @22 :PresenceSettings;
    markRead @23 :MarkRead;
    receiptsRequest @24 :ReceiptsRequest;
    receiptList @25 :ReceiptList;
    receiptUpdate @26 :ReceiptUpdate;
    inboxSync @27 :InboxSync;
    inboxPage @28 :InboxPage;
    markUnread @29 :MarkUnread;
    gapRequest @30 :GapRequest;
    gapPage @31 :GapPage;
  }
}

struct Hello {
  token @0 :Text;
  deviceId @1 :Text;
  clientVersion @2 :Text;
}

struct Limits {
  maxMessageBytes @0 :UInt32;
  maxFrameBytes @1 :UInt32;
  maxConversationStreams @2 :UInt32;
  maxGroupMembers @3 :UInt32;
}

struct Welcome {
  sessionId @0 :UInt64;
  userId @1 :Text;
  serverTimeMs @2 :UInt64;
  limits @3 :Limits;
  edges @4 :List(Text);
}

struct Send {
  conversationId @0 :UInt64;
  clientMsgId @1 :Text;
  body @2 :Text;
  directPeer :union {
    # The other user of a direct conversation, or none for a group.
    none @3 :Void;
    user @4 :Text;
  }
}

struct SendAck {
  conversationId @0 :UInt64;
  clientMsgId @1 :Text;
  messageId @2 :UInt64;
  seq @3 :UInt64;
  hlc @4 :UInt64;
  serverTimeMs @5 :UInt64;
}

enum MessageKind {
  user @0;
  system @1;
}

struct Message {
  conversationId @0 :UInt64;
  seq @1 :UInt64;
  messageId @2 :UInt64;
  sender @3 :Text;
  body @4 :Text;
  hlc @5 :UInt64;
  serverTimeMs @6 :UInt64;
  kind @7 :MessageKind;
}

struct Deliver {
  message @0 :Message;
}

struct DeliveryAck {
  conversationId @0 :UInt64;
  seq @1 :UInt64;
}

struct HistoryRequest {
  requestId @0 :UInt64;
  conversationId @1 :UInt64;
  beforeSeq @2 :UInt64;
  limit @3 :UInt32;
}

struct HistoryPage {
  requestId @0 :UInt64;
  conversationId @1 :UInt64;
  messages @2 :List(Message);
  nextBeforeSeq @3 :UInt64;
}

struct CreateGroup {
  requestId @0 :UInt64;
  name @1 :Text;
  members @2 :List(Text);
}

struct MembersChange {
  requestId @0 :UInt64;
  conversationId @1 :UInt64;
  users @2 :List(Text);
}

struct Leave {
  requestId @0 :UInt64;
  conversationId @1 :UInt64;
}

enum ConversationKind {
  direct @0;
  group @1;
}

enum Role {
  member @0;
  admin @1;
}

struct Member {
  userId @0 :Text;
  role @1 :Role;
  joinedSeq @2 :UInt64;
}

struct ConversationInfo {
  conversationId @0 :UInt64;
  kind @1 :ConversationKind;
  name @2 :Text;
  members @3 :List(Member);
  createdMs @4 :UInt64;
  lastSeq @5 :UInt64;
}

struct ConversationReply {
  requestId @0 :UInt64;
  conversation @1 :ConversationInfo;
}

struct ListConversations {
  requestId @0 :UInt64;
}

struct ConversationList {
  requestId @0 :UInt64;
  conversations @1 :List(ConversationInfo);
}

struct ErrorFrame {
  requestId @0 :UInt64;
  conversationId @1 :UInt64;
  clientMsgId @2 :Text;
  code @3 :UInt16;
  # A number from the error code table in `src/error.rs`. A reader maps a number it does
  # not know to INTERNAL.
  message @4 :Text;
  retryAfterMs @5 :UInt32;
}

struct Close {
  code @0 :UInt32;
  # A close code number from `src/error.rs`.
  message @1 :Text;
  retryAfterMs @2 :UInt32;
  redirect @3 :Text;
}

enum PresenceState {
  offline @0;
  away @1;
  online @2;
}

struct Heartbeat {
  # Sent by a device every heartbeat interval, in a datagram where the transport has them.
  state @0 :PresenceState;
}

struct PresenceSubscribe {
  # Replaces the session's presence subscription. Every listed user must share a
  # conversation with the subscriber, and the subscriber must be a member of every listed
  # conversation, or the whole request is rejected with NOT_MEMBER.
  requestId @0 :UInt64;
  users @1 :List(Text);
  openConversations @2 :List(UInt64);
  # Conversations the client shows now; it receives their typing indicators.
}

struct PresenceEntry {
  user @0 :Text;
  state @1 :PresenceState;
  lastSeenMs @2 :UInt64;
  # Last activity, milliseconds since the Unix epoch; 0 when unknown or hidden.
}

struct PresenceUpdate {
  # Presence of watched users. A reply to PresenceSubscribe carries its requestId;
  # datagrams carry 0.
  requestId @0 :UInt64;
  snapshot @1 :Bool;
  # True when the entries are the periodic full state rather than changes.
  entries @2 :List(PresenceEntry);
}

struct Typing {
  conversationId @0 :UInt64;
  user @1 :Text;
  # Set by the server on the way to watchers; ignored from clients.
  active @2 :Bool;
  # False clears the indicator at once.
}

struct PresenceSettings {
  # Changes the user's presence settings; the server replies with the stored settings
  # and the same requestId.
  requestId @0 :UInt64;
  hideLastSeen @1 :Bool;
}

struct MarkRead {
  # Moves the caller's read receipt forward to `seq`; the owner clamps it to the last seq.
  # The reply is a ReceiptList with the caller's row only.
  requestId @0 :UInt64;
  conversationId @1 :UInt64;
  seq @2 :UInt64;
}

struct ReceiptsRequest {
  # Asks for every member's receipt in a conversation; the reply is a ReceiptList.
  requestId @0 :UInt64;
  conversationId @1 :UInt64;
}

struct MemberReceipt {
  userId @0 :Text;
  deliveredSeq @1 :UInt64;
  # The user holds every message up to this seq on at least one device.
  readSeq @2 :UInt64;
  # The user read every message up to this seq. Never above deliveredSeq.
}

struct ReceiptList {
  requestId @0 :UInt64;
  conversationId @1 :UInt64;
  lastSeq @2 :UInt64;
  receipts @3 :List(MemberReceipt);
}

struct SeqReceiptCount {
  # How many members besides its sender hold and have read one message.
  seq @0 :UInt64;
  delivered @1 :UInt32;
  read @2 :UInt32;
}

struct ReceiptUpdate {
  # Server push: a member's receipt moved. In a group, `counts` has the aggregate state of
  # the messages the move covered (newest first, capped), and `memberCount` is the number
  # of members besides a message's sender.
  conversationId @0 :UInt64;
  receipt @1 :MemberReceipt;
  memberCount @2 :UInt32;
  counts @3 :List(SeqReceiptCount);
}

struct InboxSync {
  # Asks for the caller's inbox entries that changed after `afterCursor` (0 for all),
  # oldest change first. With a non-zero `conversationId` only that entry is returned.
  requestId @0 :UInt64;
  afterCursor @1 :UInt64;
  limit @2 :UInt32;
  conversationId @3 :UInt64;
}

struct InboxEntry {
  conversationId @0 :UInt64;
  lastSeq @1 :UInt64;
  readSeq @2 :UInt64;
  unreadCount @3 :UInt64;
  markedUnread @4 :Bool;
  cursor @5 :UInt64;
  # The inbox cursor of the entry's latest change.
  member @6 :Bool;
  # False when the user left or was removed since the cursor the request named.
}

struct InboxPage {
  requestId @0 :UInt64;
  entries @1 :List(InboxEntry);
  cursor @2 :UInt64;
  # Pass as `afterCursor` to continue; it covers every entry of this page.
  complete @3 :Bool;
  # False when more changes remain after `cursor`.
}

struct MarkUnread {
  # Sets or clears the mark-unread flag of the caller's inbox entry; the reply is an
  # InboxPage with that entry.
  requestId @0 :UInt64;
  conversationId @1 :UInt64;
  unread @2 :Bool;
}

struct GapRequest {
  # Asks for the messages after `afterSeq`, oldest first.
  requestId @0 :UInt64;
  conversationId @1 :UInt64;
  afterSeq @2 :UInt64;
  limit @3 :UInt32;
}

struct GapPage {
  requestId @0 :UInt64;
  conversationId @1 :UInt64;
  messages @2 :List(Message);
  # Ascending seq order, without gaps.
  complete @3 :Bool;
  # False when the page holds only part of the gap; continue from `nextAfterSeq`.
  nextAfterSeq @4 :UInt64;
  lastSeq @5 :UInt64;
}
