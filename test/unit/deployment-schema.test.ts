import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parsePortRanges } from '../../src/domain/host-ports.js';
import { parseDesiredSet, storableDesiredSet, type Deployment } from '../../src/protocol/deployment.js';
import { isValidImageReference } from '../../src/protocol/image-reference.js';
import { Secret } from '../../src/secret.js';

const SECRET = 'hunter2-S3CRET-value-9f8e7d';
const PASSWORD = 'registry-P4SSW0RD-5a4b3c';

// Raw JSON the tests reach into and mutate at any depth: `unknown` would need a cast per access.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Raw = Record<string, any>;

function base(): Raw {
  return {
    id: 'dep_1',
    serviceId: 'svc_1',
    organizationId: 'org_1',
    slug: 'my-app',
    imageTag: 'nginx:1.27',
    desiredState: 'running',
    replicas: 1,
    environmentVars: { PORT: '8080', NODE_ENV: 'production' },
    resourceLimits: { cpuCores: 0.5, memoryMb: 512, diskGb: 10 },
    internalPort: 8080,
    externalPort: 30080,
    command: ['node', 'server.js'],
    secrets: [{ name: 'db-password', value: SECRET, envVarName: 'DB_PASSWORD' }],
    registryAuth: { serveraddress: 'registry.example.com', username: 'deployer', password: PASSWORD },
  };
}

const body = (...deployments: unknown[]) => ({ success: true, data: { deployments } });

function rejectOne(d: unknown) {
  const r = parseDesiredSet(body(d));
  if (!r.ok) throw new Error(`envelope failed: ${r.error}`);
  expect(r.deployments).toHaveLength(0);
  expect(r.rejected).toHaveLength(1);
  // The one rule that must hold for every case: no secret material anywhere in the result.
  const text = JSON.stringify(r) + inspect(r, { depth: 10 });
  expect(text.includes(SECRET)).toBe(false);
  expect(text.includes(PASSWORD)).toBe(false);
  return r.rejected[0]!;
}

const with_ = (mutate: (d: Raw) => void) => () => {
  const d = base();
  mutate(d);
  return d;
};

