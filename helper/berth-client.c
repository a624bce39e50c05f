/*
 * berth-client: the installed `berth` (and `berth-runtime`) command. When `berth system warm` runs
 * for this user (`--runtime`: for berth-runtime), it hands
 * the command to one of its warm processes (Node started, berth loaded and compiled), which runs it
 * with this process's arguments, environment, umask, stdio and working directory (the fds are
 * passed, not reopened); it forwards the signals it gets there and exits as the command did.
 * Otherwise, or when the warm process declines, it execs the ordinary launcher (BERTH_LAUNCHER).
 * Mechanism only: it never reads the arguments; helper/protocol.table describes the exchange.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "protocol.h"

#ifndef BERTH_LAUNCHER
#error "build with -DBERTH_LAUNCHER='\"/path/to/the/launcher\"'"
#endif
/* the program it fronts: berth, or berth-runtime (-DWARM_PROGRAM='"berth-runtime"' -DWARM_SOCKET_ENV=…) */
#ifndef WARM_PROGRAM
#define WARM_PROGRAM "berth"
#endif
#ifndef WARM_SOCKET_ENV
#define WARM_SOCKET_ENV "BERTH_WARM_SOCKET"
#endif

extern char **environ;

#define READY_WAIT_MS 10

static volatile sig_atomic_t warm_pid;
static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
#define NFORWARDED (sizeof forwarded / sizeof forwarded[0])

static void forward(int sig) {
  if (warm_pid > 0) kill(warm_pid, sig);
}

static _Noreturn void launch(char **argv) {
  execv(BERTH_LAUNCHER, argv);
  fprintf(stderr, "berth: cannot run %s: %s\n", BERTH_LAUNCHER, strerror(errno));
  _exit(127);
}

/* The warm pool's socket: $WARM_SOCKET_ENV, else root's /run/PROGRAM/warm.sock, else the user's
 * $XDG_RUNTIME_DIR/PROGRAM/warm.sock; NULL when there is none to try (or BERTH_WARM=0). */
