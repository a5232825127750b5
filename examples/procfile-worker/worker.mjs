// Worker process: no port, prints a heartbeat line every 5 seconds.
const every = Number(process.env.HEARTBEAT_SECONDS || 5) * 1000;
let beats = 0;
console.log('worker started');
const timer = setInterval(() => console.log(`heartbeat ${++beats} at ${new Date().toISOString()}`), every);
process.on('SIGTERM', () => {
  clearInterval(timer);
  console.log('worker stopping');
  process.exit(0);
});
