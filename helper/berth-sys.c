/*
 * berth-sys.node: the few system calls Node does not offer, as a Node-API addon.
 *
 * Mechanism only: each function makes one call and returns its result, or -errno on failure;
 * src/common/sys.ts turns those into typed errors. It replaces a general FFI library whose
 * loading cost ~14 ms on every command that locks or mounts; this loads in well under 1 ms.
 * Node-API is ABI-stable, so the addon survives Node upgrades.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <sys/wait.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <signal.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include "nft-elem.h"
#define NAPI_VERSION 8
#include <node_api.h>

#define MAX_ARGS 5
#define PATH_BYTES 4096

/* Arguments as C values; a JS null/undefined string becomes NULL. */
struct args {
  size_t n;
  napi_value v[MAX_ARGS];
};

static int get_args(napi_env env, napi_callback_info info, struct args *a) {
  a->n = MAX_ARGS;
  return napi_get_cb_info(env, info, &a->n, a->v, NULL, NULL) == napi_ok ? 0 : -1;
}

/* A string argument into buf (NULL for null/undefined); -1 after throwing for other types. */
static int get_str(napi_env env, napi_value v, char *buf, size_t size, char **out) {
  napi_valuetype t;
  size_t len;
  if (napi_typeof(env, v, &t) != napi_ok) return -1;
  if (t == napi_null || t == napi_undefined) {
    *out = NULL;
    return 0;
  }
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a string");
    return -1;
  }
  if (len >= size - 1) {
    napi_throw_range_error(env, NULL, "string too long");
    return -1;
  }
  *out = buf;
  return 0;
}

static int get_buf(napi_env env, napi_value v, void **data, size_t *len) {
  if (napi_get_buffer_info(env, v, data, len) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a Buffer");
    return -1;
  }
  return 0;
}

static int get_i64(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a number");
    return -1;
  }
  return 0;
}

static napi_value num(napi_env env, int64_t n) {
  napi_value r;
  napi_create_int64(env, n, &r);
  return r;
}

/* The call's result, or -errno when it failed. */
static napi_value result(napi_env env, long rc) {
  return num(env, rc < 0 ? -errno : rc);
}

/* flock(fd, op) */
static napi_value js_flock(napi_env env, napi_callback_info info) {
  struct args a;
  int64_t fd, op;
  if (get_args(env, info, &a) || get_i64(env, a.v[0], &fd) || get_i64(env, a.v[1], &op)) return NULL;
  return result(env, flock((int)fd, (int)op));
}

/* mount(source, target, fstype, flags, data) */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  struct args a;
  char src[PATH_BYTES], dst[PATH_BYTES], type[256], data[PATH_BYTES];
  char *s, *d, *t, *o;
  int64_t flags;
  if (get_args(env, info, &a) || get_str(env, a.v[0], src, sizeof src, &s) || get_str(env, a.v[1], dst, sizeof dst, &d) ||
      get_str(env, a.v[2], type, sizeof type, &t) || get_i64(env, a.v[3], &flags) || get_str(env, a.v[4], data, sizeof data, &o))
    return NULL;
  return result(env, mount(s, d, t, (unsigned long)flags, o));
}

/* umount2(target, flags) */
static napi_value js_umount2(napi_env env, napi_callback_info info) {
  struct args a;
  char dst[PATH_BYTES];
  char *d;
  int64_t flags;
  if (get_args(env, info, &a) || get_str(env, a.v[0], dst, sizeof dst, &d) || get_i64(env, a.v[1], &flags)) return NULL;
  return result(env, umount2(d, (int)flags));
}

/* A Promise of work done on libuv's thread pool: `execute` runs there, `complete` resolves it. */
static napi_value queue_work(napi_env env, const char *name, napi_async_execute_callback execute, napi_async_complete_callback complete, void *data,
                             napi_async_work *work, napi_deferred *deferred) {
  napi_value promise, n;
  napi_create_promise(env, deferred, &promise);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &n);
  napi_create_async_work(env, NULL, n, execute, complete, data, work);
  napi_queue_async_work(env, *work);
  return promise;
}

/* posix_spawn attributes for a child with every signal at its default and none blocked */
static void spawn_attrs(posix_spawnattr_t *at, short flags) {
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_init(at);
  posix_spawnattr_setsigmask(at, &none);
  posix_spawnattr_setsigdefault(at, &all);
  posix_spawnattr_setflags(at, (short)(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | flags));
}

/* umount2Async(target, flags): a Promise of umount2's result (-errno on failure), the call made on
 * libuv's thread pool, so a slow unmount (overlayfs syncs its upper layer) overlaps other work. */
/* The head of a thread-pool job whose result is one number (0 or -errno): resolved by rc_complete. */
struct rc_work {
  napi_async_work work;
  napi_deferred deferred;
  long rc;
};

static void rc_complete(napi_env env, napi_status status, void *data) {
  struct rc_work *w = data;
  (void)status;
  napi_resolve_deferred(env, w->deferred, num(env, w->rc));
  napi_delete_async_work(env, w->work);
  free(w);
}

/* a zeroed thread-pool job of SIZE bytes, or NULL after throwing */
static void *work_alloc(napi_env env, size_t size) {
  void *w = calloc(1, size);
  if (!w) napi_throw_error(env, NULL, "out of memory");
  return w;
}

struct umount_work {
  struct rc_work head;
  char target[PATH_BYTES];
  int flags;
};

static void umount_execute(napi_env env, void *data) {
  (void)env;
  struct umount_work *w = data;
  w->head.rc = umount2(w->target, w->flags) < 0 ? -errno : 0;
}

