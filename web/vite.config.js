// Builds the dashboard dwcpd embeds (docs/dashboard.md). Everything is bundled: the page
// loads nothing from the network but dwcpd's own API.
import { defineConfig } from 'vite';

// `DWCP_API=http://127.0.0.1:8080 npm run dev` serves the page with hot reload and sends its
// API calls to that node.
const api = process.env.DWCP_API || 'http://127.0.0.1:8080';

export default defineConfig({
  base: '/',
  server: {
    host: '127.0.0.1',
    proxy: { '/api': api, '/metrics': api },
  },
  build: {
    // CMake passes --outDir <build>/web/dist; `npm run build` alone writes web/dist.
    outDir: 'dist',
    assetsDir: 'assets',
    // One script and one stylesheet: fewer files to embed, nothing inlined as data: URLs.
    assetsInlineLimit: 0,
    cssCodeSplit: false,
    sourcemap: false,
    target: 'es2020',
    reportCompressedSize: false,
  },
});
