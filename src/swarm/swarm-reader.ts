import type { IncomingMessage } from 'node:http';
import type { EngineClient } from './docker-client.js';
import type { ObservedService, UpdateState } from '../domain/observed-service.js';
import { DEFAULT_MAX_LOG_LINE, DockerLogDemuxer, LogTail } from './logs.js';
import {
  SwarmError,
  TASK_STATES,
  TERMINAL_TASK_STATES,
  toSwarmError,
  type ObservedPort,
  type ObservedServiceDetail,
  type ObservedTask,
  type TaskState,
} from './observed.js';

interface ServiceJson {
  ID: string;
  Version?: { Index?: number };
  CreatedAt?: string;
  UpdatedAt?: string;
  Spec?: {
    Name?: string;
    Labels?: Record<string, string> | null;
    Mode?: { Replicated?: { Replicas?: number } };
    TaskTemplate?: { ContainerSpec?: { Image?: string } };
    EndpointSpec?: { Ports?: PortJson[] };
  };
  Endpoint?: { Ports?: PortJson[] };
  UpdateStatus?: { State?: string; Message?: string };
}

interface PortJson {
  Protocol?: string;
  TargetPort?: number;
  PublishedPort?: number;
  PublishMode?: string;
}

interface TaskJson {
  ID: string;
  ServiceID: string;
  NodeID?: string;
  Slot?: number;
  CreatedAt?: string;
  DesiredState?: string;
  Spec?: { ContainerSpec?: { Secrets?: { SecretName?: string }[] | null } };
  Status?: {
    Timestamp?: string;
    State?: string;
    Message?: string;
    Err?: string;
    ContainerStatus?: { ContainerID?: string; ExitCode?: number };
    PortStatus?: { Ports?: PortJson[] };
  };
}

const labelFilter = (labels: readonly string[]) => JSON.stringify({ label: labels });

/** What the reconciler reads of a service, its live spec included (drift detection compares it with the desired one). */
export function toObservedService(s: ServiceJson): ObservedService {
  return {
    id: s.ID,
    name: s.Spec?.Name ?? '',
    labels: s.Spec?.Labels ?? {},
    replicas: s.Spec?.Mode?.Replicated?.Replicas ?? 0,
    // Docker's UpdateStatus.State enum; the planner and status derivation compare it with the values they know.
    ...(s.UpdateStatus?.State ? { updateState: s.UpdateStatus.State as UpdateState } : {}),
    ...(s.UpdateStatus?.Message ? { updateMessage: s.UpdateStatus.Message } : {}),
    spec: s.Spec,
    version: s.Version?.Index ?? 0,
  };
}

/** A service with what a listing shows besides (image, ports, times), without the raw spec. */
export function toObservedServiceDetail(s: ServiceJson): ObservedServiceDetail {
  const { spec: _spec, ...seen } = toObservedService(s);
  // Endpoint.Ports carries the ports Swarm allocated (ingress); before allocation only the spec has them.
  const ports = s.Endpoint?.Ports ?? s.Spec?.EndpointSpec?.Ports ?? [];
  return {
    ...seen,
    version: s.Version?.Index ?? 0,
    image: s.Spec?.TaskTemplate?.ContainerSpec?.Image ?? '',
    publishedPorts: ports
      .filter((p) => typeof p.TargetPort === 'number')
      .map((p): ObservedPort => ({
        target: p.TargetPort!,
        ...(p.PublishedPort ? { published: p.PublishedPort } : {}),
        mode: p.PublishMode === 'host' ? 'host' : 'ingress',
      })),
    createdAt: s.CreatedAt ?? '',
    updatedAt: s.UpdatedAt ?? '',
  };
}

const KNOWN_STATES: ReadonlySet<string> = new Set(TASK_STATES);
// An engine newer than this list could report a state it does not know; keep Docker's word for it.
const asState = (s: string | undefined): TaskState => (s && KNOWN_STATES.has(s) ? (s as TaskState) : ((s ?? 'new') as TaskState));

export function toObservedTask(t: TaskJson): ObservedTask {
  const st = t.Status ?? {};
  const state = asState(st.State);
  const containerId = st.ContainerStatus?.ContainerID || undefined;
  const exitCode = st.ContainerStatus?.ExitCode;
  // Docker lists each host-mode binding once per address family, IPv4 (0.0.0.0) first. A port left
  // to Docker is allocated per family, and once the two allocators have drifted apart (a port free
  // in one family only) the IPv6 binding gets another number: keep one port per target, the IPv4
  // one, since the public URL is built from the IPv4 address reported to the panel.
  const seen = new Set<string>();
  const hostPorts: { target: number; published: number }[] = [];
  for (const p of st.PortStatus?.Ports ?? []) {
    if (!p.TargetPort || !p.PublishedPort) continue;
    const key = `${p.Protocol ?? 'tcp'}/${p.TargetPort}`;
    if (seen.has(key)) continue;
    seen.add(key);
    hostPorts.push({ target: p.TargetPort, published: p.PublishedPort });
  }
  return {
    id: t.ID,
    serviceId: t.ServiceID,
    nodeId: t.NodeID ?? '',
    ...(t.Slot ? { slot: t.Slot } : {}),
    desiredState: asState(t.DesiredState),
    state,
    message: st.Message ?? '',
    ...(st.Err ? { err: st.Err } : {}),
    ...(containerId ? { containerId } : {}),
    ...(containerId && TERMINAL_TASK_STATES.has(state) && typeof exitCode === 'number' ? { exitCode } : {}),
    timestamp: st.Timestamp ?? '',
    ...(t.CreatedAt ? { createdAt: t.CreatedAt } : {}),
    hostPorts,
    secretNames: (t.Spec?.ContainerSpec?.Secrets ?? []).map((r) => r.SecretName ?? '').filter((n) => n !== ''),
  };
}