// [case, build, expected field, expected message fragment]
const hostile: [string, () => unknown, string, string][] = [
  ['id is a number', with_((d) => (d.id = 42)), 'id', '1 to 128 characters'],
  ['id is empty', with_((d) => (d.id = '')), 'id', '1 to 128'],
  ['id is 129 characters', with_((d) => (d.id = 'a'.repeat(129))), 'id', '1 to 128'],
  ['id has a slash', with_((d) => (d.id = 'dep/1')), 'id', '[A-Za-z0-9_.-]'],
  ['id is missing', with_((d) => delete d.id), 'id', 'is required'],
  ['serviceId is missing', with_((d) => delete d.serviceId), 'serviceId', 'is required'],
  ['organizationId has a space', with_((d) => (d.organizationId = 'org 1')), 'organizationId', '1 to 128'],
  ['slug is a number', with_((d) => (d.slug = 7)), 'slug', 'at most 255'],
  ['slug is 256 characters', with_((d) => (d.slug = 'x'.repeat(256))), 'slug', 'at most 255'],
  ['imageTag is missing', with_((d) => delete d.imageTag), 'imageTag', 'is required'],
  ['imageTag is uppercase', with_((d) => (d.imageTag = 'NGINX')), 'imageTag', 'Docker image reference'],
  ['imageTag has an empty tag', with_((d) => (d.imageTag = 'nginx:')), 'imageTag', 'Docker image reference'],
  ['imageTag is only a tag', with_((d) => (d.imageTag = ':latest')), 'imageTag', 'Docker image reference'],
  ['imageTag has a short digest', with_((d) => (d.imageTag = 'nginx@sha256:abc')), 'imageTag', 'Docker image reference'],
  ['imageTag has a space in the tag', with_((d) => (d.imageTag = 'nginx:1 2')), 'imageTag', 'image reference'],
  ['imageTag registry port out of range', with_((d) => (d.imageTag = 'reg.io:99999/app')), 'imageTag', 'image reference'],
  ['imageTag is 256 characters', with_((d) => (d.imageTag = `a/${'b'.repeat(254)}`)), 'imageTag', 'image reference'],
  ['imageTag has an empty path component', with_((d) => (d.imageTag = 'a//b')), 'imageTag', 'image reference'],
  ['imageTag starts with a dash', with_((d) => (d.imageTag = '-nginx')), 'imageTag', 'image reference'],
  ['imageTag tag is 129 characters', with_((d) => (d.imageTag = `nginx:${'t'.repeat(129)}`)), 'imageTag', 'image reference'],
  ['imageTag injects a flag', with_((d) => (d.imageTag = 'nginx --privileged')), 'imageTag', 'image reference'],
  ['desiredState is unknown', with_((d) => (d.desiredState = 'paused')), 'desiredState', "'running' or 'stopped'"],
  ['desiredState is missing', with_((d) => delete d.desiredState), 'desiredState', 'is required'],
  ['replicas is negative', with_((d) => (d.replicas = -1)), 'replicas', 'between 0 and 100'],
  ['replicas is fractional', with_((d) => (d.replicas = 1.5)), 'replicas', 'integer'],
  ['replicas is 101', with_((d) => (d.replicas = 101)), 'replicas', 'between 0 and 100'],
  ['replicas is a string', with_((d) => (d.replicas = '1')), 'replicas', 'integer'],
  ['replicas > 1 with a host port', with_((d) => (d.replicas = 2)), 'replicas', 'at most 1 when externalPort'],
  ['environmentVars is an array', with_((d) => (d.environmentVars = ['A=1'])), 'environmentVars', 'must be an object'],
  ['environmentVars is missing', with_((d) => delete d.environmentVars), 'environmentVars', 'is required'],
  ['env name contains =', with_((d) => (d.environmentVars = { 'BAD=NAME': 'x' })), 'environmentVars.BAD=NAME', 'name must match'],
  ['env name contains NUL', with_((d) => (d.environmentVars = { 'A\0B': 'x' })), 'environmentVars.A\\u0000B', 'name must match'],
  ['env name starts with a digit', with_((d) => (d.environmentVars = { '1ABC': 'x' })), 'environmentVars.1ABC', 'name must match'],
  ['env name is empty', with_((d) => (d.environmentVars = { '': 'x' })), 'environmentVars.', 'name must match'],
  ['env value is a number', with_((d) => (d.environmentVars = { A: 1 })), 'environmentVars.A', 'must be a string'],
  ['env value contains NUL', with_((d) => (d.environmentVars = { A: 'x\0y' })), 'environmentVars.A', 'without NUL'],
  ['env value over 32 KiB', with_((d) => (d.environmentVars = { A: 'x'.repeat(32 * 1024 + 1) })), 'environmentVars.A', '32 KiB'],
  [
    '201 env vars',
    with_((d) => (d.environmentVars = Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`V${i}`, 'x'])))),
    'environmentVars',
    'at most 200',
  ],
  ['cpuCores is 0', with_((d) => (d.resourceLimits.cpuCores = 0)), 'resourceLimits.cpuCores', 'at least 0.01'],
  ['cpuCores is negative', with_((d) => (d.resourceLimits.cpuCores = -2)), 'resourceLimits.cpuCores', 'at least 0.01'],
  // Rounds to 0 NanoCPUs, which Swarm reads as "no CPU limit at all".
  [
    'cpuCores is 1e-10',
    with_((d) => (d.resourceLimits.cpuCores = 1e-10)),
    'resourceLimits.cpuCores',
    'smallest CPU limit Docker can enforce',
  ],
  // A 0.5 ms CFS quota per 100 ms: the kernel refuses it, so every task would fail at start.
  ['cpuCores is 0.005', with_((d) => (d.resourceLimits.cpuCores = 0.005)), 'resourceLimits.cpuCores', 'at least 0.01'],
  ['cpuCores is 257', with_((d) => (d.resourceLimits.cpuCores = 257)), 'resourceLimits.cpuCores', 'at most 256'],
  ['cpuCores is Infinity', with_((d) => (d.resourceLimits.cpuCores = Infinity)), 'resourceLimits.cpuCores', 'at most 256'],
  ['memoryMb is 3', with_((d) => (d.resourceLimits.memoryMb = 3)), 'resourceLimits.memoryMb', 'must be an integer between 6'],
  // dockerd: "Minimum memory limit allowed is 6MB".
  ['memoryMb is 5', with_((d) => (d.resourceLimits.memoryMb = 5)), 'resourceLimits.memoryMb', 'smallest memory limit Docker accepts'],
  ['memoryMb is fractional', with_((d) => (d.resourceLimits.memoryMb = 512.5)), 'resourceLimits.memoryMb', 'integer'],
  ['memoryMb is absurd', with_((d) => (d.resourceLimits.memoryMb = 1e12)), 'resourceLimits.memoryMb', '1048576'],
  ['memoryMb is NaN', with_((d) => (d.resourceLimits.memoryMb = NaN)), 'resourceLimits.memoryMb', 'integer'],
  ['diskGb is 0', with_((d) => (d.resourceLimits.diskGb = 0)), 'resourceLimits.diskGb', 'greater than 0'],
  ['resourceLimits is missing', with_((d) => delete d.resourceLimits), 'resourceLimits', 'is required'],
  ['resourceLimits is a string', with_((d) => (d.resourceLimits = '1cpu')), 'resourceLimits', 'must be an object'],
  ['internalPort is 0', with_((d) => (d.internalPort = 0)), 'internalPort', 'between 1 and 65535'],
  ['externalPort is 70000', with_((d) => (d.externalPort = 70000)), 'externalPort', 'between 1 and 65535'],
  ['internalPort is fractional', with_((d) => (d.internalPort = 80.5)), 'internalPort', 'integer'],
  ['externalPort without internalPort', with_((d) => delete d.internalPort), 'externalPort', 'requires internalPort'],
  ['command is a string', with_((d) => (d.command = 'node server.js')), 'command', 'array'],
  ['command has 65 entries', with_((d) => (d.command = Array(65).fill('x'))), 'command', 'at most 64'],
  ['command has NUL', with_((d) => (d.command = ['sh', 'a\0b'])), 'command[1]', 'without NUL'],
  ['command has a number', with_((d) => (d.command = ['sleep', 5])), 'command[1]', 'string'],
  ['secrets is an object', with_((d) => (d.secrets = { name: 'x', value: SECRET })), 'secrets', 'array'],
  [
    '51 secrets',
    with_((d) => (d.secrets = Array.from({ length: 51 }, (_, i) => ({ name: `s${i}`, value: SECRET })))),
    'secrets',
    'at most 50',
  ],
  ['secret name starts with a dot', with_((d) => (d.secrets[0].name = '.hidden')), 'secrets[0].name', 'must match'],
  ['secret name has a slash', with_((d) => (d.secrets[0].name = 'a/b')), 'secrets[0].name', 'must match'],
  ['secret name is 65 characters', with_((d) => (d.secrets[0].name = 'n'.repeat(65))), 'secrets[0].name', 'must match'],
  ['secret name is the secret itself, badly', with_((d) => (d.secrets[0].name = `${SECRET}!`)), 'secrets[0].name', 'must match'],
  ['secret value is a number', with_((d) => (d.secrets[0].value = 987654321)), 'secrets[0].value', 'non-empty string'],
  ['secret value is empty', with_((d) => (d.secrets[0].value = '')), 'secrets[0].value', 'non-empty'],
  ['secret value over 500 KiB', with_((d) => (d.secrets[0].value = SECRET + 'x'.repeat(500 * 1024))), 'secrets[0].value', '500 KiB'],
  ['secret is missing its value', with_((d) => delete d.secrets[0].value), 'secrets[0].value', 'is required'],
  ['secret mountPath is relative', with_((d) => (d.secrets[0].mountPath = 'etc/app.key')), 'secrets[0].mountPath', 'absolute'],
  ['secret mountPath climbs', with_((d) => (d.secrets[0].mountPath = '/run/../etc/passwd')), 'secrets[0].mountPath', "'..'"],
  ['secret mountPath has NUL', with_((d) => (d.secrets[0].mountPath = '/run/a\0b')), 'secrets[0].mountPath', 'NUL'],
  ['secret mountPath is a directory', with_((d) => (d.secrets[0].mountPath = '/run/secrets/')), 'secrets[0].mountPath', 'file path'],
  ['secret envVarName has a dash', with_((d) => (d.secrets[0].envVarName = 'DB-PASS')), 'secrets[0].envVarName', 'must match'],
  ['duplicate secret names', with_((d) => d.secrets.push({ name: 'db-password', value: 'other' })), 'secrets[1].name', 'duplicates'],
  [
    'two secrets on one path',
    with_((d) => d.secrets.push({ name: 'other', value: 'v', mountPath: '/run/secrets/DB_PASSWORD' })),
    'secrets[1]',
    'same path',
  ],
  [
    'two secrets share an envVarName',
    with_((d) => d.secrets.push({ name: 'other', value: 'v', envVarName: 'DB_PASSWORD', mountPath: '/x/y' })),
    'secrets[1].envVarName',
    'duplicates',
  ],
  [
    'secret _FILE collides with env',
    with_((d) => (d.environmentVars.DB_PASSWORD_FILE = '/x')),
    'secrets[0].envVarName',
    'DB_PASSWORD_FILE',
  ],
  ['registry password is a number', with_((d) => (d.registryAuth.password = 123456789)), 'registryAuth.password', 'must be a string'],
  [
    'registry password is an object holding it',
    with_((d) => (d.registryAuth.password = { v: PASSWORD })),
    'registryAuth.password',
    'must be a string',
  ],
  ['registryAuth without serveraddress', with_((d) => delete d.registryAuth.serveraddress), 'registryAuth.serveraddress', 'is required'],
  ['registryAuth is a string', with_((d) => (d.registryAuth = `deployer:${PASSWORD}`)), 'registryAuth', 'must be an object'],
  ['deployment is null', () => null, 'deployment', 'must be an object'],
  ['deployment is a string', () => 'dep_1', 'deployment', 'must be an object'],
  ['deployment is an array', () => [base()], 'deployment', 'must be an object'],
];

