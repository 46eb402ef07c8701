import { describe, expect, it } from 'vitest';
import { clientKey } from '../../src/agent/status/connection-limit.js';

describe('clientKey: whose connections count together', () => {
  it('is the IPv4 address, also when IPv4-mapped', () => {
    expect(clientKey('203.0.113.7')).toBe('203.0.113.7');
    expect(clientKey('::ffff:203.0.113.7')).toBe('203.0.113.7');
  });

  it('is the /64 for IPv6: one host picks source addresses from a whole /64', () => {
    expect(clientKey('2001:db8:1:2::5')).toBe('2001:db8:1:2');
    expect(clientKey('2001:0db8:0001:0002:aaaa:bbbb:cccc:dddd')).toBe('2001:db8:1:2');
    expect(clientKey('2001:db8::1')).toBe('2001:db8:0:0');
    expect(clientKey('::1')).toBe('0:0:0:0');
    expect(clientKey('fe80::1%eth0')).toBe('fe80:0:0:0');
  });

  it('counts a socket without an address under one key', () => {
    expect(clientKey(undefined)).toBe('?');
  });
});
