#!/usr/bin/env node
// The CLI ships as TypeScript source run through tsx (see docs/adr/0002-typescript-run-with-tsx.md).
import { register } from 'tsx/esm/api';
register();
await import('../src/main.ts');
