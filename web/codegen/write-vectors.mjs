// Encodes the frames described by web/tests/vectors/rust/*.json with the browser codec into
// web/tests/vectors/js/*.bin, for the Rust golden test (schema/tests/golden.rs) to decode.
//
// Usage: node codegen/write-vectors.mjs   (npm --prefix web run vectors)

import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { encodeFrame } from "../static/codec/frames.js";
import { frameFromJson } from "./vector-json.mjs";

const vectorsDir = join(dirname(fileURLToPath(import.meta.url)), "..", "tests", "vectors");
const rustDir = join(vectorsDir, "rust");
const jsDir = join(vectorsDir, "js");

const names = readdirSync(rustDir)
  .filter((file) => file.endsWith(".json"))
  .map((file) => file.slice(0, -".json".length))
  .sort();
if (names.length === 0) {
  console.error(
    `no vectors in ${rustDir}; create them with ` +
      "`TIDINGS_UPDATE_VECTORS=1 cargo test -p tidings-schema --test golden`",
  );
  process.exit(1);
}

// Rewrite the directory whole, so a case removed on the Rust side leaves no stale file.
rmSync(jsDir, { recursive: true, force: true });
mkdirSync(jsDir, { recursive: true });
for (const name of names) {
  const json = JSON.parse(readFileSync(join(rustDir, `${name}.json`), "utf8"));
  writeFileSync(join(jsDir, `${name}.bin`), encodeFrame(frameFromJson(json)));
}
console.log(`wrote ${names.length} vectors to web/tests/vectors/js`);
