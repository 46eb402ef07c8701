import { describe, expect, it } from 'vitest';
import { LABEL, ownedBy, ownershipFilter } from '../../src/domain/labels.js';
import { networkName, sanitizeDnsPart, secretName, serviceName } from '../../src/domain/naming.js';
import { Secret } from '../../src/secret.js';

const DNS_NAME = /^[a-z][a-z0-9-]*[a-z0-9]$/;

function expectDnsSafe(name: string, max = 63): void {
  expect(name).toMatch(DNS_NAME);
  expect(name.length).toBeLessThanOrEqual(max);
  expect(name).not.toContain('--');
}

describe('serviceName', () => {
  const slugs = [
    'my-app',
    'My App!!',
    'Café 日本語 🚀',
    '日本語',
    '',
    '---',
    '-leading-and-trailing-',
    'a'.repeat(200),
    'é'.repeat(200),
    'x'.repeat(50) + '-' + 'y'.repeat(10),
    '123-numeric-start',
    'tab\there\nnewline\0nul',
    'Ǆemal ﬁne ⅻ',
  ];

  it.each(slugs)('is DNS-safe and at most 63 characters for %j', (slug) => {
    expectDnsSafe(serviceName({ slug, serviceId: 'svc_1' }));
  });

  it('keeps a readable slug and ends with 8 hex of the serviceId', () => {
    expect(serviceName({ slug: 'My App', serviceId: 'svc_1' })).toMatch(/^sp-my-app-[0-9a-f]{8}$/);
    expect(serviceName({ slug: 'Café', serviceId: 'svc_1' })).toMatch(/^sp-cafe-[0-9a-f]{8}$/);
    expect(serviceName({ slug: '日本語', serviceId: 'svc_1' })).toMatch(/^sp-[0-9a-f]{8}$/);
  });

  it('is deterministic and depends on serviceId, not on anything else', () => {
    const a = serviceName({ slug: 'app', serviceId: 's1' });
    expect(serviceName({ slug: 'app', serviceId: 's1' })).toBe(a);
    expect(serviceName({ slug: 'app', serviceId: 's2' })).not.toBe(a);
  });

  it('does not collide for long slugs that share a 51-character prefix', () => {
    const long = 'p'.repeat(60);
    const a = serviceName({ slug: `${long}-a`, serviceId: 'svc_a' });
    const b = serviceName({ slug: `${long}-b`, serviceId: 'svc_b' });
    expect(a).not.toBe(b);
    expect(a.length).toBe(63);
  });

  it('does not end in a dash after truncation', () => {
    // 50 letters then '-': the cut lands right after the dash.
    const name = serviceName({ slug: `${'a'.repeat(50)}-bbbb`, serviceId: 's' });
    expectDnsSafe(name);
    expect(name).toMatch(/^sp-a{50}-[0-9a-f]{8}$/);
  });
});

describe('sanitizeDnsPart', () => {
  it.each([
    ['Hello World', 20, 'hello-world'],
    ['__a__b__', 20, 'a-b'],
    ['abc-def', 4, 'abc'],
    ['ÅÄÖ', 10, 'aao'],
    ['🚀', 10, ''],
  ])('%j (max %i) → %j', (input, max, out) => expect(sanitizeDnsPart(input, max)).toBe(out));
});

describe('networkName', () => {
  it('is sp-org-<12 hex>, deterministic, distinct per organization', () => {
    expect(networkName('org_1')).toMatch(/^sp-org-[0-9a-f]{12}$/);
    expect(networkName('org_1')).toBe(networkName('org_1'));
    expect(networkName('org_1')).not.toBe(networkName('org_2'));
  });
});

describe('secretName', () => {
  const s = (name: string, value: string) => ({ name, value: new Secret(value) });

  it('is sp-<name>-<16 hex>, within the 64-character Swarm limit, never containing the value', () => {
    const name = secretName(s('DB.Password_1', 'hunter2'), 'svc_1');
    expect(name).toMatch(/^sp-db-password-1-[0-9a-f]{16}$/);
    expect(name).not.toContain('hunter2');
    const long = secretName(s('N'.repeat(64), 'v'), 'svc_1');
    expect(long.length).toBeLessThanOrEqual(64);
    expect(long).toMatch(/^sp-n{40}-[0-9a-f]{16}$/);
  });

  it('changes when the value changes (rotation = new immutable secret)', () => {
    expect(secretName(s('k', 'v1'), 'svc')).not.toBe(secretName(s('k', 'v2'), 'svc'));
    expect(secretName(s('k', 'v1'), 'svc')).toBe(secretName(s('k', 'v1'), 'svc'));
  });

  it('is scoped to the service, so two services never share a Swarm secret', () => {
    expect(secretName(s('k', 'v'), 'svc_a')).not.toBe(secretName(s('k', 'v'), 'svc_b'));
  });

  it('does not let name/value boundaries blur', () => {
    expect(secretName(s('ab', 'c'), 'svc')).not.toBe(secretName(s('a', 'bc'), 'svc'));
  });
});

describe('labels', () => {
  const mine = { [LABEL.managed]: 'true', [LABEL.workerId]: 'w1' };

  it('owns only services carrying both the managed marker and this worker id', () => {
    expect(ownedBy(mine, 'w1')).toBe(true);
    expect(ownedBy(mine, 'w2')).toBe(false);
    expect(ownedBy({ [LABEL.workerId]: 'w1' }, 'w1')).toBe(false);
    expect(ownedBy({ [LABEL.managed]: 'false', [LABEL.workerId]: 'w1' }, 'w1')).toBe(false);
    expect(ownedBy({}, 'w1')).toBe(false);
    expect(ownedBy(null, 'w1')).toBe(false);
    expect(ownedBy(undefined, 'w1')).toBe(false);
    expect(ownedBy({ [LABEL.managed]: 'true', [LABEL.workerId]: '' }, '')).toBe(false);
  });

  it('builds the matching Docker label filter', () => {
    expect(ownershipFilter('w1')).toEqual(['skypanel.managed=true', 'skypanel.worker.id=w1']);
  });

  it('keeps the documented label names', () => {
    expect(Object.values(LABEL)).toEqual([
      'skypanel.managed',
      'skypanel.worker.id',
      'skypanel.deployment.id',
      'skypanel.service.id',
      'skypanel.organization.id',
      'skypanel.spec-hash',
    ]);
  });
});
