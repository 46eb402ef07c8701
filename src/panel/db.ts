/**
 * The least the panel needs from a PostgreSQL driver, so one implementation runs on SkyPanelV2's
 * `pg.Pool`, on a standalone pool, and on an embedded PGlite. Only `rows` is read from a result
 * (statements that change rows say RETURNING), because drivers disagree on row counts.
 */
export interface Queryable {
  query<R extends object = Record<string, unknown>>(text: string, params?: unknown[]): Promise<{ rows: R[] }>;
}

export interface Database extends Queryable {
  /** Runs `fn` in one transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
}

/** What `pg.Pool` offers (structurally, so this module needs no import of pg). */
export interface PgPoolLike extends Queryable {
  connect(): Promise<PgClientLike>;
}

export interface PgClientLike extends Queryable {
  release(err?: Error | boolean): void;
}

/** A Database over a node-postgres pool: each transaction checks out one client. */
export function pgPoolDatabase(pool: PgPoolLike): Database {
  return {
    query: (text, params) => pool.query(text, params),
    async transaction(fn) {
      const client = await pool.connect();
      let broken: Error | undefined;
      try {
        await client.query('BEGIN');
        const result = await fn(client);
        await client.query('COMMIT');
        return result;
      } catch (err) {
        try {
          await client.query('ROLLBACK');
        } catch (rollbackErr) {
          // A client that cannot roll back is in an unknown state: the pool must drop it, not reuse it.
          broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
        }
        throw err;
      } finally {
        client.release(broken);
      }
    },
  };
}

/** Postgres error codes the panel tells apart (node-postgres and PGlite both set `code`). */
export function pgErrorCode(err: unknown): string | undefined {
  const code = err !== null && typeof err === 'object' ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : undefined;
}

/** timestamptz arrives as a Date from node-postgres and PGlite, as text from a driver without type parsers. */
export function toDate(value: unknown): Date | null {
  if (value === null || value === undefined) return null;
  const d = value instanceof Date ? value : new Date(String(value));
  return Number.isNaN(d.getTime()) ? null : d;
}

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