static napi_value js_umount2_async(napi_env env, napi_callback_info info) {
  struct args a;
  char *d;
  int64_t flags;
  struct umount_work *w = work_alloc(env, sizeof *w);
  if (!w) return NULL;
  if (get_args(env, info, &a) || get_str(env, a.v[0], w->target, sizeof w->target, &d) || get_i64(env, a.v[1], &flags) || !d) {
    free(w);
    return NULL;
  }
  w->flags = (int)flags;
  return queue_work(env, "berth-umount", umount_execute, rc_complete, w, &w->head.work, &w->head.deferred);
}

/* mountAsync(source, target, fstype, flags, data): mount(2) on libuv's thread pool (an overlay's
 * mount, ~1 ms, overlaps the caller's work); a Promise of 0 or -errno. */
struct mount_work {
  struct rc_work head;
  char src[PATH_BYTES], dst[PATH_BYTES], type[256], data[PATH_BYTES];
  unsigned long flags;
};

static void mount_execute(napi_env env, void *data) {
  (void)env;
  struct mount_work *w = data;
  w->head.rc = mount(w->src, w->dst, w->type, w->flags, w->data) < 0 ? -errno : 0;
}

static napi_value js_mount_async(napi_env env, napi_callback_info info) {
  struct args a;
  char *s, *d, *t, *o;
  int64_t flags;
  struct mount_work *w = work_alloc(env, sizeof *w);
  if (!w) return NULL;
  if (get_args(env, info, &a) || get_str(env, a.v[0], w->src, sizeof w->src, &s) || get_str(env, a.v[1], w->dst, sizeof w->dst, &d) ||
      get_str(env, a.v[2], w->type, sizeof w->type, &t) || get_i64(env, a.v[3], &flags) || get_str(env, a.v[4], w->data, sizeof w->data, &o) || !d) {
    free(w);
    return NULL;
  }
  w->flags = (unsigned long)flags;
  return queue_work(env, "berth-mount", mount_execute, rc_complete, w, &w->head.work, &w->head.deferred);
}

/* lsetxattr(path, name, buffer) */
static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  struct args a;
  char path[PATH_BYTES], name[256];
  char *p, *n;
  void *data;
  size_t len;
  if (get_args(env, info, &a) || get_str(env, a.v[0], path, sizeof path, &p) || get_str(env, a.v[1], name, sizeof name, &n)) return NULL;
  if (get_buf(env, a.v[2], &data, &len)) return NULL;
  return result(env, lsetxattr(p, n, data, len, 0));
}

/* lgetxattr(path, name, buffer): the value's length, written into buffer */
static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  struct args a;
  char path[PATH_BYTES], name[256];
  char *p, *n;
  void *data;
  size_t len;
  if (get_args(env, info, &a) || get_str(env, a.v[0], path, sizeof path, &p) || get_str(env, a.v[1], name, sizeof name, &n)) return NULL;
  if (get_buf(env, a.v[2], &data, &len)) return NULL;
  return result(env, lgetxattr(p, n, data, len));
}

/* llistxattr(path, buffer): the list's length, written into buffer */
static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  struct args a;
  char path[PATH_BYTES];
  char *p;
  void *data;
  size_t len;
  if (get_args(env, info, &a) || get_str(env, a.v[0], path, sizeof path, &p)) return NULL;
  if (get_buf(env, a.v[1], &data, &len)) return NULL;
  return result(env, llistxattr(p, data, len));
}

/* mknod(path, mode, major, minor) */
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  struct args a;
  char path[PATH_BYTES];
  char *p;
  int64_t mode, major, minor;
  if (get_args(env, info, &a) || get_str(env, a.v[0], path, sizeof path, &p) || get_i64(env, a.v[1], &mode) || get_i64(env, a.v[2], &major) ||
      get_i64(env, a.v[3], &minor))
    return NULL;
  return result(env, mknod(p, (mode_t)mode, makedev((unsigned)major, (unsigned)minor)));
}

/* setWindowSize(fd, rows, cols): ioctl TIOCSWINSZ */
static napi_value js_winsize(napi_env env, napi_callback_info info) {
  struct args a;
  int64_t fd, rows, cols;
  struct winsize ws;
  if (get_args(env, info, &a) || get_i64(env, a.v[0], &fd) || get_i64(env, a.v[1], &rows) || get_i64(env, a.v[2], &cols)) return NULL;
  memset(&ws, 0, sizeof ws);
  ws.ws_row = (unsigned short)rows;
  ws.ws_col = (unsigned short)cols;
  return result(env, ioctl((int)fd, TIOCSWINSZ, &ws));
}

/* Removes NAME in DIRFD and everything under it, never following a symlink. A directory on
 * another file system (a mount point) is detached first with DETACH, else refused with EXDEV,
 * so a removal never reaches into a mount. 0 or -1 with errno. */
static int remove_at(int parent, const char *name, dev_t dev, int detach, int depth) {
  if (unlinkat(parent, name, 0) == 0 || errno == ENOENT) return 0;
  if (errno != EISDIR && errno != EPERM) return -1;
  if (depth > 256) {
    errno = ELOOP;
    return -1;
  }
  int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno == EACCES && fchmodat(parent, name, 0700, 0) == 0) /* ours but closed (overlayfs' work/work) */
    fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 0 : -1;
  struct stat st;
  if (fstat(fd, &st) < 0) {
    close(fd);
    return -1;
  }
  if (st.st_dev != dev) {
    close(fd);
    if (!detach) {
      errno = EXDEV;
      return -1;
    }
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", parent);
    char target[PATH_BYTES];
    ssize_t n = readlink(self, target, sizeof target - 1);
    if (n < 0 || (size_t)n + 1 + strlen(name) >= sizeof target) return -1;
    target[n] = 0;
    strcat(strcat(target, "/"), name);
    if (umount2(target, MNT_DETACH) < 0) return -1;
    return remove_at(parent, name, dev, detach, depth);
  }
  DIR *d = fdopendir(fd);
  if (!d) {
    close(fd);
    return -1;
  }
  /* entries removed while reading may hide others: read again until the directory is empty */
  for (int pass = 0; pass < 8; pass++) {
    struct dirent *e;
    int removed = 0;
    rewinddir(d);
    while ((e = readdir(d))) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      int rc = remove_at(dirfd(d), e->d_name, dev, detach, depth + 1);
      if (rc < 0 && errno == EACCES && fchmod(dirfd(d), 0700) == 0) /* a directory of ours without write permission */
        rc = remove_at(dirfd(d), e->d_name, dev, detach, depth + 1);
      if (rc < 0) {
        int saved = errno;
        closedir(d);
        errno = saved;
        return -1;
      }
      removed++;
    }
    if (unlinkat(parent, name, AT_REMOVEDIR) == 0 || errno == ENOENT) {
      closedir(d);
      return 0;
    }
    if (errno != ENOTEMPTY || !removed) break;
  }
  int saved = errno;
  closedir(d);
  errno = saved;
  return -1;
}

