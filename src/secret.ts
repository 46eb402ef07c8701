import { inspect } from 'node:util';

export const REDACTED = '[redacted]';

/**
 * Holds a secret value (worker token, registry password, secret data) so that it cannot reach a
 * log line, an error message or a JSON body by accident: string conversion, JSON and
 * util.inspect all print `[redacted]`. Call `reveal()` only at the point of use (an HTTP header).
 */
export class Secret {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  get length(): number {
    return this.#value.length;
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return REDACTED;
  }
}

/**
 * Shorter values are not searched for: "true" or "1234" cannot be told apart from ordinary words
 * and numbers, and replacing them would corrupt every body and log line.
 */
export const MIN_REDACTABLE_LENGTH = 6;

export type SecretLike = string | Secret;

/** Spellings per value, memoised: a log line or body is checked against every secret held. */
const spellingCache = new Map<string, readonly string[]>();
const SPELLING_CACHE_MAX = 4096;

/**
 * Every way a value can appear in text we emit: as written; JSON-escaped (a body, a log line, a
 * Go-quoted Docker error); and base64 (X-Registry-Auth, a Swarm secret's data, an echoed header).
 * Inside a longer base64 text the value's characters depend on its offset modulo 3, so the part
 * of each of the three encodings that no neighbouring byte touches is searched for, in the
 * standard and the URL alphabet. Longest first, so a spelling containing another is cut whole.
 */
export function spellings(value: string): readonly string[] {
  const cached = spellingCache.get(value);
  if (cached) return cached;
  const forms = new Set<string>([value, JSON.stringify(value).slice(1, -1)]);
  const bytes = Buffer.from(value, 'utf8');
  for (const k of [0, 1, 2]) {
    const b64 = Buffer.concat([Buffer.alloc(k), bytes]).toString('base64');
    if (k === 0) forms.add(b64);
    // Characters [ceil(8k/6), floor(8(k+n)/6)) carry only the value's own bits.
    const core = b64.slice(Math.ceil((8 * k) / 6), Math.floor((8 * (k + bytes.length)) / 6));
    if (core.length >= MIN_REDACTABLE_LENGTH) {
      forms.add(core);
      forms.add(core.replace(/\+/g, '-').replace(/\//g, '_'));
    }
  }
  const sorted = [...forms].sort((a, b) => b.length - a.length);
  if (spellingCache.size >= SPELLING_CACHE_MAX) spellingCache.clear();
  spellingCache.set(value, sorted);
  return sorted;
}

/**
 * THE redaction rule, used by every output path (logs, reports to the panel, status API bodies,
 * error messages): each secret value of at least MIN_REDACTABLE_LENGTH characters is replaced in
 * every spelling (see `spellings`). `maxLength` cuts the result AFTER redacting, so a cut can
 * never leave the head of a secret behind (cutting first would turn "…<token>" into "…<token
 * minus its last character>", which no longer matches).
 */
export function redact(text: string, secrets: Iterable<SecretLike>, opts: { maxLength?: number } = {}): string {
  let out = text;
  const forms: string[] = [];
  for (const s of secrets) {
    const value = typeof s === 'string' ? s : s.reveal();
    if (value.length < MIN_REDACTABLE_LENGTH) continue;
    // A cheap pre-check per form; most texts hold no secret at all.
    for (const f of spellings(value)) if (out.includes(f)) forms.push(f);
  }
  if (forms.length > 0) {
    forms.sort((a, b) => b.length - a.length);
    for (const f of forms) out = out.split(f).join(REDACTED);
  }
  return opts.maxLength !== undefined && out.length > opts.maxLength ? out.slice(0, opts.maxLength) : out;
}

/**
 * `redact` inside a JSON-safe value before it is serialised, so the JSON stays valid: strings and
 * keys are redacted; a number or boolean whose text is a secret becomes `[redacted]`.
 */
export function redactDeep(v: unknown, secrets: readonly SecretLike[]): unknown {
  if (typeof v === 'string') return redact(v, secrets);
  if (typeof v === 'number' || typeof v === 'boolean') {
    const s = String(v);
    return redact(s, secrets) === s ? v : REDACTED;
  }
  if (Array.isArray(v)) return v.map((x) => redactDeep(x, secrets));
  if (v !== null && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) o[redact(k, secrets)] = redactDeep(x, secrets);
    return o;
  }
  return v;
}

/**
 * The secret values this process holds right now, from every part that holds some (the worker
 * token, the deployments' secret values). The logger and the status API read it at output time,
 * so a value learnt later (a new deployment) is redacted from then on.
 */
export class KnownSecrets {
  readonly #sources = new Set<() => Iterable<SecretLike>>();

  /** Adds a source; returns a function that removes it again. */
  add(source: (() => Iterable<SecretLike>) | SecretLike): () => void {
    const fn = typeof source === 'function' ? source : () => [source];
    this.#sources.add(fn);
    return () => void this.#sources.delete(fn);
  }

  values(): SecretLike[] {
    const out: SecretLike[] = [];
    for (const source of this.#sources) {
      try {
        for (const v of source()) out.push(v);
      } catch {
        // A failing source must not stop the others' values from being redacted.
      }
    }
    return out;
  }
}
