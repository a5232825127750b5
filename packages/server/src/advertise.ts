import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';

/**
 * The address other nodes reach this one at, when none is configured: the first IPv4 address of
 * the interface holding the default route (/proc/net/route), else loopback (a machine with no
 * default route is a cluster of one).
 */
export function defaultAdvertiseAddress(): string {
  let iface: string | undefined;
  try {
    for (const line of readFileSync('/proc/net/route', 'utf8').split('\n').slice(1)) {
      const [name, destination, , , , , , mask] = line.trim().split(/\s+/);
      if (destination === '00000000' && mask === '00000000') {
        iface = name;
        break;
      }
    }
  } catch {
    // not Linux, or no /proc: loopback below
  }
  const addr = iface ? networkInterfaces()[iface]?.find((a) => a.family === 'IPv4' && !a.internal) : undefined;
  return addr?.address ?? '127.0.0.1';
}

/** SHELLWEGO_ADVERTISE_ADDRESS / --advertise-address: an IP address (routers of other nodes connect to it). */
export function advertiseAddressFrom(value: string | undefined): string {
  if (value === undefined || value === '') return defaultAdvertiseAddress();
  if (isIP(value) === 0) throw new Error(`SHELLWEGO_ADVERTISE_ADDRESS / --advertise-address must be an IP address this node is reachable at from the other nodes, got '${value}'`);
  return value;
}

/** host:port, with brackets for IPv6. */
export function endpoint(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}