describe('parseDesiredSet: hostile deployments', () => {
  it('has at least 40 hostile cases', () => expect(hostile.length).toBeGreaterThanOrEqual(40));

  it.each(hostile)('%s', (_name, build, field, fragment) => {
    const rej = rejectOne(build());
    expect(rej.field).toBe(field);
    expect(rej.message.startsWith(`${field}: `)).toBe(true);
    expect(rej.message).toContain(fragment);
  });

  it('echoes a valid id but not an invalid one', () => {
    expect(rejectOne(with_((d) => (d.replicas = -1))()).id).toBe('dep_1');
    expect(rejectOne(with_((d) => (d.id = 'x'.repeat(500)))()).id).toBeNull();
    expect(rejectOne(with_((d) => (d.replicas = -1))()).serviceId).toBe('svc_1');
  });

  it('reports the exact memory rule text', () => {
    expect(rejectOne(with_((d) => (d.resourceLimits.memoryMb = 2))()).message).toBe(
      'resourceLimits.memoryMb: must be an integer between 6 (the smallest memory limit Docker accepts) and 1048576',
    );
  });

  it('cuts hostile env names in the field path', () => {
    const rej = rejectOne(with_((d) => (d.environmentVars = { ['X'.repeat(5000) + '=']: 'v' }))());
    expect(rej.field.length).toBeLessThan(100);
  });
});

