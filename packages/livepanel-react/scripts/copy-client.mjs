// The browser client is shipped inside the Python package; the npm package carries the same
// file, copied at build time (never edited here), beside the hooks that import it.
import { copyFileSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

const from = new URL("../../../src/livepanel/static/", import.meta.url);
for (const folder of ["../src/", "../dist/"]) {
  const to = new URL(folder, import.meta.url);
  mkdirSync(to, { recursive: true });
  for (const name of ["livepanel.js", "livepanel.d.ts"]) {
    copyFileSync(fileURLToPath(new URL(name, from)), fileURLToPath(new URL(name, to)));
  }
}
