// Browser codec for Tidings client frames: plain objects to and from Cap'n Proto messages.
//
// frames_capnp.js is generated from schema/capnp/frames.capnp (`npm --prefix web run codec`).
// This module walks its `frameSchema` table and calls the generated accessors, so every
// struct, union member and enum of the schema is covered without a hand-kept field list.
//
// Object shape, for example
//   { version: 1, body: { which: "hello", hello: { token, deviceId, clientVersion } } }
// - Field names are the schema's (camelCase). Frame's anonymous union is under `body`.
// - A union is `{ which: "<member>", <member>: value }`; a Void member is `{ which }` only.
//   A union inside a group (Send.directPeer) puts `which` beside the group's other fields.
// - UInt64 and Int64 are BigInt. Smaller integers and floats are Number, Text is string,
//   Data is Uint8Array, lists are arrays, and enums are their schema names ("user").
// - Decoding a union member this schema does not know returns
//   `{ which: "unknown", ordinal }`, where `ordinal` is the union's discriminant value.

import { CapnpMessage, Frame, frameSchema } from "./frames_capnp.js";

/** Protocol version this client speaks; encodeFrame uses it when `version` is absent. */
export const PROTOCOL_VERSION = 1;

/** Size of the big-endian length in front of each frame on a stream. */
export const LENGTH_PREFIX_BYTES = 4;

/** Key that contains the anonymous union of a struct that is not a group (Frame's `body`). */
const UNION_KEY = "body";

const INTEGER_RANGES = {
  int8: [-(2 ** 7), 2 ** 7 - 1],
  int16: [-(2 ** 15), 2 ** 15 - 1],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  uint8: [0, 2 ** 8 - 1],
  uint16: [0, 2 ** 16 - 1],
  uint32: [0, 2 ** 32 - 1],
};

const BIGINT_RANGES = {
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  uint64: [0n, 2n ** 64n - 1n],
};

/** An object that cannot be encoded as a Frame; `path` names the offending field. */
export class FrameEncodeError extends Error {
  constructor(path, message) {
    super(`cannot encode ${path}: ${message}`);
    this.name = "FrameEncodeError";
    this.path = path;
  }
}

/** Bytes that are not a valid Frame message. */
export class FrameDecodeError extends Error {
  constructor(message, options) {
    super(`malformed frame: ${message}`, options);
    this.name = "FrameDecodeError";
  }
}

/** A length prefix above the FrameReader's limit. */
export class FrameTooLargeError extends Error {
  constructor(length, maxFrameBytes) {
    super(
      `frame of ${length} bytes exceeds the limit of ${maxFrameBytes} bytes; ` +
        "the stream cannot be resynchronised and must be closed",
    );
    this.name = "FrameTooLargeError";
    this.length = length;
    this.maxFrameBytes = maxFrameBytes;
  }
}

function structMeta(id) {
  const meta = frameSchema.structs[id];
  if (meta === undefined) {
    throw new Error(`frames_capnp.js is missing struct ${id}: run \`npm --prefix web run codec\``);
  }
  return meta;
}

function initMethod(name) {
  return `_init${name[0].toUpperCase()}${name.slice(1)}`;
}

function describe(value) {
  if (value === null) {
    return "null";
  }
  if (Array.isArray(value)) {
    return "an array";
  }
  if (typeof value === "string") {
    return `string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)}`;
  }
  if (typeof value === "object") {
    return value.constructor?.name ?? "object";
  }
  return `${typeof value} ${String(value)}`;
}

function isPlainObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// ---------------------------------------------------------------------------------------
// Encoding

function toInteger(kind, value, path) {
  const [min, max] = INTEGER_RANGES[kind];
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new FrameEncodeError(
      path,
      `expected ${kind}, an integer Number from ${min} to ${max}, got ${describe(value)}`,
    );
  }
  return value;
}

function toBigInt(kind, value, path) {
  const [min, max] = BIGINT_RANGES[kind];
  let big;
  if (typeof value === "bigint") {
    big = value;
  } else if (Number.isSafeInteger(value)) {
    // A safe integer Number is exact, so accepting it costs no precision.
    big = BigInt(value);
  } else {
    throw new FrameEncodeError(path, `expected ${kind} as a BigInt, got ${describe(value)}`);
  }
  if (big < min || big > max) {
    throw new FrameEncodeError(path, `${big} is outside the ${kind} range ${min} to ${max}`);
  }
  return big;
}

