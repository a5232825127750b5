import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { advertiseAddressFrom, defaultAdvertiseAddress, endpoint } from './advertise.ts';
import { splitConfigFromEnv } from './config.ts';

test('advertise address: an IP, else the default route\'s address (or loopback); bad values are refused clearly', () => {
  assert.notEqual(isIP(defaultAdvertiseAddress()), 0);
  assert.equal(advertiseAddressFrom(undefined), defaultAdvertiseAddress());
  assert.equal(advertiseAddressFrom('10.1.2.3'), '10.1.2.3');
  assert.equal(advertiseAddressFrom('fd00::1'), 'fd00::1');
  for (const bad of ['node-1.example', '10.1.2', '10.1.2.3:8001']) {
    assert.throws(() => advertiseAddressFrom(bad), /SHELLWEGO_ADVERTISE_ADDRESS \/ --advertise-address must be an IP address/);
  }
  assert.equal(endpoint('10.1.2.3', 8001), '10.1.2.3:8001');
  assert.equal(endpoint('fd00::1', 8001), '[fd00::1]:8001');
});

test('split config: cluster port default 8001, 0 allowed, nonsense refused', () => {
  const env = { SHELLWEGO_ADVERTISE_ADDRESS: '10.0.0.5' };
  assert.deepEqual([splitConfigFromEnv(env).advertiseAddress, splitConfigFromEnv(env).clusterPort], ['10.0.0.5', 8001]);
  assert.equal(splitConfigFromEnv({ ...env, SHELLWEGO_CLUSTER_PORT: '0' }).clusterPort, 0);
  assert.throws(() => splitConfigFromEnv({ ...env, SHELLWEGO_CLUSTER_PORT: '70000' }), /SHELLWEGO_CLUSTER_PORT must be a port number/);
  assert.throws(() => splitConfigFromEnv({ SHELLWEGO_ADVERTISE_ADDRESS: 'somewhere' }), /must be an IP address/);
});
