"""Independent Tidings clients built on aioquic and pycapnp, for interoperability tests.

Subcommands:

  raw           the native protocol over QUIC with ALPN tidings/1
  webtransport  the same protocol inside a WebTransport session at /v1/wt (ALPN h3)
  h3get         one plain HTTP/3 GET, for example of /healthz

The chat clients print one JSON line {"event": "ready", ...} after Welcome, wait for a
line "go" on stdin, send one message to --conversation, then read deliveries until every
--expect body has arrived. They acknowledge each delivery and print a final JSON line
{"event": "done", "sent_seq": N, "received": [...]} with the deliveries in arrival order.
Every wait is bounded by --timeout; a failure prints the reason on stderr and exits 1.

Frames are encoded with the schema file given by --schema, loaded at run time, so this
client shares no code with the Rust implementation.
"""

import argparse
import asyncio
import json
import ssl
import sys
import uuid

import capnp
from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import FrameType, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived

PROTOCOL_VERSION = 1
LENGTH_PREFIX_BYTES = 4
# Matches the default frame limit the edge announces; Welcome carries the real one.
DEFAULT_MAX_FRAME_BYTES = 256 * 1024


class Failure(Exception):
    """A check failed; the message names the check and the value."""


class Frames:
    """Encodes and decodes Frame messages with the schema loaded from a file."""

    def __init__(self, schema_path):
        self.schema = capnp.load(schema_path)

    def encode(self, kind, **fields):
        message = self.schema.Frame.new_message()
        message.version = PROTOCOL_VERSION
        body = message.init(kind)
        for name, value in fields.items():
            if name == "directPeer":
                body.directPeer.none = None
            else:
                setattr(body, name, value)
        payload = message.to_bytes()
        return len(payload).to_bytes(LENGTH_PREFIX_BYTES, "big") + payload

    def decode(self, payload):
        """Returns (kind, fields as a dict)."""
        with self.schema.Frame.from_bytes(payload) as frame:
            if frame.version != PROTOCOL_VERSION:
                raise Failure(f"frame with version {frame.version}, expected {PROTOCOL_VERSION}")
            kind = str(frame.which())
            return kind, getattr(frame, kind).to_dict()


class StreamBuffers:
    """Reassembles length-prefixed frames per stream and queues (stream_id, kind, fields)."""

    def __init__(self, frames, queue, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES):
        self.frames = frames
        self.queue = queue
        self.max_frame_bytes = max_frame_bytes
        self.buffers = {}

    def feed(self, stream_id, data):
        buffer = self.buffers.setdefault(stream_id, bytearray())
        buffer.extend(data)
        while len(buffer) >= LENGTH_PREFIX_BYTES:
            length = int.from_bytes(buffer[:LENGTH_PREFIX_BYTES], "big")
            if length > self.max_frame_bytes:
                raise Failure(f"frame of {length} bytes on stream {stream_id} exceeds the limit")
            end = LENGTH_PREFIX_BYTES + length
            if len(buffer) < end:
                return
            payload = bytes(buffer[LENGTH_PREFIX_BYTES:end])
            del buffer[:end]
            kind, fields = self.frames.decode(payload)
            self.queue.put_nowait((stream_id, kind, fields))


