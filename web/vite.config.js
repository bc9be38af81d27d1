// Builds the demo page that `switchboard serve --dev` serves at `/`.
//
// The output is committed and embedded in the server binary with include_bytes!,
// so the build must produce exactly three files with fixed names, and the same
// sources and lockfile must always give byte-identical files (CI rebuilds and
// runs `git diff --exit-code web/dist`):
//
//   dist/index.html   dist/assets/app.js   dist/assets/app.css
//
// Hence: no content hashes, one chunk (no code splitting), every asset inlined
// (the favicon is a data: URL in index.html), no public/ directory, no source maps.
//
// `npm run dev` serves the page with hot reload and proxies the server's
// routes to a running `switchboard serve --dev` (SWITCHBOARD_URL, default
// http://127.0.0.1:3000).

import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

const target = process.env.SWITCHBOARD_URL ?? "http://127.0.0.1:3000";

export default defineConfig({
  plugins: [react()],
  publicDir: false,
  server: {
    proxy: {
      "/api": { target, changeOrigin: true },
      "/socket.io": { target, ws: true, changeOrigin: true },
      "/collab": { target, ws: true, changeOrigin: true },
    },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    // Everything an import pulls in (there is nothing today) becomes a data: URL.
    assetsInlineLimit: 100_000_000,
    cssCodeSplit: false,
    // One chunk: the preload polyfill would only add bytes.
    modulePreload: { polyfill: false },
    sourcemap: false,
    reportCompressedSize: true,
    rolldownOptions: {
      output: {
        entryFileNames: "assets/app.js",
        chunkFileNames: "assets/app.js",
        // Only the one CSS file can be emitted (everything else is inlined);
        // anything unexpected would fail the embed, so name it loudly.
        assetFileNames: (asset) =>
          asset.names.some((name) => name.endsWith(".css")) ? "assets/app.css" : "assets/unexpected-[name][extname]",
        // Rolldown's spelling of Rollup's `inlineDynamicImports: true`: a single chunk.
        codeSplitting: false,
      },
    },
  },
});
