#!/bin/sh
# Builds berth's C: the helper (mechanism under the runtime) and the test probe.
# Uses the system C compiler; warnings are errors so the C stays -Wall -Wextra clean.
set -eu
cd "$(dirname "$0")/.."
node scripts/gen-protocol.mjs
mkdir -p build
CC=${CC:-cc}
CFLAGS="-O2 -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2 -fstack-protector-strong"
# The kernel ABI values TypeScript takes from protocol.table, checked against this system's headers.
$CC -Wall -Wextra -Werror -fsyntax-only helper/kernel-abi-check.c
# The helper is exec'd at every container start: static (no dynamic linking, ~0.5 ms of each start
# here), position-independent for ASLR; a toolchain without static-pie links it dynamically.
$CC $CFLAGS -static-pie -o build/berth-helper helper/berth-helper.c 2>/dev/null || $CC $CFLAGS -o build/berth-helper helper/berth-helper.c
# The installed `berth` (scripts/install-launchers.sh builds it with its launcher's path): checked here.
$CC $CFLAGS -DBERTH_LAUNCHER='"/bin/false"' -fsyntax-only helper/berth-client.c
# The seccomp compiler links libseccomp; the helper (on every container start) does not.
$CC $CFLAGS -o build/berth-seccomp helper/berth-seccomp.c -lseccomp
# The per-container monitor (berth's conmon): stays as the container's parent, writes its logs.
$CC $CFLAGS -o build/berth-monitor helper/berth-monitor.c
# --init: static, as it is bind-mounted into images without a libc.
$CC $CFLAGS -static -o build/berth-init helper/berth-init.c
# The probe runs inside test containers, whose rootfs has no libc: link it statically.
$CC $CFLAGS -static -o build/probe test/fixtures/probe.c
$CC $CFLAGS -o build/recvtty test/fixtures/recvtty.c
$CC $CFLAGS -o build/seccomp-agent test/fixtures/seccomp-agent.c
# The system calls Node lacks, as a Node-API addon (ABI-stable: no rebuild for a new Node).
NAPI_INCLUDE=node_modules/node-api-headers/include
[ -f "$NAPI_INCLUDE/node_api.h" ] || NAPI_INCLUDE=/usr/include/node
$CC $CFLAGS -shared -fPIC -I"$NAPI_INCLUDE" -o build/berth-sys.node helper/berth-sys.c
# Container networking over rtnetlink (bridges, veth pairs, addresses, routes).
$CC $CFLAGS -o build/berth-net helper/berth-net.c
