import { describe, expect, it } from 'vitest';
import { toObservedTask } from '../../src/swarm/swarm-reader.js';

/** A task as GET /tasks returns it, with the PortStatus Docker filled in for host-mode ports. */
function task(ports: { TargetPort: number; PublishedPort: number; Protocol?: string }[]): Parameters<typeof toObservedTask>[0] {
  return {
    ID: 't1',
    ServiceID: 's1',
    NodeID: 'n1',
    DesiredState: 'running',
    Status: {
      State: 'running',
      Timestamp: '2026-12-04T00:00:00Z',
      PortStatus: { Ports: ports.map((p) => ({ PublishMode: 'host', Protocol: 'tcp', ...p })) },
    },
  } as Parameters<typeof toObservedTask>[0];
}

describe('toObservedTask: host ports', () => {
  it('one port per target when Docker lists the binding once per address family', () => {
    expect(
      toObservedTask(
        task([
          { TargetPort: 8080, PublishedPort: 30001 },
          { TargetPort: 8080, PublishedPort: 30001 },
        ]),
      ).hostPorts,
    ).toEqual([{ target: 8080, published: 30001 }]);
  });

  it('keeps the IPv4 binding (listed first) when the families were given different ports', () => {
    // Seen on dockerd 20.10 once its per-family allocators drifted: 0.0.0.0:32832 and [::]:32813.
    expect(
      toObservedTask(
        task([
          { TargetPort: 8080, PublishedPort: 32832 },
          { TargetPort: 8080, PublishedPort: 32813 },
        ]),
      ).hostPorts,
    ).toEqual([{ target: 8080, published: 32832 }]);
  });

  it('keeps each target, and a udp port beside a tcp one', () => {
    const ports = toObservedTask(
      task([
        { TargetPort: 80, PublishedPort: 1 },
        { TargetPort: 53, PublishedPort: 2, Protocol: 'udp' },
        { TargetPort: 53, PublishedPort: 3 },
      ]),
    ).hostPorts;
    expect(ports).toEqual([
      { target: 80, published: 1 },
      { target: 53, published: 2 },
      { target: 53, published: 3 },
    ]);
  });
});
