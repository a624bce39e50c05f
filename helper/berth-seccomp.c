/*
 * berth-seccomp: compiles a seccomp rule list into a BPF program with libseccomp, the library
 * runc, crun and youki use, so every architecture's syscall numbers and the program's layout
 * (a binary tree, not a chain of compares) are libseccomp's. Mechanism only: TypeScript
 * (src/security/seccomp.ts) turns the OCI profile into SCMP_* records, caches the program by
 * digest, and berth-helper loads it into the container with seccomp(2).
 *
 * Usage: berth-seccomp PLAN_FD REPORT_FD
 *   in:  SCMP_INIT action, SCMP_ARCH name..., SCMP_RULE action syscall [index op value valueTwo]..., END
 *   out: PROGRAM hex skipped   or   ERROR stage errno message
 */
#define _GNU_SOURCE
#include <errno.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "protocol.h"

static int report_fd;

static void send_record(int code, int n, const char **strs) {
  size_t len = 8;
  for (int i = 0; i < n; i++) len += strlen(strs[i]) + 1;
  char *buf = malloc(len);
  uint32_t hdr[2] = {(uint32_t)code, (uint32_t)(len - 8)};
  memcpy(buf, hdr, 8);
  size_t off = 8;
  for (int i = 0; i < n; i++) {
    size_t l = strlen(strs[i]) + 1;
    memcpy(buf + off, strs[i], l);
    off += l;
  }
  for (size_t done = 0; done < len;) {
    ssize_t w = write(report_fd, buf + done, len - done);
    if (w <= 0) break;
    done += (size_t)w;
  }
  free(buf);
}

static void fail(const char *stage, int err, const char *fmt, const char *arg) {
  char msg[512], errbuf[16];
  snprintf(msg, sizeof msg, fmt, arg);
  snprintf(errbuf, sizeof errbuf, "%d", err);
  const char *strs[3] = {stage, errbuf, msg};
  send_record(MSG_ERROR, 3, strs);
  exit(1);
}

static int read_full(int fd, void *buf, size_t len) {
  for (size_t got = 0; got < len;) {
    ssize_t r = read(fd, (char *)buf + got, len - got);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "berth-seccomp is run by berth, not by hand\n");
    return 2;
  }
  int plan_fd = atoi(argv[1]);
  report_fd = atoi(argv[2]);
  scmp_filter_ctx ctx = NULL;
  int skipped = 0;
  for (;;) {
    uint32_t hdr[2];
    if (read_full(plan_fd, hdr, 8) < 0) fail("plan", EIO, "%s", "plan ended before END");
    char *p = malloc(hdr[1] + 1);
    if (read_full(plan_fd, p, hdr[1]) < 0) fail("plan", EIO, "%s", "short record");
    p[hdr[1]] = 0;
    if (hdr[0] == OP_END) break;
    char *a[64];
    int n = 0;
    for (char *q = p; q < p + hdr[1] && n < 64; q += strlen(q) + 1) a[n++] = q;
    if (hdr[0] == OP_SCMP_INIT) {
      ctx = seccomp_init((uint32_t)strtoul(a[0], NULL, 0));
      if (!ctx) fail("SCMP_INIT", EINVAL, "invalid default action %s", a[0]);
      /* a binary tree of syscall numbers instead of a linear chain */
      seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    } else if (hdr[0] == OP_SCMP_ARCH) {
      uint32_t arch = seccomp_arch_resolve_name(a[0]);
      if (!arch) fail("SCMP_ARCH", EINVAL, "unknown architecture %s", a[0]);
      int r = seccomp_arch_add(ctx, arch);
      if (r < 0 && r != -EEXIST) fail("SCMP_ARCH", -r, "cannot add architecture %s", a[0]);
    } else if (hdr[0] == OP_SCMP_RULE) {
      int nr = seccomp_syscall_resolve_name(a[1]);
      if (nr == __NR_SCMP_ERROR) {
        skipped++; /* unknown to this libseccomp: skipped, as runc does */
        continue;
      }
      struct scmp_arg_cmp cmp[6];
      int ncmp = 0;
      for (int i = 2; i + 3 < n && ncmp < 6; i += 4, ncmp++) {
        cmp[ncmp].arg = (unsigned)strtoul(a[i], NULL, 0);
        cmp[ncmp].op = (enum scmp_compare)strtoul(a[i + 1], NULL, 0);
        cmp[ncmp].datum_a = strtoull(a[i + 2], NULL, 0);
        cmp[ncmp].datum_b = strtoull(a[i + 3], NULL, 0);
      }
      int r = seccomp_rule_add_array(ctx, (uint32_t)strtoul(a[0], NULL, 0), nr, (unsigned)ncmp, cmp);
      if (r < 0) fail("SCMP_RULE", -r, "cannot add the rule for %s", a[1]);
    }
    free(p);
  }
  if (!ctx) fail("plan", EINVAL, "%s", "no SCMP_INIT");
  int fd = memfd_create("bpf", MFD_CLOEXEC);
  int r = seccomp_export_bpf(ctx, fd);
  if (r < 0) fail("export", -r, "%s", "cannot export the program");
  off_t size = lseek(fd, 0, SEEK_END);
  unsigned char *prog = malloc((size_t)size);
  if (pread(fd, prog, (size_t)size, 0) != size) fail("export", EIO, "%s", "short read of the program");
  char *hex = malloc((size_t)size * 2 + 1);
  for (off_t i = 0; i < size; i++) sprintf(hex + 2 * i, "%02x", prog[i]);
  hex[size * 2] = 0;
  char skipped_s[16];
  snprintf(skipped_s, sizeof skipped_s, "%d", skipped);
  const char *strs[2] = {hex, skipped_s};
  send_record(MSG_PROGRAM, 2, strs);
  seccomp_release(ctx);
  return 0;
}