/* rm -rf of P that stays on P's file system (see remove_at): 0 or -errno */
static long remove_tree(const char *p, int detach) {
  struct stat st;
  if (lstat(p, &st) < 0) return errno == ENOENT ? 0 : -errno;
  if (!S_ISDIR(st.st_mode)) return unlink(p) < 0 && errno != ENOENT ? -errno : 0;
  /* the path's own file system is that of its parent: a mount point itself is detached too */
  char parent[PATH_BYTES];
  strcpy(parent, p);
  char *slash = strrchr(parent, '/');
  const char *base = p;
  if (slash && slash[1]) {
    base = p + (slash - parent) + 1;
    if (slash == parent) slash[1] = 0; else *slash = 0;
  } else {
    strcpy(parent, ".");
  }
  int dirfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) return -errno;
  struct stat pst;
  long rc = fstat(dirfd, &pst);
  if (rc == 0) rc = remove_at(dirfd, base, pst.st_dev, detach, 0);
  if (rc < 0) rc = -errno;
  close(dirfd);
  return rc;
}

/* removeTree(path, detachMounts): 0 or -errno */
static napi_value js_remove_tree(napi_env env, napi_callback_info info) {
  struct args a;
  char path[PATH_BYTES];
  char *p;
  bool detach = false;
  if (get_args(env, info, &a) || get_str(env, a.v[0], path, sizeof path, &p) || !p) return NULL;
  if (a.n > 1) napi_get_value_bool(env, a.v[1], &detach);
  return num(env, remove_tree(p, detach));
}

/* removeTreeAsync(path, detachMounts): removeTree on libuv's thread pool, a Promise of its result */
struct remove_work {
  struct rc_work head;
  char path[PATH_BYTES];
  bool detach;
};

static void remove_execute(napi_env env, void *data) {
  (void)env;
  struct remove_work *w = data;
  w->head.rc = remove_tree(w->path, w->detach);
}

static napi_value js_remove_tree_async(napi_env env, napi_callback_info info) {
  struct args a;
  char *p;
  struct remove_work *w = work_alloc(env, sizeof *w);
  if (!w) return NULL;
  if (get_args(env, info, &a) || get_str(env, a.v[0], w->path, sizeof w->path, &p) || !p) {
    free(w);
    return NULL;
  }
  if (a.n > 1) napi_get_value_bool(env, a.v[1], &w->detach);
  return queue_work(env, "berth-remove-tree", remove_execute, rc_complete, w, &w->head.work, &w->head.deferred);
}

/* mkdirsAsync(paths): mkdir of each path (0755; one that exists is fine) on libuv's thread pool,
 * in one job: a Promise of 0, or the -errno of the first that failed. */
#define MKDIRS_MAX 32
struct mkdirs_work {
  struct rc_work head;
  uint32_t n;
  char paths[][PATH_BYTES]; /* n of them */
};

static void mkdirs_execute(napi_env env, void *data) {
  (void)env;
  struct mkdirs_work *w = data;
  for (uint32_t i = 0; i < w->n && w->head.rc == 0; i++)
    if (mkdir(w->paths[i], 0755) < 0 && errno != EEXIST) w->head.rc = -errno;
}

static napi_value js_mkdirs_async(napi_env env, napi_callback_info info) {
  struct args a;
  char *p;
  uint32_t n = 0;
  if (get_args(env, info, &a) || napi_get_array_length(env, a.v[0], &n) != napi_ok || n > MKDIRS_MAX) {
    napi_throw_type_error(env, NULL, "mkdirsAsync(paths[0..32])");
    return NULL;
  }
  struct mkdirs_work *w = work_alloc(env, sizeof *w + n * sizeof w->paths[0]);
  if (!w) return NULL;
  w->n = n;
  for (uint32_t i = 0; i < w->n; i++) {
    napi_value v;
    napi_get_element(env, a.v[0], i, &v);
    if (get_str(env, v, w->paths[i], sizeof w->paths[i], &p) || !p) {
      free(w);
      return NULL;
    }
  }
  return queue_work(env, "berth-mkdirs", mkdirs_execute, rc_complete, w, &w->head.work, &w->head.deferred);
}

/* spawn(file, argv, fds): starts FILE with ARGV in a new session, child fd i being our fd
 * fds[i] (-1: /dev/null), every other fd closed, signals at their defaults. posix_spawn shares
 * our memory until the exec instead of copying Node's page tables as fork does (~3 ms on a
 * CLI-sized heap). The child is ours to reap: callers run programs that fork their long-lived
 * part away and exit at once (berth-monitor -D). The pid, or -errno.
 * spawnAsync(file, argv, fds): the same on libuv's thread pool (the exec of the program, ~1.5 ms,
 * overlaps the caller's work); a Promise of the pid or -errno. The fds are duplicated at the call,
 * so the caller may close its own at once; the environment is copied then too. */
