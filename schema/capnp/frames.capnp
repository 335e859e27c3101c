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
