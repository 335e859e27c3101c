// Generates web/static/codec/frames_capnp.js from schema/capnp/frames.capnp.
//
// The output is one self-contained ES module: the classes that capnp-es generates from the
// schema, the capnp-es runtime they import (bundled by esbuild), and `frameSchema`, a table
// of every struct, union and enum read from the same CodeGeneratorRequest. frames.js walks
// that table and calls the generated accessors, so no field list is kept by hand.
//
// Usage: node codegen/generate.mjs [--check] [--output=PATH]
//   --check        regenerates in memory and exits 1 when the committed file differs.
//   --output=PATH  writes or checks PATH instead of web/static/codec/frames_capnp.js.

import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import * as $ from "capnp-es";
import { CodeGeneratorRequest, Field, Node, Type } from "capnp-es/capnp/schema";
import { compileAll } from "capnp-es/compiler";
import { build } from "esbuild";

const webDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const repoDir = join(webDir, "..");
const schemaDir = join(repoDir, "schema", "capnp");
const schemaFile = "frames.capnp";
const rootStruct = "Frame";
const committedFile = join(webDir, "static", "codec", "frames_capnp.js");

const REGENERATE = "npm --prefix web run codec";

// Scalar kinds that frames.js maps. Any other kind in the schema stops generation, so the
// browser codec cannot silently drop a new kind of field.
const SCALAR_KINDS = new Map([
  [Type.VOID, "void"],
  [Type.BOOL, "bool"],
  [Type.INT8, "int8"],
  [Type.INT16, "int16"],
  [Type.INT32, "int32"],
  [Type.INT64, "int64"],
  [Type.UINT8, "uint8"],
  [Type.UINT16, "uint16"],
  [Type.UINT32, "uint32"],
  [Type.UINT64, "uint64"],
  [Type.FLOAT32, "float32"],
  [Type.FLOAT64, "float64"],
  [Type.TEXT, "text"],
  [Type.DATA, "data"],
]);

function compileRequest() {
  try {
    return execFileSync("capnp", ["compile", "-o-", schemaFile], {
      cwd: schemaDir,
      // capnp warns when PWD disagrees with the working directory.
      env: { ...process.env, PWD: schemaDir },
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (error) {
    throw new Error(
      `capnp compile failed on ${join(schemaDir, schemaFile)}: ${error.message}. ` +
        "Install the Cap'n Proto compiler (Debian package capnproto) and fix the schema.",
    );
  }
}

function hexId(id) {
  return id.toString(16).padStart(16, "0");
}

function describeType(type, where) {
  const which = type.which();
  if (SCALAR_KINDS.has(which)) {
    return { kind: SCALAR_KINDS.get(which) };
  }
  if (which === Type.ENUM) {
    return { kind: "enum", id: hexId(type.enum.typeId) };
  }
  if (which === Type.STRUCT) {
    return { kind: "struct", id: hexId(type.struct.typeId) };
  }
  if (which === Type.LIST) {
    const element = describeType(type.list.elementType, where);
    if (["list", "void", "data"].includes(element.kind)) {
      throw new Error(`${where}: lists of ${element.kind} are not mapped by frames.js`);
    }
    return { kind: "list", element };
  }
  throw new Error(`${where}: field type ${which} (interface or AnyPointer) is not mapped`);
}

function describeField(field, structName) {
  const where = `${structName}.${field.name}`;
  const entry = { name: field.name };
  if (field.discriminantValue !== Field.NO_DISCRIMINANT) {
    entry.discriminant = field.discriminantValue;
  }
  if (field._isGroup) {
    entry.type = { kind: "group", id: hexId(field.group.typeId) };
  } else {
    entry.type = describeType(field.slot.type, where);
  }
  return entry;
}

// Reads every struct and enum of the requested file, with groups, into plain data.
function describeSchema(request) {
  const structs = {};
  const enums = {};
  let root = null;

  for (const node of request.nodes) {
    const id = hexId(node.id);
    const name = node.displayName.slice(node.displayNamePrefixLength);
    if (node.which() === Node.STRUCT) {
      const fields = node.struct.fields.map((field) => describeField(field, name));
      const isGroup = node.struct.isGroup;
      structs[id] = { name, isGroup, unionSize: node.struct.discriminantCount, fields };
      if (name === rootStruct && !node.struct.isGroup) {
        root = id;
      }
    } else if (node.which() === Node.ENUM) {
      enums[id] = { name, values: node.enum.enumerants.map((enumerant) => enumerant.name) };
    }
  }

  if (root === null) {
    throw new Error(`struct ${rootStruct} not found in ${schemaFile}`);
  }
  return { root, structs, enums };
}

async function generate() {
  const requestBytes = compileRequest();
  const message = new $.Message(requestBytes, false);
  const schema = describeSchema(message.getRoot(CodeGeneratorRequest));

  const { files } = await compileAll(requestBytes, { js: true });
  if (files.size !== 1) {
    throw new Error(`capnp-es produced ${files.size} files for ${schemaFile}, expected 1`);
  }
  const [generatedCode] = files.values();

  // frames.js needs the same runtime copy as the generated classes, so the bundle
  // re-exports the runtime Message class with them, as CapnpMessage because the schema
  // has a struct named Message.
  const source =
    generatedCode +
    '\nexport { Message as CapnpMessage } from "capnp-es";\n' +
    "\n// Every struct, union and enum of the schema, for frames.js.\n" +
    `export const frameSchema = ${JSON.stringify(schema, null, 2)};\n`;

  const result = await build({
    stdin: { contents: source, resolveDir: webDir, sourcefile: "frames_capnp.generated.js" },
    absWorkingDir: webDir,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    legalComments: "inline",
    write: false,
    banner: {
      js:
        `// Generated from schema/capnp/${schemaFile} by capnp-es and esbuild. Do not edit: ` +
        `run \`${REGENERATE}\`.`,
    },
  });
  return result.outputFiles[0].contents;
}

async function main() {
  const check = process.argv.includes("--check");
  const outputOption = process.argv.find((arg) => arg.startsWith("--output="));
  const outputFile = outputOption ? resolve(outputOption.slice("--output=".length)) : committedFile;
  // capnp-es type-checks the code it emits and resolves "capnp-es" from the working
  // directory, so generation must run in web/ wherever it is started from.
  process.chdir(webDir);
  const bytes = await generate();
  const shown = relative(repoDir, outputFile);

  if (!check) {
    writeFileSync(outputFile, bytes);
    console.log(`wrote ${shown} (${bytes.length} bytes)`);
    return;
  }

  if (!existsSync(outputFile)) {
    console.error(`${shown} is missing. Generate it with \`${REGENERATE}\`.`);
    process.exit(1);
  }
  const committed = readFileSync(outputFile);
  if (!committed.equals(Buffer.from(bytes))) {
    console.error(
      `${shown} is stale: it differs from what schema/capnp/${schemaFile} generates. ` +
        `Regenerate it with \`${REGENERATE}\` and commit the result.`,
    );
    process.exit(1);
  }
  console.log(`${shown} is up to date`);
}

main().catch((error) => {
  console.error(`codec generation failed: ${error.message}`);
  process.exit(1);
});
