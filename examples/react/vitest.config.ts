import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: {
    alias: {
      // the client shipped inside the Python package: no copy, no build step
      livepanel: fileURLToPath(new URL("../../src/livepanel/static/livepanel.js", import.meta.url)),
    },
  },
  server: { fs: { allow: ["../.."] } },
  test: {
    environment: "jsdom",
    globals: true,
  },
});
