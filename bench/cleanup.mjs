// Every service and secret the bench creates carries the `skypanel.worker.id` label of a bench
// worker; the per-organization overlay networks (shared by all workers, so without a worker id)
// carry `skypanel.organization.id` of a bench-only organization. Both kinds of id are written to
// bench/.state.json before anything is created with them, so a killed run is cleaned up by the next.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { LABEL } from '../dist/domain/labels.js';
import { STATE_FILE, sleep } from './lib.mjs';

function readState() {
  const strings = (v) => (Array.isArray(v) ? v.filter((x) => typeof x === 'string') : []);
  if (!existsSync(STATE_FILE)) return { workerIds: [], organizationIds: [] };
  try {
    const s = JSON.parse(readFileSync(STATE_FILE, 'utf8'));
    return { workerIds: strings(s.workerIds), organizationIds: strings(s.organizationIds) };
  } catch {
    return { workerIds: [], organizationIds: [] };
  }
}

function remember(key, id) {
  const s = readState();
  if (!s[key].includes(id)) s[key].push(id);
  writeFileSync(STATE_FILE, JSON.stringify(s, null, 2) + '\n');
}

/** Remember a worker id before anything is created with it. */
export const rememberWorker = (workerId) => remember('workerIds', workerId);
/** Remember an organization id before any network is created for it. */
export const rememberOrganization = (organizationId) => remember('organizationIds', organizationId);

const byWorker = (id) => JSON.stringify({ label: [`${LABEL.workerId}=${id}`] });
const byOrganization = (id) => JSON.stringify({ label: [`${LABEL.managed}=true`, `${LABEL.organizationId}=${id}`] });

/**
 * Removes every service of the remembered workers, then (once their containers are gone) their
 * secrets and the remembered organizations' networks. Bounded; returns what it removed and what
 * it could not.
 */
export async function cleanupBench(docker, { timeoutMs = 180_000, log = () => {} } = {}) {
  const { workerIds: ids, organizationIds: orgs } = readState();
  const out = { services: 0, secrets: 0, networks: 0, leftovers: [] };
  if (ids.length === 0 && orgs.length === 0) return out;
  const deadline = Date.now() + timeoutMs;
  for (const id of ids) {
    const services = await docker.listServices({ filters: byWorker(id) });
    // A few at a time: a burst of hundreds of removals makes the swarm manager slow for everyone.
    for (let i = 0; i < services.length; i += 8) {
      await Promise.all(
        services.slice(i, i + 8).map((s) =>
          docker
            .getService(s.ID)
            .remove()
            .then(
              () => out.services++,
              (e) => (e.statusCode === 404 ? undefined : out.leftovers.push(`service ${s.Spec?.Name}: ${e.message}`)),
            ),
        ),
      );
    }
  }
  if (out.services > 0) log(`cleanup: removed ${out.services} services; waiting for their containers to go`);
  // Secrets and networks are refused while a container still uses them.
  for (;;) {
    let left = 0;
    for (const id of ids) left += (await docker.listContainers({ all: true, filters: byWorker(id) })).length;
    if (left === 0 || Date.now() > deadline) {
      if (left > 0) out.leftovers.push(`${left} containers still present`);
      break;
    }
    await sleep(1000);
  }
  for (const id of ids) {
    for (const s of await docker.listSecrets({ filters: byWorker(id) })) {
      await docker
        .getSecret(s.ID)
        .remove()
        .then(
          () => out.secrets++,
          (e) => out.leftovers.push(`secret ${s.Spec?.Name}: ${e.message}`),
        );
    }
  }
  const networks = [];
  for (const id of ids) networks.push(...(await docker.listNetworks({ filters: byWorker(id) })));
  for (const id of orgs) networks.push(...(await docker.listNetworks({ filters: byOrganization(id) })));
  const unique = [...new Map(networks.map((x) => [x.Id, x])).values()];
  if (unique.length > 0) log(`cleanup: removing networks ${unique.map((n) => n.Name).join(', ')}`);
  for (const n of unique) {
    // The overlay's endpoints are released a moment after the last task ends: retry briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        await docker.getNetwork(n.Id).remove();
        out.networks++;
        break;
      } catch (e) {
        if (e.statusCode === 404) {
          out.networks++; // gone already: removed along the way
          break;
        }
        if (attempt >= 20 || Date.now() > deadline) {
          out.leftovers.push(`network ${n.Name}: ${e.message}`);
          break;
        }
        await sleep(1000);
      }
    }
  }
  if (out.leftovers.length === 0) writeFileSync(STATE_FILE, JSON.stringify({ workerIds: [], organizationIds: [] }, null, 2) + '\n');
  return out;
}
