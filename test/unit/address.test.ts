import { describe, expect, it } from 'vitest';
import { expandIpv6, localAddressToward, toPanelIp, addressScope } from '../../src/collectors/address.js';

// SkyPanelV2's own acceptance rule for ipAddress.
const panelAccepts = (ip: string) =>
  (/^(\d{1,3}\.){3}\d{1,3}$/.test(ip) && ip.split('.').every((p) => Number(p) <= 255)) ||
  /^([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}$/.test(ip);

describe('addresses the panel accepts', () => {
  it.each([
    ['fd00::5', 'fd00:0000:0000:0000:0000:0000:0000:0005'],
    ['::1', '0000:0000:0000:0000:0000:0000:0000:0001'],
    ['2001:db8::1:0:0:1', '2001:0db8:0000:0000:0001:0000:0000:0001'],
    ['fe80::1%eth0', 'fe80:0000:0000:0000:0000:0000:0000:0001'],
    ['1:2:3:4:5:6:7:8', '0001:0002:0003:0004:0005:0006:0007:0008'],
  ])('expands %s to 8 groups', (input, full) => {
    expect(expandIpv6(input)).toBe(full);
    expect(panelAccepts(full)).toBe(true);
  });

  it('turns IPv4-mapped IPv6 back into dotted IPv4', () => {
    expect(toPanelIp('::ffff:10.1.2.3')).toBe('10.1.2.3');
  });

  it('keeps IPv4 and refuses what is not an address', () => {
    expect(toPanelIp('192.0.2.7')).toBe('192.0.2.7');
    expect(toPanelIp('panel.example.com')).toBeUndefined();
    expect(toPanelIp('300.1.1.1')).toBeUndefined();
  });

  it('finds the local address used to reach a loopback control plane', async () => {
    expect(await localAddressToward('http://127.0.0.1:3001')).toBe('127.0.0.1');
    expect(await localAddressToward('https://localhost')).toMatch(/^(127\.0\.0\.1|0000:0000:0000:0000:0000:0000:0000:0001)$/);
  });
});

describe('addressScope: the warning at register', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.8.9.10', 'loopback'],
    ['0000:0000:0000:0000:0000:0000:0000:0001', 'loopback'],
    ['10.0.0.5', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.1', 'private'],
    ['192.168.1.20', 'private'],
    ['100.64.0.1', 'private'],
    ['fd00:0000:0000:0000:0000:0000:0000:0005', 'private'],
    ['169.254.1.1', 'link-local'],
    ['fe80:0000:0000:0000:0000:0000:0000:0001', 'link-local'],
    ['172.32.0.1', 'public'],
    ['8.8.8.8', 'public'],
    ['100.128.0.1', 'public'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', 'public'],
  ])('%s is %s', (ip, scope) => {
    expect(addressScope(ip)).toBe(scope);
  });
});
