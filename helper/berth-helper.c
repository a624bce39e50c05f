/*
 * berth-helper: the mechanism under berth's OCI runtime. It does only what Node cannot do:
 * clone with namespace flags, setns, mounts and pivot_root inside the new mount namespace,
 * capabilities, seccomp, execve, and staying behind as a parent when asked to.
 * It never parses JSON and makes no decisions: TypeScript (src/runtime/plan.ts) compiles
 * config.json into a flat list of operations (helper/protocol.table) that this file executes.
 *
 * Usage: berth-helper PLAN_FD REPORT_FD
 *
 * Processes and messages (records: u32 code, u32 length, NUL-separated strings):
 *
 *   step | TypeScript                | helper (parent, host)            | child (cloned)
 *   -----+---------------------------+----------------------------------+-------------------------------
 *    1   | plan ops ... END  ------> | host ops (MKFIFO, SETNS,         |
 *        |                           |  CONSOLE_SOCKET, EXEC_FIFO...)   |
 *    2   |                           | clone(flags)  ----------------->  | waits on the release pipe
 *    3   |                           | uid/gid maps, cgroup.procs       |
 *    4   | <------------ PID pid     |                                  |
 *    5   | <------ HOOK_POINT name   | (only with HOOK_SYNC)            |
 *        | CONTINUE  -------------> |                                  |
 *    6   |                           | release  ----------------------> | child ops in order
 *    7   | <-------------------------------------------- READY         | (or ERROR stage errno msg)
 *    8   |                           | exits 0, or with FOREGROUND:     | blocks on the exec fifo,
 *        |                           |  forwards signals, relays a pty, |  then execve
 *        | <------------ EXIT status |  waits for the child            |
 *
 * Every failure is reported as ERROR {stage, errno, message} and becomes a typed error in
 * TypeScript. The child also tells the parent 'R' (ready) or 'E' (failed) on a private pipe,
 * so the parent knows when its job is done even if the child dies without a word.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/openat2.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/capability.h>
#include <linux/bpf.h>
#include <linux/close_range.h>
#include <linux/magic.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#define CLONE_INTO_CGROUP 0x200000000ULL

/* the kernel's struct clone_args (linux/sched.h clashes with glibc's sched.h) */
struct clone3_args {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

struct op {
  int code;
  int argc;
  char **argv;
};

static struct op *ops;
static int nops;
static int report_fd = -1;
static int plan_fd = -1;
/* LAST_WORD: the helper is its caller's own process; it exits with the status the runtime sends */
static int last_word;
static int in_child;
static int status_fd = -1; /* child -> parent: 'R' ready, 'E' error */
static const char *stage = "plan";
static int ready_sent;

/* Host-side resources the child inherits. */
static int console_fd = -1;  /* connected console socket */
static int listener_fd = -1; /* connected seccomp agent socket */
static const char *listener_state;
static char child_pid[16];   /* our pid as the caller sees it, sent with the release */
static int fifo_fd = -1;     /* O_PATH fd of the fifo itself */
static int root_of_fd = -1; /* /proc/<pid>/root for exec */
static int term_pair[2] = {-1, -1};
static int idmap_fds[16];
static int nidmap_fds;
/* BIND_SOURCE: bind sources' mount trees cloned in the host, attached by MOUNT in the child. */
static int bind_fds[64];
static int nbind_fds;
static int cgroup_fds[16];
static const char *cgroup_paths[16];
static int ncgroup_fds;
static int clone_cgroup_fd = -1; /* cgroup v2 directory to clone the child into */
static const char *clone_cgroup_dir;
/* CGROUP_JOIN: each v1 cgroup's tasks file, the helper's own to return to, and the cgroup.procs
 * written with the child's pid when the helper could not join (opened in the host, before SETNS) */
struct cgroup_join {
  int tasks, back, procs;
  const char *dir;
  int joined;
};
static struct cgroup_join cgroup_joins[16];
static int ncgroup_joins;

/* Child-side state. */
static int root_fd = -1;
static char root_path[PATH_MAX];
static char **envp;
static int nenv;
static FILE *tracing; /* BERTH_TRACE=/path: timings of each step appended there, for developers */

static void trace_step(const char *what) {
  if (!tracing) return;
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  fprintf(tracing, "[helper %d] %.3f %s\n", (int)getpid(), (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6, what);
}

static void send_record(int code, int n, const char **strs) {
  char buf[4096];
  size_t len = 8;
  for (int i = 0; i < n; i++) {
    size_t l = strlen(strs[i]) + 1;
    if (len + l > sizeof buf) l = sizeof buf - len;
    memcpy(buf + len, strs[i], l);
    buf[len + l - 1] = 0;
    len += l;
  }
  uint32_t hdr[2] = {(uint32_t)code, (uint32_t)(len - 8)};
  memcpy(buf, hdr, 8);
  if (report_fd >= 0 && write(report_fd, buf, len) < 0) {
    /* The caller is gone; nothing left to tell. */
  }
}

static void report_error(int err, const char *fmt, ...) {
  char msg[2048], errbuf[16];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(errbuf, sizeof errbuf, "%d", err);
  const char *strs[3] = {stage, errbuf, msg};
  send_record(MSG_ERROR, 3, strs);
}

static int read_full(int fd, void *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = read(fd, (char *)buf + got, len - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/* A LAST_WORD record whose header was read: exits with the status it carries. */
static _Noreturn void exit_with_last_word(const uint32_t hdr[2]) {
  char payload[16] = {0};
  if (hdr[1] >= sizeof payload || read_full(plan_fd, payload, hdr[1]) < 0) _exit(255);
  _exit(atoi(payload));
}

/* The helper's end: its status, or under LAST_WORD (the helper is the caller's own process, a warm
 * berth-runtime's) the command's, once the runtime has finished (its state written, its errors said);
 * the runtime gone without a word: 255. */
static _Noreturn void finish(int code) {
  if (!last_word || in_child) _exit(code);
  uint32_t hdr[2];
  if (read_full(plan_fd, hdr, 8) < 0 || hdr[0] != MSG_LAST_WORD) _exit(255);
  exit_with_last_word(hdr);
}

/* Fail from the parent: report and exit. */
static void die(int err, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  report_error(err, "%s", msg);
  /* After READY nobody reads the report pipe: the container's stderr is the only witness. */
  if (ready_sent) dprintf(2, "berth: %s: %s: %s\n", stage, msg, strerror(err));
  if (status_fd >= 0 && write(status_fd, "E", 1) < 0) {
  }
  finish(1);
}

#define TRY(expr, ...)              \
  do {                              \
    if ((expr) < 0) die(errno, __VA_ARGS__); \
  } while (0)


static int write_file(const char *path, const char *data) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t len = (ssize_t)strlen(data);
  ssize_t w = write(fd, data, (size_t)len);
  int saved = errno;
  close(fd);
  errno = saved;
  return w == len ? 0 : -1;
}

/* Read the plan: records until END. The pipe stays open for CONTINUE. A plan that ends before
 * its first byte was withdrawn (berth started us early, then its start failed): exit 0, quietly. */
static void read_plan(int fd) {
  int cap = 64;
  ops = calloc((size_t)cap, sizeof *ops);
  for (;;) {
    uint32_t hdr[2];
    if (nops == 0) {
      ssize_t r;
      while ((r = read(fd, hdr, 1)) < 0 && errno == EINTR) {
      }
      if (r == 0) _exit(0);
      if (r < 0 || read_full(fd, (char *)hdr + 1, 7) < 0) die(EIO, "plan ended before END");
    } else if (read_full(fd, hdr, 8) < 0)
      die(EIO, "plan ended before END");
    char *payload = malloc(hdr[1] + 1);
    if (!payload || read_full(fd, payload, hdr[1]) < 0) die(EIO, "short plan record");
    payload[hdr[1]] = 0;
    if (hdr[0] == OP_END) return;
    if (nops == cap) ops = realloc(ops, sizeof *ops * (size_t)(cap *= 2));
    struct op *o = &ops[nops++];
    o->code = (int)hdr[0];
    o->argc = 0;
    for (uint32_t i = 0; i < hdr[1]; i++)
      if (payload[i] == 0) o->argc++;
    o->argv = calloc((size_t)o->argc + 1, sizeof(char *));
    char *p = payload;
    for (int i = 0; i < o->argc; i++, p += strlen(p) + 1) o->argv[i] = p;
  }
}

static long long num(const char *s) { return strtoll(s, NULL, 0); }

/* ---------- paths inside the root, resolved so that no symlink leaves it ---------- */

static int open_in_root(const char *path, int flags) {
  struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
                         .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
  return (int)syscall(SYS_openat2, root_fd, path, &how, sizeof how);
}

/* mkdir -p of path inside the root; mode 0755 like runc. A dangling symlink on the way is
 * followed inside the root (its target is created there), never on the host. */
static int mkdir_in_root_depth(const char *path, int depth) {
  char buf[PATH_MAX];
  if (depth > 40) {
    errno = ELOOP;
    return -1;
  }
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == 0) {
      char saved = *p;
      *p = 0;
      int fd = open_in_root(buf, O_PATH | O_DIRECTORY);
      if (fd >= 0) {
        close(fd);
      } else if (errno == ENOENT) {
        char *slash = strrchr(buf, '/');
        *slash = 0;
        int parent = open_in_root(buf[0] ? buf : "/", O_PATH | O_DIRECTORY);
        if (parent < 0) return -1;
        int r = mkdirat(parent, slash + 1, 0755);
        if (r < 0 && errno == EEXIST) {
          char target[PATH_MAX], next[2 * PATH_MAX + 2];
          ssize_t n = readlinkat(parent, slash + 1, target, sizeof target - 1);
          if (n > 0) {
            target[n] = 0;
            snprintf(next, sizeof next, "%s/%s", target[0] == '/' ? "" : (buf[0] ? buf : ""), target);
            r = mkdir_in_root_depth(next, depth + 1);
          } else {
            r = 0;
          }
        }
        close(parent);
        *slash = '/';
        if (r < 0 && errno != EEXIST) return -1;
      } else {
        return -1;
      }
      *p = saved;
      if (saved == 0) return 0;
    }
  }
}

static int mkdir_in_root(const char *path) { return mkdir_in_root_depth(path, 0); }

/* Open the parent directory of path inside the root; *base points at the last component. */
static int open_parent_in_root(const char *path, char *buf, const char **base) {
  snprintf(buf, PATH_MAX, "%s", path);
  char *slash = strrchr(buf, '/');
  if (!slash) return -1;
  *slash = 0;
  *base = slash + 1;
  if (mkdir_in_root(buf[0] ? buf : "/") < 0) return -1;
  return open_in_root(buf[0] ? buf : "/", O_PATH | O_DIRECTORY);
}

static int create_file_in_root(const char *path) {
  char buf[PATH_MAX];
  const char *base;
  int dir = open_parent_in_root(path, buf, &base);
  if (dir < 0) return -1;
  int fd = openat(dir, base, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
  int saved = errno;
  close(dir);
  if (fd < 0 && saved != EEXIST && saved != ELOOP && saved != EISDIR) {
    errno = saved;
    return -1;
  }
  if (fd >= 0) close(fd);
  return 0;
}

/* Flags that a bind remount must keep (the kernel refuses to clear locked ones). */
static unsigned long locked_flags(const char *procpath) {
  struct statvfs st;
  unsigned long f = 0;
  if (statvfs(procpath, &st) < 0) return 0;
  if (st.f_flag & ST_NOSUID) f |= MS_NOSUID;
  if (st.f_flag & ST_NODEV) f |= MS_NODEV;
  if (st.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
  if (st.f_flag & ST_RDONLY) f |= MS_RDONLY;
  return f;
}

#define MS_BIND_KEEP (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME)

/* After a mount, an fd opened before it names the directory underneath: resolve the target again. */
static int reopen_target(const char *target, char *procpath, size_t len) {
  int fd = open_in_root(target, O_PATH);
  TRY(fd, "resolve %s after mount", target);
  snprintf(procpath, len, "/proc/self/fd/%d", fd);
  return fd;
}

/* A bind mount takes its flags (ro, nosuid, ...) only through a remount, keeping the locked ones. */
static void remount_bind(const char *target, unsigned long flags) {
  if (!(flags & MS_BIND_KEEP)) return;
  char procpath[64];
  int fd = reopen_target(target, procpath, sizeof procpath);
  unsigned long keep = locked_flags(procpath) & ~MS_RDONLY;
  TRY(mount(NULL, procpath, NULL, MS_REMOUNT | MS_BIND | keep | (flags & MS_BIND_KEEP), NULL), "remount %s with its options", target);
  close(fd);
}

/* An idmapped bind: clone the source tree, give it the user namespace's mapping, attach it. */
static void idmapped_bind(const char *src, const char *target, int on, const char *index, const char *recursive) {
  int idx = atoi(index);
  unsigned rec = recursive && recursive[0] == 'r' ? AT_RECURSIVE : 0;
  if (idx < 0 || idx >= nidmap_fds) die(EINVAL, "idmapped mount %s: no user namespace %d", target, idx);
  int tree = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
  TRY(tree, "open_tree %s", src);
  struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)idmap_fds[idx]};
  TRY(mount_setattr(tree, "", AT_EMPTY_PATH | rec, &attr, sizeof attr), "idmap the mount of %s (does its file system support idmapped mounts?)", src);
  TRY(move_mount(tree, "", on, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH), "attach the idmapped %s on %s", src, target);
  close(tree);
}

/* proc and sysfs go on an ordinary directory (as runc): a symlink there would put the kernel's
 * files wherever the image points, e.g. over a path that masking or read-only rules do not cover. */
static void refuse_symlink_target(const char *target, const char *fstype) {
  char buf[PATH_MAX];
  const char *base;
  struct stat st;
  int dir = open_parent_in_root(target, buf, &base);
  TRY(dir, "create parent of %s", target);
  if (fstatat(dir, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode))
    die(ENOTDIR, "%s must be mounted on an ordinary directory: %s in the rootfs is %s", fstype, target, S_ISLNK(st.st_mode) ? "a symlink" : "not a directory");
  close(dir);
}

/* A bind from a tree BIND_SOURCE cloned in the host: the source was reached with the runtime's
 * own credentials, so a mapped root that cannot enter its parents still gets it. */
static void tree_bind(const char *target, int on, const char *index) {
  int idx = atoi(index);
  if (idx < 0 || idx >= nbind_fds) die(EINVAL, "bind mount %s: no source tree %d", target, idx);
  TRY(move_mount(bind_fds[idx], "", on, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH), "attach the bind source on %s", target);
  close(bind_fds[idx]);
  bind_fds[idx] = -1;
}

static void do_mount(char **a) {
  const char *src = a[0], *target = a[1], *fstype = a[2], *data = a[5], *mk = a[6];
  unsigned long flags = (unsigned long)num(a[3]), prop = (unsigned long)num(a[4]);
  char procpath[64];
  if (!strcmp(fstype, "proc") || !strcmp(fstype, "sysfs")) refuse_symlink_target(target, fstype);
  if (mk[0] == 'd') TRY(mkdir_in_root(target), "create mount point %s", target);
  if (mk[0] == 'f') TRY(create_file_in_root(target), "create mount point %s", target);
  int fd = open_in_root(target, O_PATH);
  TRY(fd, "resolve mount point %s in the rootfs", target);
  snprintf(procpath, sizeof procpath, "/proc/self/fd/%d", fd);
  if ((flags & MS_BIND) && a[7] && a[7][0]) {
    idmapped_bind(src, target, fd, a[7], a[8]);
    remount_bind(target, flags);
  } else if ((flags & MS_BIND) && a[7] && a[8] && a[9] && a[9][0]) {
    tree_bind(target, fd, a[9]);
    remount_bind(target, flags);
  } else if (flags & MS_BIND) {
    TRY(mount(src, procpath, NULL, MS_BIND | (flags & MS_REC), NULL), "bind %s on %s", src, target);
    remount_bind(target, flags);
  } else {
    TRY(mount(src, procpath, fstype, flags, data[0] ? data : NULL), "mount %s (%s) on %s", src, fstype, target);
  }
  close(fd);
  if (prop) {
    fd = reopen_target(target, procpath, sizeof procpath);
    TRY(mount(NULL, procpath, NULL, prop, NULL), "set propagation of %s", target);
    close(fd);
  }
}

/* The mount that holds path: the longest mount point in mountinfo that is path or a parent of it. */
static void do_parent_private(const char *path) {
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f) die(errno, "read mountinfo");
  char line[4096], best[PATH_MAX] = "/", mp[PATH_MAX];
  size_t best_len = 1;
  while (fgets(line, sizeof line, f)) {
    /* id parent major:minor root mountpoint ... (spaces in paths are octal escapes) */
    if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1) continue;
    size_t n = strlen(mp);
    if (n > best_len && !strncmp(path, mp, n) && (path[n] == '/' || path[n] == 0)) {
      memcpy(best, mp, n + 1);
      best_len = n;
    }
  }
  fclose(f);
  TRY(mount(NULL, best, NULL, MS_PRIVATE, NULL), "make %s (the mount holding the rootfs) private", best);
}