function toEnumIndex(type, value, path) {
  const meta = frameSchema.enums[type.id];
  const index = meta.values.indexOf(value);
  if (typeof value !== "string" || index < 0) {
    const names = meta.values.map((name) => `"${name}"`).join(", ");
    throw new FrameEncodeError(path, `expected one of ${names} (${meta.name}), got ${describe(value)}`);
  }
  return index;
}

// Converts a scalar, Text or enum value to what the generated setter takes.
function toWireScalar(type, value, path) {
  switch (type.kind) {
    case "bool":
      if (typeof value !== "boolean") {
        throw new FrameEncodeError(path, `expected a boolean, got ${describe(value)}`);
      }
      return value;
    case "int64":
    case "uint64":
      return toBigInt(type.kind, value, path);
    case "float32":
    case "float64":
      if (typeof value !== "number") {
        throw new FrameEncodeError(path, `expected a Number, got ${describe(value)}`);
      }
      return value;
    case "text":
      if (typeof value !== "string") {
        throw new FrameEncodeError(path, `expected a string, got ${describe(value)}`);
      }
      return value;
    case "enum":
      return toEnumIndex(type, value, path);
    default:
      if (type.kind in INTEGER_RANGES) {
        return toInteger(type.kind, value, path);
      }
      throw new FrameEncodeError(path, `field kind ${type.kind} is not a scalar`);
  }
}

function writeList(view, field, items, path) {
  if (!Array.isArray(items)) {
    throw new FrameEncodeError(path, `expected an array, got ${describe(items)}`);
  }
  const list = view[initMethod(field.name)](items.length);
  const element = field.type.element;
  items.forEach((item, index) => {
    const itemPath = `${path}[${index}]`;
    if (element.kind === "struct") {
      writeStruct(list.get(index), element.id, item, itemPath);
    } else {
      list.set(index, toWireScalar(element, item, itemPath));
    }
  });
}

function writeField(view, field, value, path) {
  const { kind } = field.type;
  if (kind === "void") {
    // Assigning a Void member sets the union's discriminant.
    view[field.name] = null;
  } else if (kind === "struct") {
    writeStruct(view[initMethod(field.name)](), field.type.id, value, path);
  } else if (kind === "group") {
    writeStruct(view[field.name], field.type.id, value, path);
  } else if (kind === "list") {
    writeList(view, field, value, path);
  } else if (kind === "data") {
    if (!(value instanceof Uint8Array)) {
      throw new FrameEncodeError(path, `expected a Uint8Array, got ${describe(value)}`);
    }
    view[initMethod(field.name)](value.length).copyBuffer(value);
  } else {
    view[field.name] = toWireScalar(field.type, value, path);
  }
}

// Value written for a union member given only by `which`, so the discriminant is still set.
function emptyValue(type) {
  switch (type.kind) {
    case "bool":
      return false;
    case "int64":
    case "uint64":
      return 0n;
    case "text":
      return "";
    case "data":
      return new Uint8Array(0);
    case "list":
      return [];
    case "struct":
    case "group":
      return {};
    case "enum":
      return frameSchema.enums[type.id].values[0];
    default:
      return 0;
  }
}

function writeUnion(view, meta, union, path) {
  if (!isPlainObject(union)) {
    throw new FrameEncodeError(
      path,
      `expected a union object { which, ... }, got ${describe(union)}`,
    );
  }
  const members = meta.fields.filter((field) => field.discriminant !== undefined);
  const member = members.find((field) => field.name === union.which);
  if (member === undefined) {
    const names = members.map((field) => `"${field.name}"`).join(", ");
    throw new FrameEncodeError(
      `${path}.which`,
      `expected one of ${names}, got ${describe(union.which)}`,
    );
  }
  for (const other of members) {
    if (other !== member && union[other.name] !== undefined) {
      throw new FrameEncodeError(`${path}.${other.name}`, `set, but which is "${member.name}"`);
    }
  }
  const value = union[member.name] ?? emptyValue(member.type);
  writeField(view, member, value, `${path}.${member.name}`);
}

