import { describe, expect, it } from 'vitest';
import { Registry, createAgentMetrics, escapeLabelValue, renderProcessMetrics } from '../../src/agent/status/metrics.js';
import type { HeartbeatRecord } from '../../src/agent/heartbeat-loop.js';
import { parsePrometheusText, sampleValue } from '../helpers/prom-text.js';

describe('Registry rendering (text format 0.0.4)', () => {
  it('renders HELP and TYPE before samples, one family after another', () => {
    const r = new Registry({ processMetrics: false });
    const c = r.counter<'result'>({ name: 'jobs_total', help: 'Jobs done.', labelNames: ['result'] });
    const g = r.gauge({ name: 'queue_depth', help: 'Queue depth.' });
    c.inc({ result: 'ok' });
    c.inc({ result: 'ok' }, 2);
    c.inc({ result: 'failed' });
    g.set(undefined, 7);
    expect(r.render()).toBe(
      [
        '# HELP jobs_total Jobs done.',
        '# TYPE jobs_total counter',
        'jobs_total{result="ok"} 3',
        'jobs_total{result="failed"} 1',
        '# HELP queue_depth Queue depth.',
        '# TYPE queue_depth gauge',
        'queue_depth 7',
        '',
      ].join('\n'),
    );
  });

  it('escapes label values and help text so the parser gets the originals back', () => {
    const r = new Registry({ processMetrics: false });
    const g = r.gauge<'v'>({ name: 'weird', help: 'back\\slash and\nnewline', labelNames: ['v'] });
    const nasty = 'quote " backslash \\ newline \n end } , =';
    g.set({ v: nasty }, 1);
    expect(escapeLabelValue('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
    const text = r.render();
    expect(text.split('\n').filter((l) => l.startsWith('weird{'))).toHaveLength(1);
    const fams = parsePrometheusText(text);
    expect(fams.get('weird')!.help).toBe('back\\slash and\nnewline');
    expect(fams.get('weird')!.samples[0]!.labels.v).toBe(nasty);
  });

  it('renders cumulative histogram buckets with +Inf, _sum and _count', () => {
    const r = new Registry({ processMetrics: false });
    const h = r.histogram<'kind'>({ name: 'latency_seconds', help: 'Latency.', labelNames: ['kind'], buckets: [0.1, 1, 10] });
    for (const v of [0.05, 0.1, 0.5, 2, 20]) h.observe({ kind: 'a' }, v);
    h.observe({ kind: 'b' }, 0.5);
    const fams = parsePrometheusText(r.render());
    const b = (le: string, kind = 'a') => sampleValue(fams, 'latency_seconds_bucket', { kind, le });
    expect([b('0.1'), b('1'), b('10'), b('+Inf')]).toEqual([2, 3, 4, 5]);
    expect(sampleValue(fams, 'latency_seconds_count', { kind: 'a' })).toBe(5);
    expect(sampleValue(fams, 'latency_seconds_sum', { kind: 'a' })).toBeCloseTo(22.65);
    expect([b('0.1', 'b'), b('1', 'b'), b('+Inf', 'b')]).toEqual([0, 1, 1]);
  });

  it('renders an unlabelled metric at zero before anything happened, and special values', () => {
    const r = new Registry({ processMetrics: false });
    r.counter({ name: 'c_total', help: 'c' });
    r.histogram({ name: 'h', help: 'h', buckets: [1] });
    const g = r.gauge({ name: 'g', help: 'g' });
    g.set(undefined, Infinity);
    const text = r.render();
    expect(text).toContain('c_total 0\n');
    expect(text).toContain('h_bucket{le="+Inf"} 0\n');
    expect(text).toContain('g +Inf\n');
    parsePrometheusText(text);
  });

  it('refuses bad names at registration but never throws at runtime', () => {
    const r = new Registry({ processMetrics: false });
    expect(() => r.counter({ name: 'bad-name', help: 'x' })).toThrow(/invalid metric name/);
    expect(() => r.counter({ name: 'x_total', help: 'x', labelNames: ['__x'] })).toThrow(/invalid label name/);
    expect(() => r.histogram({ name: 'h', help: 'h', labelNames: ['le'], buckets: [1] })).toThrow(/invalid label name/);
    expect(() => r.histogram({ name: 'h2', help: 'h', buckets: [2, 1] })).toThrow(/strictly increasing/);
    r.counter({ name: 'dup', help: 'x' });
    expect(() => r.gauge({ name: 'dup', help: 'x' })).toThrow(/twice/);
    const c = r.counter({ name: 'ok_total', help: 'x' });
    c.inc(undefined, -1);
    c.inc(undefined, NaN);
    expect(c.get()).toBe(0);
  });

  it('caps the number of series so a label bug cannot grow memory without bound', () => {
    const r = new Registry({ processMetrics: false });
    const c = r.counter<'id'>({ name: 'capped_total', help: 'x', labelNames: ['id'], maxSeries: 3 });
    for (let i = 0; i < 100; i++) c.inc({ id: String(i) });
    expect(parsePrometheusText(r.render()).get('capped_total')!.samples).toHaveLength(3);
  });

  it('uses a gauge collect callback as the source of truth at each render', () => {
    const r = new Registry({ processMetrics: false });
    let counts: { labels: { s: string }; value: number }[] = [
      { labels: { s: 'a' }, value: 1 },
      { labels: { s: 'b' }, value: 2 },
    ];
    r.gauge<'s'>({ name: 'by_s', help: 'x', labelNames: ['s'], collect: () => counts });
    expect(sampleValue(parsePrometheusText(r.render()), 'by_s', { s: 'b' })).toBe(2);
    counts = [{ labels: { s: 'a' }, value: 5 }];
    const fams = parsePrometheusText(r.render());
    expect(sampleValue(fams, 'by_s', { s: 'a' })).toBe(5);
    expect(sampleValue(fams, 'by_s', { s: 'b' })).toBeUndefined();
  });
});

describe('process metrics', () => {
  it('reports memory, cpu, start time, heap and open fds of this process', () => {
    const fams = parsePrometheusText(renderProcessMetrics());
    expect(fams.get('process_resident_memory_bytes')!.samples[0]!.value).toBeGreaterThan(1e6);
    expect(fams.get('process_cpu_seconds_total')!.type).toBe('counter');
    expect(fams.get('process_cpu_seconds_total')!.samples[0]!.value).toBeGreaterThan(0);
    const start = fams.get('process_start_time_seconds')!.samples[0]!.value;
    expect(Math.abs(start - (Date.now() / 1000 - process.uptime()))).toBeLessThan(2);
    expect(fams.get('nodejs_heap_size_used_bytes')!.samples[0]!.value).toBeGreaterThan(0);
    if (process.platform === 'linux') expect(fams.get('process_open_fds')!.samples[0]!.value).toBeGreaterThan(2);
  });

  it("uses prom-client's standard names and types, so stock Node dashboards work", () => {
    const fams = parsePrometheusText(renderProcessMetrics());
    const expected: Record<string, string> = {
      process_cpu_user_seconds_total: 'counter',
      process_cpu_system_seconds_total: 'counter',
      process_cpu_seconds_total: 'counter',
      process_start_time_seconds: 'gauge',
      process_resident_memory_bytes: 'gauge',
      nodejs_heap_size_total_bytes: 'gauge',
      nodejs_heap_size_used_bytes: 'gauge',
      nodejs_external_memory_bytes: 'gauge',
      nodejs_version_info: 'gauge',
      ...(process.platform === 'linux'
        ? { process_virtual_memory_bytes: 'gauge', process_heap_bytes: 'gauge', process_open_fds: 'gauge', process_max_fds: 'gauge' }
        : {}),
    };
    for (const [name, type] of Object.entries(expected)) expect(fams.get(name)?.type, name).toBe(type);
    expect(fams.get('nodejs_version_info')!.samples[0]!.labels).toMatchObject({ version: `v${process.versions.node}` });
  });
});

describe('createAgentMetrics', () => {
  const beat = (r: Partial<HeartbeatRecord>): HeartbeatRecord => ({ at: Date.now(), outcome: 'accepted', nextInMs: 1000, ...r });

  it('exposes the agent metric set, parseable, with every heartbeat result pre-created', () => {
    let depth = 3;
    const m = createAgentMetrics({
      deployments: () => ({ running: 2, failed: 1, 'Weird Status!': 4 }),
      reportQueueDepth: () => depth,
      dockerHealthy: () => true,
    });
    m.recordHeartbeat(beat({ status: 200, rttMs: 40 }));
    m.recordHeartbeat(beat({ outcome: 'timeout', rttMs: 10_000 }));
    m.recordHeartbeat(beat({ outcome: 'unauthorized', status: 401, rttMs: 20 }));
    m.observeReconcilePass(0.2);
    m.observeDesiredToApplied(3);
    depth = 5;
    const fams = parsePrometheusText(m.render());
    expect(sampleValue(fams, 'skypanel_agent_heartbeats_total', { result: 'accepted' })).toBe(1);
    expect(sampleValue(fams, 'skypanel_agent_heartbeats_total', { result: 'timeout' })).toBe(1);
    expect(sampleValue(fams, 'skypanel_agent_heartbeats_total', { result: 'network' })).toBe(0);
    // The timeout got no answer, so it is not a round trip.
    expect(sampleValue(fams, 'skypanel_agent_heartbeat_rtt_seconds_count')).toBe(2);
    expect(sampleValue(fams, 'skypanel_agent_heartbeat_rtt_seconds_bucket', { le: '0.05' })).toBe(2);
    expect(sampleValue(fams, 'skypanel_agent_reconcile_pass_seconds_count')).toBe(1);
    expect(sampleValue(fams, 'skypanel_agent_desired_to_applied_seconds_sum')).toBe(3);
    expect(sampleValue(fams, 'skypanel_agent_deployments', { status: 'running' })).toBe(2);
    expect(sampleValue(fams, 'skypanel_agent_deployments', { status: 'other' })).toBe(4);
    expect(sampleValue(fams, 'skypanel_agent_report_queue_depth')).toBe(5);
    expect(sampleValue(fams, 'skypanel_agent_docker_healthy')).toBe(1);
    for (const name of [
      'process_resident_memory_bytes',
      'process_cpu_seconds_total',
      'process_start_time_seconds',
      'nodejs_heap_size_used_bytes',
    ]) {
      expect(fams.has(name), name).toBe(true);
    }
  });

  it('exposes build info, the last accepted heartbeat, usage outbox, event stream, rejected deployments and heartbeat-only mode', () => {
    let dropped = 2;
    let connected: boolean | undefined = true;
    const m = createAgentMetrics({
      usageUnsent: () => 7,
      usageDropped: () => dropped,
      engineEventsConnected: () => connected,
      rejectedDeployments: () => ({ imageTag: 2, 'bad field!': 1 }),
      heartbeatOnly: () => true,
    });
    const at = Date.UTC(2026, 0, 1, 12);
    m.recordHeartbeat(beat({ at, status: 200, rttMs: 5 }));
    m.recordHeartbeat(beat({ at: at + 60_000, outcome: 'timeout' }));
    let fams = parsePrometheusText(m.render());
    expect(sampleValue(fams, 'skypanel_agent_last_heartbeat_success_timestamp_seconds')).toBe(at / 1000);
    expect(sampleValue(fams, 'skypanel_agent_usage_outbox_records')).toBe(7);
    expect(sampleValue(fams, 'skypanel_agent_usage_records_dropped_total')).toBe(2);
    expect(sampleValue(fams, 'skypanel_agent_docker_events_connected')).toBe(1);
    expect(sampleValue(fams, 'skypanel_agent_deployments_rejected', { field: 'imageTag' })).toBe(2);
    expect(sampleValue(fams, 'skypanel_agent_deployments_rejected', { field: 'other' })).toBe(1);
    expect(sampleValue(fams, 'skypanel_agent_heartbeat_only')).toBe(1);
    expect(fams.get('skypanel_agent_build_info')!.samples[0]!.labels.node_version).toBe(process.versions.node);
    // A counter never goes down, even if its source restarts from zero (a reload builds a new outbox).
    dropped = 0;
    connected = false;
    fams = parsePrometheusText(m.render());
    expect(sampleValue(fams, 'skypanel_agent_usage_records_dropped_total')).toBe(2);
    expect(sampleValue(fams, 'skypanel_agent_docker_events_connected')).toBe(0);
  });

  it('keeps deployment ids out of labels: only bounded status values appear', () => {
    const m = createAgentMetrics();
    const ids: Record<string, number> = {};
    for (let i = 0; i < 500; i++) ids[`dep-${i}-1f0c2a4e-8f5e-4b1e-9c1a-${i}`] = 1;
    m.setDeploymentCounts(ids);
    m.setDeploymentCounts({ running: 1 });
    const samples = parsePrometheusText(m.render()).get('skypanel_agent_deployments')!.samples;
    expect(samples).toEqual([{ name: 'skypanel_agent_deployments', labels: { status: 'running' }, value: 1 }]);
  });
});
