/**
 * Start-up tracing for developers: with BERTH_TRACE=1, `trace(label)` prints the milliseconds since
 * the process began to stderr, and the monotonic clock (as berth-helper's own trace prints it, so
 * the two can be lined up). Off, it costs one property read.
 */
export function trace(label: string): void {
  if (process.env.BERTH_TRACE)
    process.stderr.write(`[trace ${process.pid}] ${performance.now().toFixed(1)} ms ${label} @${(Number(process.hrtime.bigint()) / 1e6).toFixed(3)}\n`);
}
