// Validate an AsyncAPI document with the AsyncAPI project's parser; exit 1 on any error.
//   node validate.mjs ../../docs/contract/asyncapi.yaml
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const ERROR = 0; // diagnostics severities: 0 error, 1 warning, 2 information, 3 hint
const { document, diagnostics } = await new Parser().parse(readFileSync(process.argv[2], "utf8"));
const errors = diagnostics.filter((d) => d.severity === ERROR);
for (const d of errors) console.error(`${d.code}: ${d.message} at ${d.path.join(".")}`);
if (!document || errors.length) process.exit(1);
console.log(
  JSON.stringify({ channels: document.channels().length, operations: document.operations().length }),
);
