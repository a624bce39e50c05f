/** docker's -p syntax: [ip:][hostPort[-end]:]containerPort[-end][/tcp|udp]. */
import { invalid } from "../common/errors.js";

export interface PublishSpec {
  /** "80/tcp", as in docker's PortBindings keys */
  key: string;
  HostIp: string;
  HostPort: string;
}

function range(s: string, what: string, spec: string): [number, number] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(s);
  if (!m) throw invalid(`invalid ${what} "${s}" in publish spec ${spec}`);
  const a = Number(m[1]);
  const b = Number(m[2] ?? m[1]);
  if (a < 1 || b > 65535 || b < a) throw invalid(`invalid ${what} range "${s}" in publish spec ${spec}`);
  return [a, b];
}

export function parsePublish(spec: string): PublishSpec[] {
  let rest = spec;
  let proto = "tcp";
  const slash = rest.lastIndexOf("/");
  if (slash >= 0) {
    proto = rest.slice(slash + 1).toLowerCase();
    rest = rest.slice(0, slash);
    if (proto !== "tcp" && proto !== "udp") throw invalid(`invalid proto: ${proto} (tcp and udp are supported)`);
  }
  let ip = "";
  // [v6]:host:ctr or a.b.c.d:host:ctr
  const v6 = /^\[([0-9a-fA-F:]+)\]:(.*)$/.exec(rest);
  if (v6) throw invalid(`publishing on the IPv6 address ${v6[1]} is not supported by berth yet`);
  const parts = rest.split(":");
  if (parts.length > 3) throw invalid(`invalid publish spec ${spec}`);
  if (parts.length === 3) ip = parts.shift()!;
  if (ip && !/^\d+\.\d+\.\d+\.\d+$/.test(ip)) throw invalid(`invalid IP address ${ip} in publish spec ${spec}`);
  const ctr = range(parts.pop()!, "containerPort", spec);
  const host = parts.length && parts[0] !== "" ? range(parts[0]!, "hostPort", spec) : undefined;
  const n = ctr[1] - ctr[0] + 1;
  if (host && n > 1 && host[1] - host[0] + 1 !== n) throw invalid(`invalid ranges specified for container and host Ports: ${spec}`);
  const out: PublishSpec[] = [];
  for (let i = 0; i < n; i++)
    out.push({ key: `${ctr[0] + i}/${proto}`, HostIp: ip, HostPort: host ? String(host[0] === host[1] ? host[0] : host[0] + i) : "" });
  return out;
}