static void do_remount_ro(const char *path, unsigned long flags) {
  char procpath[64];
  int fd = reopen_target(path, procpath, sizeof procpath);
  TRY(mount(NULL, procpath, NULL, MS_REMOUNT | MS_RDONLY | flags, NULL), "remount %s read-only", path);
  close(fd);
}

/* rro, rnosuid, …: the attributes on the mount and every submount (runc's recursive options) */
static void do_mount_setattr(char **a) {
  char procpath[64];
  int fd = reopen_target(a[0], procpath, sizeof procpath);
  struct mount_attr attr = {.attr_set = (uint64_t)num(a[1]), .attr_clr = (uint64_t)num(a[2])};
  if (mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
    die(errno, errno == ENOSYS ? "recursive mount options on %s need Linux 5.12 (mount_setattr)" : "set recursive mount options on %s", a[0]);
  close(fd);
}

static void do_mknod(char **a) {
  const char *path = a[0];
  char buf[PATH_MAX];
  const char *base;
  mode_t type = a[1][0] == 'b' ? S_IFBLK : a[1][0] == 'p' ? S_IFIFO : S_IFCHR;
  dev_t dev = makedev((unsigned)num(a[2]), (unsigned)num(a[3]));
  int dir = open_parent_in_root(path, buf, &base);
  TRY(dir, "create parent of device %s", path);
  unlinkat(dir, base, 0);
  if (mknodat(dir, base, type | (mode_t)num(a[4]), dev) == 0) {
    TRY(fchownat(dir, base, (uid_t)num(a[5]), (gid_t)num(a[6]), AT_SYMLINK_NOFOLLOW), "chown device %s", path);
    TRY(fchmodat(dir, base, (mode_t)num(a[4]), 0), "chmod device %s", path);
  } else if (errno == EPERM) {
    /* In a user namespace mknod is refused: bind the host's node instead, as runc does. */
    close(dir);
    char *args[9] = {(char *)path, (char *)path, "", "4096", "0", "", "f", NULL, NULL};
    do_mount(args);
    return;
  } else {
    die(errno, "mknod %s", path);
  }
  close(dir);
}

static void do_symlink(char **a) {
  char buf[PATH_MAX];
  const char *base;
  int dir = open_parent_in_root(a[1], buf, &base);
  TRY(dir, "create parent of %s", a[1]);
  if (symlinkat(a[0], dir, base) < 0 && errno != EEXIST) die(errno, "symlink %s -> %s", a[1], a[0]);
  close(dir);
}

static void do_pivot_root(void) {
  TRY(fchdir(root_fd), "enter rootfs");
  /* pivot_root(".", ".") stacks the old root under the new one; detach it from there. */
  TRY((int)syscall(SYS_pivot_root, ".", "."), "pivot_root into %s", root_path);
  TRY(mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL), "make the old root a slave");
  TRY(umount2(".", MNT_DETACH), "detach the old root");
  TRY(chdir("/"), "chdir /");
}

