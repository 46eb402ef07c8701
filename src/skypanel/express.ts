import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

/** express.json()'s default limit. */
export const BODY_LIMIT_BYTES = 100 * 1024;

export type BodyResult =
  | { kind: 'none' } // not JSON, or no body at all: the handler sees `{}`
  | { kind: 'json'; value: unknown }
  | { kind: 'too-large' }
  | { kind: 'malformed' }
  | { kind: 'unsupported' } // a charset or content-encoding body-parser would refuse
  | { kind: 'aborted' };

/** Media type of a Content-Type header, lower-cased, parameters dropped. */
function mediaType(contentType: string | undefined): { type: string; charset: string | undefined } {
  const [type = '', ...params] = (contentType ?? '').split(';');
  let charset: string | undefined;
  for (const param of params) {
    const eq = param.indexOf('=');
    if (eq !== -1 && param.slice(0, eq).trim().toLowerCase() === 'charset') {
      charset = param
        .slice(eq + 1)
        .trim()
        .replace(/^"(.*)"$/, '$1')
        .toLowerCase();
    }
  }
  return { type: type.trim().toLowerCase(), charset };
}

/**
 * express.json() semantics: only application/json bodies are read; an empty body is `{}`;
 * strict mode, so the text must start with `{` or `[`; a BOM is tolerated.
 */
export function readJsonBody(req: IncomingMessage, limit: number = BODY_LIMIT_BYTES): Promise<BodyResult> {
  const { type, charset } = mediaType(req.headers['content-type']);
  const hasBody = req.headers['transfer-encoding'] !== undefined || req.headers['content-length'] !== undefined;
  if (type !== 'application/json' || !hasBody) return Promise.resolve({ kind: 'none' });
  const encoding = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
  if ((charset !== undefined && charset !== 'utf-8') || encoding !== 'identity') {
    return Promise.resolve({ kind: 'unsupported' });
  }
  // Refuse before reading when the declared size is already too big, as raw-body does; node
  // drains the rest of the body after the response so the connection stays usable.
  if (Number(req.headers['content-length']) > limit) return Promise.resolve({ kind: 'too-large' });

  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (result: BodyResult): void => {
      if (settled) return;
      settled = true;
      chunks.length = 0;
      resolve(result);
    };
    req.on('data', (chunk: Buffer) => {
      if (settled) return;
      size += chunk.length;
      if (size > limit) settle({ kind: 'too-large' });
      else chunks.push(chunk);
    });
    req.on('end', () => settle(parseStrictJson(Buffer.concat(chunks))));
    req.on('aborted', () => settle({ kind: 'aborted' }));
    req.on('error', () => settle({ kind: 'aborted' }));
    req.on('close', () => settle({ kind: 'aborted' }));
  });
}

function parseStrictJson(raw: Buffer): BodyResult {
  if (raw.length === 0) return { kind: 'json', value: {} };
  // TextDecoder drops a leading BOM and replaces invalid UTF-8, as iconv-lite does for body-parser.
  const text = new TextDecoder('utf-8').decode(raw);
  const first = /^[\x20\x09\x0a\x0d]*(.)/s.exec(text)?.[1];
  if (first !== '{' && first !== '[') return { kind: 'malformed' };
  try {
    return { kind: 'json', value: JSON.parse(text) as unknown };
  } catch {
    return { kind: 'malformed' };
  }
}

/** Express's default weak ETag (the `etag` package): length and truncated SHA-1. */
function weakEtag(body: Buffer): string {
  const hash = createHash('sha1').update(body).digest('base64').slice(0, 27);
  return `W/"${body.length.toString(16)}-${hash}"`;
}

/** res.status(n).json(body) as Express sends it. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  send(res, status, Buffer.from(JSON.stringify(body), 'utf8'), 'application/json; charset=utf-8', headers);
}

export function send(res: ServerResponse, status: number, body: Buffer, contentType: string, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  res.statusCode = status;
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  res.setHeader('Content-Type', contentType);
  res.setHeader('Content-Length', body.length);
  res.setHeader('ETag', weakEtag(body));
  res.end(body);
}

/** The path Express routes on: the raw request-target up to `?` or `#`, never normalised. */
export function requestPath(url: string | undefined): string {
  const target = url ?? '/';
  if (!target.startsWith('/')) {
    try {
      return new URL(target).pathname; // absolute-form, as sent to proxies
    } catch {
      return target; // '*' for OPTIONS, or junk
    }
  }
  const end = target.search(/[?#]/);
  return end === -1 ? target : target.slice(0, end);
}
