import type { EngineClient } from './docker-client.js';
import type { Secret } from '../secret.js';
import { SwarmError, toSwarmError, type ObservedSecret } from './observed.js';

export interface RegistryAuth {
  serveraddress: string;
  username: string;
  password: Secret;
}

export interface WriteOptions {
  registryAuth?: RegistryAuth;
  /** Further values the spec embeds (secret env values): cut from any error like the password is. */
  scrub?: readonly Secret[];
}

/** An Engine API ServiceSpec: only what this module reads is typed in detail; it is sent as given. */
export interface EngineServiceSpec {
  Name?: string;
  Labels?: Record<string, string>;
  TaskTemplate?: object;
  Mode?: { Replicated?: { Replicas?: number }; Global?: object };
  UpdateConfig?: object;
  RollbackConfig?: object;
  Networks?: object[];
  EndpointSpec?: object;
}

interface ServiceInspect {
  ID: string;
  Version?: { Index?: number };
  Spec?: EngineServiceSpec;
}

function authOf(opts: WriteOptions): { header?: { serveraddress: string; username: string; password: string }; revealed: string[] } {
  const revealed = (opts.scrub ?? []).map((s) => s.reveal());
  const a = opts.registryAuth;
  if (!a) return { revealed };
  const password = a.password.reveal();
  return { header: { serveraddress: a.serveraddress, username: a.username, password }, revealed: [...revealed, password] };
}

const isOutOfSequence = (err: unknown): boolean =>
  /update out of sequence/i.test(JSON.stringify((err as { json?: unknown }).json ?? '') + String((err as Error)?.message ?? ''));

async function inspect(docker: EngineClient, id: string): Promise<ServiceInspect> {
  return docker.request<ServiceInspect>({ method: 'GET', path: `/services/${encodeURIComponent(id)}` });
}

/**
 * Creates a service from `spec` as given. The image name is sent unresolved: from API 1.30 on the
 * daemon does not look the image up in a registry at create (the CLI pins digests on its side),
 * so a locally built image works and nothing is pulled here. The registry login, if any, travels
 * in X-Registry-Auth; Swarm keeps it for the nodes' pulls and does not return it on inspect.
 */
export async function createService(
  docker: EngineClient,
  spec: EngineServiceSpec,
  opts: WriteOptions = {},
): Promise<{ id: string; warnings: string[] }> {
  const { header, revealed } = authOf(opts);
  try {
    const res = await docker.request<{ ID: string; Warnings?: string[] | null }>({
      method: 'POST',
      path: '/services/create',
      body: spec,
      ...(header ? { registryAuth: header } : {}),
    });
    return { id: res.ID, warnings: res.Warnings ?? [] };
  } catch (err) {
    throw toSwarmError(`creating service ${spec.Name ?? ''}`, err, revealed);
  }
}

/** Version races `updateService` rides out before it gives up (and the caller backs off). */
export const MAX_VERSION_RACES = 3;

/**
 * Replaces a service's spec. `version` is the one the caller observed; if Swarm says "update out
 * of sequence" (500) the service changed since, and the caller's spec is still what it wants, so
 * the current version is read and the update sent again. During a rollout Swarm's own updater
 * bumps the version every few hundred milliseconds, so one re-read can lose again: up to
 * MAX_VERSION_RACES re-reads, 100 ms apart after the first, before the conflict is thrown (the
 * caller's per-deployment backoff, which starts at seconds, is for real failures).
 * Without registryAuth, Swarm keeps the login stored with the service (registryAuthFrom=spec).
 */
export async function updateService(
  docker: EngineClient,
  id: string,
  version: number,
  spec: EngineServiceSpec,
  opts: WriteOptions = {},
): Promise<{ warnings: string[] }> {
  const { header, revealed } = authOf(opts);
  let v = version;
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await docker.request<{ Warnings?: string[] | null }>({
        method: 'POST',
        path: `/services/${encodeURIComponent(id)}/update`,
        query: { version: v },
        body: spec,
        ...(header ? { registryAuth: header } : {}),
      });
      return { warnings: res?.Warnings ?? [] };
    } catch (err) {
      if (attempt >= MAX_VERSION_RACES || !isOutOfSequence(err)) throw toSwarmError(`updating service ${id}`, err, revealed);
    }
    if (attempt > 0) await new Promise((r) => setTimeout(r, 100));
    try {
      v = (await inspect(docker, id)).Version?.Index ?? v;
    } catch (err) {
      throw toSwarmError(`updating service ${id}`, err, revealed);
    }
  }
}

/**
 * Sets the replica count on the live spec. On a version race the spec is re-read too: resending
 * the old spec with a fresh version would undo whatever the other writer changed.
 */
export async function scaleService(docker: EngineClient, id: string, replicas: number): Promise<void> {
  if (!Number.isInteger(replicas) || replicas < 0)
    throw new SwarmError('rejected', `scaling service ${id}: replicas must be a non-negative integer, got ${replicas}`);
  for (let attempt = 0; ; attempt++) {
    try {
      const info = await inspect(docker, id);
      const spec = info.Spec ?? {};
      if (!spec.Mode?.Replicated) throw new SwarmError('rejected', `scaling service ${id}: not a replicated service`);
      await docker.request({
        method: 'POST',
        path: `/services/${encodeURIComponent(id)}/update`,
        query: { version: info.Version?.Index ?? 0 },
        body: { ...spec, Mode: { Replicated: { Replicas: replicas } } },
      });
      return;
    } catch (err) {
      if (attempt === 0 && isOutOfSequence(err)) continue;
      throw toSwarmError(`scaling service ${id}`, err);
    }
  }
}

