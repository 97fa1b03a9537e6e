import { defineConfig } from "vitest/config";

// The console is served by flowd at / (assets under /assets/, content-hashed), embedded in the
// binary from dist/. `npm run dev` proxies the API to a running `flowd dev`.
export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 600,
    rollupOptions: {
      // Libraries mark modules "use client" for server-rendering frameworks; it means nothing here.
      onwarn(warning, warn) {
        if (warning.code === "MODULE_LEVEL_DIRECTIVE") return;
        warn(warning);
      },
    },
  },
  server: {
    proxy: {
      "/api": process.env.FLOWD_URL ?? "http://127.0.0.1:8080",
      "/hooks": process.env.FLOWD_URL ?? "http://127.0.0.1:8080",
    },
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
