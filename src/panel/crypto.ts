import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/**
 * `container_secrets.encrypted_value` as SkyPanelV2's api/lib/crypto.ts writes it: AES-256-GCM
 * with a 12-byte IV, key = SHA-256 of SSH_CRED_SECRET, stored as base64 of the JSON
 * `{"iv","tag","ciphertext"}` (each base64). Values written before encryption existed are
 * plaintext, and SkyPanelV2 hands them out as they are; so does this module, with the same tests
 * for "not an encrypted payload". A real payload that fails to decrypt is an error (wrong key).
 */

export interface SecretKeys {
  sshCredSecret: string | undefined;
  jwtSecret: string | undefined;
}

/**
 * SkyPanelV2's key rule, fallback included: with SSH_CRED_SECRET unset or shorter than 16
 * characters it derives a development key from JWT_SECRET, so rows written by such an
 * installation decrypt here too.
 */
export function secretKey(keys: SecretKeys): Buffer {
  const raw = keys.sshCredSecret ?? '';
  const seed = raw.length >= 16 ? raw : (keys.jwtSecret || 'skypanelv2-dev-secret').padEnd(32, '0');
  return createHash('sha256').update(seed).digest();
}

export function encryptSecret(plaintext: string, key: Buffer): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  const payload = { iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), ciphertext: ciphertext.toString('base64') };
  return Buffer.from(JSON.stringify(payload), 'utf8').toString('base64');
}

export class SecretDecryptError extends Error {
  override readonly name = 'SecretDecryptError';
}

function stringField(value: unknown, key: string): string | undefined {
  const v = value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[key] : undefined;
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** The plaintext of a stored value; throws SecretDecryptError (never with the value) on a wrong key. */
export function decryptSecret(encoded: string, key: Buffer): string {
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8'));
  } catch {
    return encoded; // legacy plaintext: not base64 of JSON
  }
  const iv = stringField(payload, 'iv');
  const tag = stringField(payload, 'tag');
  const ciphertext = stringField(payload, 'ciphertext');
  if (iv === undefined || tag === undefined || ciphertext === undefined) return encoded; // legacy plaintext
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64'));
    decipher.setAuthTag(Buffer.from(tag, 'base64'));
    return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64')), decipher.final()]).toString('utf8');
  } catch {
    throw new SecretDecryptError('cannot decrypt: SSH_CRED_SECRET differs from the key the value was encrypted with');
  }
}
