/**
 * Start-up tracing for developers: with BERTH_TRACE=1, `trace(label)` prints the milliseconds since
 * the process began to stderr. Off, it costs one property read.
 */
export function trace(label: string): void {
  if (process.env.BERTH_TRACE) process.stderr.write(`[trace ${process.pid}] ${performance.now().toFixed(1)} ms ${label}\n`);
}
