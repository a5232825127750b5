import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { newId } from '@shellwego/core';

/** The node's id, created once and kept in its data dir so a restarted node is the same node. */
export async function stableNodeId(dataDir: string): Promise<string> {
  const file = join(dataDir, 'node-id');
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    const id = newId('nod');
    await writeFile(file, id + '\n', { mode: 0o600 });
    return id;
  }
}

/** First host address of an IPv4 CIDR: the bridge's gateway, where host-side services listen. */
export function firstHost(cidr: string): string {
  const [base] = cidr.split('/');
  const parts = base.split('.').map(Number);
  parts[3] += 1;
  return parts.join('.');
}