#define SPAWN_MAX_ARGS 128
#define SPAWN_MAX_FDS 16
struct spawn_job {
  struct rc_work head;
  char file[PATH_BYTES];
  char *argv[SPAWN_MAX_ARGS];
  char **envp; /* a copy for the thread pool; NULL: environ */
  int tmp[SPAWN_MAX_FDS];
  uint32_t nfds;
  int devnull;
};

static void spawn_release(struct spawn_job *j) {
  for (uint32_t i = 0; i < j->nfds; i++)
    if (j->tmp[i] >= 0) close(j->tmp[i]);
  if (j->devnull >= 0) close(j->devnull);
  for (int i = 0; i < SPAWN_MAX_ARGS && j->argv[i]; i++) free(j->argv[i]);
  for (int i = 0; j->envp && j->envp[i]; i++) free(j->envp[i]);
  free(j->envp);
}

/* Reads the arguments into j (argv copied, fds duplicated above the targets); 0, or -1 after
 * throwing (j released). */
static int spawn_prepare(napi_env env, napi_callback_info info, struct spawn_job *j, int copy_env) {
  struct args a;
  char *f;
  uint32_t argc = 0, i;
  j->devnull = -1;
  for (i = 0; i < SPAWN_MAX_FDS; i++) j->tmp[i] = -1;
  if (get_args(env, info, &a) || get_str(env, a.v[0], j->file, sizeof j->file, &f) || !f) return -1;
  if (napi_get_array_length(env, a.v[1], &argc) != napi_ok || argc == 0 || argc >= SPAWN_MAX_ARGS ||
      napi_get_array_length(env, a.v[2], &j->nfds) != napi_ok || j->nfds > SPAWN_MAX_FDS) {
    j->nfds = 0;
    napi_throw_type_error(env, NULL, "spawn(file, argv[1..127], fds[0..16])");
    return -1;
  }
  int ok = 1;
  for (i = 0; ok && i < argc; i++) {
    napi_value v;
    size_t len;
    napi_get_element(env, a.v[1], i, &v);
    if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok || !(j->argv[i] = malloc(len + 1))) ok = 0;
    else napi_get_value_string_utf8(env, v, j->argv[i], len + 1, &len);
  }
  int fds[SPAWN_MAX_FDS];
  for (i = 0; ok && i < j->nfds; i++) {
    napi_value v;
    int64_t fd;
    napi_get_element(env, a.v[2], i, &v);
    if (napi_get_value_int64(env, v, &fd) != napi_ok) ok = 0;
    fds[i] = (int)fd;
  }
  if (!ok) {
    spawn_release(j);
    napi_throw_type_error(env, NULL, "spawn: argv must be strings and fds numbers");
    return -1;
  }
  /* each source first moved above the targets, so dup2 onto 0..n-1 never clobbers a later source */
  j->head.rc = 0;
  for (i = 0; i < j->nfds && j->head.rc == 0; i++) {
    int src = fds[i];
    if (src < 0) {
      if (j->devnull < 0) j->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
      src = j->devnull;
    }
    j->tmp[i] = src < 0 ? -1 : fcntl(src, F_DUPFD_CLOEXEC, SPAWN_MAX_FDS);
    if (j->tmp[i] < 0) j->head.rc = -errno;
  }
  if (copy_env && j->head.rc == 0) {
    extern char **environ;
    size_t n = 0;
    while (environ[n]) n++;
    j->envp = calloc(n + 1, sizeof *j->envp);
    for (size_t e = 0; j->envp && e < n; e++)
      if (!(j->envp[e] = strdup(environ[e]))) j->head.rc = -ENOMEM;
    if (!j->envp) j->head.rc = -ENOMEM;
  }
  return 0;
}

