/**
 * node:http and node:https for the agent's modules. An ESM `import ... from 'node:http'` makes Node
 * build the module's ESM facade, which reads every export once, including the lazy `WebSocket`
 * getter: that loads Node's bundled undici with web streams, http2, zlib, worker_threads and more,
 * about 11 MiB of RSS on Node 24 for a client the agent never uses. getBuiltinModule returns the
 * same module objects without a facade, so nothing is read that the agent does not use.
 * test/integration/run-module-graph.test.ts fails if undici is loaded again.
 */
export const http = process.getBuiltinModule('node:http');
export const https = process.getBuiltinModule('node:https');