function writeStruct(view, id, object, path) {
  const meta = structMeta(id);
  if (!isPlainObject(object)) {
    throw new FrameEncodeError(path, `expected a ${meta.name} object, got ${describe(object)}`);
  }

  const plainFields = meta.fields.filter((field) => field.discriminant === undefined);
  const known = new Set(plainFields.map((field) => field.name));
  if (meta.unionSize > 0) {
    if (meta.isGroup) {
      meta.fields.forEach((field) => known.add(field.name));
      known.add("which");
    } else {
      known.add(UNION_KEY);
    }
  }
  for (const key of Object.keys(object)) {
    if (!known.has(key)) {
      throw new FrameEncodeError(
        `${path}.${key}`,
        `${meta.name} has no field "${key}"; its fields are ${[...known].join(", ")}`,
      );
    }
  }

  for (const field of plainFields) {
    const value = object[field.name];
    if (value !== undefined) {
      writeField(view, field, value, `${path}.${field.name}`);
    }
  }

  if (meta.unionSize === 0) {
    return;
  }
  if (meta.isGroup) {
    writeUnion(view, meta, object, path);
  } else if (object[UNION_KEY] === undefined) {
    throw new FrameEncodeError(
      `${path}.${UNION_KEY}`,
      `missing; a ${meta.name} needs its union set`,
    );
  } else {
    writeUnion(view, meta, object[UNION_KEY], `${path}.${UNION_KEY}`);
  }
}

/**
 * Encodes a frame object as one unpacked Cap'n Proto message, without a length prefix.
 * Throws FrameEncodeError naming the field when the object does not fit the schema.
 */
export function encodeFrame(frame) {
  const message = new CapnpMessage();
  const root = message.initRoot(Frame);
  const object =
    isPlainObject(frame) && frame.version === undefined
      ? { ...frame, version: PROTOCOL_VERSION }
      : frame;
  writeStruct(root, frameSchema.root, object, "Frame");
  return new Uint8Array(message.toArrayBuffer());
}

// ---------------------------------------------------------------------------------------
// Decoding

function fromWireScalar(type, value, path) {
  if (type.kind !== "enum") {
    return value;
  }
  const meta = frameSchema.enums[type.id];
  const name = meta.values[value];
  if (name === undefined) {
    // The Rust codec rejects unknown enumerants too, so both sides agree on the frame.
    throw new FrameDecodeError(
      `${path} has ${meta.name} value ${value}, which this schema does not define`,
    );
  }
  return name;
}

function readField(view, field, path) {
  const { kind } = field.type;
  if (kind === "struct" || kind === "group") {
    return readStruct(view[field.name], field.type.id, path);
  }
  if (kind === "data") {
    // Copy, so the result does not keep the whole message buffer alive.
    return view[field.name].toUint8Array().slice();
  }
  if (kind === "list") {
    const list = view[field.name];
    const element = field.type.element;
    const items = [];
    for (let index = 0; index < list.length; index += 1) {
      const item = list.get(index);
      const itemPath = `${path}[${index}]`;
      items.push(
        element.kind === "struct"
          ? readStruct(item, element.id, itemPath)
          : fromWireScalar(element, item, itemPath),
      );
    }
    return items;
  }
  return fromWireScalar(field.type, view[field.name], path);
}

function readUnion(view, meta, path) {
  const discriminant = view.which();
  const member = meta.fields.find((field) => field.discriminant === discriminant);
  if (member === undefined) {
    return { which: "unknown", ordinal: discriminant };
  }
  if (member.type.kind === "void") {
    return { which: member.name };
  }
  return { which: member.name, [member.name]: readField(view, member, `${path}.${member.name}`) };
}

function readStruct(view, id, path) {
  const meta = structMeta(id);
  const object = {};
  for (const field of meta.fields) {
    if (field.discriminant === undefined) {
      object[field.name] = readField(view, field, `${path}.${field.name}`);
    }
  }
  if (meta.unionSize > 0) {
    if (meta.isGroup) {
      Object.assign(object, readUnion(view, meta, path));
    } else {
      object[UNION_KEY] = readUnion(view, meta, `${path}.${UNION_KEY}`);
    }
  }
  return object;
}