describe('parseDesiredSet: envelope', () => {
  it.each([
    ['null', null],
    ['a string', 'deployments'],
    ['an array', [base()]],
    ['no data', { success: true }],
    ['data without deployments', { success: true, data: {} }],
    ['deployments not an array', { success: true, data: { deployments: { a: base() } } }],
    ['success false', { success: false, data: { deployments: [] }, error: { message: 'x' } }],
    ['1001 entries', body(...Array.from({ length: 1001 }, () => base()))],
  ])('fails as a whole for %s', (_n, b) => {
    const r = parseDesiredSet(b);
    expect(r.ok).toBe(false);
    expect(JSON.stringify(r).includes(SECRET)).toBe(false);
  });

  it('accepts an empty set and exactly 1000 entries', () => {
    expect(parseDesiredSet(body())).toEqual({ ok: true, deployments: [], rejected: [] });
    const many = Array.from({ length: 1000 }, (_, i) => ({
      ...base(),
      id: `d${i}`,
      serviceId: `s${i}`,
      externalPort: undefined,
      internalPort: undefined,
    }));
    const r = parseDesiredSet(body(...many));
    expect(r.ok && r.deployments.length).toBe(1000);
  });

  it('keeps good deployments when others are bad', () => {
    const bad = { ...base(), id: 'dep_bad', serviceId: 'svc_bad', imageTag: 'BAD' };
    const r = parseDesiredSet(body(bad, base()));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.deployments.map((d) => d.id)).toEqual(['dep_1']);
    expect(r.rejected).toEqual([
      { id: 'dep_bad', serviceId: 'svc_bad', field: 'imageTag', message: expect.stringContaining('imageTag: ') },
    ]);
  });
});