class RawProtocol(QuicConnectionProtocol):
    """The native protocol: client-opened bidirectional streams carry frames directly."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.incoming = asyncio.Queue()
        self.buffers = None

    def open_stream(self):
        return self._quic.get_next_available_stream_id()

    def write(self, stream_id, data):
        self._quic.send_stream_data(stream_id, data)
        self.transmit()

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            self.buffers.feed(event.stream_id, event.data)
        elif isinstance(event, ConnectionTerminated):
            self.incoming.put_nowait((None, "terminated", {"reason": event.reason_phrase}))


class WebTransportProtocol(QuicConnectionProtocol):
    """The native protocol inside a WebTransport session over HTTP/3."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.incoming = asyncio.Queue()
        self.buffers = None
        self.session_id = None
        self.responses = {}

    def request(self, headers, end_stream):
        stream_id = self._quic.get_next_available_stream_id()
        self.responses[stream_id] = asyncio.get_running_loop().create_future()
        self.h3.send_headers(stream_id, headers, end_stream=end_stream)
        self.transmit()
        return stream_id

    def open_stream(self):
        stream_id = self.h3.create_webtransport_stream(self.session_id, is_unidirectional=False)
        # NOTE: aioquic 1.7 does not record that the receive half of a client-opened
        # bidirectional stream belongs to the session, and would parse the edge's replies
        # as HTTP/3 frames. Marking the stream before any reply arrives avoids that.
        with self.h3._get_or_create_stream(stream_id) as stream:
            stream.frame_type = FrameType.WEBTRANSPORT_STREAM
            stream.session_id = self.session_id
        return stream_id

    def write(self, stream_id, data):
        self._quic.send_stream_data(stream_id, data)
        self.transmit()

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated):
            self.incoming.put_nowait((None, "terminated", {"reason": event.reason_phrase}))
            for future in self.responses.values():
                if not future.done():
                    future.set_exception(Failure(f"connection closed: {event.reason_phrase}"))
            return
        for h3_event in self.h3.handle_event(event):
            self.h3_event_received(h3_event)

    def h3_event_received(self, event):
        if isinstance(event, HeadersReceived):
            future = self.responses.get(event.stream_id)
            if future is not None and not future.done():
                future.set_result(dict(event.headers))
        elif isinstance(event, WebTransportStreamDataReceived):
            self.buffers.feed(event.stream_id, event.data)
        elif isinstance(event, DataReceived) and event.stream_id == self.session_id:
            pass


def quic_configuration(args, alpn):
    configuration = QuicConfiguration(is_client=True, alpn_protocols=[alpn])
    configuration.server_name = args.server_name
    configuration.verify_mode = ssl.CERT_REQUIRED
    configuration.load_verify_locations(args.ca)
    configuration.max_datagram_frame_size = 65536
    return configuration


async def next_frame(protocol, deadline, stream_id=None):
    """Returns the next (stream_id, kind, fields), or raises Failure at the deadline."""
    loop = asyncio.get_running_loop()
    left = deadline - loop.time()
    if left <= 0:
        raise Failure("timed out waiting for a frame")
    try:
        item = await asyncio.wait_for(protocol.incoming.get(), left)
    except asyncio.TimeoutError as error:
        raise Failure("timed out waiting for a frame") from error
    if item[1] == "terminated":
        raise Failure(f"connection closed: {item[2]['reason']}")
    return item


async def chat(protocol, frames, args):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout
    protocol.buffers = StreamBuffers(frames, protocol.incoming)

    control = protocol.open_stream()
    hello = frames.encode(
        "hello", token=args.token, deviceId=args.device, clientVersion="tidings-interop/1"
    )
    protocol.write(control, hello)
    stream_id, kind, fields = await next_frame(protocol, deadline)
    if kind != "welcome":
        raise Failure(f"expected welcome on the control stream, received {kind}: {fields}")
    protocol.buffers.max_frame_bytes = fields["limits"]["maxFrameBytes"]
    print(json.dumps({"event": "ready", "user": fields["userId"]}), flush=True)

    go = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.timeout)
    if go.strip() != "go":
        raise Failure(f"expected 'go' on stdin, read {go!r}")

    conversation = protocol.open_stream()
    client_msg_id = uuid.uuid4().hex
    send = frames.encode(
        "send",
        conversationId=args.conversation,
        clientMsgId=client_msg_id,
        body=args.body,
        directPeer=None,
    )
    protocol.write(conversation, send)

    sent_seq = None
    received = []
    expected = set(args.expect)
    while sent_seq is None or expected:
        stream_id, kind, fields = await next_frame(protocol, deadline)
        if kind == "sendAck" and fields["clientMsgId"] == client_msg_id:
            sent_seq = fields["seq"]
        elif kind == "deliver":
            message = fields["message"]
            received.append(
                {"seq": message["seq"], "sender": message["sender"], "body": message["body"]}
            )
            expected.discard(message["body"])
            ack = frames.encode(
                "deliveryAck", conversationId=message["conversationId"], seq=message["seq"]
            )
            protocol.write(stream_id, ack)
        elif kind in ("error", "close"):
            raise Failure(f"server sent {kind} on stream {stream_id}: {fields}")
    print(json.dumps({"event": "done", "sent_seq": sent_seq, "received": received}), flush=True)