static void do_hide_mount(const char *path) {
  if (mount(NULL, path, NULL, MS_SLAVE | MS_REC, NULL) < 0) {
    if (errno == ENOENT || errno == EINVAL) return; /* gone with a parent already detached */
    die(errno, "make %s a slave", path);
  }
  if (umount2(path, MNT_DETACH) == 0) return;
  if (errno != EINVAL && errno != EPERM) die(errno, "detach %s", path);
  TRY(mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "cover %s", path);
}

static void do_chroot(void) {
  TRY(chdir(root_path), "enter rootfs");
  TRY(mount(root_path, "/", NULL, MS_MOVE, NULL), "move the rootfs to /");
  TRY(chroot("."), "chroot into the rootfs");
  TRY(chdir("/"), "chdir /");
}

static void do_mask(const char *path) {
  struct stat st;
  if (stat(path, &st) < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return;
    die(errno, "stat masked path %s", path);
  }
  if (S_ISDIR(st.st_mode))
    TRY(mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL), "mask %s", path);
  else
    TRY(mount("/dev/null", path, NULL, MS_BIND, NULL), "mask %s", path);
}

static void do_readonly(const char *path) {
  if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0) {
    if (errno == ENOENT) return;
    die(errno, "bind %s read-only", path);
  }
  unsigned long keep = locked_flags(path);
  TRY(mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | keep, NULL), "remount %s read-only", path);
}

static void send_fd_with(int sock, int fd, const char *payload) {
  struct iovec iov = {.iov_base = (void *)payload, .iov_len = strlen(payload)};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  TRY((int)sendmsg(sock, &msg, 0), "send a file descriptor to %s", sock == listener_fd ? "the seccomp agent" : "the console socket");
}

static void send_fd(int sock, int fd) { send_fd_with(sock, fd, "/dev/ptmx"); }

static int recv_fd(int sock) {
  char name[64];
  struct iovec iov = {.iov_base = name, .iov_len = sizeof name};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) <= 0) return -1;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (!c || c->cmsg_type != SCM_RIGHTS) return -1;
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