describe('parseDesiredSet: cross-deployment rules', () => {
  const parse = (...ds: Raw[]) => {
    const r = parseDesiredSet(body(...ds));
    if (!r.ok) throw new Error(r.error);
    return r;
  };

  it('rejects every repeat of an id after the first', () => {
    const r = parse(base(), { ...base(), serviceId: 'svc_2', externalPort: 30081 }, { ...base(), serviceId: 'svc_3', externalPort: 30082 });
    expect(r.deployments.map((d) => d.serviceId)).toEqual(['svc_1']);
    expect(r.rejected.map((x) => [x.id, x.field])).toEqual([
      ['dep_1', 'id'],
      ['dep_1', 'id'],
    ]);
  });

  it('rejects a second deployment for one serviceId', () => {
    const r = parse(base(), { ...base(), id: 'dep_2', externalPort: 30081 });
    expect(r.deployments.map((d) => d.id)).toEqual(['dep_1']);
    expect(r.rejected).toMatchObject([{ id: 'dep_2', serviceId: 'svc_1', field: 'serviceId' }]);
  });

  it('rejects the later of two running deployments on one external port', () => {
    const r = parse(base(), { ...base(), id: 'dep_2', serviceId: 'svc_2' });
    expect(r.deployments.map((d) => d.id)).toEqual(['dep_1']);
    expect(r.rejected).toMatchObject([{ id: 'dep_2', field: 'externalPort', message: expect.stringContaining('30080') }]);
  });

  it('lets a stopped deployment keep a port a running one uses', () => {
    const r = parse({ ...base(), desiredState: 'stopped' }, { ...base(), id: 'dep_2', serviceId: 'svc_2' });
    expect(r.rejected).toEqual([]);
    expect(r.deployments).toHaveLength(2);
  });
});

