// Parse an AsyncAPI document (a file, or stdin) with the official parser and print its
// diagnostics as JSON: [{severity, code, message, path}], severity 0 being an error.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const source = readFileSync(process.argv[2] ?? 0, "utf8");
const parser = new Parser();
const { document, diagnostics } = await parser.parse(source);
const report = diagnostics.map((d) => ({
  severity: d.severity,
  code: d.code,
  message: d.message,
  path: d.path,
}));
process.stdout.write(
  JSON.stringify({
    parsed: document !== undefined,
    diagnostics: report,
    messages: document ? document.messages().all().map((m) => m.id()) : [],
    operations: document ? document.operations().all().map((o) => o.id()) : [],
    servers: document ? document.servers().all().map((s) => s.id()) : [],
  }) + "\n",
);
