// Preloaded with `node --import` by test/integration/unit-flags.test.ts: records every module the
// process loads (ESM and CommonJS, through Node's in-thread module hooks) and, as it exits, writes
// their URLs and Node's own list of the built-in modules it loaded to the file named by
// RECORD_MODULES_TO, one JSON object.
import { writeFileSync } from 'node:fs';
import { registerHooks } from 'node:module';

const out = process.env.RECORD_MODULES_TO;
if (!out) throw new Error('record-modules.mjs: RECORD_MODULES_TO is not set');
const urls = new Set();
registerHooks({
  load(url, context, next) {
    urls.add(url);
    return next(url, context);
  },
});
process.on('exit', () => writeFileSync(out, JSON.stringify({ urls: [...urls], builtins: process.moduleLoadList })));
