import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decryptSecret, encryptSecret, SecretDecryptError, secretKey } from '../../src/panel/crypto.js';

/** container_secrets.encrypted_value exactly as SkyPanelV2's api/lib/crypto.ts writes and reads it. */

const SSH = 'ssh-cred-secret-of-at-least-16';

/** The stored format, built by hand: base64 of JSON {iv, tag, ciphertext}, AES-256-GCM, key sha256(secret). */
function skypanelEncrypt(plaintext: string, keySeed: string): string {
  const key = createHash('sha256').update(keySeed).digest();
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  const ct = Buffer.concat([c.update(plaintext, 'utf8'), c.final()]);
  return Buffer.from(
    JSON.stringify({ iv: iv.toString('base64'), tag: c.getAuthTag().toString('base64'), ciphertext: ct.toString('base64') }),
  ).toString('base64');
}

describe('SkyPanelV2 secret format', () => {
  const key = secretKey({ sshCredSecret: SSH, jwtSecret: 'jwt' });

  it('decrypts what SkyPanelV2 encrypts, and encrypts what it can decrypt', () => {
    expect(decryptSecret(skypanelEncrypt('pä$$wörd', SSH), key)).toBe('pä$$wörd');
    expect(decryptSecret(encryptSecret('round trip', key), key)).toBe('round trip');
  });

  it('legacy plaintext comes back as stored: not base64 JSON, or JSON without the three fields', () => {
    expect(decryptSecret('plain-old-password', key)).toBe('plain-old-password');
    const jsonWithoutFields = Buffer.from(JSON.stringify({ iv: 'x' })).toString('base64');
    expect(decryptSecret(jsonWithoutFields, key)).toBe(jsonWithoutFields);
  });

  it('a payload under another key is an error that does not carry the value', () => {
    const other = skypanelEncrypt('do-not-leak-me', 'a-completely-different-secret');
    expect(() => decryptSecret(other, key)).toThrow(SecretDecryptError);
    try {
      decryptSecret(other, key);
    } catch (err) {
      expect(String((err as Error).message)).not.toContain('do-not-leak-me');
    }
  });

  it("SSH_CRED_SECRET unset or under 16 characters: SkyPanelV2's key derived from JWT_SECRET", () => {
    const fallback = secretKey({ sshCredSecret: 'short', jwtSecret: 'my-jwt' });
    expect(decryptSecret(skypanelEncrypt('v', 'my-jwt'.padEnd(32, '0')), fallback)).toBe('v');
    const dev = secretKey({ sshCredSecret: undefined, jwtSecret: undefined });
    expect(decryptSecret(skypanelEncrypt('d', 'skypanelv2-dev-secret'.padEnd(32, '0')), dev)).toBe('d');
  });
});
