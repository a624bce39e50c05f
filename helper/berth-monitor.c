/*
 * berth-monitor: the per-container monitor (berth's conmon). Mechanism only: it stays as the
 * parent (subreaper) of the container, copies the container's output into docker's json-file log
 * (with size rotation) and to attached clients, feeds stdin, reaps every orphan, records how the
 * container ended in a plain-text file, then execs an exit command (where policy lives: berth's
 * cleanup, restart policies). It parses no JSON and decides nothing.
 *
 *   berth-monitor -d DIR [-l LOG -s MAXSIZE -n MAXFILES [-z]] [-i [-o]] [-t] [-x EXITCMD]... -- HELPER ARGS...
 *
 * -w PID: that process (an attached `berth run`) handles the exit itself. After the exit frame the
 * monitor waits for it to end, and runs the exit command only if DIR/exit is still there (the
 * process did not get to record the exit); otherwise one more process start is saved.
 *
 * A helper that exits 0 before any container existed (berth started the monitor early, then
 * withdrew the start: the helper's plan ended before its first byte) ends the monitor quietly: no
 * exit record, no exit command.
 *
 * -D: fork at once and let the parent exit, so whoever started the monitor reaps it right away and
 * the monitor lives on as an orphan (adopted by init or the nearest subreaper), never a zombie of
 * a long-lived caller.
 *
 * -H MS -C ARG... runs a health command (berth's, which execs the check in the container) every MS ms.
 * An attached client that stops reading is dropped after CLIENT_STALL_SEC with a full socket
 * buffer: the container's output (and its log) never waits on a client.
 *
 * -i keeps the container's stdin open for attached clients; with -o the first client to end its
 * input ends the container's (docker's StdinOnce, for `run -i`).
 *
 * With -t the container has a terminal: the monitor listens on DIR/console.sock for the pty master
 * (runc's console-socket protocol) and relays it like a stdout stream.
 *
 * DIR gets: monitor.pid (its own), pid (the container init's pid, written by berth), exit ("code N\nsignal N\nfinished
 * NANOS\n"), attach.sock (a client reads frames [stream, 0, 0, 0, len32be, bytes] — 1 stdout,
 * 2 stderr, and last 3, the exit code as text — and writes stdin). HELPER is started with the container's stdio on fds 0-2 and every other inherited fd
 * (berth's plan and report pipes) passed through; the monitor closes its own copies of those.
 */
#define _GNU_SOURCE
#include <errno.h>
#include "protocol.h"
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 16
#define MAX_EXIT_ARGS 32
#define LINE_MAX_BYTES 16384 /* docker splits log records at 16 KiB too */

static const char *dir;
static int waiter = -1; /* -w: a pidfd of the attached berth that records the exit */
static const char *log_path;
static long long log_max_size; /* 0: no rotation */
static int log_max_files = 1;
static int log_fd = -1;
static long long log_size;

struct stream {
	int fd;
	const char *name;
	int frame; /* 1 stdout, 2 stderr */
	char line[LINE_MAX_BYTES];
	size_t len;
};
/* the container's stdout and stderr pipes, and with -t the pty master (its output is stdout) */
#define NSTREAMS 3
static struct stream streams[NSTREAMS] = {{-1, "stdout", FRAME_STDOUT, {0}, 0}, {-1, "stderr", FRAME_STDERR, {0}, 0}, {-1, "stdout", FRAME_STDOUT, {0}, 0}};
static int console_listen = -1;
/* -H MS -C ARG...: run the health command every MS milliseconds while the container runs */
static long health_ms;
static char *health_cmd[MAX_EXIT_ARGS + 1];
static int nhealth;
static pid_t health_pid;
static int tty_master = -1;
static int stdin_fd = -1; /* write end of the container's stdin pipe */
static int stdin_once; /* -o: a client's end of input ends the container's (docker's StdinOnce) */
static int listen_fd = -1;
static int clients[MAX_CLIENTS];
#define CLIENT_BUFFER (1 << 20)
#define CLIENT_STALL_SEC 5
static int client_eof[MAX_CLIENTS]; /* the client finished sending stdin; it still gets output */
static int nclients;

static void die(const char *what)
{
	fprintf(stderr, "berth-monitor: %s: %s\n", what, strerror(errno));
	exit(125);
}