describe('parseDesiredSet: what is accepted', () => {
  const one = (d: Raw): Deployment => {
    const r = parseDesiredSet(body(d));
    if (!r.ok || r.deployments.length !== 1) throw new Error(JSON.stringify(r));
    return r.deployments[0]!;
  };

  it('wraps secret values and registry passwords so logging a deployment is safe', () => {
    const d = one(base());
    expect(d.secrets![0]!.value).toBeInstanceOf(Secret);
    expect(d.secrets![0]!.value.reveal()).toBe(SECRET);
    expect(d.registryAuth!.password.reveal()).toBe(PASSWORD);
    const text = JSON.stringify(d) + inspect(d, { depth: 10 }) + String(d.registryAuth?.password);
    expect(text.includes(SECRET) || text.includes(PASSWORD)).toBe(false);
  });

  it('ignores unknown fields, at every level', () => {
    const d = one({ ...base(), future: { x: 1 }, resourceLimits: { cpuCores: 1, memoryMb: 64, gpu: 1 } });
    expect('future' in d).toBe(false);
    expect(d.resourceLimits).toEqual({ cpuCores: 1, memoryMb: 64 });
  });

  it('treats null optionals as absent and defaults replicas to 1', () => {
    const nulls = { replicas: null, internalPort: null, externalPort: null, command: null, secrets: null, registryAuth: null };
    const d = one({ ...base(), ...nulls, resourceLimits: { cpuCores: 1, memoryMb: 64, diskGb: null } });
    expect(d.replicas).toBe(1);
    expect(d.internalPort ?? d.externalPort ?? d.command ?? d.secrets ?? d.registryAuth ?? d.resourceLimits.diskGb).toBeUndefined();
    const noReplicas = base();
    delete noReplicas.replicas;
    expect(one(noReplicas).replicas).toBe(1);
  });

  it('accepts unicode and 200-character slugs untouched (naming sanitises them)', () => {
    expect(one({ ...base(), slug: 'Café 日本語 🚀' }).slug).toBe('Café 日本語 🚀');
    expect(one({ ...base(), slug: 'é'.repeat(200) }).slug).toHaveLength(200);
    expect(one({ ...base(), slug: '' }).slug).toBe('');
  });

  it('keeps an env var named __proto__ as a plain own key', () => {
    const d = one({ ...base(), environmentVars: JSON.parse('{"__proto__":"x","A":"1"}') });
    expect(Object.entries(d.environmentVars)).toEqual([
      ['__proto__', 'x'],
      ['A', '1'],
    ]);
  });

  it('accepts secrets by mount path or env name, and odd but legal names', () => {
    const d = one({
      ...base(),
      secrets: [
        { name: 'A.b_c-1', value: 'v', mountPath: '/etc/app/key.pem' },
        { name: '9', value: 'w' },
      ],
    });
    expect(d.secrets!.map((s) => s.name)).toEqual(['A.b_c-1', '9']);
  });
});

describe("parseDesiredSet: limits at the engine's minimums", () => {
  it('accepts exactly the smallest CPU and memory limits Docker can run', () => {
    const r = parseDesiredSet(body({ ...base(), resourceLimits: { cpuCores: 0.01, memoryMb: 6 } }));
    expect(r.ok && r.deployments.map((d) => d.resourceLimits)).toEqual([{ cpuCores: 0.01, memoryMb: 6 }]);
  });
});

describe("parseDesiredSet: CPU limit above the host's CPUs", () => {
  it("is refused per deployment when the host's CPU count is known (dockerd would refuse every task)", () => {
    const r = parseDesiredSet(
      body(
        { ...base(), resourceLimits: { cpuCores: 2.5, memoryMb: 64 } },
        { ...base(), id: 'dep_2', serviceId: 'svc_2', externalPort: 30081, resourceLimits: { cpuCores: 2, memoryMb: 64 } },
      ),
      { hostCpus: 2 },
    );
    expect(r.ok && r.deployments.map((d) => d.id)).toEqual(['dep_2']);
    expect(r.ok && r.rejected).toEqual([
      {
        id: 'dep_1',
        serviceId: 'svc_1',
        field: 'resourceLimits.cpuCores',
        message: 'resourceLimits.cpuCores: must be at most 2 (the CPUs this host has; Docker refuses a larger limit)',
      },
    ]);
    expect(parseDesiredSet(body({ ...base(), resourceLimits: { cpuCores: 2.5, memoryMb: 64 } }))).toMatchObject({ ok: true, rejected: [] });
  });
});

