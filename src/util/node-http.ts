import type * as Https from 'node:https';

/**
 * node:http and node:https for the agent's modules. An ESM `import ... from 'node:http'` makes Node
 * build the module's ESM facade, which reads every export once, including the lazy `WebSocket`
 * getter: that loads Node's bundled undici with web streams, http2, zlib, worker_threads and more,
 * about 3 MiB of the agent's RSS on Node 24 for a client it never uses. getBuiltinModule returns the
 * same module objects without a facade. test/integration/unit-flags.test.ts fails if undici is
 * loaded again.
 */
export const http = process.getBuiltinModule('node:http');

/**
 * node:https, loaded at its first use: it brings node:tls (about 2.5 MiB of RSS), which the agent
 * needs only for an https control plane, a TLS status API or a remote manager over TLS.
 */
export function https(): typeof Https {
  return process.getBuiltinModule('node:https');
}
