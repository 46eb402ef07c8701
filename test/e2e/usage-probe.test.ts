import { it } from 'vitest';
import { createDockerClient } from '../../src/swarm/docker-client.js';
it('probe', async () => {
const d = createDockerClient({});
const f = JSON.stringify({ label: ['probe-usage=1'] });
const list = await d.listContainers({ filters: f });
const N = 100; const c0 = process.cpuUsage(); const t0 = performance.now();
for (let i = 0; i < N; i++) await Promise.all(list.map((c) => d.getContainer(c.Id).stats({ stream: false, 'one-shot': true } as any)));
const c = process.cpuUsage(c0);
console.log(list.length, 'per call ms wall', (performance.now() - t0) / N / list.length, 'cpu us', (c.user + c.system) / N / list.length);
const c1 = process.cpuUsage(); const t2 = performance.now();
for (let i = 0; i < N; i++) await d.listContainers({ filters: f });
const cc = process.cpuUsage(c1);
console.log('list ms', (performance.now() - t2) / N, 'cpu us', (cc.user + cc.system) / N);
const t1 = performance.now();
const sz = await d.listContainers({ size: true, filters: f });
console.log('size list ms', performance.now() - t1, sz.map((x: any) => [x.SizeRw, x.SizeRootFs]));
}, 60000);
