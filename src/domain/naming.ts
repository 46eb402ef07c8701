import { createHash } from 'node:crypto';
import type { Secret } from '../secret.js';

/**
 * Names of the Swarm objects the agent creates. They are deterministic (same input, same name, on
 * any node and after any restart) and DNS-safe, but they are never used to decide ownership:
 * that is what labels are for (see labels.ts). The hash suffix keeps two slugs that sanitise to
 * the same text (or are cut at the same length) from colliding.
 */

const DNS_LABEL_MAX = 63;

function sha256Hex(data: string): string {
  return createHash('sha256').update(data, 'utf8').digest('hex');
}

/**
 * Lowercase `[a-z0-9-]`, no leading/trailing/double '-'. Accents fold to their base letter
 * ("Café" → "cafe") so common Latin names stay readable; anything else becomes '-'.
 */
export function sanitizeDnsPart(input: string, maxLength: number): string {
  const folded = input.normalize('NFKD').replace(/\p{M}/gu, '').toLowerCase();
  const dashed = folded.replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  return dashed.slice(0, maxLength).replace(/-+$/, '');
}

/**
 * `sp-<slug>-<8 hex of sha256(serviceId)>`, at most 63 characters. Keyed on serviceId, not the
 * deployment id, because one Swarm service lives across all deployments of a service; a slug
 * rename therefore changes the name, which is why the agent looks services up by label.
 */
export function serviceName(d: { slug: string; serviceId: string }): string {
  const suffix = sha256Hex(d.serviceId).slice(0, 8);
  const room = DNS_LABEL_MAX - 'sp-'.length - '-'.length - suffix.length;
  const slug = sanitizeDnsPart(d.slug, room);
  return slug === '' ? `sp-${suffix}` : `sp-${slug}-${suffix}`;
}

/** One overlay network per organization: tenants share nothing at layer 3. */
export function networkName(organizationId: string): string {
  return `sp-org-${sha256Hex(organizationId).slice(0, 12)}`;
}

/**
 * `sp-<name ≤ 40>-<16 hex>`, at most 60 characters (Swarm allows 64). Swarm secrets are
 * immutable, so the name is derived from the content: a new value means a new secret and a service
 * update, never an in-place edit. The hash also covers the owning serviceId, so two services (or
 * two tenants) holding the same value never share one Swarm object, and removing one service's
 * secrets can never pull a secret from under another. NUL cannot occur in any of the three parts
 * (the schema forbids it in names and ids), so it is an unambiguous separator.
 *
 * Note: the name is a hash of the value; anyone able to list Swarm secrets could test guesses of
 * a weak value against it. Mixing in a per-worker key (HMAC) would close that; see the report.
 */
export function secretName(secret: { name: string; value: Secret }, serviceId: string): string {
  const digest = sha256Hex(`${serviceId}\0${secret.name}\0${secret.value.reveal()}`).slice(0, 16);
  const name = sanitizeDnsPart(secret.name, 40);
  return name === '' ? `sp-${digest}` : `sp-${name}-${digest}`;
}
