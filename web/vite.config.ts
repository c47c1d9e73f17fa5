import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";
import { defineConfig, type Plugin } from "vite";

// The overview (the first page) draws its chart with Chart.js, kept in its own chunk so the main
// script stays small; a modulepreload link lets the browser fetch that chunk alongside the main
// script instead of after it has run (docs/dashboard.md).
function preloadOverviewChart(): Plugin {
  return {
    name: "penguinmails-preload-overview-chart",
    apply: "build",
    transformIndexHtml: {
      order: "post",
      handler(_html, ctx) {
        const chunk = Object.values(ctx.bundle ?? {}).find(
          (c) => c.type === "chunk" && c.name === "DeliveriesChart",
        );
        if (!chunk) return [];
        return [{ tag: "link", attrs: { rel: "modulepreload", crossorigin: true, href: `/${chunk.fileName}` }, injectTo: "head" }];
      },
    },
  };
}

// The API serves the build at / (same origin as /v1), so every path is absolute from /.
// `npm run dev` proxies /v1 to a local API (PM_API_URL, default the `make run` port).
export default defineConfig({
  plugins: [react(), tailwindcss(), preloadOverviewChart()],
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 800 },
  server: { proxy: { "/v1": process.env.PM_API_URL ?? "http://127.0.0.1:8000" } },
});