/**
 * Decodes one whole unpacked Cap'n Proto message into a frame object. Throws
 * FrameDecodeError on bytes that are not a valid message. The version is returned as sent,
 * so the caller decides what to do with a version other than PROTOCOL_VERSION.
 */
export function decodeFrame(bytes) {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`decodeFrame expects a Uint8Array, got ${describe(bytes)}`);
  }
  // A message has at least the 8-byte segment table, and everything is whole words.
  if (bytes.length < 8 || bytes.length % 8 !== 0) {
    throw new FrameDecodeError(
      `${bytes.length} bytes is no Cap'n Proto message, which is one or more 8-byte words`,
    );
  }
  try {
    const message = new CapnpMessage(bytes, false);
    return readStruct(message.getRoot(Frame), frameSchema.root, "Frame");
  } catch (error) {
    if (error instanceof FrameDecodeError) {
      throw error;
    }
    throw new FrameDecodeError(error.message, { cause: error });
  }
}

// ---------------------------------------------------------------------------------------
// Stream framing

/** Returns a copy of `bytes` behind a 4-byte big-endian length, as frames travel on streams. */
export function lengthPrefixed(bytes) {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`lengthPrefixed expects a Uint8Array, got ${describe(bytes)}`);
  }
  if (bytes.length > 0xffffffff) {
    throw new RangeError(`frame of ${bytes.length} bytes does not fit a 32-bit length prefix`);
  }
  const out = new Uint8Array(LENGTH_PREFIX_BYTES + bytes.length);
  new DataView(out.buffer).setUint32(0, bytes.length, false);
  out.set(bytes, LENGTH_PREFIX_BYTES);
  return out;
}

/**
 * Splits a byte stream of length-prefixed frames. push() the chunks as they arrive and call
 * next() until it returns null. A length above `maxFrameBytes` makes next() throw
 * FrameTooLargeError as soon as the prefix arrives, before the body is buffered, and
 * every later call throws the same error.
 */
export class FrameReader {
  #maxFrameBytes;
  #buffer = new Uint8Array(0);
  #start = 0;
  #end = 0;
  #failure = null;

  constructor(maxFrameBytes) {
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 1 || maxFrameBytes > 0xffffffff) {
      const got = describe(maxFrameBytes);
      throw new RangeError(`FrameReader maxFrameBytes must be an integer from 1 to 2^32-1, got ${got}`);
    }
    this.#maxFrameBytes = maxFrameBytes;
  }

  /** Number of bytes received but not yet returned by next(). */
  get bufferedBytes() {
    return this.#end - this.#start;
  }

  push(chunk) {
    if (!(chunk instanceof Uint8Array)) {
      throw new TypeError(`FrameReader.push expects a Uint8Array, got ${describe(chunk)}`);
    }
    if (this.#failure !== null) {
      throw this.#failure;
    }
    const buffered = this.bufferedBytes;
    if (this.#end + chunk.length > this.#buffer.length) {
      // Grow geometrically, so a frame that arrives in many small chunks is not copied per chunk.
      const capacity = Math.max(buffered + chunk.length, this.#buffer.length * 2, 4096);
      const grown = new Uint8Array(capacity);
      grown.set(this.#buffer.subarray(this.#start, this.#end));
      this.#buffer = grown;
      this.#start = 0;
      this.#end = buffered;
    }
    this.#buffer.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  next() {
    if (this.#failure !== null) {
      throw this.#failure;
    }
    if (this.bufferedBytes < LENGTH_PREFIX_BYTES) {
      return null;
    }
    const view = new DataView(this.#buffer.buffer, this.#buffer.byteOffset + this.#start);
    const length = view.getUint32(0, false);
    if (length > this.#maxFrameBytes) {
      this.#failure = new FrameTooLargeError(length, this.#maxFrameBytes);
      throw this.#failure;
    }
    if (this.bufferedBytes < LENGTH_PREFIX_BYTES + length) {
      return null;
    }
    const bodyStart = this.#start + LENGTH_PREFIX_BYTES;
    const frame = this.#buffer.slice(bodyStart, bodyStart + length);
    this.#start = bodyStart + length;
    if (this.#start === this.#end) {
      this.#start = 0;
      this.#end = 0;
    }
    return frame;
  }
}