static void do_terminal(char **a, int argc) {
  int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  TRY(master, "open /dev/ptmx in the container");
  TRY(unlockpt(master), "unlock the pty");
  char slave_path[128];
  TRY(ptsname_r(master, slave_path, sizeof slave_path) == 0 ? 0 : -1, "name the pty");
  int slave = open(slave_path, O_RDWR | O_NOCTTY);
  TRY(slave, "open %s", slave_path);
  /* the process's own terminal, as runc makes it: its user owns the pty (the group is devpts's gid=) */
  if (argc >= 1) TRY(fchown(slave, (uid_t)num(a[0]), (gid_t)-1), "chown %s to %s", slave_path, a[0]);
  TRY(ioctl(slave, TIOCSCTTY, 0), "make %s the controlling terminal", slave_path);
  /* the size of the terminal we were started on (a foreground exec), before the process can ask */
  struct winsize ws;
  if (ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) ioctl(slave, TIOCSWINSZ, &ws);
  for (int i = 0; i < 3; i++) TRY(dup2(slave, i), "attach the pty to fd %d", i);
  /* /dev/console is the pty, as in runc; a rootfs without /dev/console simply gets none. */
  int con = open("/dev/console", O_CREAT | O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (con >= 0) {
    close(con);
    TRY(mount(slave_path, "/dev/console", NULL, MS_BIND, NULL), "bind %s on /dev/console", slave_path);
  }
  if (slave > 2) close(slave);
  send_fd(console_fd >= 0 ? console_fd : term_pair[1], master);
  close(master);
  if (console_fd >= 0) close(console_fd);
}

static void do_caps(char **a) {
  struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct data[2];
  uint64_t bnd = (uint64_t)strtoull(a[0], NULL, 0), eff = (uint64_t)strtoull(a[1], NULL, 0),
           prm = (uint64_t)strtoull(a[2], NULL, 0), inh = (uint64_t)strtoull(a[3], NULL, 0),
           amb = (uint64_t)strtoull(a[4], NULL, 0);
  /* After a uid change only the permitted set survives (KEEPCAPS): raise effective to drop bounding. */
  TRY((int)syscall(SYS_capget, &hdr, data), "capget");
  data[0].effective = data[0].permitted;
  data[1].effective = data[1].permitted;
  TRY((int)syscall(SYS_capset, &hdr, data), "raise effective capabilities");
  for (int cap = 0; cap < 64; cap++) {
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0) break; /* past the kernel's last cap */
    if (!(bnd & (1ULL << cap))) TRY(prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop capability %d from bounding", cap);
  }
  data[0].effective = (uint32_t)eff;
  data[1].effective = (uint32_t)(eff >> 32);
  data[0].permitted = (uint32_t)prm;
  data[1].permitted = (uint32_t)(prm >> 32);
  data[0].inheritable = (uint32_t)inh;
  data[1].inheritable = (uint32_t)(inh >> 32);
  TRY((int)syscall(SYS_capset, &hdr, data), "set capabilities");
  TRY(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities");
  /* Raising fails unless the cap is permitted and inheritable; runc only warns, so do we (silently). */
  for (int cap = 0; cap < 64; cap++)
    if (amb & (1ULL << cap)) prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
}

static struct sock_fprog seccomp_prog;
static unsigned seccomp_flags;

/* Load now (before dropping capabilities: without no_new_privs loading needs CAP_SYS_ADMIN), or
 * keep it for the last step before execve, after the exec fifo, as runc does. */
static void load_seccomp(void) {
  TRY((int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, seccomp_flags, &seccomp_prog), "load the seccomp filter");
  seccomp_prog.len = 0;
}

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 0;
}

/* NBYTES bytes from 2*NBYTES hex digits (by hand: sscanf per byte costs ~2 ms on a seccomp profile) */
static void hex_decode(const char *hex, void *out, size_t nbytes) {
  unsigned char *b = out;
  for (size_t i = 0; i < nbytes; i++) b[i] = (unsigned char)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
}

static void do_seccomp(char **a) {
  size_t hexlen = strlen(a[1]);
  size_t n = hexlen / 16; /* struct sock_filter is 8 bytes = 16 hex digits */
  struct sock_filter *f = calloc(n ? n : 1, sizeof *f);
  hex_decode(a[1], f, n * 8);
  seccomp_prog.len = (unsigned short)n;
  seccomp_prog.filter = f;
  seccomp_flags = (unsigned)num(a[0]);
  if (seccomp_flags & SECCOMP_FILTER_FLAG_NEW_LISTENER) {
    /* A notify filter hands its fd to the agent, with the container's state, as runc does. */
    int nfd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, seccomp_flags, &seccomp_prog);
    TRY(nfd, "load the seccomp filter with a listener");
    seccomp_prog.len = 0;
    char *state = malloc(strlen(listener_state) + 64), *out = state;
    for (const char *p = listener_state; *p;) {
      if (!strncmp(p, "@@PID@@", 7)) {
        out += sprintf(out, "%s", child_pid);
        p += 7;
      } else {
        *out++ = *p++;
      }
    }
    *out = 0;
    send_fd_with(listener_fd, nfd, state);
    close(nfd);
    close(listener_fd);
    free(state);
    return;
  }
  if (strcmp(a[2], "exec")) load_seccomp();
}

static void do_rlimit(char **a) {
  struct rlimit rl = {
      .rlim_cur = strcmp(a[1], "unlimited") ? (rlim_t)strtoull(a[1], NULL, 10) : RLIM_INFINITY,
      .rlim_max = strcmp(a[2], "unlimited") ? (rlim_t)strtoull(a[2], NULL, 10) : RLIM_INFINITY,
  };
  if (setrlimit((int)num(a[0]), &rl) < 0) {
    struct rlimit cur;
    getrlimit((int)num(a[0]), &cur);
    die(errno, "setrlimit %s soft=%s hard=%s (the runtime's hard limit is %llu)", a[0], a[1], a[2],
        (unsigned long long)cur.rlim_max);
  }
}

/* Look a command up in the container's PATH, as execvp would, but before the fifo wait. */
static const char *resolve_exec(const char *file, char *buf) {
  if (strchr(file, '/')) {
    if (access(file, X_OK) < 0) die(errno, "exec: \"%s\": stat %s: %s", file, file, strerror(errno));
    return file;
  }
  const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (int i = 0; i < nenv; i++)
    if (!strncmp(envp[i], "PATH=", 5)) path = envp[i] + 5;
  while (*path) {
    const char *end = strchrnul(path, ':');
    snprintf(buf, PATH_MAX, "%.*s/%s", (int)(end - path), path, file);
    struct stat st;
    if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0) return buf;
    path = *end ? end + 1 : end;
  }
  errno = ENOENT;
  die(ENOENT, "exec: \"%s\": executable file not found in $PATH", file);
  return NULL;
}

#define MAX_START_HOOKS 64
static char **start_hooks[MAX_START_HOOKS];
static int start_hook_argc[MAX_START_HOOKS];
static int nstart_hooks;

/* One startContainer hook, from the container's process itself: its namespaces, root, cgroup,
 * credentials and seccomp filter are the hook's too (the runtime spec runs these in the container). */
static void run_start_hook(char **a, int argc) {
  const char *path = a[0];
  long timeout = num(a[1]);
  int nargs = (int)num(a[3]);
  if (nargs < 0 || 4 + nargs > argc) die(EINVAL, "startContainer hook %s: malformed record", path);
  char **argv = calloc((size_t)nargs + 2, sizeof *argv), **env = calloc((size_t)(argc - 4 - nargs) + 1, sizeof *env);
  for (int i = 0; i < nargs; i++) argv[i] = a[4 + i];
  if (!nargs) argv[0] = (char *)path;
  for (int i = 4 + nargs; i < argc; i++) env[i - 4 - nargs] = a[i];
  char *state = malloc(strlen(a[2]) + 32), *out = state;
  for (const char *p = a[2]; *p;) {
    if (!strncmp(p, "@@PID@@", 7)) {
      out += sprintf(out, "%d", (int)getpid());
      p += 7;
    } else {
      *out++ = *p++;
    }
  }
  *out = 0;
  int in[2];
  TRY(pipe2(in, O_CLOEXEC), "startContainer hook %s: pipe", path);
  pid_t pid = fork();
  TRY(pid, "startContainer hook %s: fork", path);
  if (pid == 0) {
    if (dup2(in[0], 0) < 0) _exit(126);
    execve(path, argv, env);
    dprintf(2, "berth: startContainer hook %s: %s\n", path, strerror(errno));
    _exit(127);
  }
  close(in[0]);
  /* a hook that does not read its state must not kill us with SIGPIPE */
  struct sigaction ign = {.sa_handler = SIG_IGN}, old;
  sigaction(SIGPIPE, &ign, &old);
  for (size_t off = 0, len = strlen(state); off < len;) {
    ssize_t w = write(in[1], state + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    off += (size_t)w;
  }
  close(in[1]);
  sigaction(SIGPIPE, &old, NULL);
  int st = 0;
  for (long waited_ms = 0;; waited_ms += 5) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) die(errno, "startContainer hook %s: wait", path);
    if (timeout > 0 && waited_ms >= timeout * 1000) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      die(ETIMEDOUT, "startContainer hook %s timed out after %lds", path, timeout);
    }
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    die(ECANCELED, "startContainer hook %s failed (%s %d)", path, WIFEXITED(st) ? "exit status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
  free(state);
  free(argv);
  free(env);
}