describe('parseDesiredSet: nesting depth', () => {
  const deep = (levels: number): unknown => JSON.parse('['.repeat(levels) + ']'.repeat(levels));

  it('rejects the deployment with a 50,000-deep unknown field alone, naming the field, and runs the rest', () => {
    const hostile = { ...base(), id: 'dep_deep', serviceId: 'svc_deep', externalPort: 30081, extra: deep(50_000) };
    const r = parseDesiredSet(body(hostile, base()));
    if (!r.ok) throw new Error(r.error);
    expect(r.deployments.map((d) => d.id)).toEqual(['dep_1']);
    expect(r.rejected).toEqual([
      { id: 'dep_deep', serviceId: 'svc_deep', field: 'extra', message: 'extra: is nested deeper than 64 levels' },
    ]);
    // What is kept for a restart serialises (the raw body would not: JSON.stringify runs out of stack) and reads back alike.
    expect(() => JSON.stringify(body(hostile))).toThrow(RangeError);
    const again = parseDesiredSet(JSON.parse(JSON.stringify(storableDesiredSet(body(hostile, base())))));
    expect(again.ok && [again.deployments.map((d) => d.id), again.rejected]).toEqual([['dep_1'], r.rejected]);
  });

  it('accepts unknown fields up to the bound and rejects one level more', () => {
    // The deployment is level 1, so a field may hold 63 levels.
    expect(parseDesiredSet(body({ ...base(), extra: deep(63) }))).toMatchObject({ ok: true, rejected: [] });
    expect(parseDesiredSet(body({ ...base(), extra: deep(64) }))).toMatchObject({
      ok: true,
      deployments: [],
      rejected: [{ field: 'extra' }],
    });
  });

  it('keeps only data.deployments for a restart: a deep sibling of it changes nothing', () => {
    const r = parseDesiredSet({ ...body(base()), junk: deep(50_000) });
    expect(r.ok && r.deployments.map((d) => d.id)).toEqual(['dep_1']);
    expect(JSON.stringify(storableDesiredSet({ ...body(base()), junk: deep(50_000) }))).toBe(JSON.stringify(body(base())));
  });

  it('refuses the whole answer when a too-deep entry is not even an object (a malformed list, not a bad deployment)', () => {
    expect(parseDesiredSet(body(deep(10_000), base()))).toEqual({
      ok: false,
      error: 'data.deployments[0] is nested deeper than 64 levels',
    });
  });
});

describe('parseDesiredSet: host ports', () => {
  const policy = {
    statusPort: 9740,
    allowed: [
      { from: 80, to: 80 },
      { from: 7946, to: 7946 },
    ],
  };
  const withPort = (externalPort: number, extra: Raw = {}) => ({
    ...base(),
    id: `dep_${externalPort}`,
    serviceId: `svc_${externalPort}`,
    externalPort,
    ...extra,
  });
  const verdicts = (...ports: number[]) => {
    const r = parseDesiredSet(body(...ports.map((p) => withPort(p))), { hostPorts: policy });
    if (!r.ok) throw new Error(r.error);
    return { ran: r.deployments.map((d) => d.externalPort), refused: Object.fromEntries(r.rejected.map((x) => [x.id, x.message])) };
  };

  it("refuses the status port, the host's reserved ports and the privileged range, per deployment, naming the field", () => {
    const v = verdicts(9740, 22, 443, 1023, 2375, 2376, 2377, 4789, 30080);
    expect(v.ran).toEqual([30080]);
    expect(v.refused).toEqual({
      dep_9740: "externalPort: port 9740 is this agent's status API port (statusListen)",
      dep_22: 'externalPort: port 22 is reserved for SSH on this host; an operator may allow it with allowedHostPorts',
      dep_443:
        "externalPort: port 443 is below 1024 (reserved for the host's own services); an operator may allow it with allowedHostPorts",
      dep_1023: expect.stringContaining('below 1024'),
      dep_2375: expect.stringContaining('Docker Engine API'),
      dep_2376: expect.stringContaining('Docker Engine API over TLS'),
      dep_2377: expect.stringContaining('Swarm cluster management'),
      dep_4789: expect.stringContaining('VXLAN'),
    });
  });

  it('publishes what an operator allowed, but never the status port', () => {
    expect(verdicts(80, 7946, 1024).ran).toEqual([80, 7946, 1024]);
    const r = parseDesiredSet(body(withPort(9740)), { hostPorts: { statusPort: 9740, allowed: [{ from: 1, to: 65535 }] } });
    expect(r.ok && r.rejected.map((x) => x.field)).toEqual(['externalPort']);
  });

  it("never publishes the agent's metrics port either", () => {
    const r = parseDesiredSet(body(withPort(9741)), {
      hostPorts: { statusPort: 9740, metricsPort: 9741, allowed: [{ from: 1, to: 65535 }] },
    });
    expect(r.ok && r.rejected.map((x) => [x.field, x.message])).toEqual([
      ['externalPort', expect.stringContaining("this agent's metrics port (metricsListen)")],
    ]);
  });

  it('refuses a stopped deployment naming a reserved port too (starting it is one scale away)', () => {
    const r = parseDesiredSet(body(withPort(22, { desiredState: 'stopped' })), { hostPorts: policy });
    expect(r.ok && r.rejected.map((x) => x.id)).toEqual(['dep_22']);
  });

  it('leaves ports Docker picks (no externalPort) alone', () => {
    const r = parseDesiredSet(body({ ...base(), externalPort: undefined, internalPort: 22 }), { hostPorts: policy });
    expect(r.ok && r.deployments).toHaveLength(1);
  });
});

