#!/bin/sh
# Runs a test file inside a qemu guest that boots Debian's own kernel with only cgroup v2, so the
# cgroup layer is tested on a real unified hierarchy even on hosts with the v1 (hybrid) layout.
#
#   sh scripts/cgroup2-vm.sh [test files...]     (default: dist/test/cgroups.test.js)
#
# The guest: Debian's linux-image (unpacked from its .deb, never installed), an initramfs of
# busybox-static and the 9p/virtio modules from that package; it mounts the host's root read-only
# over 9p with tmpfs, proc, sys, dev and cgroup2 over it, chroots into it and runs the host's Node.
# KVM guests hang on these VMs, so qemu emulates (TCG): the boot takes ~10 s. Prints the guest's
# console and exits with the tests' status. Needs root (apt, 9p passthrough).
set -eu
cd "$(dirname "$0")/.."
project=$(pwd)
vm=build/vm
tests=${*:-dist/test/cgroups.test.js}

need=""
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
[ -x /bin/busybox ] || need="$need busybox-static"
command -v cpio >/dev/null || need="$need cpio"
if [ -n "$need" ]; then
  echo "cgroup2-vm: installing$need"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null; }
fi

if [ ! -f "$vm/vmlinuz" ]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
  [ -n "$pkg" ] || { apt-get update -qq >/dev/null; pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}'); }
  echo "cgroup2-vm: fetching $pkg (unpacked under $vm, not installed)"
  rm -rf "$vm" && mkdir -p "$vm/deb"
  (cd "$vm/deb" && apt-get download "$pkg" 2>/dev/null && dpkg-deb -x ./*.deb root && rm -f ./*.deb)
  cp "$vm"/deb/root/boot/vmlinuz-* "$vm/vmlinuz"
fi

# The initramfs is cheap: rebuild it every time so the init below is always current.
init=$vm/initramfs
rm -rf "$init" && mkdir -p "$init/bin" "$init/proc" "$init/sys" "$init/dev" "$init/host" "$init/modules"
cp /bin/busybox "$init/bin/busybox"
kmods=$(ls -d "$vm"/deb/root/lib/modules/*/kernel)
for m in drivers/virtio/virtio drivers/virtio/virtio_ring drivers/virtio/virtio_pci_modern_dev \
  drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci fs/netfs/netfs fs/fscache/fscache \
  net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p; do
  cp "$kmods/$m.ko" "$init/modules/"
done
cat > "$init/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# Load in passes: whatever a module needs is loaded by an earlier pass.
for pass in 1 2 3 4; do for m in /modules/*.ko; do insmod \$m 2>/dev/null && rm \$m; done; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 host /host || { echo "BERTH-VM: cannot mount the host over 9p"; poweroff -f; }
for d in tmp run var/tmp; do mount -t tmpfs tmpfs /host/\$d; done
# The project has its own share, so a tmpfs above (a clone under /tmp) cannot hide it.
mkdir -p /host$project && mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 project /host$project
mount -t proc proc /host/proc; mount -t sysfs sys /host/sys; mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm; mount -t devpts devpts /host/dev/pts; mount -t tmpfs shm /host/dev/shm
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup
echo "BERTH-VM: kernel \$(uname -r), cgroup2 controllers: \$(cat /host/sys/fs/cgroup/cgroup.controllers)"
chroot /host /bin/sh -c 'cd $project && HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin node --test --test-concurrency=1 $tests'
echo "BERTH-VM-EXIT \$?"
poweroff -f
EOF
chmod +x "$init/init"
(cd "$init" && find . | cpio -o -H newc --quiet | gzip -1) > "$vm/initramfs.gz"

log=$vm/console.log
start=$(date +%s)
timeout 900 qemu-system-x86_64 -accel tcg -m 3072 -smp 2 -nographic -no-reboot -monitor none \
  -kernel "$vm/vmlinuz" -initrd "$vm/initramfs.gz" \
  -append "console=ttyS0 quiet panic=-1 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1" \
  -virtfs local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap \
  -virtfs local,path="$project",mount_tag=project,security_model=passthrough,readonly=on,multidevs=remap \
  -nic none </dev/null | tee "$log" | grep -v '^\[' || true
echo "cgroup2-vm: boot to power-off in $(( $(date +%s) - start )) s"
code=$(sed -n 's/.*BERTH-VM-EXIT \([0-9]*\).*/\1/p' "$log" | tail -1)
[ -n "$code" ] || { echo "cgroup2-vm: the guest did not report a result (see $log)"; exit 1; }
exit "$code"