static void child_ready_then_exec(char **a, int argc) {
  char buf[PATH_MAX];
  stage = "exec";
  const char *path = resolve_exec(a[0], buf);
  envp = realloc(envp, sizeof(char *) * (size_t)(nenv + 1));
  envp[nenv] = NULL;
  trace_step("ready");
  send_record(MSG_READY, 0, NULL);
  ready_sent = 1;
  if (write(status_fd, "R", 1) < 0) {
  }
  if (fifo_fd >= 0) {
    stage = "start";
    /* Reopened through /proc/self/fd (as runc does): the state directory need not be searchable by
     * the container's user, and no fd of a host directory is ever held inside the container. */
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fifo_fd);
    int fd = open(self, O_WRONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) die(ENOENT, "open the exec fifo: the container has no /proc mounted");
    TRY(fd, "open the exec fifo");
    TRY((int)write(fd, "0", 1), "write the exec fifo");
    close(fd);
    close(fifo_fd);
  }
  char **argv = calloc((size_t)argc, sizeof(char *));
  for (int i = 1; i < argc; i++) argv[i - 1] = a[i];
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (seccomp_prog.len) {
    stage = "seccomp";
    load_seccomp();
  }
  stage = "startContainer hook";
  for (int i = 0; i < nstart_hooks; i++) run_start_hook(start_hooks[i], start_hook_argc[i]);
  trace_step("execve");
  stage = "exec";
  execve(path, argv, envp);
  if (errno == E2BIG) {
    size_t total = 0;
    int n = 0;
    for (char **p = argv; *p; p++, n++) total += strlen(*p) + 1;
    for (char **p = envp; *p; p++) total += strlen(*p) + 1;
    die(errno, "%s: %d arguments and the environment are %zu bytes, more than the kernel takes (at most a quarter of the stack limit in all, 128 KiB each)", path, n, total);
  }
  die(errno, "%s", path);
}

static int new_userns;
static int cwd_done; /* the early CWD record reached the cwd */
static int helper_root; /* the helper runs as root (not rootless) */

static void close_bind_fds(void) {
  for (int i = 0; i < nbind_fds; i++)
    if (bind_fds[i] >= 0) close(bind_fds[i]);
  nbind_fds = 0;
}

/* After the root is pivoted, no fd of the host's mounts stays open in the container. */
static void close_idmap_fds(void) {
  for (int i = 0; i < nidmap_fds; i++) close(idmap_fds[i]);
  nidmap_fds = 0;
  close_bind_fds();
}

static void run_child(int release_fd) {
  ssize_t got = 0, r;
  while ((r = read(release_fd, child_pid + got, sizeof child_pid - 1 - (size_t)got)) > 0) got += r;
  if (got <= 0) _exit(1); /* the parent gave up */
  child_pid[got] = 0;
  close(release_fd);
  trace_step("released");
  for (int i = 0; i < ncgroup_fds; i++) close(cgroup_fds[i]); /* host files: the parent's business */
  for (int i = 0; i < ncgroup_joins; i++) {
    close(cgroup_joins[i].tasks);
    close(cgroup_joins[i].back);
    close(cgroup_joins[i].procs);
  }
  if (clone_cgroup_fd >= 0) close(clone_cgroup_fd);
  /* Until execve the process is the host's helper binary: not dumpable, so nothing in the container
   * can open /proc/<pid>/exe (the CVE-2019-5736 class) or ptrace it. It stayed dumpable only so the
   * parent could write its uid/gid maps. execve makes the user's program dumpable again.
   * Rootless, it stays dumpable: it holds only the user's own privileges, and the engine must open
   * its /proc/<pid>/ns files (pasta joins its network namespace) while it is being set up. */
  if (helper_root) TRY(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "make the process non-dumpable");
  if (new_userns) {
    /* Become the namespace's root now that the maps exist: until then our ids are unmapped. */
    stage = "userns";
    TRY(setresgid(0, 0, 0), "setgid 0 in the new user namespace");
    TRY(setresuid(0, 0, 0), "setuid 0 in the new user namespace");
  }
  for (int i = 0; i < nops; i++) {
    struct op *o = &ops[i];
    char **a = o->argv;
    stage = o->code < (int)OP_NAMES_LEN && op_names[o->code] ? op_names[o->code] : "op";
    trace_step(stage);
    switch (o->code) {
    case OP_KEYRING:
      /* KEYCTL_JOIN_SESSION_KEYRING; kernels or user namespaces without keys are not an error. */
      if (syscall(SYS_keyctl, 1, a[0]) < 0 && errno != ENOSYS && errno != EDQUOT && errno != EPERM)
        die(errno, "join session keyring %s", a[0]);
      break;
    case OP_UNSHARE: TRY(unshare((int)num(a[0])), "unshare namespaces %s", a[0]); break;
    case OP_PROPAGATION:
      TRY(mount(NULL, "/", NULL, (o->argc > 1 ? 0 : MS_REC) | (unsigned long)num(a[0]), NULL), "set rootfs propagation");
      break;
    case OP_ROOTFS_MOUNT: TRY(mount(a[1], a[0], a[1], 0, a[2]), "mount %s on the rootfs %s", a[1], a[0]); break;
    case OP_ROOTFS:
      snprintf(root_path, sizeof root_path, "%s", a[0]);
      TRY(mount(a[0], a[0], NULL, MS_BIND | MS_REC, NULL), "bind the rootfs %s", a[0]);
      root_fd = open(a[0], O_PATH | O_DIRECTORY | O_CLOEXEC);
      TRY(root_fd, "open the rootfs %s", a[0]);
      break;
    case OP_MOUNT: do_mount(a); break;
    case OP_MOUNT_SETATTR: do_mount_setattr(a); break;
    case OP_PARENT_PRIVATE: do_parent_private(a[0]); break;
    case OP_REMOUNT_RO: do_remount_ro(a[0], (unsigned long)num(a[1])); break;
    case OP_MKNOD: do_mknod(a); break;
    case OP_SYMLINK: do_symlink(a); break;
    case OP_PIVOT_ROOT: do_pivot_root(); close_idmap_fds(); break;
    case OP_CHROOT: do_chroot(); close_idmap_fds(); break;
    case OP_HIDE_MOUNT: do_hide_mount(a[0]); break;
    case OP_MASK_PATH: do_mask(a[0]); break;
    case OP_READONLY_PATH: do_readonly(a[0]); break;
    case OP_REMOUNT_ROOT_RO:
      TRY(mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | locked_flags("/"), NULL), "remount / read-only");
      break;
    case OP_HOSTNAME: TRY(sethostname(a[0], strlen(a[0])), "sethostname %s", a[0]); break;
    case OP_DOMAINNAME: TRY(setdomainname(a[0], strlen(a[0])), "setdomainname %s", a[0]); break;
    case OP_SYSCTL: {
      char p[PATH_MAX];
      struct statfs fs;
      /* the container's own procfs: a /proc the image or a mount made into something else is not written through */
      if (statfs("/proc/sys", &fs) < 0 || fs.f_type != PROC_SUPER_MAGIC) die(EINVAL, "sysctl %s: /proc/sys in the container is not procfs (mount proc on /proc)", a[0]);
      snprintf(p, sizeof p, "/proc/sys/%s", a[0]);
      TRY(write_file(p, a[1]), "write %s = %s", p, a[1]);
      break;
    }
    case OP_RLIMIT: do_rlimit(a); break;
    case OP_OOM_SCORE_ADJ: TRY(write_file("/proc/self/oom_score_adj", a[0]), "set oom_score_adj %s", a[0]); break;
    case OP_SETSID: TRY(setsid(), "setsid"); break;
    case OP_TERMINAL: do_terminal(a, o->argc); break;
    case OP_LSM_EXEC: {
      char p[128];
      snprintf(p, sizeof p, "/proc/thread-self/attr/%s", a[0]);
      TRY(write_file(p, a[1]), "set the LSM label at exec (%s) to %s", p, a[1]);
      break;
    }
    case OP_UMASK: umask((mode_t)strtol(a[0], NULL, 8)); break;
    case OP_GROUPS: {
      gid_t *g = calloc((size_t)o->argc + 1, sizeof(gid_t));
      for (int j = 0; j < o->argc; j++) g[j] = (gid_t)num(a[j]);
      TRY(setgroups((size_t)o->argc, g), "setgroups");
      free(g);
      break;
    }
    case OP_USER:
      TRY(prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keep capabilities across setuid");
      TRY(setresgid((gid_t)num(a[1]), (gid_t)num(a[1]), (gid_t)num(a[1])), "setgid %s", a[1]);
      TRY(setresuid((uid_t)num(a[0]), (uid_t)num(a[0]), (uid_t)num(a[0])), "setuid %s", a[0]);
      break;
    case OP_CAPS: do_caps(a); break;
    case OP_NO_NEW_PRIVS: TRY(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs"); break;
    case OP_SECCOMP: do_seccomp(a); break;
    case OP_CWD:
      if (o->argc > 1) { /* early: the runtime's privileges may reach a cwd the user cannot */
        if (chdir(a[0]) == 0) cwd_done = 1;
        else if (errno != EACCES && errno != EPERM) die(errno, "chdir to cwd %s", a[0]);
      } else if (!cwd_done) {
        TRY(chdir(a[0]), "chdir to cwd %s", a[0]);
      }
      break;
    case OP_ROOT_OF:
      TRY(fchdir(root_of_fd), "enter the container's root");
      TRY(chroot("."), "chroot into the container's root");
      close(root_of_fd);
      break;
    case OP_PRESERVE_FDS:
      for (int fd = 3; fd < 3 + num(a[0]); fd++) fcntl(fd, F_SETFD, 0);
      break;
    case OP_ENV:
      envp = realloc(envp, sizeof(char *) * (size_t)(nenv + 2));
      envp[nenv++] = a[0];
      break;
    case OP_START_HOOK:
      if (nstart_hooks == MAX_START_HOOKS) die(E2BIG, "more than %d startContainer hooks", MAX_START_HOOKS);
      start_hooks[nstart_hooks] = a;
      start_hook_argc[nstart_hooks++] = o->argc;
      break;
    case OP_EXEC: child_ready_then_exec(a, o->argc); break;
    default: break; /* host-side ops */
    }
  }
  die(EINVAL, "plan has no EXEC");
}

/* cgroup v2 has no devices files: the rules are an eBPF program attached to the cgroup. */
static void attach_device_filter(const char *cgroup_dir, const char *hex) {
  size_t n = strlen(hex) / 16; /* struct bpf_insn is 8 bytes */
  struct bpf_insn *insns = calloc(n ? n : 1, sizeof *insns);
  hex_decode(hex, insns, n * 8);
  char log[4096] = "";
  union bpf_attr load;
  memset(&load, 0, sizeof load);
  load.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  load.insn_cnt = (unsigned)n;
  load.insns = (uint64_t)(uintptr_t)insns;
  load.license = (uint64_t)(uintptr_t) "Apache";
  int prog = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof load);
  if (prog < 0) {
    /* Load again with the verifier's log, only to say why (the log must fit, hence not always). */
    int err = errno;
    load.log_level = 1;
    load.log_size = sizeof log;
    load.log_buf = (uint64_t)(uintptr_t)log;
    syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof load);
    char *last = strrchr(log, '\n');
    if (last && last > log) *last = 0;
    die(err, "load the device filter (%zu instructions): %s", n, strrchr(log, '\n') ? strrchr(log, '\n') + 1 : log);
  }
  int dir = open(cgroup_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  TRY(dir, "open %s", cgroup_dir);
  union bpf_attr attach;
  memset(&attach, 0, sizeof attach);
  attach.target_fd = (unsigned)dir;
  attach.attach_bpf_fd = (unsigned)prog;
  attach.attach_type = BPF_CGROUP_DEVICE;
  attach.attach_flags = BPF_F_ALLOW_MULTI;
  TRY((int)syscall(SYS_bpf, BPF_PROG_ATTACH, &attach, sizeof attach), "attach the device filter to %s", cgroup_dir);
  close(dir);
  close(prog); /* the attachment keeps the program */
  free(insns);
}