/** True when it removed the service, false when there was none: removing twice is not an error. */
export async function removeService(docker: EngineClient, id: string): Promise<boolean> {
  try {
    await docker.request({ method: 'DELETE', path: `/services/${encodeURIComponent(id)}` });
    return true;
  } catch (err) {
    const e = toSwarmError(`removing service ${id}`, err);
    if (e.kind === 'not-found') return false;
    throw e;
  }
}

const asLabelFilters = (labels: Record<string, string>) => Object.entries(labels).map(([k, v]) => `${k}=${v}`);

interface NetworkJson {
  Id: string;
  Name: string;
}

async function findNetwork(docker: EngineClient, name: string, labels: Record<string, string>): Promise<string | undefined> {
  // The name filter matches substrings: compare exactly.
  const filters = JSON.stringify({ name: [name], label: asLabelFilters(labels) });
  const list = await docker.request<NetworkJson[]>({ method: 'GET', path: '/networks', query: { filters } });
  return list.find((n) => n.Name === name)?.Id;
}

/**
 * An attachable overlay network with encrypted data traffic (IPsec between nodes), found by name
 * and labels, created when absent. Two creates racing (two passes, two agents) end with one
 * network: the loser gets 409, or a 500 "name conflicts", and adopts the winner's. A network of
 * that name without these labels is someone else's: a 'conflict', never adopted.
 */
export async function ensureNetwork(
  docker: EngineClient,
  name: string,
  labels: Record<string, string>,
): Promise<{ id: string; created: boolean }> {
  const action = `creating network ${name}`;
  try {
    const existing = await findNetwork(docker, name, labels);
    if (existing) return { id: existing, created: false };
    const res = await docker.request<{ Id: string }>({
      method: 'POST',
      path: '/networks/create',
      body: { Name: name, Driver: 'overlay', Attachable: true, CheckDuplicate: true, Options: { encrypted: '' }, Labels: labels },
    });
    return { id: res.Id, created: true };
  } catch (err) {
    const e = toSwarmError(action, err);
    if (e.kind !== 'conflict') throw e;
    let winner: string | undefined;
    try {
      winner = await findNetwork(docker, name, labels);
    } catch (again) {
      throw toSwarmError(action, again);
    }
    if (winner) return { id: winner, created: false };
    throw new SwarmError('conflict', `${action}: a network of that name exists without the expected labels`, {
      statusCode: e.statusCode,
      dockerMessage: e.dockerMessage,
    });
  }
}

interface SecretJson {
  ID: string;
  CreatedAt?: string;
  UpdatedAt?: string;
  Spec?: { Name?: string; Labels?: Record<string, string> | null };
}

const toObservedSecret = (s: SecretJson): ObservedSecret => ({
  id: s.ID,
  name: s.Spec?.Name ?? '',
  labels: s.Spec?.Labels ?? {},
  createdAt: s.CreatedAt ?? '',
  updatedAt: s.UpdatedAt ?? '',
});

/**
 * A Swarm secret holding `data`, created when absent. Swarm secrets are immutable and never
 * readable back, so an existing one is taken as is: a name must change whenever the value does
 * (the planner hashes the content into it). The base64 data goes in the body, never the URL.
 */
export async function ensureSecret(
  docker: EngineClient,
  name: string,
  data: Secret,
  labels: Record<string, string>,
): Promise<{ id: string; created: boolean }> {
  const value = data.reveal();
  const action = `creating secret ${name}`;
  try {
    const res = await docker.request<{ ID: string }>({
      method: 'POST',
      path: '/secrets/create',
      body: { Name: name, Labels: labels, Data: Buffer.from(value).toString('base64') },
    });
    return { id: res.ID, created: true };
  } catch (err) {
    const e = toSwarmError(action, err, [value]);
    if (e.kind !== 'conflict') throw e;
  }
  try {
    const list = await docker.request<SecretJson[]>({
      method: 'GET',
      path: '/secrets',
      query: { filters: JSON.stringify({ name: [name] }) },
    });
    const found = list.find((s) => s.Spec?.Name === name);
    if (!found) throw new SwarmError('conflict', `${action}: Docker reported it exists but it cannot be found`);
    return { id: found.ID, created: false };
  } catch (err) {
    throw toSwarmError(action, err, [value]);
  }
}

export async function listSecrets(docker: EngineClient, labelFilters: readonly string[]): Promise<ObservedSecret[]> {
  try {
    const list = await docker.request<SecretJson[]>({
      method: 'GET',
      path: '/secrets',
      query: { filters: JSON.stringify({ label: labelFilters }) },
    });
    return list.map(toObservedSecret);
  } catch (err) {
    throw toSwarmError('listing secrets', err);
  }
}

/**
 * True when the secret is gone (removed now or already absent); false when a service still uses
 * it (Swarm answers 400 "is in use by the following service"): it is left for a later pass.
 */
export async function removeSecret(docker: EngineClient, id: string): Promise<boolean> {
  try {
    await docker.request({ method: 'DELETE', path: `/secrets/${encodeURIComponent(id)}` });
    return true;
  } catch (err) {
    const e = toSwarmError(`removing secret ${id}`, err);
    if (e.kind === 'not-found') return true;
    if (/in use/i.test(e.dockerMessage)) return false;
    throw e;
  }
}
