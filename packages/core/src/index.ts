export * from './errors.ts';
export * from './ids.ts';
export * from './names.ts';
export * from './state-machine.ts';
export * from './domain.ts';
export * from './api.ts';
export * from './openapi.ts';
export * from './messages.ts';
