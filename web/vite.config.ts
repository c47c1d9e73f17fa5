import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";
import { defineConfig } from "vite";

// The API serves the build at / (same origin as /v1), so every path is absolute from /.
// `npm run dev` proxies /v1 to a local API (PM_API_URL, default the `make run` port).
export default defineConfig({
  plugins: [react(), tailwindcss()],
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 800 },
  server: { proxy: { "/v1": process.env.PM_API_URL ?? "http://127.0.0.1:8000" } },
});
