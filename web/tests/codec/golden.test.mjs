// Golden vectors shared with the Rust codec (schema/tests/golden.rs).
//
// rust/<name>.bin is the Rust encoding of the frame that rust/<name>.json describes;
// js/<name>.bin is this codec's encoding of the same JSON, which the Rust test decodes.

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { frameFromJson, frameToJson } from "../../codegen/vector-json.mjs";
import { frameSchema } from "../../static/codec/frames_capnp.js";
import { decodeFrame, encodeFrame } from "../../static/codec/frames.js";

const vectorsDir = join(dirname(fileURLToPath(import.meta.url)), "..", "vectors");
const RUST_FIX = "TIDINGS_UPDATE_VECTORS=1 cargo test -p tidings-schema --test golden";
const JS_FIX = "npm --prefix web run vectors";

function vectorNames(dir, extension) {
  return readdirSync(join(vectorsDir, dir))
    .filter((file) => file.endsWith(extension))
    .map((file) => file.slice(0, -extension.length))
    .sort();
}

function readJson(name) {
  return JSON.parse(readFileSync(join(vectorsDir, "rust", `${name}.json`), "utf8"));
}

function readBin(dir, name) {
  return new Uint8Array(readFileSync(join(vectorsDir, dir, `${name}.bin`)));
}

const names = vectorNames("rust", ".json");

test("rust vectors exist in pairs", () => {
  assert.ok(names.length > 0, `no vectors; create them with ${RUST_FIX}`);
  assert.deepEqual(vectorNames("rust", ".bin"), names);
  assert.deepEqual(vectorNames("js", ".bin"), names, `js vectors are out of step; run ${JS_FIX}`);
});

test("rust vectors cover every frame member", () => {
  const root = frameSchema.structs[frameSchema.root];
  const members = root.fields.filter((field) => field.discriminant !== undefined);
  const covered = new Set(names.map((name) => readJson(name).body.which));
  for (const member of members) {
    assert.ok(covered.has(member.name), `no golden vector for Frame member ${member.name}`);
  }
});

for (const name of names) {
  test(`rust vector ${name} decodes to its JSON`, () => {
    const decoded = decodeFrame(readBin("rust", name));
    assert.deepEqual(frameToJson(decoded), readJson(name));
  });

  test(`js vector ${name} is current`, () => {
    const encoded = encodeFrame(frameFromJson(readJson(name)));
    const committed = readBin("js", name);
    assert.ok(
      Buffer.from(encoded).equals(Buffer.from(committed)),
      `web/tests/vectors/js/${name}.bin differs from encodeFrame's output; run ${JS_FIX}`,
    );
  });

  test(`js encoding of ${name} matches rust bytes`, () => {
    // capnp 0.27 (Rust) and capnp-es 0.0.16 both place each object when it is set, and both
    // codecs set fields in schema order, so the bytes agree. Should an upgrade change the
    // layout, only this test fails, because decoding is checked above.
    const encoded = encodeFrame(frameFromJson(readJson(name)));
    assert.deepEqual(Buffer.from(encoded), Buffer.from(readBin("rust", name)));
  });
}
