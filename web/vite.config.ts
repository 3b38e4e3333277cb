import { defineConfig } from "vite";

// The gateway serves the built files; `npm run dev` proxies the API to a
// gateway on :8080.
export default defineConfig({
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true },
  server: { proxy: { "/spamscope.v1.Gateway": "http://127.0.0.1:8080" } },
});
