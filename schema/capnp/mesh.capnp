# The mesh between edges and owners: the requests an edge forwards to the owner of a
# conversation's shard, the replies, the deliveries the owner fans out back to edges,
# and the RPC interfaces that carry them. The Rust views are in `src/mesh.rs`;
# `src/mesh_codec.rs` maps between the two.
#
# Versioning: the bootstrap capability of an owner is `Owner`. An edge first calls
# `Owner.open` with the mesh protocol version it speaks and gets back the capability for
# that version. An owner that does not speak the version fails the call with a message
# that names both versions. A later incompatible version adds a new interface and a new
# `open` method, so old edges keep working during a rolling upgrade. Methods appended to
# `OwnerV1` (registerUsers, updateInbox, conversationsById) are compatible additions: an
# older owner fails them as unimplemented.
#
# Transport: TCP with mutual TLS when the cluster file names a mesh CA. Edges and owners
# both present a certificate signed by that CA.

@0xc669359ab48e3252;

using Frames = import "frames.capnp";

const meshProtocolVersion :UInt16 = 1;

struct SendRequest {
  sender @0 :Text;
  deviceId @1 :Text;
  conversationId @2 :UInt64;
  clientMsgId @3 :Text;
  body @4 :Text;
  directPeer :union {
    none @5 :Void;
    user @6 :Text;
  }
  messageId @7 :UInt64;
  hlc @8 :UInt64;
  serverTimeMs @9 :UInt64;
}

struct Stamp {
  messageId @0 :UInt64;
  hlc @1 :UInt64;
  serverTimeMs @2 :UInt64;
}

struct OwnerRequest {
  union {
    send @0 :SendRequest;
    history :group {
      user @1 :Text;
      request @2 :Frames.HistoryRequest;
    }
    createGroup :group {
      user @3 :Text;
      request @4 :Frames.CreateGroup;
      conversationId @5 :UInt64;
      stamp @6 :Stamp;
    }
    addMembers :group {
      user @7 :Text;
      request @8 :Frames.MembersChange;
      stamp @9 :Stamp;
    }
    removeMembers :group {
      user @10 :Text;
      request @11 :Frames.MembersChange;
      stamp @12 :Stamp;
    }
    leave :group {
      user @13 :Text;
      request @14 :Frames.Leave;
      stamp @15 :Stamp;
    }
    listConversations :group {
      user @16 :Text;
    }
    lastSeen :group {
      # Reads a user's last seen row from their home shard.
      user @17 :Text;
    }
    recordLastSeen :group {
      # Raises a user's last seen time; the owner clamps it to its own clock.
      user @18 :Text;
      atMs @19 :UInt64;
    }
    presenceSettings :group {
      user @20 :Text;
      hideLastSeen @21 :Bool;
    }
    receipt :group {
      # Moves the user's receipts forward; the owner clamps both to the last seq.
      user @22 :Text;
      conversationId @23 :UInt64;
      deliveredSeq @24 :UInt64;
      readSeq @25 :UInt64;
    }
    receipts :group {
      user @26 :Text;
      conversationId @27 :UInt64;
    }
    inboxSync :group {
      user @28 :Text;
      request @29 :Frames.InboxSync;
    }
    markUnread :group {
      user @30 :Text;
      request @31 :Frames.MarkUnread;
    }
    gap :group {
      user @32 :Text;
      request @33 :Frames.GapRequest;
    }
    presenceReport :group {
      # An edge's presence of users whose home shard this owner holds: the most present
      # state across the user's devices on that edge. Each report renews the edge's entry
      # of every listed user for `leaseMs`; an entry that is not renewed lapses to offline.
      edgeId @34 :Text;
      entries @35 :List(Frames.PresenceEntry);
      leaseMs @36 :UInt32;
    }
  }
}

struct OwnerReply {
  union {
    sendAck @0 :Frames.SendAck;
    historyPage @1 :Frames.HistoryPage;
    conversation @2 :Frames.ConversationInfo;
    conversations @3 :List(Frames.ConversationInfo);
    lastSeen @4 :LastSeenRow;
    receiptList @5 :Frames.ReceiptList;
    inboxPage @6 :Frames.InboxPage;
    gapPage @7 :Frames.GapPage;
    accepted @8 :Void;
    # Reply to a request that returns no data, such as `presenceReport`.
  }
}

struct LastSeenRow {
  # A user's last activity and whether they hide it, from their home shard.
  user @0 :Text;
  lastSeenMs @1 :UInt64;
  # Milliseconds since the Unix epoch; 0 when the user was never seen.
  hideLastSeen @2 :Bool;
}