static void path_in_dir(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", dir, name);
}

static void write_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return; /* a full disk or a gone client must not stop the container's output */
		}
		buf += w;
		n -= (size_t)w;
	}
}

static void log_open(void)
{
	struct stat st;
	if (!log_path)
		return;
	log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (log_fd < 0)
		die("open log");
	log_size = fstat(log_fd, &st) == 0 ? st.st_size : 0;
}

/* -z: a rotated file is compressed (FILE.1 becomes FILE.1.gz) by gzip, in a child of ours that
 * the reaping loop collects; readers take FILE.N while it is there, else FILE.N.gz. */
static int log_compress;
static pid_t gzip_pid; /* the compression of FILE.1 under way: the next rotation waits for it */

static void log_rotate(void)
{
	char from[PATH_MAX], to[PATH_MAX];
	close(log_fd);
	if (gzip_pid > 0) { /* renaming FILE.1 under a gzip still reading it would lose it */
		int st;
		while (waitpid(gzip_pid, &st, 0) < 0 && errno == EINTR) {
		}
		gzip_pid = 0;
	}
	if (log_max_files <= 1) {
		if (truncate(log_path, 0) < 0) { /* keep writing to what is there */
		}
	} else {
		for (int i = log_max_files - 1; i >= 1; i--) {
			if (i == 1)
				snprintf(from, sizeof from, "%s", log_path);
			else
				snprintf(from, sizeof from, "%s.%d", log_path, i - 1);
			snprintf(to, sizeof to, "%s.%d", log_path, i);
			rename(from, to);
			if (i > 1) { /* compressed ones move along too; the oldest is overwritten */
				char fromgz[PATH_MAX + 3], togz[PATH_MAX + 3];
				snprintf(fromgz, sizeof fromgz, "%s.gz", from);
				snprintf(togz, sizeof togz, "%s.gz", to);
				if (rename(fromgz, togz) == 0)
					unlink(to); /* a plain copy left by a compression that did not finish */
			}
		}
		if (log_compress) {
			snprintf(to, sizeof to, "%s.1", log_path);
			pid_t c = fork();
			if (c == 0) {
				int null = open("/dev/null", O_RDWR);
				for (int fd = 0; fd < 3; fd++)
					dup2(null, fd);
				execlp("gzip", "gzip", "-f", "-q", to, (char *)NULL);
				_exit(127);
			}
			gzip_pid = c;
		}
	}
	log_open();
}

/* Records are gathered and written a read's worth at a time (one write for many lines, not one
 * per line); log_size counts them as they are gathered, so rotation sees what is pending. */
static char pending[1 << 18];
static size_t npending;

static void log_flush(void)
{
	if (npending && log_fd >= 0)
		write_all(log_fd, pending, npending);
	npending = 0;
}

/* One json-file record: {"log":"...","stream":"stdout","time":"2006-01-02T15:04:05.999999999Z"} */
static void log_record(const char *stream, const char *data, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	static time_t date_sec = -1;
	static char date[64]; /* "2006-01-02T15:04:05", formatted once a second */
	struct timespec ts;
	if (log_fd < 0)
		return;
	if (sizeof pending - npending < LINE_MAX_BYTES * 6 + 128)
		log_flush();
	char *out = pending + npending;
	size_t o = 0;
	memcpy(out, "{\"log\":\"", 8);
	o = 8;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)data[i];
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else if (c == '\r') {
			out[o++] = '\\';
			out[o++] = 'r';
		} else if (c == '\t') {
			out[o++] = '\\';
			out[o++] = 't';
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(out + o, "\\u00", 4);
			o += 4;
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else
			out[o++] = (char)c; /* UTF-8 passes through; readers replace invalid bytes */
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != date_sec) {
		struct tm tm;
		gmtime_r(&ts.tv_sec, &tm);
		snprintf(date, sizeof date, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
		date_sec = ts.tv_sec;
	}
	memcpy(out + o, "\",\"stream\":\"", 12);
	o += 12;
	size_t sl = strlen(stream);
	memcpy(out + o, stream, sl);
	o += sl;
	memcpy(out + o, "\",\"time\":\"", 10);
	o += 10;
	memcpy(out + o, date, 19);
	o += 19;
	out[o++] = '.';
	for (int d = 8, v = (int)ts.tv_nsec; d >= 0; d--, v /= 10)
		out[o + (size_t)d] = (char)('0' + v % 10);
	o += 9;
	memcpy(out + o, "Z\"}\n", 4);
	o += 4;
	if (log_max_size > 0 && log_size > 0 && log_size + (long long)o > log_max_size) {
		/* this record starts the next file: what is gathered before it goes to this one */
		char rec[LINE_MAX_BYTES * 6 + 128];
		memcpy(rec, out, o);
		log_flush();
		log_rotate();
		memcpy(pending, rec, o);
		npending = o;
	} else
		npending += o;
	log_size += (long long)o;
}

