import type { Database, Queryable } from './db.js';
import { SKYPANEL_BASE_SQL } from './schema/base.js';
import { CONTAINER_PLATFORM_SQL } from './schema/container-platform.js';

/**
 * PostgreSQL without a server, for `dev`: PGlite (PostgreSQL compiled to WebAssembly) in this
 * process, with the two extensions SkyPanelV2's migrations create. It is loaded with import() only
 * here, so nothing the agent's `run` reaches pulls WebAssembly in: the unit runs node with
 * --jitless --no-expose-wasm, under which PGlite cannot load at all.
 */

export interface EmbeddedDatabase extends Database {
  /** Where the data lives: a directory, or `memory://` when nothing is kept. */
  readonly location: string;
  close(): Promise<void>;
}

interface PGliteLike extends Queryable {
  exec(sql: string): Promise<unknown>;
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/**
 * Opens (and on first use creates) an embedded database holding SkyPanelV2's container-platform
 * tables and the minimal users/organizations they reference. `dataDir` keeps it across runs;
 * without one it lives in memory and is gone when the process ends.
 */
export async function openEmbeddedDatabase(dataDir?: string): Promise<EmbeddedDatabase> {
  const [{ PGlite }, { uuid_ossp }, { pgcrypto }] = await Promise.all([
    import('@electric-sql/pglite'),
    import('@electric-sql/pglite/contrib/uuid_ossp'),
    import('@electric-sql/pglite/contrib/pgcrypto'),
  ]);
  const location = dataDir ?? 'memory://';
  const pglite = (await PGlite.create(location, { extensions: { uuid_ossp, pgcrypto } })) as unknown as PGliteLike;
  try {
    await ensureSchema(pglite);
  } catch (err) {
    await pglite.close().catch(() => undefined);
    throw err;
  }
  return {
    location,
    query: (text, params) => pglite.query(text, params),
    // PGlite is one connection: its transaction() serialises with every other query, which is
    // what a single dev panel needs.
    transaction: (fn) => pglite.transaction((tx) => fn(tx)),
    close: () => pglite.close(),
  };
}

/**
 * Creates the tables unless a previous run (or SkyPanelV2's own migrations, on a real database
 * handed to `dev --database-url`) already did. The base slice is for dev and tests only: it must
 * never run against a SkyPanelV2 database, whose users/organizations have many more columns.
 */
export async function ensureSchema(db: Queryable & { exec?(sql: string): Promise<unknown> }): Promise<'created' | 'present'> {
  const { rows } = await db.query<{ present: boolean }>(`SELECT to_regclass('public.container_workers') IS NOT NULL AS present`);
  if (rows[0]?.present === true) return 'present';
  // Multi-statement text: PGlite takes it through exec(); node-postgres through a simple query.
  const run = db.exec ? (sql: string) => db.exec!(sql) : (sql: string) => db.query(sql);
  await run(SKYPANEL_BASE_SQL);
  await run(CONTAINER_PLATFORM_SQL);
  return 'created';
}
