// Converts frame objects to and from the JSON of the golden vectors, where 64-bit integers
// are decimal strings and Data is base64. The conversion follows `frameSchema`, so a
// Text field that happens to hold digits stays a string.

import { frameSchema } from "../static/codec/frames_capnp.js";

const BIG_KINDS = new Set(["int64", "uint64"]);

function valueFromJson(type, value, path) {
  if (BIG_KINDS.has(type.kind)) {
    if (typeof value !== "string" || !/^-?[0-9]+$/.test(value)) {
      throw new Error(
        `${path}: expected a decimal string for ${type.kind}, got ${JSON.stringify(value)}`,
      );
    }
    return BigInt(value);
  }
  if (type.kind === "data") {
    return new Uint8Array(Buffer.from(value, "base64"));
  }
  if (type.kind === "struct" || type.kind === "group") {
    return structFromJson(type.id, value, path);
  }
  if (type.kind === "list") {
    return value.map((item, index) => valueFromJson(type.element, item, `${path}[${index}]`));
  }
  return value;
}

function unionFromJson(meta, union, path) {
  const member = meta.fields.find((field) => field.name === union.which);
  if (member === undefined || member.type.kind === "void" || !(member.name in union)) {
    return { ...union };
  }
  return {
    ...union,
    [member.name]: valueFromJson(member.type, union[member.name], `${path}.${member.name}`),
  };
}

function structFromJson(id, json, path) {
  const meta = frameSchema.structs[id];
  const object = meta.isGroup && meta.unionSize > 0 ? unionFromJson(meta, json, path) : {};
  for (const field of meta.fields) {
    if (field.discriminant === undefined && field.name in json) {
      object[field.name] = valueFromJson(field.type, json[field.name], `${path}.${field.name}`);
    }
  }
  if (!meta.isGroup && meta.unionSize > 0 && "body" in json) {
    object.body = unionFromJson(meta, json.body, `${path}.body`);
  }
  return object;
}

/** Returns the frame object that a vector's JSON describes. */
export function frameFromJson(json) {
  return structFromJson(frameSchema.root, json, "Frame");
}

/** Returns the JSON value of a frame object: BigInt as decimal strings, Data as base64. */
export function frameToJson(frame) {
  return JSON.parse(
    JSON.stringify(frame, (_key, value) => {
      if (typeof value === "bigint") {
        return value.toString();
      }
      if (value instanceof Uint8Array) {
        return Buffer.from(value).toString("base64");
      }
      return value;
    }),
  );
}
