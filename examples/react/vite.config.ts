import { defineConfig } from "vite";

// `npm run build`: the ClawPanel dashboard into dist/, served beside the livepanel endpoint
export default defineConfig({
  esbuild: { jsx: "automatic" },
  build: { outDir: "dist", emptyOutDir: true },
});