static const char *socket_path(char *buf, size_t size) {
  const char *s = getenv(WARM_SOCKET_ENV), *off = getenv("BERTH_WARM");
  if (off && strcmp(off, "0") == 0) return NULL;
  if (s && *s) return s;
  if (geteuid() == 0) return "/run/" WARM_PROGRAM "/warm.sock";
  const char *x = getenv("XDG_RUNTIME_DIR");
  if (!x || !*x || (size_t)snprintf(buf, size, "%s/" WARM_PROGRAM "/warm.sock", x) >= size) return NULL;
  return buf;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Sends the request; 0, or -1 when it could not be sent (nothing was taken). */
static int send_request(int s, int argc, char **argv) {
  size_t len = 0;
  for (int i = 1; i < argc; i++) len += strlen(argv[i]) + 1;
  for (char **e = environ; *e; e++) len += strlen(*e) + 1;
  char *payload = malloc(len ? len : 1), *p = payload;
  if (!payload) return -1;
  for (int i = 1; i < argc; i++) p = stpcpy(p, argv[i]) + 1;
  for (char **e = environ; *e; e++) p = stpcpy(p, *e) + 1;
  mode_t mask = umask(0);
  umask(mask);
  uint32_t header[4] = {WARM_REQUEST, (uint32_t)mask, (uint32_t)(argc - 1), (uint32_t)len};
  int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  int fds[4] = {0, 1, 2, cwd};
  union {
    char buf[CMSG_SPACE(sizeof fds)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = header, .iov_len = sizeof header};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof fds);
  memcpy(CMSG_DATA(c), fds, sizeof fds);
  ssize_t n = -1;
  if (cwd >= 0) do n = sendmsg(s, &m, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  int rc = n == (ssize_t)sizeof header && write_all(s, payload, len) == 0 ? 0 : -1;
  if (cwd >= 0) close(cwd);
  free(payload);
  return rc;
}

/* fds that came with a record (EXEC's three), close-on-exec */
#define MAX_RECEIVED 4
static int received[MAX_RECEIVED];
static int nreceived;

/* One record, or -1 at the end of the stream; fds sent with it land in received[]. */
static int read_record(int s, int32_t rec[2]) {
  size_t got = 0;
  while (got < 8) {
    union {
      char buf[CMSG_SPACE(MAX_RECEIVED * sizeof(int))];
      struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = (char *)rec + got, .iov_len = 8 - got};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    ssize_t r = recvmsg(s, &m, MSG_CMSG_CLOEXEC);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
        for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
          int fd;
          memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
          if (nreceived < MAX_RECEIVED) received[nreceived++] = fd;
          else close(fd);
        }
    got += (size_t)r;
  }
  return 0;
}

/* EXEC: become the helper the warm process prepared (fds: the helper, its plan and report pipes),
 * with the plan pipe at plan_fd and the report pipe after it, so the container is this process's
 * child as under runc. The connection stays open across the exec: the pool takes its end as this
 * command's end. Fds 3..plan_fd-1 are the caller's (--preserve-fds) and stay where they are. */
static _Noreturn void exec_helper(int s, int plan_fd, const sigset_t *old) {
  if (nreceived != 3 || plan_fd < 3 || plan_fd > 1000) {
    fprintf(stderr, WARM_PROGRAM ": the warm process sent an unusable EXEC (%d fds, plan fd %d)\n", nreceived, plan_fd);
    _exit(255);
  }
  /* everything of ours above the targets first, so no dup2 below overwrites what it still needs */
  int keep = fcntl(s, F_DUPFD, plan_fd + 2);
  int moved[3];
  for (int i = 0; i < 3; i++) moved[i] = fcntl(received[i], F_DUPFD_CLOEXEC, plan_fd + 2);
  if (keep < 0 || moved[0] < 0 || moved[1] < 0 || moved[2] < 0 || dup2(moved[1], plan_fd) < 0 || dup2(moved[2], plan_fd + 1) < 0) {
    fprintf(stderr, WARM_PROGRAM ": cannot place the helper's pipes: %s\n", strerror(errno));
    _exit(255);
  }
  char a1[16], a2[16];
  snprintf(a1, sizeof a1, "%d", plan_fd);
  snprintf(a2, sizeof a2, "%d", plan_fd + 1);
  char *args[] = {"berth-helper", a1, a2, NULL};
  /* signals at their defaults again, then unblocked: one that came meanwhile ends this process, as
   * it would have ended the command */
  for (size_t i = 0; i < NFORWARDED; i++) signal(forwarded[i], SIG_DFL);
  sigprocmask(SIG_SETMASK, old, NULL);
  fexecve(moved[0], args, environ);
  fprintf(stderr, WARM_PROGRAM ": cannot run berth-helper: %s\n", strerror(errno));
  _exit(255);
}

int main(int argc, char **argv) {
  char buf[sizeof(((struct sockaddr_un *)0)->sun_path)];
  const char *path = socket_path(buf, sizeof buf);
  if (!path || strlen(path) >= sizeof buf) launch(argv);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, path, strlen(path));
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) launch(argv);
  /* a warm process that has accepted says READY at once; when every one is busy or still starting,
   * starting the ordinary way is sooner. Nothing was sent yet: a late accept finds only the end. */
  struct pollfd p = {.fd = s, .events = POLLIN};
  int32_t ready[2];
  int n;
  do n = poll(&p, 1, READY_WAIT_MS); while (n < 0 && errno == EINTR);
  if (n != 1 || read_record(s, ready) < 0 || ready[0] != WARM_READY) {
    close(s);
    launch(argv);
  }
  /* signals that come before the warm process is known wait, blocked, and are forwarded then */
  sigset_t set, old;
  sigemptyset(&set);
  for (size_t i = 0; i < NFORWARDED; i++) sigaddset(&set, forwarded[i]);
  sigprocmask(SIG_BLOCK, &set, &old);
  if (send_request(s, argc, argv) < 0) {
    close(s);
    sigprocmask(SIG_SETMASK, &old, NULL);
    launch(argv);
  }
  int32_t rec[2];
  while (read_record(s, rec) == 0) {
    switch (rec[0]) {
    case WARM_PID: {
      warm_pid = rec[1];
      struct sigaction sa_fwd = {.sa_handler = forward, .sa_flags = SA_RESTART};
      sigemptyset(&sa_fwd.sa_mask);
      for (size_t i = 0; i < NFORWARDED; i++) sigaction(forwarded[i], &sa_fwd, NULL);
      sigprocmask(SIG_SETMASK, &old, NULL);
      break;
    }
    case WARM_EXIT:
      return rec[1];
    case WARM_SIGNAL:
      /* end as the command ended, so a shell sees the same status */
      signal(rec[1], SIG_DFL);
      sigprocmask(SIG_SETMASK, &old, NULL);
      raise(rec[1]);
      return 128 + rec[1];
    case WARM_EXEC:
      exec_helper(s, rec[1], &old);
    case WARM_FALLBACK:
      if (warm_pid > 0) break;
      close(s);
      sigprocmask(SIG_SETMASK, &old, NULL);
      launch(argv);
    }
  }
  if (warm_pid == 0) {
    /* the stream ended before a warm process took the command: nothing ran */
    close(s);
    sigprocmask(SIG_SETMASK, &old, NULL);
    launch(argv);
  }
  fprintf(stderr, "berth: the warm process %d ended without an exit status (berth system warm stopped?)\n", (int)warm_pid);
  return 255;
}