static void drop_client(int i)
{
	close(clients[i]);
	clients[i] = clients[nclients - 1];
	client_eof[i] = client_eof[nclients - 1];
	nclients--;
}

/* A frame to every client: stream 1 stdout, 2 stderr, 3 the exit code (text) as the last frame. */
static void to_clients(int stream, const char *data, size_t n)
{
	unsigned char hdr[8] = {(unsigned char)stream, 0, 0, 0, (unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n};
	for (int i = 0; i < nclients; i++) {
		struct iovec v[2] = {{hdr, sizeof hdr}, {(void *)data, n}};
		size_t want = sizeof hdr + n, done = 0;
		while (done < want) {
			ssize_t w = writev(clients[i], v, 2);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				drop_client(i--);
				break;
			}
			done += (size_t)w;
			for (int k = 0; k < 2 && w > 0; k++) { /* advance past what was written */
				size_t step = (size_t)w < v[k].iov_len ? (size_t)w : v[k].iov_len;
				v[k].iov_base = (char *)v[k].iov_base + step;
				v[k].iov_len -= step;
				w -= (ssize_t)step;
			}
		}
	}
}

/* Output: whole lines become records; a line longer than 16 KiB is split, as docker does. */
static void stream_data(int which, const char *data, size_t n)
{
	struct stream *s = &streams[which];
	to_clients(s->frame, data, n);
	for (size_t i = 0; i < n; i++) {
		s->line[s->len++] = data[i];
		if (data[i] == '\n' || s->len == sizeof s->line) {
			log_record(s->name, s->line, s->len);
			s->len = 0;
		}
	}
	log_flush();
}

static void stream_flush(int which)
{
	struct stream *s = &streams[which];
	if (s->len) {
		log_record(s->name, s->line, s->len);
		s->len = 0;
	}
	log_flush();
}

static int read_pid(void)
{
	char p[PATH_MAX], buf[32];
	path_in_dir(p, sizeof p, MFILE_PID);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	return atoi(buf);
}

/* The exit record's space, taken while the disk has room: the record is written over it. */
static void reserve_exit(void)
{
	char tmp[PATH_MAX], blank[128];
	memset(blank, ' ', sizeof blank);
	path_in_dir(tmp, sizeof tmp, MFILE_EXIT_TMP);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	write_all(fd, blank, sizeof blank);
	close(fd);
}

static void write_exit(int status)
{
	char p[PATH_MAX], tmp[PATH_MAX], buf[128];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	int n = snprintf(buf, sizeof buf, EXITKEY_CODE " %d\n" EXITKEY_SIGNAL " %d\n" EXITKEY_FINISHED " %lld%09ld\n", code, sig, (long long)ts.tv_sec, ts.tv_nsec);
	path_in_dir(p, sizeof p, MFILE_EXIT);
	path_in_dir(tmp, sizeof tmp, MFILE_EXIT_TMP);
	/* written over the space reserve_exit() took at the start (no O_TRUNC): a container that filled
	 * the disk still has its exit recorded */
	int fd = open(tmp, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (pwrite(fd, buf, (size_t)n, 0) != (ssize_t)n) {
		/* not even the reserved block: the record is cut short, and said to be missing below */
	}
	if (ftruncate(fd, n) < 0) {
		/* a longer reserve left behind reads as trailing spaces: the keys are still found */
	}
	/* durable when nobody else records the exit; an attached berth (-w) records it itself, at once */
	if (waiter < 0)
		fsync(fd);
	close(fd);
	rename(tmp, p);
}

static void attach_listen(void)
{
	/* bound relative to DIR (the monitor's cwd): a store path may not fit in sun_path's 108 bytes;
	 * clients connect through /proc/self/fd/<dirfd>/attach.sock */
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	const char *p = MFILE_ATTACH_SOCK;
	if (chdir(dir) < 0)
		die("chdir");
	strcpy(a.sun_path, p);
	unlink(p);
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(listen_fd, 4) < 0)
		die("attach socket");
	chmod(p, 0600);
}