static void connect_console(const char *path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) die(ENAMETOOLONG, "console socket path too long: %s", path);
  strcpy(addr.sun_path, path);
  console_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  TRY(console_fd, "socket");
  TRY(connect(console_fd, (struct sockaddr *)&addr, sizeof addr), "connect to console socket %s", path);
}

/* The foreground parent: forward signals, relay a pty to stdio, exit as the child did. */
static struct termios saved_termios;
static int termios_saved;

static void copy_fd(int from, int to) {
  char buf[8192];
  ssize_t n = read(from, buf, sizeof buf);
  for (ssize_t off = 0; n > 0 && off < n;) {
    ssize_t w = write(to, buf + off, (size_t)(n - off));
    if (w <= 0) break;
    off += w;
  }
}

static void resize(int master) {
  struct winsize ws;
  if (master >= 0 && ioctl(0, TIOCGWINSZ, &ws) == 0) ioctl(master, TIOCSWINSZ, &ws);
}

static sigset_t forwarded;

/* Blocked before clone so that no signal (SIGCHLD above all) is lost before the signalfd exists;
 * the child unblocks them just before execve. */
static void block_signals(void) {
  sigfillset(&forwarded);
  sigdelset(&forwarded, SIGSEGV);
  sigdelset(&forwarded, SIGBUS);
  sigprocmask(SIG_BLOCK, &forwarded, NULL);
}

static int foreground(pid_t child, int master) {
  int sfd = signalfd(-1, &forwarded, SFD_CLOEXEC);
  if (master >= 0 && isatty(0) && tcgetattr(0, &saved_termios) == 0) {
    struct termios raw = saved_termios;
    cfmakeraw(&raw);
    tcsetattr(0, TCSANOW, &raw);
    termios_saved = 1;
  }
  resize(master);
  int stdin_open = master >= 0;
  for (;;) {
    int status;
    if (waitpid(child, &status, WNOHANG) == child) {
      trace_step("child exited");
      if (master >= 0) {
        fcntl(master, F_SETFL, O_NONBLOCK);
        char buf[8192];
        ssize_t n;
        while ((n = read(master, buf, sizeof buf)) > 0)
          if (write(1, buf, (size_t)n) < 0) break;
      }
      if (termios_saved) tcsetattr(0, TCSANOW, &saved_termios);
      char s[16];
      snprintf(s, sizeof s, "%d", status);
      const char *strs[1] = {s};
      send_record(MSG_EXIT, 1, strs);
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    struct pollfd p[3] = {{sfd, POLLIN, 0}, {master, POLLIN, 0}, {stdin_open ? 0 : -1, POLLIN, 0}};
    if (poll(p, 3, -1) < 0 && errno != EINTR) break;
    if (p[1].revents & POLLIN) copy_fd(master, 1);
    if (p[2].revents & (POLLIN | POLLHUP)) {
      char buf[8192];
      ssize_t n = read(0, buf, sizeof buf);
      if (n <= 0) stdin_open = 0;
      else if (write(master, buf, (size_t)n) < 0) stdin_open = 0;
    }
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(sfd, &si, sizeof si) != sizeof si) continue;
      if (si.ssi_signo == SIGWINCH) {
        resize(master);
      } else if (si.ssi_signo != SIGCHLD) {
        kill(child, (int)si.ssi_signo);
      }
    }
  }
  return 1;
}

/* Whatever our caller leaked to us (fds without CLOEXEC) must not reach the container (the
 * CVE-2024-21626 class): everything from 3 up is closed at execve, except --preserve-fds. */