static void spawn_execute(napi_env env, void *data) {
  (void)env;
  struct spawn_job *j = data;
  if (j->head.rc != 0) return; /* preparing failed: its -errno stands */
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  pid_t pid = 0;
  posix_spawn_file_actions_init(&fa);
  for (uint32_t i = 0; i < j->nfds; i++) posix_spawn_file_actions_adddup2(&fa, j->tmp[i], (int)i);
  posix_spawn_file_actions_addclosefrom_np(&fa, (int)j->nfds);
  spawn_attrs(&at, POSIX_SPAWN_SETSID);
  extern char **environ;
  int e = posix_spawn(&pid, j->file, &fa, &at, j->argv, j->envp ? j->envp : environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  j->head.rc = e ? -e : pid;
}

static napi_value js_spawn(napi_env env, napi_callback_info info) {
  struct spawn_job j = {0};
  if (spawn_prepare(env, info, &j, 0)) return NULL;
  spawn_execute(env, &j);
  spawn_release(&j);
  if (j.head.rc < 0) errno = (int)-j.head.rc;
  return result(env, j.head.rc < 0 ? -1 : j.head.rc);
}

static void spawn_complete(napi_env env, napi_status status, void *data) {
  spawn_release(data);
  rc_complete(env, status, data);
}

static napi_value js_spawn_async(napi_env env, napi_callback_info info) {
  struct spawn_job *j = work_alloc(env, sizeof *j);
  if (!j) return NULL;
  if (spawn_prepare(env, info, j, 1)) {
    free(j);
    return NULL;
  }
  return queue_work(env, "berth-spawn", spawn_execute, spawn_complete, j, &j->head.work, &j->head.deferred);
}

/* runAsync(file, argv): a short-lived program run to its end on libuv's thread pool (posix_spawn,
 * its stderr collected, waitpid), so the event loop never pays for starting it. A Promise of
 * [exit code (128+N for signal N) or -errno, stderr]. */
struct run_work {
  napi_async_work work;
  napi_deferred deferred;
  char **argv; /* argc + 1, NULL-terminated */
  int argc;
  long rc;
  char err[2048];
  size_t errlen;
};

static void run_execute(napi_env env, void *data) {
  (void)env;
  struct run_work *w = data;
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) {
    w->rc = -errno;
    return;
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, p[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  spawn_attrs(&at, 0);
  extern char **environ;
  pid_t pid;
  int e = posix_spawn(&pid, w->argv[0], &fa, &at, w->argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  close(p[1]);
  if (e) {
    close(p[0]);
    w->rc = -e;
    return;
  }
  ssize_t n;
  char buf[512];
  while ((n = read(p[0], buf, sizeof buf)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    size_t room = sizeof w->err - 1 - w->errlen;
    if ((size_t)n > room) n = (ssize_t)room;
    memcpy(w->err + w->errlen, buf, (size_t)n);
    w->errlen += (size_t)n;
  }
  close(p[0]);
  int st = 0;
  pid_t r;
  do r = waitpid(pid, &st, 0); while (r < 0 && errno == EINTR);
  w->rc = r < 0 ? -errno : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void run_complete(napi_env env, napi_status status, void *data) {
  struct run_work *w = data;
  (void)status;
  napi_value arr, err;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, num(env, w->rc));
  napi_create_string_utf8(env, w->err, w->errlen, &err);
  napi_set_element(env, arr, 1, err);
  napi_resolve_deferred(env, w->deferred, arr);
  napi_delete_async_work(env, w->work);
  for (int i = 0; i < w->argc; i++) free(w->argv[i]);
  free(w->argv);
  free(w);
}

static napi_value js_run_async(napi_env env, napi_callback_info info) {
  struct args a;
  uint32_t argc = 0;
  if (get_args(env, info, &a) || napi_get_array_length(env, a.v[0], &argc) != napi_ok || argc == 0 || argc > 65536) {
    napi_throw_type_error(env, NULL, "runAsync(argv[1..65536])");
    return NULL;
  }
  struct run_work *w = calloc(1, sizeof *w);
  if (w && !(w->argv = calloc(argc + 1, sizeof *w->argv))) {
    free(w);
    w = NULL;
  }
  if (!w) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < argc; i++) {
    napi_value v;
    size_t len;
    napi_get_element(env, a.v[0], i, &v);
    if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok || !(w->argv[i] = malloc(len + 1))) {
      for (int j = 0; j < w->argc; j++) free(w->argv[j]);
      free(w->argv);
      free(w);
      napi_throw_type_error(env, NULL, "runAsync: argv must be strings");
      return NULL;
    }
    napi_get_value_string_utf8(env, v, w->argv[i], len + 1, &len);
    w->argc = (int)i + 1;
  }
  return queue_work(env, "berth-run", run_execute, run_complete, w, &w->work, &w->deferred);
}

/* waitpid(pid): blocks until that child exits; its exit code (or 128+signal), or -errno */
static napi_value js_waitpid(napi_env env, napi_callback_info info) {
  struct args a;
  int64_t pid;
  int st = 0;
  if (get_args(env, info, &a) || get_i64(env, a.v[0], &pid)) return NULL;
  pid_t r;
  do r = waitpid((pid_t)pid, &st, 0); while (r < 0 && errno == EINTR);
  if (r < 0) return result(env, -1);
  return num(env, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

/* waitpidAsync(pid): waitpid on libuv's thread pool, a Promise of the exit code (128+signal) or
 * -errno: reaps a child started to outlive the work that started it, without waiting for it */
struct wait_work {
  struct rc_work head;
  pid_t pid;
};

static void wait_execute(napi_env env, void *data) {
  (void)env;
  struct wait_work *w = data;
  int st = 0;
  pid_t r;
  do r = waitpid(w->pid, &st, 0); while (r < 0 && errno == EINTR);
  w->head.rc = r < 0 ? -errno : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static napi_value js_waitpid_async(napi_env env, napi_callback_info info) {
  struct args a;
  int64_t pid;
  if (get_args(env, info, &a) || get_i64(env, a.v[0], &pid)) return NULL;
  struct wait_work *w = work_alloc(env, sizeof *w);
  if (!w) return NULL;
  w->pid = (pid_t)pid;
  return queue_work(env, "berth-waitpid", wait_execute, rc_complete, w, &w->head.work, &w->head.deferred);
}

/* pipe(): [read end, write end], both close-on-exec, or -errno */
static napi_value js_pipe(napi_env env, napi_callback_info info) {
  (void)info;
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return result(env, -1);
  napi_value arr;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, num(env, p[0]));
  napi_set_element(env, arr, 1, num(env, p[1]));
  return arr;
}

/* openpty(): [master, slave] of a new pseudo-terminal in raw mode (a transparent channel: no echo,
 * no line editing), both O_CLOEXEC (the slave is handed to a child as its stdio, which dup2 makes
 * inheritable), or -errno. */
static napi_value js_openpty(napi_env env, napi_callback_info info) {
  (void)info;
  int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0) return result(env, -1);
  char name[64];
  int s = -1;
  if (grantpt(m) == 0 && unlockpt(m) == 0 && ptsname_r(m, name, sizeof name) == 0) s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  struct termios t;
  if (s >= 0 && tcgetattr(s, &t) == 0) {
    cfmakeraw(&t);
    tcsetattr(s, TCSANOW, &t);
  }
  if (s < 0) {
    int e = errno;
    close(m);
    errno = e;
    return result(env, -1);
  }
  napi_value arr;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, num(env, m));
  napi_set_element(env, arr, 1, num(env, s));
  return arr;
}

/* nftMapElem(add, table, map, key, data): one element of an nf_tables map (nft-elem.h); 0 or -errno */
static napi_value js_nft_map_elem(napi_env env, napi_callback_info info) {
  struct args a;
  bool add = false;
  char table[256], map[256];
  char *t, *m;
  void *key, *data = NULL;
  size_t keylen, datalen = 0;
  if (get_args(env, info, &a) || napi_get_value_bool(env, a.v[0], &add) != napi_ok || get_str(env, a.v[1], table, sizeof table, &t) ||
      get_str(env, a.v[2], map, sizeof map, &m) || !t || !m || get_buf(env, a.v[3], &key, &keylen))
    return NULL;
  if (add && get_buf(env, a.v[4], &data, &datalen)) return NULL;
  int e = nft_map_elem(add, t, m, key, keylen, data, datalen);
  return num(env, -e);
}

/* nftMapElemAsync(...): the same on libuv's thread pool, a Promise of 0 or -errno. Deleting an
 * element waits for an RCU grace period in the kernel (~10 ms): other work goes on meanwhile. */
struct elem_work {
  struct rc_work head;
  int add;
  char table[256], map[256];
  unsigned char key[64], data[64];
  size_t keylen, datalen;
};

static void elem_execute(napi_env env, void *data) {
  (void)env;
  struct elem_work *w = data;
  w->head.rc = -nft_map_elem(w->add, w->table, w->map, w->key, w->keylen, w->data, w->datalen);
}

static napi_value js_nft_map_elem_async(napi_env env, napi_callback_info info) {
  struct args a;
  bool add = false;
  char *t, *m;
  void *key, *data = NULL;
  size_t keylen, datalen = 0;
  struct elem_work *w = work_alloc(env, sizeof *w);
  if (!w) return NULL;
  if (get_args(env, info, &a) || napi_get_value_bool(env, a.v[0], &add) != napi_ok || get_str(env, a.v[1], w->table, sizeof w->table, &t) ||
      get_str(env, a.v[2], w->map, sizeof w->map, &m) || !t || !m || get_buf(env, a.v[3], &key, &keylen) || (add && get_buf(env, a.v[4], &data, &datalen))) {
    free(w);
    return NULL;
  }
  if (keylen > sizeof w->key || datalen > sizeof w->data) {
    free(w);
    napi_throw_range_error(env, NULL, "map element too long");
    return NULL;
  }
  w->add = add;
  memcpy(w->key, key, w->keylen = keylen);
  if (datalen) memcpy(w->data, data, w->datalen = datalen);
  return queue_work(env, "berth-nft", elem_execute, rc_complete, w, &w->head.work, &w->head.deferred);
}

/* portFree(udp, ip, port): binds (and for TCP listens on) IP:PORT as Node's net would, then lets
 * go: the port bound (the kernel's pick for 0), or -errno (EADDRINUSE: someone holds it) */
static napi_value js_port_free(napi_env env, napi_callback_info info) {
  struct args a;
  bool udp = false;
  char ip[64];
  char *i;
  int64_t port;
  if (get_args(env, info, &a) || napi_get_value_bool(env, a.v[0], &udp) != napi_ok || get_str(env, a.v[1], ip, sizeof ip, &i) || !i ||
      get_i64(env, a.v[2], &port))
    return NULL;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
  socklen_t len;
  if (inet_pton(AF_INET, i, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, i, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    len = sizeof *v6;
  } else {
    return num(env, -EINVAL);
  }
  int fd = socket(ss.ss_family, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
  if (fd < 0) return result(env, -1);
  int one = 1;
  if (!udp) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* as libuv: TIME_WAIT does not count */
  long rc = bind(fd, (struct sockaddr *)&ss, len);
  if (rc == 0 && !udp) rc = listen(fd, 1);
  if (rc == 0) rc = getsockname(fd, (struct sockaddr *)&ss, &len);
  if (rc == 0) rc = ntohs(ss.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
  int saved = errno;
  close(fd);
  errno = saved;
  return result(env, rc);
}

/* writeDetached(path, data): opens PATH for writing now and writes DATA on a detached thread of
 * its own. For a write that blocks in the kernel (a cgroup move waiting for an RCU grace period)
 * without taking one of libuv's pool threads, or making the pool (4 threads) on the critical path
 * of a start. Returns the read end of a pipe on which the thread reports its result (a native
 * int: 0 or -errno) before closing it, or -errno from the open. The thread makes no call into
 * Node, so the process may exit while it runs. */
struct detached_write {
  int fd;
  int report;
  size_t len;
  char data[];
};

static void *detached_write_main(void *p) {
  struct detached_write *w = p;
  ssize_t n = write(w->fd, w->data, w->len);
  int rc = n < 0 ? -errno : (size_t)n == w->len ? 0 : -EIO;
  close(w->fd);
  if (write(w->report, &rc, sizeof rc) < 0) {
    /* the reader is gone: nobody to tell */
  }
  close(w->report);
  free(w);
  return NULL;
}

static napi_value js_write_detached(napi_env env, napi_callback_info info) {
  struct args a;
  char pathbuf[PATH_MAX], databuf[256], *path, *data;
  if (get_args(env, info, &a) || get_str(env, a.v[0], pathbuf, sizeof pathbuf, &path) || get_str(env, a.v[1], databuf, sizeof databuf, &data)) return NULL;
  if (!path || !data) return num(env, -EINVAL);
  size_t len = strlen(data);
  struct detached_write *w = malloc(sizeof *w + len);
  if (!w) return num(env, -ENOMEM);
  memcpy(w->data, data, len);
  w->len = len;
  int report[2];
  if (pipe2(report, O_CLOEXEC) < 0) {
    int e = errno;
    free(w);
    return num(env, -e);
  }
  w->report = report[1];
  w->fd = open(path, O_WRONLY | O_CLOEXEC);
  int rc = w->fd < 0 ? errno : 0;
  if (rc == 0) {
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 64 * 1024);
    rc = pthread_create(&t, &at, detached_write_main, w);
    pthread_attr_destroy(&at);
    if (rc == 0) return num(env, report[0]);
    close(w->fd);
  }
  close(report[0]);
  close(report[1]);
  free(w);
  return num(env, -rc);
}

/* pollIn(fd, timeoutMs): waits until fd is readable (or its writers are gone): 1, 0 on timeout,
 * or -errno. For a wait of microseconds that a timer's turn (a millisecond) would overshoot. */
static napi_value js_poll_in(napi_env env, napi_callback_info info) {
  struct args a;
  int64_t fd, ms;
  if (get_args(env, info, &a) || get_i64(env, a.v[0], &fd) || get_i64(env, a.v[1], &ms)) return NULL;
  struct pollfd p = {.fd = (int)fd, .events = POLLIN};
  int r;
  do r = poll(&p, 1, (int)ms); while (r < 0 && errno == EINTR);
  return result(env, r);
}

/* exitNow(code): _exit, skipping the teardown of Node's platform and heap (~5 ms of every command
 * on a 2-core machine). The caller has flushed its output and run its 'exit' listeners. */
static napi_value js_exit_now(napi_env env, napi_callback_info info) {
  struct args a;
  int64_t code;
  if (get_args(env, info, &a) || get_i64(env, a.v[0], &code)) return NULL;
  _exit((int)code);
}

/* execv(path, argv, keep): this process becomes that program (environ as process.env left it;
 * signals unblocked; the fds in keep no longer close-on-exec). Returns only on failure: -errno. */
static napi_value js_execv(napi_env env, napi_callback_info info) {
  struct args a;
  char path[PATH_MAX], *p, *argv[SPAWN_MAX_ARGS + 1] = {0};
  uint32_t argc = 0, i;
  if (get_args(env, info, &a) || get_str(env, a.v[0], path, sizeof path, &p) || !p) return NULL;
  if (napi_get_array_length(env, a.v[1], &argc) != napi_ok || argc == 0 || argc > SPAWN_MAX_ARGS) {
    napi_throw_type_error(env, NULL, "execv(path, argv[1..127])");
    return NULL;
  }
  int ok = 1;
  for (i = 0; ok && i < argc; i++) {
    napi_value v;
    size_t len;
    napi_get_element(env, a.v[1], i, &v);
    if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok || !(argv[i] = malloc(len + 1))) ok = 0;
    else napi_get_value_string_utf8(env, v, argv[i], len + 1, &len);
  }
  /* the fds to hand on (Node marks its stdio close-on-exec) */
  uint32_t nkeep = 0;
  if (ok && a.n > 2 && napi_get_array_length(env, a.v[2], &nkeep) == napi_ok)
    for (i = 0; i < nkeep; i++) {
      napi_value v;
      int64_t fd;
      if (napi_get_element(env, a.v[2], i, &v) == napi_ok && napi_get_value_int64(env, v, &fd) == napi_ok) fcntl((int)fd, F_SETFD, 0);
    }
  if (ok) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv(path, argv);
  }
  int e = ok ? errno : ENOMEM;
  for (i = 0; i < argc; i++) free(argv[i]);
  errno = e;
  return result(env, -1);
}

/* strerror(errno) */
static napi_value js_strerror(napi_env env, napi_callback_info info) {
  struct args a;
  int64_t e;
  napi_value r;
  if (get_args(env, info, &a) || get_i64(env, a.v[0], &e)) return NULL;
  napi_create_string_utf8(env, strerror((int)e), NAPI_AUTO_LENGTH, &r);
  return r;
}

/* listenUnix(path): a unix stream socket bound to path and listening (close-on-exec), or -errno */
static napi_value js_listen_unix(napi_env env, napi_callback_info info) {
  struct args a;
  char buf[PATH_BYTES], *p;
  if (get_args(env, info, &a) || get_str(env, a.v[0], buf, sizeof buf, &p) || !p) return NULL;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(p) >= sizeof sa.sun_path) return num(env, -ENAMETOOLONG);
  memcpy(sa.sun_path, p, strlen(p));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return result(env, -1);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0) {
    int e = errno;
    close(fd);
    return num(env, -e);
  }
  return num(env, fd);
}