/** Services carrying all of `labelFilters` (`key=value` or `key`): one Engine API call. */
export async function listServices(docker: EngineClient, labelFilters: readonly string[]): Promise<ObservedServiceDetail[]> {
  try {
    const list = await docker.request<ServiceJson[]>({
      method: 'GET',
      path: '/services',
      query: { filters: labelFilter(labelFilters) },
    });
    return list.map(toObservedServiceDetail);
  } catch (err) {
    throw toSwarmError('listing services', err);
  }
}

export interface ListTasksOptions {
  /**
   * Matched by Docker against the labels the SERVICE had when the task was created, not against
   * ContainerSpec.Labels. Found on Docker 20.10 (API 1.41): a label present only on the
   * ContainerSpec matches no task; a service label matches its tasks (several labels AND); a
   * label added to the service later matches none of its existing tasks, only those created
   * after (--force). That is swarmkit's ListTasks comparing Task.ServiceAnnotations.Labels, a copy
   * of the service's labels taken when the task is made. So filter on labels fixed at creation,
   * such as ownership labels.
   */
  labelFilters?: readonly string[];
  nodeId?: string;
  /** Docker accepts running, shutdown, accepted; several values OR. */
  desiredState?: readonly ('running' | 'shutdown' | 'accepted')[];
  /** Applied here, after the one call: keeps tasks of these services only. */
  serviceIds?: Iterable<string>;
}

/** Tasks (history included unless desiredState narrows it): one Engine API call. */
export async function listTasks(docker: EngineClient, opts: ListTasksOptions = {}): Promise<ObservedTask[]> {
  const filters: Record<string, string[]> = {};
  if (opts.labelFilters?.length) filters.label = [...opts.labelFilters];
  if (opts.nodeId) filters.node = [opts.nodeId];
  if (opts.desiredState?.length) filters['desired-state'] = [...opts.desiredState];
  let list: TaskJson[];
  try {
    list = await docker.request<TaskJson[]>({ method: 'GET', path: '/tasks', query: { filters: JSON.stringify(filters) } });
  } catch (err) {
    throw toSwarmError('listing tasks', err);
  }
  const keep = opts.serviceIds ? new Set(opts.serviceIds) : undefined;
  return list.filter((t) => !keep || keep.has(t.ServiceID)).map(toObservedTask);
}

export interface ServiceLogsOptions {
  /** Bytes read from Docker before reading stops; default 4 MiB. */
  maxBytes?: number;
  /** Longer lines are cut (with a trailing …); default 4096 characters. */
  maxLineLength?: number;
}

/**
 * The last `tail` lines a service's tasks printed (stdout and stderr), within `timeoutMs`.
 * Docker applies `tail` per task and interleaves tasks as they answer, so with several tasks the
 * lines kept are the last to arrive. Memory stays at tail × maxLineLength whatever Docker sends. If the time runs out after some
 * lines arrived they are returned (a manager waits for every node holding a task, and one
 * unreachable node would otherwise cost the lines the others gave); with none, it throws.
 */
export async function serviceLogs(
  docker: EngineClient,
  serviceId: string,
  tail: number,
  timeoutMs: number,
  opts: ServiceLogsOptions = {},
): Promise<string[]> {
  const keep = Math.max(0, Math.floor(tail));
  if (keep === 0) return [];
  const maxBytes = opts.maxBytes ?? 4 * 1024 * 1024;
  const collector = new LogTail(keep, opts.maxLineLength ?? DEFAULT_MAX_LOG_LINE);
  const abort = new AbortController();
  let res: IncomingMessage | undefined;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    abort.abort();
    res?.destroy();
  }, timeoutMs);
  try {
    res = await docker.request<IncomingMessage>({
      method: 'GET',
      path: `/services/${encodeURIComponent(serviceId)}/logs`,
      query: { stdout: true, stderr: true, follow: false, timestamps: false, tail: keep },
      stream: true,
      signal: abort.signal,
    });
    const demux = new DockerLogDemuxer(collector);
    let read = 0;
    await new Promise<void>((resolve) => {
      const done = () => resolve();
      res!.on('data', (chunk: Buffer) => {
        if (read >= maxBytes) return;
        read += chunk.length;
        demux.push(read > maxBytes ? chunk.subarray(0, chunk.length - (read - maxBytes)) : chunk);
        if (read >= maxBytes) res!.destroy();
      });
      res!.on('end', done);
      res!.on('close', done);
      res!.on('error', done);
    });
    demux.end();
    if (timedOut && collector.count === 0)
      throw new SwarmError('unavailable', `reading logs of service ${serviceId}: no answer within ${timeoutMs} ms`);
    return collector.lines();
  } catch (err) {
    if (err instanceof SwarmError) throw err;
    if (timedOut) throw new SwarmError('unavailable', `reading logs of service ${serviceId}: no answer within ${timeoutMs} ms`);
    throw toSwarmError(`reading logs of service ${serviceId}`, err);
  } finally {
    clearTimeout(timer);
    res?.destroy();
  }
}