static void close_inherited_fds(void) {
  unsigned keep = 0;
  for (int i = 0; i < nops; i++)
    if (ops[i].code == OP_PRESERVE_FDS) keep = (unsigned)num(ops[i].argv[0]);
  if (syscall(SYS_close_range, 3 + keep, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
  for (int fd = 3 + (int)keep; fd < 65536; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* Maps for a child in a new user namespace; it waits for them before it does anything. */
static void write_id_map(pid_t pid, const char *file, const char *map) {
  char path[64];
  stage = file;
  snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
  if (write_file(path, map) < 0) {
    int err = errno;
    kill(pid, SIGKILL);
    die(err, "write %s", path);
  }
}

static void write_id_map(pid_t pid, const char *file, const char *map);

/* A bind source's mount tree, cloned with the runtime's credentials before the child enters its
 * user namespace (its mapped root may not be able to reach it). */
static void open_bind_source(const char *path, const char *recursive) {
  if (nbind_fds >= (int)(sizeof bind_fds / sizeof *bind_fds)) die(E2BIG, "too many bind mounts");
  unsigned rec = recursive && recursive[0] == 'r' ? AT_RECURSIVE : 0;
  int tree = open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
  TRY(tree, "open_tree %s (a bind source)", path);
  bind_fds[nbind_fds++] = tree;
}

/* A user namespace that exists only to lend its mapping to idmapped mounts: a child unshares it and
 * waits; we write its maps, keep an fd to the namespace, and let the child go. */
static void make_idmap_userns(const char *uid_map, const char *gid_map) {
  if (nidmap_fds >= (int)(sizeof idmap_fds / sizeof *idmap_fds)) die(E2BIG, "too many idmapped mounts");
  int hold[2];
  TRY(pipe2(hold, O_CLOEXEC), "pipe");
  pid_t c = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, NULL);
  TRY(c, "clone a user namespace for an idmapped mount");
  if (c == 0) {
    char x;
    close(hold[1]);
    if (read(hold[0], &x, 1) < 0) _exit(1);
    _exit(0);
  }
  close(hold[0]);
  write_id_map(c, "uid_map", uid_map);
  write_id_map(c, "gid_map", gid_map);
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/ns/user", c);
  idmap_fds[nidmap_fds] = open(path, O_RDONLY | O_CLOEXEC);
  TRY(idmap_fds[nidmap_fds], "open %s", path);
  nidmap_fds++;
  close(hold[1]);
  waitpid(c, NULL, 0);
}

/* Rootless: the setuid helpers from shadow (newuidmap/newgidmap) write maps from /etc/subuid. */
static void run_id_map_cmd(pid_t child, char **a, int argc) {
  char pidstr[16];
  snprintf(pidstr, sizeof pidstr, "%d", child);
  char **argv = calloc((size_t)argc + 2, sizeof(char *));
  argv[0] = a[0];
  argv[1] = pidstr;
  for (int i = 1; i < argc; i++) argv[i + 1] = a[i];
  stage = "ID_MAP_CMD";
  pid_t p = fork();
  if (p == 0) {
    dup2(2, 1); /* its complaints go where ours go */
    execv(a[0], argv);
    _exit(127);
  }
  int st = 0;
  waitpid(p, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    kill(child, SIGKILL);
    die(EPERM, "%s %s failed (status %d): check /etc/subuid and /etc/subgid for this user", a[0], pidstr, WEXITSTATUS(st));
  }
  free(argv);
}

/* Run from a sealed in-memory copy of ourselves, so that /proc/<pid>/exe of a container process
 * that is still the helper names no file on the host that could be overwritten (CVE-2019-5736;
 * runc does the same). The plan and report fds are not CLOEXEC yet and survive the re-exec. */
static void reexec_from_sealed_copy(char **argv) {
  if (getenv("_BERTH_HELPER_SEALED")) {
    unsetenv("_BERTH_HELPER_SEALED");
    return;
  }
  int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  /* started from a sealed copy already (the runtime keeps one and execs it): nothing to do */
  int seals = self < 0 ? -1 : fcntl(self, F_GET_SEALS);
  if (seals >= 0 && (seals & F_SEAL_WRITE) && (seals & F_SEAL_SEAL)) {
    close(self);
    return;
  }
  int mem = memfd_create("berth-helper", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (self < 0 || mem < 0) return; /* no memfd: run from the file, still non-dumpable */
  char buf[65536];
  ssize_t n;
  while ((n = read(self, buf, sizeof buf)) > 0)
    if (write(mem, buf, (size_t)n) != n) return;
  close(self);
  if (fcntl(mem, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) return;
  setenv("_BERTH_HELPER_SEALED", "1", 1);
  extern char **environ;
  fexecve(mem, argv, environ);
  unsetenv("_BERTH_HELPER_SEALED"); /* fexecve failed: go on from the file */
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "berth-helper is run by berth-runtime, not by hand\n");
    return 2;
  }
  const char *trace_path = getenv("BERTH_TRACE");
  /* a file, not stderr: the helper's stderr is the container's */
  if (trace_path && trace_path[0] == '/') {
    tracing = fopen(trace_path, "ae");
    if (tracing) setvbuf(tracing, NULL, _IONBF, 0);
  }
  trace_step("started");
  reexec_from_sealed_copy(argv);
  trace_step("sealed");
  plan_fd = atoi(argv[1]);
  report_fd = atoi(argv[2]);
  fcntl(plan_fd, F_SETFD, FD_CLOEXEC);
  fcntl(report_fd, F_SETFD, FD_CLOEXEC);
  signal(SIGPIPE, SIG_IGN);
  read_plan(plan_fd);
  close_inherited_fds();
  trace_step("plan read");

  unsigned long clone_flags = 0;
  int hook_sync = 0, fg = 0, terminal = 0;
  const char *uid_map = NULL, *gid_map = NULL;
  int setgroups_deny = 0;
  for (int i = 0; i < nops; i++) {
    struct op *o = &ops[i];
    char **a = o->argv;
    stage = op_names[o->code] ? op_names[o->code] : "op";
    switch (o->code) {
    case OP_MKFIFO:
      if (mkfifo(a[0], (mode_t)strtol(a[1], NULL, 8)) < 0) die(errno, "mkfifo %s", a[0]);
      TRY(chmod(a[0], (mode_t)strtol(a[1], NULL, 8)), "chmod %s", a[0]); /* not narrowed by umask */
      break;
    case OP_SETNS: {
      int fd = open(a[0], O_RDONLY | O_CLOEXEC);
      TRY(fd, "open namespace %s", a[0]);
      TRY(setns(fd, (int)num(a[1])), "join namespace %s", a[0]);
      close(fd);
      break;
    }
    case OP_DEVICE_FILTER: attach_device_filter(a[0], a[1]); break;
    case OP_IDMAP_USERNS: make_idmap_userns(a[0], a[1]); break;
    case OP_BIND_SOURCE: open_bind_source(a[0], a[1]); break;
    case OP_UNSHARE_TIME:
      TRY(unshare(CLONE_NEWTIME), "unshare the time namespace");
      if (a[0][0]) TRY(write_file("/proc/self/timens_offsets", a[0]), "write time offsets");
      break;
    case OP_CLONE: clone_flags = (unsigned long)num(a[0]); break;
    case OP_UID_MAP: uid_map = a[0]; break;
    case OP_SETGROUPS_DENY: setgroups_deny = 1; break;
    case OP_GID_MAP: gid_map = a[0]; break;
    case OP_HOOK_SYNC: hook_sync = 1; break;
    case OP_LAST_WORD: last_word = 1; break;
    case OP_FOREGROUND: fg = 1; break;
    case OP_TERMINAL: terminal = 1; break;
    case OP_CONSOLE_SOCKET: connect_console(a[0]); break;
    case OP_SECCOMP_LISTENER: {
      struct sockaddr_un addr = {.sun_family = AF_UNIX};
      if (strlen(a[0]) >= sizeof addr.sun_path) die(ENAMETOOLONG, "seccomp listener path too long: %s", a[0]);
      strcpy(addr.sun_path, a[0]);
      listener_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      TRY(listener_fd, "socket");
      TRY(connect(listener_fd, (struct sockaddr *)&addr, sizeof addr), "connect to the seccomp agent at %s", a[0]);
      listener_state = a[1];
      break;
    }
    case OP_EXEC_FIFO:
      fifo_fd = open(a[0], O_PATH | O_CLOEXEC);
      TRY(fifo_fd, "open %s", a[0]);
      break;
    case OP_CGROUP_PROCS:
      /* Opened now, in the host's mount namespace; written with the child's pid after clone. */
      if (ncgroup_fds < (int)(sizeof cgroup_fds / sizeof *cgroup_fds)) {
        cgroup_paths[ncgroup_fds] = a[0];
        cgroup_fds[ncgroup_fds] = open(a[0], O_WRONLY | O_CLOEXEC);
        TRY(cgroup_fds[ncgroup_fds], "open %s", a[0]);
        ncgroup_fds++;
      }
      break;
    case OP_CGROUP_JOIN:
      if (ncgroup_joins < (int)(sizeof cgroup_joins / sizeof *cgroup_joins)) {
        struct cgroup_join *j = &cgroup_joins[ncgroup_joins++];
        char p[PATH_MAX];
        j->dir = a[0];
        snprintf(p, sizeof p, "%s/tasks", a[0]);
        j->tasks = open(p, O_WRONLY | O_CLOEXEC);
        j->back = open(a[1], O_WRONLY | O_CLOEXEC);
        snprintf(p, sizeof p, "%s/cgroup.procs", a[0]);
        j->procs = open(p, O_WRONLY | O_CLOEXEC);
        TRY(j->procs, "open %s", p);
      }
      break;
    case OP_CLONE_INTO_CGROUP:
      clone_cgroup_dir = a[0];
      clone_cgroup_fd = open(a[0], O_PATH | O_DIRECTORY | O_CLOEXEC);
      TRY(clone_cgroup_fd, "open cgroup %s", a[0]);
      break;
    case OP_ROOT_OF: {
      char p[64];
      snprintf(p, sizeof p, "/proc/%s/root", a[0]);
      root_of_fd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
      TRY(root_of_fd, "open %s", p);
      break;
    }
    default: break;
    }
  }
  if (terminal && console_fd < 0)
    TRY(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, term_pair), "socketpair for the terminal");

  int release[2], status[2];
  TRY(pipe2(release, O_CLOEXEC), "pipe");
  TRY(pipe2(status, O_CLOEXEC), "pipe");
  if (fg) block_signals();
  /* As root, be non-dumpable before the child exists, so no process in the container can ptrace it
   * or open its /proc files while it is still the host's binary with the runtime's privileges. (An
   * unprivileged parent must be able to write the child's maps: its child does this after release.) */
  helper_root = geteuid() == 0;
  if (helper_root) TRY(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "make the helper non-dumpable");
  /* v1: into the container's cgroups as a single thread (no global lock), so the child is born
   * there; the joins that fail are done as moves of the child below */
  for (int i = 0; i < ncgroup_joins; i++) {
    struct cgroup_join *j = &cgroup_joins[i];
    j->joined = j->tasks >= 0 && j->back >= 0 && write(j->tasks, "0", 1) == 1;
  }
  trace_step("cgroups joined by the helper");
  stage = "clone";
  trace_step("clone");
  pid_t pid = -1;
  int born_in_cgroup = 0;
  if (clone_cgroup_fd >= 0) {
    /* Born in its cgroup: no move, so no wait for the kernel's cgroup lock (an RCU grace period). */
    struct clone3_args ca = {.flags = clone_flags | CLONE_INTO_CGROUP, .exit_signal = SIGCHLD, .cgroup = (uint64_t)clone_cgroup_fd};
    pid = (pid_t)syscall(SYS_clone3, &ca, sizeof ca);
    born_in_cgroup = pid >= 0;
  }
  if (pid < 0) /* no clone3 (or refused): a plain clone, then the cgroup.procs writes */
    pid = (pid_t)syscall(SYS_clone, clone_flags | SIGCHLD, NULL, NULL, NULL, NULL);
  TRY(pid, "clone a child with namespace flags %#lx", clone_flags);
  if (pid == 0) {
    in_child = 1;
    new_userns = (clone_flags & CLONE_NEWUSER) != 0;
    close(release[1]);
    close(status[0]);
    if (term_pair[0] >= 0) close(term_pair[0]);
    status_fd = status[1];
    run_child(release[0]);
  }
  close(release[0]);
  close(status[1]);
  if (term_pair[1] >= 0) close(term_pair[1]);
  if (console_fd >= 0) close(console_fd);
  if (fifo_fd >= 0) close(fifo_fd);
  close_bind_fds(); /* the child holds its own copies */

  for (int i = 0; i < nops; i++)
    if (ops[i].code == OP_ID_MAP_CMD) run_id_map_cmd(pid, ops[i].argv, ops[i].argc);
  if (uid_map) write_id_map(pid, "uid_map", uid_map);
  if (setgroups_deny) write_id_map(pid, "setgroups", "deny");
  if (gid_map) write_id_map(pid, "gid_map", gid_map);
  char pidstr[16];
  snprintf(pidstr, sizeof pidstr, "%d", pid);
  trace_step("maps written");
  if (clone_cgroup_fd >= 0) close(clone_cgroup_fd);
  for (int i = 0; i < ncgroup_joins; i++) {
    struct cgroup_join *j = &cgroup_joins[i];
    if (!j->joined && write(j->procs, pidstr, strlen(pidstr)) < 0) {
      kill(pid, SIGKILL);
      die(errno, "add pid %d to %s", pid, j->dir);
    }
  }
  for (int i = 0; i < ncgroup_fds; i++) {
    /* the cgroup.procs of the directory the child was cloned into needs no write */
    size_t n = clone_cgroup_dir ? strlen(clone_cgroup_dir) : 0;
    if (!(born_in_cgroup && strncmp(cgroup_paths[i], clone_cgroup_dir, n) == 0 && strcmp(cgroup_paths[i] + n, "/cgroup.procs") == 0)) {
      stage = "CGROUP_PROCS";
      if (write(cgroup_fds[i], pidstr, strlen(pidstr)) < 0) {
        kill(pid, SIGKILL);
        die(errno, "add pid %d to %s", pid, cgroup_paths[i]);
      }
    }
    close(cgroup_fds[i]);
  }
  trace_step("cgroups joined");
  const char *strs[1] = {pidstr};
  send_record(MSG_PID, 1, strs);
  if (hook_sync) {
    const char *name[1] = {"createRuntime"};
    send_record(MSG_HOOK_POINT, 1, name);
    uint32_t hdr[2] = {0, 0};
    if (read_full(plan_fd, hdr, 8) < 0 || hdr[0] != MSG_CONTINUE) {
      kill(pid, SIGKILL);
      if (last_word && hdr[0] == MSG_LAST_WORD) exit_with_last_word(hdr); /* the runtime ended meanwhile */
      finish(1);
    }
  }
  if (write(release[1], pidstr, strlen(pidstr)) != (ssize_t)strlen(pidstr)) die(errno, "release the child");
  close(release[1]);
  /* back where it came from, while the child sets itself up (v1 moves cost ~0.1 ms each): the
   * helper is no process of the container (should the kernel refuse, as a cgroup namespace joined
   * for an exec can, it stays until it exits) */
  for (int i = 0; i < ncgroup_joins; i++) {
    struct cgroup_join *j = &cgroup_joins[i];
    if (j->joined) (void)!write(j->back, "0", 1);
    close(j->tasks);
    close(j->back);
    close(j->procs);
  }
  trace_step("back in its cgroups");

  ssize_t r;
  char c = 0;
  do r = read(status[0], &c, 1); while (r < 0 && errno == EINTR);
  if (r != 1 || c != 'R') {
    int st = 0;
    waitpid(pid, &st, 0);
    stage = "child";
    if (r != 1) report_error(0, "container process exited during setup (status %d)", st);
    finish(1);
  }
  int master = -1;
  if (term_pair[0] >= 0) master = recv_fd(term_pair[0]);
  finish(fg ? foreground(pid, master) : 0);
}
