// Stock SkyPanelV2's worker routes as Express matches them (api/routes/workers.ts mounted under
// app.use('/api/', ...)): what the reference control plane answers, and nothing the panel half needs.

export type Route =
  | { kind: 'register' }
  | { kind: 'heartbeat'; id: string }
  | { kind: 'bad-param' } // Express fails to decodeURIComponent a path parameter
  | { kind: 'none' };

// Express 4 matches case-insensitively and, without strict routing, allows one trailing slash.
const REGISTER = /^\/api\/workers\/register\/?$/i;
const HEARTBEAT = /^\/api\/workers\/([^/]+?)\/heartbeat\/?$/i;

export function matchRoute(method: string | undefined, path: string): Route {
  if (method !== 'POST') return { kind: 'none' };
  if (REGISTER.test(path)) return { kind: 'register' };
  const m = HEARTBEAT.exec(path);
  if (m === null) return { kind: 'none' };
  try {
    return { kind: 'heartbeat', id: decodeURIComponent(m[1] ?? '') };
  } catch {
    return { kind: 'bad-param' };
  }
}

/** Mount check of `app.use('/api/', ...)`: case-insensitive, and `/api` itself is included. */
export function isApiPath(path: string): boolean {
  const lower = path.toLowerCase();
  return lower === '/api' || lower.startsWith('/api/');
}
