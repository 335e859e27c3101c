// Compiles a copy of frames.capnp with one more Frame member and one more MessageKind
// value, as a newer server would have, so tests can build frames this codec does not know.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { compileAll } from "capnp-es/compiler";

const webDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const schemaPath = join(webDir, "..", "schema", "capnp", "frames.capnp");

function extend(schema) {
  const lastMember = "gapPage @31 :GapPage;";
  const lastKind = "system @1;";
  if (!schema.includes(lastMember) || !schema.includes(lastKind)) {
    throw new Error(
      `${schemaPath} no longer contains "${lastMember}" and "${lastKind}": ` +
        "update the anchors in web/tests/codec/extended-schema.mjs",
    );
  }
  return schema
    .replace(lastMember, `${lastMember}\n    future @32 :Hello;`)
    .replace(lastKind, `${lastKind}\n  bot @2;`);
}

let cached = null;

/** Returns the generated module of the extended schema, with the capnp-es Message class. */
export async function compileExtendedSchema() {
  if (cached !== null) {
    return cached;
  }
  const dir = mkdtempSync(join(tmpdir(), "tidings-extended-"));
  try {
    writeFileSync(join(dir, "frames.capnp"), extend(readFileSync(schemaPath, "utf8")));
    const request = execFileSync("capnp", ["compile", "-o-", "frames.capnp"], {
      cwd: dir,
      env: { ...process.env, PWD: dir },
    });
    // capnp-es type-checks the code it emits and resolves "capnp-es" from the working
    // directory, so compile from web/.
    const previousDir = process.cwd();
    process.chdir(webDir);
    let files;
    try {
      ({ files } = await compileAll(request, { js: true }));
    } finally {
      process.chdir(previousDir);
    }
    const runtime = pathToFileURL(join(webDir, "node_modules", "capnp-es", "dist", "index.mjs"));
    const code = [...files.values()][0].replace('from "capnp-es"', `from "${runtime.href}"`);
    const modulePath = join(dir, "frames_extended.mjs");
    writeFileSync(modulePath, code);
    const generated = await import(pathToFileURL(modulePath).href);
    const { Message } = await import(runtime.href);
    cached = { ...generated, Message };
    return cached;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
