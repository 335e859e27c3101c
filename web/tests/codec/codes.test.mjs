// The web client's code tables (web/static/codes.js) against the Rust ones, which
// schema/tests/code_tables.rs writes to tests/vectors/codes.json.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";

import { CLOSE_NAMES, ERROR_NAMES, isPermanentClose, isRetryable } from "../../static/codes.js";

const rust = JSON.parse(readFileSync(new URL("../vectors/codes.json", import.meta.url), "utf8"));

const entries = (table) => Object.entries(table).map(([number, name]) => [Number(number), name]);

test("error names match the Rust table", () => {
  assert.deepEqual([...ERROR_NAMES], entries(rust.errors));
});

test("retryable error codes match the Rust table", () => {
  const retryable = [...ERROR_NAMES.keys()].filter((code) => isRetryable(code));
  assert.deepEqual(retryable, rust.retryable_errors);
});

test("close names match the Rust table", () => {
  assert.deepEqual([...CLOSE_NAMES], entries(rust.close));
});

test("final close codes match the Rust table", () => {
  const final = [...CLOSE_NAMES.keys()].filter((code) => isPermanentClose(code));
  assert.deepEqual(final, rust.final_close);
});