struct Rejection {
  # A request the owner did not carry out.
  code @0 :UInt16;
  # A number from the error code table in `src/error.rs`.
  message @1 :Text;
  retryAfterMs @2 :UInt32;
}

struct CallResult {
  union {
    reply @0 :OwnerReply;
    rejection @1 :Rejection;
  }
}

struct InboxUpdate {
  # A change to one inbox row, sent by a conversation's owner to the owner of the user's
  # home shard.
  user @0 :Text;
  conversationId @1 :UInt64;
  lastSeq @2 :UInt64;
  change @3 :InboxChange;
}

enum InboxChange {
  join @0;
  # The user joined: create the row, or keep its read position if it exists.
  advance @1;
  # A message was committed: raise lastSeq of an existing row.
  remove @2;
  # The user left or was removed.
  read @3;
  # The user's read receipt moved: raise readSeq of an existing row to lastSeq.
}

struct Delivery {
  message @0 :Frames.Message;
  recipients @1 :List(Text);
  originDevice @2 :Text;
  receipt @3 :Frames.ReceiptUpdate;
  # Set for a receipt change instead of a message; `message` is then empty.
  presence @4 :List(Frames.PresenceEntry);
  # Set for presence changes instead of a message; `message` and `recipients` are then
  # empty. Each entry is the user's presence on every edge except the receiving one.
  presenceSnapshot @5 :Bool;
  # Set on the first delivery after an edge attaches: `presence` then replaces all
  # presence the edge holds for users whose home shard is on this owner.
  position @6 :LogPosition;
  # Set on message deliveries: where the message sits in the owner's delivery log. Unset
  # on receipt and presence deliveries.
}

struct LogPosition {
  # An entry of the delivery log of one storage file of an owner.
  file @0 :UInt16;
  # Index of the storage file.
  epoch @1 :UInt64;
  # Random id written when the file was created; a new value means a new, empty log.
  offset @2 :UInt64;
  # Dense, starting at 1. As an edge position: every entry up to this one was received.
}

interface Owner {
  # Bootstrap capability of an owner node.

  open @0 (version :UInt16) -> (owner :OwnerV1);
  # Returns the version 1 interface. Fails when `version` is not `meshProtocolVersion`.
}

interface OwnerV1 {
  call @0 (request :OwnerRequest) -> (result :CallResult);
  # Carries out one request. A rejection by the owner is a `CallResult.rejection`, not
  # an RPC error; an RPC error means the mesh itself failed.

  attachEdge @1 (edgeId :Text, sink :EdgeSink, positions :List(LogPosition))
              -> (start :List(LogPosition), lost :List(UInt16));
  # Registers an edge for fan-out. The owner pushes deliveries to `sink` until a
  # `deliver` call fails or the connection closes. A later attach with the same edge id
  # replaces this one.
  #
  # `positions` are the last log entries the edge received from this owner, one per
  # storage file. The owner first replays every later entry of those logs, then live
  # deliveries; duplicates are possible and devices drop them by seq. `start` is the end
  # of each file's log at the attach, which an edge without a position for a file adopts.
  # `lost` lists the files whose position could not be served (another epoch, or entries
  # already trimmed); devices of those files catch up from history when they reconnect.

  registerUsers @2 (edgeId :Text, replace :Bool, added :List(Text), removed :List(Text),
                    leaseMs :UInt32) -> ();
  # Records which users have sessions on the edge. With `replace` the set becomes
  # `added`; otherwise `added` and `removed` change it. Every call renews the
  # registration for `leaseMs`; a registration that is not renewed in time expires, and
  # the owner stops fan-out to that edge until it attaches and registers again. Deliveries
  # go only to edges with a registered recipient.

  updateInbox @3 (updates :List(InboxUpdate)) -> (result :CallResult);
  # Owner to owner: applies inbox changes for users whose home shard this owner holds.
  # The reply comes after the changes are durable.

  conversationsById @4 (user :Text, ids :List(UInt64)) -> (result :CallResult);
  # Owner to owner: returns the rows of the listed conversations that `user` is a member
  # of, as `OwnerReply.conversations`. Conversations this owner does not hold are rejected.
}

interface EdgeSink {
  deliver @0 (batch :List(Delivery)) -> ();
  # Takes a batch of deliveries in commit order. The reply comes once the edge has queued
  # them, which bounds how far the owner runs ahead of a slow edge.

  detached @1 (reason :Text) -> ();
  # Tells the edge that the owner closed its subscription, for example because its queue
  # overflowed. The edge calls `attachEdge` again and catches up from history.
}