/* acceptPeer(fd): blocks until a connection comes: [its fd (close-on-exec), peer pid, peer uid], or -errno */
static napi_value js_accept_peer(napi_env env, napi_callback_info info) {
  struct args a;
  int64_t fd;
  if (get_args(env, info, &a) || get_i64(env, a.v[0], &fd)) return NULL;
  int c;
  do c = accept4((int)fd, NULL, NULL, SOCK_CLOEXEC); while (c < 0 && errno == EINTR);
  if (c < 0) return result(env, -1);
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
    int e = errno;
    close(c);
    return num(env, -e);
  }
  napi_value arr;
  napi_create_array_with_length(env, 3, &arr);
  napi_set_element(env, arr, 0, num(env, c));
  napi_set_element(env, arr, 1, num(env, cr.pid));
  napi_set_element(env, arr, 2, num(env, cr.uid));
  return arr;
}

#define RECV_MAX_FDS 8
/* recvFds(fd, buf): one recvmsg into buf, taking the fds passed with it (close-on-exec, at most 8):
 * [bytes, fd...], or -errno (-EMSGSIZE when more fds came than fit: those that came are closed). */
static napi_value js_recv_fds(napi_env env, napi_callback_info info) {
  struct args a;
  int64_t fd;
  void *data;
  size_t size;
  if (get_args(env, info, &a) || get_i64(env, a.v[0], &fd) || get_buf(env, a.v[1], &data, &size)) return NULL;
  union {
    char buf[CMSG_SPACE(RECV_MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = data, .iov_len = size};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  ssize_t n;
  do n = recvmsg((int)fd, &m, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n < 0) return result(env, -1);
  int fds[RECV_MAX_FDS];
  size_t count = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k && count < RECV_MAX_FDS; i++) memcpy(&fds[count++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
  if (m.msg_flags & MSG_CTRUNC) {
    for (size_t i = 0; i < count; i++) close(fds[i]);
    return num(env, -EMSGSIZE);
  }
  napi_value arr;
  napi_create_array_with_length(env, count + 1, &arr);
  napi_set_element(env, arr, 0, num(env, n));
  for (size_t i = 0; i < count; i++) napi_set_element(env, arr, i + 1, num(env, fds[i]));
  return arr;
}

/* sendFds(fd, buf, fds): one sendmsg of buf with fds attached (SCM_RIGHTS); the bytes sent, or -errno */
static napi_value js_send_fds(napi_env env, napi_callback_info info) {
  struct args a;
  int64_t fd;
  void *data;
  size_t size;
  uint32_t count = 0;
  if (get_args(env, info, &a) || get_i64(env, a.v[0], &fd) || get_buf(env, a.v[1], &data, &size)) return NULL;
  if (napi_get_array_length(env, a.v[2], &count) != napi_ok || count == 0 || count > RECV_MAX_FDS) {
    napi_throw_type_error(env, NULL, "sendFds(fd, buf, fds[1..])");
    return NULL;
  }
  int fds[RECV_MAX_FDS];
  for (uint32_t i = 0; i < count; i++) {
    napi_value v;
    int64_t f;
    napi_get_element(env, a.v[2], i, &v);
    if (napi_get_value_int64(env, v, &f) != napi_ok) {
      napi_throw_type_error(env, NULL, "sendFds: fds must be numbers");
      return NULL;
    }
    fds[i] = (int)f;
  }
  union {
    char buf[CMSG_SPACE(RECV_MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct iovec iov = {.iov_base = data, .iov_len = size};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = CMSG_SPACE(count * sizeof(int))};
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(count * sizeof(int));
  memcpy(CMSG_DATA(c), fds, count * sizeof(int));
  ssize_t n;
  do n = sendmsg((int)fd, &m, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  return result(env, n);
}

/* dup2(from, to): to (open across exec), or -errno */
static napi_value js_dup2(napi_env env, napi_callback_info info) {
  struct args a;
  int64_t from, to;
  if (get_args(env, info, &a) || get_i64(env, a.v[0], &from) || get_i64(env, a.v[1], &to)) return NULL;
  int r;
  do r = dup2((int)from, (int)to); while (r < 0 && errno == EINTR);
  return result(env, r);
}

/* dup(fd): a new fd for the same file (close-on-exec), or -errno */
static napi_value js_dup(napi_env env, napi_callback_info info) {
  struct args a;
  int64_t fd;
  if (get_args(env, info, &a) || get_i64(env, a.v[0], &fd)) return NULL;
  return result(env, fcntl((int)fd, F_DUPFD_CLOEXEC, 3));
}

/* sealedCopy(path): a memfd holding the program at path, sealed against every change (close-on-exec),
 * or -errno. The runtime execs its helper from it through /proc/PID/fd/N, so a container process can
 * never reach the helper's file on disk through /proc/self/exe (CVE-2019-5736), without the helper
 * copying itself at every start. */
static napi_value js_sealed_copy(napi_env env, napi_callback_info info) {
  struct args a;
  char path[PATH_BYTES], *p;
  if (get_args(env, info, &a) || get_str(env, a.v[0], path, sizeof path, &p) || !p) return NULL;
  int src = open(path, O_RDONLY | O_CLOEXEC);
  if (src < 0) return result(env, -1);
  int mem = memfd_create("berth-helper", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  int rc = mem;
  char buf[65536];
  ssize_t n = 0;
  while (rc >= 0 && (n = read(src, buf, sizeof buf)) > 0)
    if (write(mem, buf, (size_t)n) != n) rc = -1;
  if (n < 0) rc = -1;
  if (rc >= 0 && fcntl(mem, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) rc = -1;
  int e = errno;
  close(src);
  if (rc < 0 && mem >= 0) close(mem);
  errno = e;
  return result(env, rc < 0 ? -1 : mem);
}

static napi_value init(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"flock", js_flock},       {"mount", js_mount}, {"mountAsync", js_mount_async},         {"umount2", js_umount2},   {"lsetxattr", js_lsetxattr},
      {"lgetxattr", js_lgetxattr}, {"llistxattr", js_llistxattr}, {"mknod", js_mknod}, {"setWindowSize", js_winsize},
      {"strerror", js_strerror}, {"umount2Async", js_umount2_async}, {"removeTree", js_remove_tree}, {"removeTreeAsync", js_remove_tree_async},
      {"spawn", js_spawn}, {"spawnAsync", js_spawn_async}, {"mkdirsAsync", js_mkdirs_async}, {"exitNow", js_exit_now}, {"execv", js_execv}, {"runAsync", js_run_async}, {"nftMapElem", js_nft_map_elem}, {"nftMapElemAsync", js_nft_map_elem_async}, {"portFree", js_port_free}, {"writeDetached", js_write_detached}, {"pollIn", js_poll_in},       {"waitpid", js_waitpid}, {"waitpidAsync", js_waitpid_async},     {"pipe", js_pipe}, {"openpty", js_openpty},
      {"listenUnix", js_listen_unix}, {"acceptPeer", js_accept_peer}, {"recvFds", js_recv_fds}, {"dup2", js_dup2}, {"dup", js_dup}, {"sealedCopy", js_sealed_copy}, {"sendFds", js_send_fds},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f) != napi_ok ||
        napi_set_named_property(env, exports, fns[i].name, f) != napi_ok)
      return NULL;
  }
  return exports;
}

NAPI_MODULE_INIT() {
  return init(env, exports);
}