async def run_raw(args, frames):
    configuration = quic_configuration(args, "tidings/1")
    async with connect(
        args.host, args.port, configuration=configuration, create_protocol=RawProtocol
    ) as protocol:
        await chat(protocol, frames, args)


async def open_webtransport(protocol, args):
    authority = f"{args.server_name}:{args.port}".encode()
    headers = [
        (b":method", b"CONNECT"),
        (b":scheme", b"https"),
        (b":authority", authority),
        (b":path", b"/v1/wt"),
        (b":protocol", b"webtransport"),
    ]
    if args.origin:
        headers.append((b"origin", args.origin.encode()))
    session_id = protocol.request(headers, end_stream=False)
    response = await asyncio.wait_for(protocol.responses[session_id], args.timeout)
    status = response.get(b":status")
    if status != b"200":
        raise Failure(f"WebTransport CONNECT /v1/wt answered with status {status!r}")
    protocol.session_id = session_id


async def run_webtransport(args, frames):
    configuration = quic_configuration(args, "h3")
    async with connect(
        args.host, args.port, configuration=configuration, create_protocol=WebTransportProtocol
    ) as protocol:
        await open_webtransport(protocol, args)
        await chat(protocol, frames, args)


async def run_h3get(args):
    configuration = quic_configuration(args, "h3")
    async with connect(
        args.host, args.port, configuration=configuration, create_protocol=H3GetProtocol
    ) as protocol:
        status, body = await asyncio.wait_for(protocol.get(args, args.path), args.timeout)
        print(json.dumps({"event": "response", "status": status, "body": body}), flush=True)
        if status != 200:
            raise Failure(f"GET {args.path} answered with status {status}: {body!r}")


class H3GetProtocol(QuicConnectionProtocol):
    """One plain HTTP/3 request and its response."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.status = None
        self.body = bytearray()
        self.done = None

    async def get(self, args, path):
        self.done = asyncio.get_running_loop().create_future()
        stream_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", f"{args.server_name}:{args.port}".encode()),
            (b":path", path.encode()),
        ]
        self.h3.send_headers(stream_id, headers, end_stream=True)
        self.transmit()
        await self.done
        return self.status, self.body.decode(errors="replace")

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated) and not self.done.done():
            self.done.set_exception(Failure(f"connection closed: {event.reason_phrase}"))
            return
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                self.status = int(dict(h3_event.headers)[b":status"])
            elif isinstance(h3_event, DataReceived):
                self.body.extend(h3_event.data)
            else:
                continue
            if h3_event.stream_ended and not self.done.done():
                self.done.set_result(None)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["raw", "webtransport", "h3get"])
    parser.add_argument("--host", default="127.0.0.1", help="edge IP address")
    parser.add_argument("--port", type=int, required=True, help="edge UDP port")
    parser.add_argument("--server-name", default="localhost", help="TLS server name")
    parser.add_argument("--ca", required=True, help="PEM file of the CA to trust")
    parser.add_argument("--schema", help="path of frames.capnp")
    parser.add_argument("--token", help="bearer token for Hello")
    parser.add_argument("--device", default="interop", help="device id for Hello")
    parser.add_argument("--conversation", type=int, help="conversation id to send in")
    parser.add_argument("--body", default="", help="text of the message to send")
    parser.add_argument("--expect", action="append", default=[], help="body to wait for")
    parser.add_argument("--origin", help="origin header of the WebTransport CONNECT")
    parser.add_argument("--path", default="/healthz", help="path for h3get")
    parser.add_argument("--timeout", type=float, default=20.0, help="overall limit in seconds")
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        if args.mode == "h3get":
            asyncio.run(asyncio.wait_for(run_h3get(args), args.timeout))
            return 0
        if not (args.schema and args.token and args.conversation is not None):
            raise Failure(f"{args.mode} needs --schema, --token and --conversation")
        frames = Frames(args.schema)
        runner = run_raw if args.mode == "raw" else run_webtransport
        asyncio.run(asyncio.wait_for(runner(args, frames), args.timeout + 5))
        return 0
    except (Failure, asyncio.TimeoutError, ConnectionError, OSError) as error:
        print(f"{args.mode} client failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