describe('parsePortRanges (allowedHostPorts)', () => {
  it('reads lists and ranges from a string or an array, and names a bad entry', () => {
    expect(parsePortRanges('80, 443,8000-8100')).toEqual([
      { from: 80, to: 80 },
      { from: 443, to: 443 },
      { from: 8000, to: 8100 },
    ]);
    expect(parsePortRanges([22, '2377'])).toEqual([
      { from: 22, to: 22 },
      { from: 2377, to: 2377 },
    ]);
    expect(parsePortRanges('')).toEqual([]);
    expect(parsePortRanges('80,http')).toBe('entry "http" must be a port (1-65535) or a range "from-to"');
    expect(parsePortRanges('0')).toMatch(/must be a port/);
    expect(parsePortRanges('90-80')).toMatch(/must be a port/);
    expect(parsePortRanges('65536')).toMatch(/must be a port/);
  });
});

describe('isValidImageReference', () => {
  it.each([
    'nginx',
    'nginx:1.27-alpine',
    'library/nginx:latest',
    'ghcr.io/org/app:v1.2.3',
    'localhost:5000/app',
    'localhost/app',
    'registry.example.com:443/team/app_name__x/y.z:TAG_1',
    `app@sha256:${'a'.repeat(64)}`,
    `reg.io/app:1.0@sha256:${'0'.repeat(64)}`,
    '[::1]:5000/app',
    'my--app',
  ])('accepts %s', (ref) => expect(isValidImageReference(ref)).toBe(true));

  it.each([
    '',
    'App',
    'app:',
    'app:-x',
    'app@sha256:ABC',
    `app@sha512:${'a'.repeat(128)}`,
    'reg.io:0/app',
    'app/',
    '/app',
    'a..b',
    'a_-b',
    'app:1:2',
    'app tag',
    'reg_io.com/app',
  ])('rejects %j', (ref) => expect(isValidImageReference(ref)).toBe(false));
});

describe('unmappable: a panel row that cannot become a deployment', () => {
  it("is rejected with the panel's reason, keeping id and serviceId so the service is left alone", () => {
    const r = parseDesiredSet(
      body({ id: 'dep_9', serviceId: 'svc_9', unmappable: 'container_services.resource_limits.memory_mb: must be at least 4' }, base()),
    );
    if (!r.ok) throw new Error(r.error);
    expect(r.deployments.map((d) => d.id)).toEqual(['dep_1']);
    expect(r.rejected).toEqual([
      { id: 'dep_9', serviceId: 'svc_9', field: 'unmappable', message: 'container_services.resource_limits.memory_mb: must be at least 4' },
    ]);
  });

  it('wins over otherwise valid fields, escapes control characters and caps the length', () => {
    const r = parseDesiredSet(body({ ...base(), unmappable: `bad\nrow${'x'.repeat(600)}` }));
    if (!r.ok) throw new Error(r.error);
    expect(r.deployments).toEqual([]);
    const message = r.rejected[0]!.message;
    expect(message.startsWith('bad\\u000arow')).toBe(true);
    expect(message.length).toBeLessThanOrEqual(503);
  });

  it('null means absent, like every optional field', () => {
    const r = parseDesiredSet(body({ ...base(), unmappable: null }));
    expect(r.ok && r.deployments.length).toBe(1);
  });
});