/* -t: the runtime's helper connects to console.sock (relative to DIR, our cwd) and sends the
 * pty master over SCM_RIGHTS, as runc's --console-socket protocol does */
static void console_accept(void)
{
	int c = accept4(console_listen, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		return;
	char payload[256];
	struct iovec iov = {.iov_base = payload, .iov_len = sizeof payload};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
	ssize_t n = recvmsg(c, &msg, MSG_CMSG_CLOEXEC);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	if (n >= 0 && cm && cm->cmsg_type == SCM_RIGHTS) {
		memcpy(&tty_master, CMSG_DATA(cm), sizeof tty_master);
		streams[2].fd = tty_master;
		if (stdin_fd >= 0)
			close(stdin_fd); /* input goes to the pty now */
		stdin_fd = tty_master;
	}
	close(c);
	close(console_listen);
	console_listen = -1;
	unlink(MFILE_CONSOLE_SOCK);
}

/* berth withdrew the start before the container existed: no exit record, no exit command */
static void quiet_exit(void)
{
	char path[PATH_MAX];
	path_in_dir(path, sizeof path, MFILE_ATTACH_SOCK);
	unlink(path);
	if (console_listen >= 0) {
		path_in_dir(path, sizeof path, MFILE_CONSOLE_SOCK);
		unlink(path);
	}
	exit(0);
}

int main(int argc, char **argv)
{
	int keep_stdin = 0, tty = 0, opt, nexit = 0;
	char *exit_cmd[MAX_EXIT_ARGS + 1] = {0};
	int daemonize = 0;
	while ((opt = getopt(argc, argv, MONITOR_OPTSTRING)) != -1) {
		switch (opt) {
		case MOPT_DAEMONIZE: daemonize = 1; break;
		case MOPT_DIR: dir = optarg; break;
		case MOPT_LOG: log_path = optarg; break;
		case MOPT_LOG_MAX_SIZE: log_max_size = atoll(optarg); break;
		case MOPT_LOG_MAX_FILES: log_max_files = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
		case MOPT_LOG_COMPRESS: log_compress = 1; break;
		case MOPT_KEEP_STDIN: keep_stdin = 1; break;
		case MOPT_TTY: tty = 1; break;
		case MOPT_STDIN_ONCE: stdin_once = 1; break;
		case MOPT_HEALTH_MS: health_ms = atol(optarg); break;
		case MOPT_WAITER: waiter = (int)syscall(SYS_pidfd_open, atoi(optarg), 0); break; /* held from now: no pid reuse */
		case MOPT_HEALTH_ARG:
			if (nhealth < MAX_EXIT_ARGS)
				health_cmd[nhealth++] = optarg;
			break;
		case MOPT_EXIT_ARG:
			if (nexit < MAX_EXIT_ARGS)
				exit_cmd[nexit++] = optarg;
			break;
		default: fprintf(stderr, "usage: berth-monitor -d DIR [-l LOG -s SIZE -n FILES] [-i] [-x CMD]... -- HELPER ARGS...\n"); return 125;
		}
	}
	if (!dir || optind >= argc) {
		fprintf(stderr, "berth-monitor: need -d DIR and a command\n");
		return 125;
	}
	if (daemonize) {
		pid_t p = fork();
		if (p < 0)
			die("fork");
		if (p > 0)
			_exit(0);
	}
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		die("subreaper");
	{
		char p[PATH_MAX], b[32];
		path_in_dir(p, sizeof p, MFILE_MONITOR_PID);
		int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			die(MFILE_MONITOR_PID);
		write_all(fd, b, (size_t)snprintf(b, sizeof b, "%d\n", (int)getpid()));
		close(fd);
	}
	reserve_exit();
	log_open();
	attach_listen();
	if (tty) {
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		strcpy(a.sun_path, MFILE_CONSOLE_SOCK);
		unlink(a.sun_path);
		console_listen = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (console_listen < 0 || bind(console_listen, (struct sockaddr *)&a, sizeof a) < 0 || listen(console_listen, 1) < 0)
			die("console socket");
	}

	int out[2], err[2], in[2] = {-1, -1};
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)
		die("pipe");
	if (keep_stdin && pipe2(in, O_CLOEXEC) < 0)
		die("pipe");

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		die("signalfd");

	pid_t helper = fork();
	if (helper < 0)
		die("fork");
	if (helper == 0) {
		sigprocmask(SIG_UNBLOCK, &mask, NULL);
		int nullfd = open("/dev/null", O_RDWR);
		dup2(keep_stdin ? in[0] : nullfd, 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		execv(argv[optind], argv + optind);
		_exit(127);
	}
	/* berth's plan/report pipes and anything else inherited above 2 belong to the helper now */
	for (int fd = 3; fd < 1024; fd++)
		if (fd != out[0] && fd != err[0] && fd != in[1] && fd != sfd && fd != listen_fd && fd != log_fd && fd != console_listen && fd != waiter)
			close(fd);
	close(out[1]);
	close(err[1]);
	if (keep_stdin) {
		close(in[0]);
		stdin_fd = in[1];
	}
	streams[0].fd = out[0];
	streams[1].fd = err[0];
	/* berth may exit now: the monitor must not die with its session or terminal */
	setsid();
	int nullfd = open("/dev/null", O_RDWR);
	dup2(nullfd, 0);
	dup2(nullfd, 1);
	dup2(nullfd, 2);
	if (nullfd > 2)
		close(nullfd);
	signal(SIGPIPE, SIG_IGN);

	int init = 0, init_status = 0, init_done = 0, helper_exited = 0, helper_status = 0;
	/* statuses of children reaped before their pid was known (a container that exits at once) */
	pid_t early_pid[64];
	int early_status[64], nearly = 0;
	char buf[65536];
	for (;;) {
		struct pollfd p[6 + MAX_CLIENTS];
		int np = 0;
		p[np++] = (struct pollfd){.fd = sfd, .events = POLLIN};
		p[np++] = (struct pollfd){.fd = streams[0].fd, .events = POLLIN};
		p[np++] = (struct pollfd){.fd = streams[1].fd, .events = POLLIN};
		p[np++] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
		p[np++] = (struct pollfd){.fd = streams[2].fd, .events = POLLIN};
		p[np++] = (struct pollfd){.fd = console_listen, .events = POLLIN};
		for (int i = 0; i < nclients; i++)
			p[np++] = (struct pollfd){.fd = clients[i], .events = client_eof[i] ? 0 : POLLIN};
		if (init_done && streams[0].fd < 0 && streams[1].fd < 0 && streams[2].fd < 0)
			break;
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long long now_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
		static long long next_health;
		if (health_ms > 0 && nhealth && !next_health)
			next_health = now_ms + health_ms;
		int timeout = init_done ? 2000 : (init ? -1 : 200);
		if (health_ms > 0 && nhealth && init && !init_done) {
			long long wait = next_health - now_ms;
			if (wait < 0)
				wait = 0;
			if (timeout < 0 || wait < timeout)
				timeout = (int)wait;
		}
		int r = poll(p, (nfds_t)np, timeout);
		if (health_ms > 0 && nhealth && init && !init_done) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			now_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
			if (now_ms >= next_health) {
				next_health = now_ms + health_ms;
				if (!health_pid) { /* one check at a time; a slow one delays the next */
					health_pid = fork();
					if (health_pid == 0) {
						sigprocmask(SIG_UNBLOCK, &mask, NULL);
						execvp(health_cmd[0], health_cmd);
						_exit(127);
					}
					if (health_pid < 0)
						health_pid = 0;
				}
			}
		}
		if (r < 0 && errno != EINTR)
			die("poll");
		if (r == 0 && init_done)
			break; /* output still held open by a stray process: stop waiting for it */
		if (!init && (init = read_pid()) > 0)
			for (int i = 0; i < nearly; i++)
				if (early_pid[i] == init) {
					init_status = early_status[i];
					init_done = 1;
				}
		if (p[0].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) > 0) {
			}
			int status;
			pid_t pid;
			while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
				if (!init)
					init = read_pid();
				if (pid == health_pid) {
					health_pid = 0;
					continue;
				}
				if (pid == gzip_pid) {
					gzip_pid = 0;
					continue;
				}
				if (pid == helper) {
					helper_exited = 1;
					helper_status = status;
				}
				if (init && pid == init) {
					init_status = status;
					init_done = 1;
				} else if (!init && pid != helper && nearly < 64) {
					early_pid[nearly] = pid;
					early_status[nearly++] = status;
				}
			}
			if (pid < 0 && errno == ECHILD && !init && read_pid() == 0) {
				/* the helper ended before a container existed: withdrawn by berth (exit 0, its
				 * start failed before the plan: nothing to record), or failed */
				if (helper_exited && WIFEXITED(helper_status) && WEXITSTATUS(helper_status) == 0)
					quiet_exit();
				init_done = 1;
				init_status = 127 << 8;
			}
		}
		/* clients first: one that connected before the container started must get all its output */
		if (p[3].revents & POLLIN) {
			int c;
			while ((c = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
				/* a client that stops reading must not stop the container: a large socket buffer
				 * takes bursts, and one still full after CLIENT_STALL_SEC drops the client */
				int buf = CLIENT_BUFFER;
				struct timeval stall = {.tv_sec = CLIENT_STALL_SEC};
				setsockopt(c, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
				setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &stall, sizeof stall);
				if (nclients < MAX_CLIENTS) {
					client_eof[nclients] = 0;
					clients[nclients++] = c;
				} else
					close(c);
			}
		}
		if (console_listen >= 0 && (p[5].revents & POLLIN))
			console_accept();
		for (int s = 0; s < NSTREAMS; s++) {
			int slot = s < 2 ? 1 + s : 4;
			if (streams[s].fd < 0 || !(p[slot].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(streams[s].fd, buf, sizeof buf);
			if (n > 0)
				stream_data(s, buf, (size_t)n);
			else if (n == 0 || (errno != EINTR && errno != EAGAIN)) { /* a pty master reads EIO at the end */
				stream_flush(s);
				if (streams[s].fd == stdin_fd)
					stdin_fd = -1;
				close(streams[s].fd);
				streams[s].fd = -1;
			}
		}
		for (int i = 0, n0 = nclients; i < n0 && i < nclients; i++) {
			/* poll reports a hang-up even unasked: a client whose stdin ended and that then went
			 * away is dropped, or every poll returns at once (a busy loop until the container ends) */
			if (client_eof[i] && (p[6 + i].revents & (POLLHUP | POLLERR))) {
				drop_client(i);
				continue;
			}
			if (client_eof[i] || !(p[6 + i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(clients[i], buf, sizeof buf);
			if (n > 0 && stdin_fd >= 0)
				write_all(stdin_fd, buf, (size_t)n);
			if (n == 0) {
				/* the client's stdin ended: so does the container's (docker run -i); output still flows */
				client_eof[i] = 1;
				shutdown(clients[i], SHUT_RD);
				if (stdin_once && stdin_fd >= 0 && stdin_fd != tty_master) {
					close(stdin_fd);
					stdin_fd = -1;
				}
			} else if (n < 0 && errno != EINTR && errno != EAGAIN)
				drop_client(i);
		}
	}
	for (int i = 0; i < NSTREAMS; i++)
		stream_flush(i);
	write_exit(init_status);
	{
		char code[16];
		int n = snprintf(code, sizeof code, "%d", WIFEXITED(init_status) ? WEXITSTATUS(init_status) : 128 + WTERMSIG(init_status));
		to_clients(FRAME_EXIT, code, (size_t)n);
	}
	for (int i = 0; i < nclients; i++)
		close(clients[i]);
	char sock[PATH_MAX];
	path_in_dir(sock, sizeof sock, MFILE_ATTACH_SOCK);
	unlink(sock);
	if (waiter >= 0) {
		struct pollfd w = {.fd = waiter, .events = POLLIN};
		while (poll(&w, 1, -1) < 0 && errno == EINTR)
			;
		char done[PATH_MAX];
		path_in_dir(done, sizeof done, MFILE_EXIT);
		if (access(done, F_OK) < 0)
			return 0; /* recorded by the attached process */
	}
	/* keep reaping: the exit command may outlive stray children, so hand them to it by exec */
	if (nexit) {
		sigprocmask(SIG_UNBLOCK, &mask, NULL);
		execvp(exit_cmd[0], exit_cmd);
	}
	return 0;
}
