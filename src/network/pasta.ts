/**
 * Rootless networking with pasta (Debian's passt package), as podman 5 does: the container's own
 * network namespace gets a tap interface that pasta copies the host's addresses and routes onto,
 * and pasta forwards the published ports from the host. pasta leaves when the namespace goes.
 * Docker's defaults are kept: nothing is forwarded unless published, and the container does not
 * reach the host's loopback through its gateway.
 */
import * as fs from "node:fs";
import { BerthError } from "../common/errors.js";
import { portFree, runToEnd } from "../common/sys.js";
import type { PortBinding, PortRequest } from "./store.js";

function pastaBinary(): string {
  for (const dir of (process.env.PATH || "/usr/local/bin:/usr/bin:/bin").split(":")) {
    const p = `${dir}/pasta`;
    if (dir && fs.existsSync(p)) return p;
  }
  throw new BerthError("Unsupported", "rootless networking needs pasta (Debian: apt install passt); or run with --network none");
}

/** Host ports for the requests, checked free now (a clear error before the container starts). */
export function pastaPortsFor(requests: PortRequest[]): PortBinding[] {
  const out: PortBinding[] = [];
  for (const p of requests) {
    const got = portFree(p.proto, p.hostIp, p.hostPort);
    if (got === undefined || out.some((b) => b.Proto === p.proto && b.HostPort === got))
      throw new BerthError("AlreadyExists", `Bind for ${p.hostIp}:${p.hostPort} failed: port is already allocated`);
    out.push({ Container: "", Proto: p.proto, HostIp: p.hostIp, HostPort: got, ContainerIp: "", ContainerPort: p.containerPort });
  }
  return out;
}

/**
 * Connects the network namespace of process `pid` and forwards `ports`; returns once pasta serves.
 * pasta writes its pid to pidFile: it outlives the namespace's processes (it holds the namespace
 * open), so the container's teardown stops it (stopPasta).
 */
export async function startPasta(pid: number, ports: PortBinding[], pidFile: string): Promise<void> {
  const forward = (proto: "tcp" | "udp") => {
    const specs = ports.filter((p) => p.Proto === proto).map((p) => `${p.HostIp === "0.0.0.0" ? "" : `${p.HostIp}/`}${p.HostPort}:${p.ContainerPort}`);
    return [proto === "tcp" ? "-t" : "-u", specs.length ? specs.join(",") : "none"];
  };
  const args = [pastaBinary(), "--config-net", "--quiet", "--no-map-gw", ...forward("tcp"), ...forward("udp"), "-T", "none", "-U", "none", "--pid", pidFile, "--netns", `/proc/${pid}/ns/net`, "--userns", `/proc/${pid}/ns/user`];
  const { code, stderr } = await runToEnd(args);
  if (code !== 0) {
    const why = stderr.split("\n").filter((l) => l && !/syslog/.test(l)).join("; ");
    const tun = /tun/i.test(why) ? " (rootless networking needs /dev/net/tun open to users: chmod 0666 /dev/net/tun, as udev does)" : "";
    throw new BerthError("System", `pasta could not connect the container's network: ${why || `exit ${code}`}${tun}`);
  }
}

/** Stops the pasta serving a container (its pid file), if it is still that pasta. */
export function stopPasta(pidFile: string): void {
  let pid = 0;
  try {
    pid = Number(fs.readFileSync(pidFile, "utf8").trim());
  } catch {
    // no pid file: pasta never started or is gone already
    return;
  }
  try {
    // a recycled pid is left alone: it must be a pasta that wrote this very file
    if (pid > 0 && fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(pidFile)) {
      process.kill(pid, "SIGTERM");
      // gone (or a zombie for init to reap) before the container counts as removed: a short wait
      const cell = new Int32Array(new SharedArrayBuffer(4));
      for (let i = 0; i < 200; i++) {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
        if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) break;
        Atomics.wait(cell, 0, 0, 5);
      }
    }
  } catch {
    /* gone already */
  }
  fs.rmSync(pidFile, { force: true });
}
