// The staleness check behind `npm --prefix web run codec:check`.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";

const webDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const committed = join(webDir, "static", "codec", "frames_capnp.js");
const scratch = mkdtempSync(join(tmpdir(), "tidings-codegen-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

function check(file) {
  return spawnSync(process.execPath, ["codegen/generate.mjs", "--check", `--output=${file}`], {
    cwd: webDir,
    encoding: "utf8",
    timeout: 60_000,
  });
}

test("check passes on committed bundle", () => {
  const copy = join(scratch, "same.js");
  copyFileSync(committed, copy);
  const result = check(copy);
  assert.equal(result.status, 0, result.stderr);
});

test("check fails on stale bundle", () => {
  const stale = join(scratch, "stale.js");
  const bytes = readFileSync(committed);
  bytes[bytes.length - 2] ^= 1;
  writeFileSync(stale, bytes);

  const result = check(stale);
  assert.equal(result.status, 1);
  assert.match(result.stderr, /stale\.js is stale/);
  assert.match(result.stderr, /npm --prefix web run codec/);
});

test("check fails on missing bundle", () => {
  const result = check(join(scratch, "missing.js"));
  assert.equal(result.status, 1);
  assert.match(result.stderr, /missing\.js is missing/);
});
