export * from './bus.ts';
export * from './in-process.ts';
export * from './nats.ts';
export * from './durable.ts';
export * from './nats-auth.ts';
