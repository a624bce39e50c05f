/*
 * berth-net: configures container networking over rtnetlink. Mechanism only: it runs the
 * operations on its command line in order and stops at the first failure; what to create, with
 * which names and addresses, is decided by src/network.
 *
 *   berth-net OP ARGS... [OP ARGS...]...
 *
 *   bridge NAME ADDR/PREFIX MTU   make the bridge (if missing), give it ADDR (if missing), up
 *   veth NSPATH HOSTIF PEERIF MASTER MTU MAC
 *                                 a veth pair: HOSTIF here (enslaved to MASTER, up), PEERIF in the
 *                                 network namespace at NSPATH (MAC "-" lets the kernel choose)
 *   enter NSPATH                  run the following operations in that network namespace
 *   addr IF ADDR/PREFIX           add an address (IPv4 or IPv6)
 *   up IF                         set the link up
 *   route DEST/PREFIX GATEWAY     add a route ("default" for DEST: 0.0.0.0/0 or ::/0)
 *   del IF                        delete a link (gone already is fine)
 *   elem add|del TABLE MAP KEY DATA
 *                                 add or delete an element of an nftables map of the ip family;
 *                                 KEY and DATA are the element's bytes in hex (DATA "-" for del);
 *                                 deleting one that is gone already is fine
 *
 * Exit status 0, or 1 with one line on stderr naming the operation and the kernel's error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nft-elem.h"

static int nl = -1;
static unsigned seq;
static char **op_argv; /* the operation being run, for error messages */

static void fail(const char *what, int err)
{
	fprintf(stderr, "berth-net: %s", op_argv[0]);
	for (int i = 1; op_argv[i] && i < 8; i++)
		fprintf(stderr, " %s", op_argv[i]);
	fprintf(stderr, ": %s: %s\n", what, strerror(err));
	exit(1);
}

static void nl_open(void)
{
	if (nl >= 0)
		close(nl);
	nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (nl < 0)
		fail("netlink socket", errno);
}

struct msg {
	struct nlmsghdr h;
	char buf[4096];
};

static struct rtattr *attr(struct msg *m, unsigned short type, const void *data, size_t len)
{
	struct rtattr *a = (struct rtattr *)((char *)m + NLMSG_ALIGN(m->h.nlmsg_len));
	if (NLMSG_ALIGN(m->h.nlmsg_len) + RTA_SPACE(len) > sizeof *m)
		fail("message too long", E2BIG);
	a->rta_type = type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(a), data, len);
	m->h.nlmsg_len = (unsigned)(NLMSG_ALIGN(m->h.nlmsg_len) + RTA_ALIGN(a->rta_len));
	return a;
}

static struct rtattr *nest(struct msg *m, unsigned short type)
{
	return attr(m, type, NULL, 0);
}

static void nest_end(struct msg *m, struct rtattr *a)
{
	a->rta_len = (unsigned short)((char *)m + m->h.nlmsg_len - (char *)a);
}

static void *body(struct msg *m, size_t len)
{
	void *p = NLMSG_DATA(&m->h);
	m->h.nlmsg_len = (unsigned)NLMSG_LENGTH(len);
	return p;
}

/* The kernel's answer to message `want` on fd: 0 or an errno. */
static int wait_ack(int fd, unsigned want)
{
	char reply[8192];
	for (;;) {
		ssize_t n = recv(fd, reply, sizeof reply, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		for (struct nlmsghdr *h = (struct nlmsghdr *)reply; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n))
			if (h->nlmsg_seq == want && h->nlmsg_type == NLMSG_ERROR)
				return -((struct nlmsgerr *)NLMSG_DATA(h))->error;
	}
}

/* Send and wait for the kernel's answer: 0 or an errno. */
static int talk(struct msg *m, unsigned short type, unsigned short flags)
{
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	m->h.nlmsg_type = type;
	m->h.nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
	m->h.nlmsg_seq = ++seq;
	if (sendto(nl, m, m->h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0)
		return errno;
	return wait_ack(nl, seq);
}

static int ifindex(const char *name)
{
	unsigned i = if_nametoindex(name);
	if (!i)
		fail(name, errno);
	return (int)i;
}

static void parse_cidr(const char *s, int *family, unsigned char addr[16], int *prefix)
{
	char tmp[64];
	snprintf(tmp, sizeof tmp, "%s", s);
	char *slash = strchr(tmp, '/');
	if (slash)
		*slash = 0;
	*family = strchr(tmp, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(*family, tmp, addr) != 1)
		fail("not an address", EINVAL);
	*prefix = slash ? atoi(slash + 1) : (*family == AF_INET ? 32 : 128);
}

static void set_up(int index, unsigned mtu)
{
	struct msg m = {0};
	struct ifinfomsg *i = body(&m, sizeof *i);
	i->ifi_family = AF_UNSPEC;
	i->ifi_index = index;
	i->ifi_flags = IFF_UP;
	i->ifi_change = IFF_UP;
	if (mtu)
		attr(&m, IFLA_MTU, &mtu, sizeof mtu);
	int e = talk(&m, RTM_NEWLINK, 0);
	if (e)
		fail("set link up", e);
}

static void add_addr(int index, const char *cidr)
{
	struct msg m = {0};
	unsigned char a[16];
	int family, prefix;
	parse_cidr(cidr, &family, a, &prefix);
	struct ifaddrmsg *i = body(&m, sizeof *i);
	i->ifa_family = (unsigned char)family;
	i->ifa_prefixlen = (unsigned char)prefix;
	i->ifa_index = (unsigned)index;
	size_t len = family == AF_INET ? 4 : 16;
	attr(&m, IFA_LOCAL, a, len);
	attr(&m, IFA_ADDRESS, a, len);
	if (family == AF_INET6)
		i->ifa_flags = IFA_F_NODAD; /* usable at once: the container starts right away */
	int e = talk(&m, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
	if (e && e != EEXIST)
		fail("add address", e);
}

static void op_bridge(char **a)
{
	struct msg m = {0};
	struct ifinfomsg *i = body(&m, sizeof *i);
	i->ifi_family = AF_UNSPEC;
	attr(&m, IFLA_IFNAME, a[0], strlen(a[0]) + 1);
	struct rtattr *info = nest(&m, IFLA_LINKINFO);
	attr(&m, IFLA_INFO_KIND, "bridge", 6);
	nest_end(&m, info);
	int e = talk(&m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
	if (e && e != EEXIST)
		fail("create bridge", e);
	int index = ifindex(a[0]);
	add_addr(index, a[1]);
	set_up(index, (unsigned)atoi(a[2]));
}

static void op_veth(char **a)
{
	int ns = open(a[0], O_RDONLY | O_CLOEXEC);
	if (ns < 0)
		fail(a[0], errno);
	unsigned mtu = (unsigned)atoi(a[4]);
	struct msg m = {0};
	struct ifinfomsg *i = body(&m, sizeof *i);
	i->ifi_family = AF_UNSPEC;
	attr(&m, IFLA_IFNAME, a[1], strlen(a[1]) + 1);
	attr(&m, IFLA_MTU, &mtu, sizeof mtu);
	int master = ifindex(a[3]);
	attr(&m, IFLA_MASTER, &master, sizeof master);
	struct rtattr *info = nest(&m, IFLA_LINKINFO);
	attr(&m, IFLA_INFO_KIND, "veth", 4);
	struct rtattr *data = nest(&m, IFLA_INFO_DATA);
	struct rtattr *peer = nest(&m, VETH_INFO_PEER);
	struct ifinfomsg pi = {.ifi_family = AF_UNSPEC};
	/* the peer's ifinfomsg sits in front of its attributes */
	memcpy((char *)&m + m.h.nlmsg_len, &pi, sizeof pi);
	m.h.nlmsg_len += (unsigned)NLMSG_ALIGN(sizeof pi);
	attr(&m, IFLA_IFNAME, a[2], strlen(a[2]) + 1);
	attr(&m, IFLA_MTU, &mtu, sizeof mtu);
	attr(&m, IFLA_NET_NS_FD, &ns, sizeof ns);
	if (strcmp(a[5], "-")) {
		unsigned char mac[6];
		if (sscanf(a[5], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) != 6)
			fail("not a MAC address", EINVAL);
		attr(&m, IFLA_ADDRESS, mac, 6);
	}
	nest_end(&m, peer);
	nest_end(&m, data);
	nest_end(&m, info);
	int e = talk(&m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
	if (e)
		fail("create veth pair", e);
	close(ns);
	set_up(ifindex(a[1]), 0);
}

static void op_enter(char **a)
{
	int ns = open(a[0], O_RDONLY | O_CLOEXEC);
	if (ns < 0)
		fail(a[0], errno);
	if (setns(ns, CLONE_NEWNET) < 0)
		fail("setns", errno);
	close(ns);
	nl_open(); /* a netlink socket talks to the namespace it was made in */
}

static void op_route(char **a)
{
	struct msg m = {0};
	unsigned char dst[16] = {0}, gw[16];
	int family, prefix = 0, gwfamily, gwprefix;
	parse_cidr(a[1], &gwfamily, gw, &gwprefix);
	family = gwfamily;
	if (strcmp(a[0], "default"))
		parse_cidr(a[0], &family, dst, &prefix);
	struct rtmsg *r = body(&m, sizeof *r);
	r->rtm_family = (unsigned char)family;
	r->rtm_dst_len = (unsigned char)prefix;
	r->rtm_table = RT_TABLE_MAIN;
	r->rtm_protocol = RTPROT_BOOT;
	r->rtm_scope = RT_SCOPE_UNIVERSE;
	r->rtm_type = RTN_UNICAST;
	size_t len = family == AF_INET ? 4 : 16;
	if (prefix)
		attr(&m, RTA_DST, dst, len);
	attr(&m, RTA_GATEWAY, gw, len);
	int e = talk(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
	if (e && e != EEXIST)
		fail("add route", e);
}

static void op_del(char **a)
{
	unsigned index = if_nametoindex(a[0]);
	if (!index)
		return; /* gone already */
	struct msg m = {0};
	struct ifinfomsg *i = body(&m, sizeof *i);
	i->ifi_family = AF_UNSPEC;
	i->ifi_index = (int)index;
	int e = talk(&m, RTM_DELLINK, 0);
	if (e && e != ENODEV)
		fail("delete link", e);
}

static size_t unhex(const char *h, unsigned char *out, size_t max)
{
	size_t n = strlen(h) / 2;
	if (strlen(h) % 2 || n > max)
		fail("bad hex", EINVAL);
	for (size_t i = 0; i < n; i++)
		if (sscanf(h + 2 * i, "%2hhx", &out[i]) != 1)
			fail("bad hex", EINVAL);
	return n;
}


/* One element of a map (helper/nft-elem.h). */
static void op_elem(char **a)
{
	int add = !strcmp(a[0], "add");
	if (!add && strcmp(a[0], "del"))
		fail("elem: add or del", EINVAL);
	unsigned char key[64], data[64];
	size_t keylen = unhex(a[3], key, sizeof key), datalen = add ? unhex(a[4], data, sizeof data) : 0;
	/* gone already is fine (deleted by whoever released the port): looked up first, as a delete
	 * waits for an RCU grace period (~10 ms) even when there is nothing to delete */
	if (!add && nft_map_elem_exists(a[1], a[2], key, keylen) == 0)
		return;
	int e = nft_map_elem(add, a[1], a[2], key, keylen, data, datalen);
	if (e == ENOENT && !add)
		return;
	if (e)
		fail(add ? "add map element" : "delete map element", e);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int nargs;
		void (*run)(char **);
	} ops[] = {
		{"bridge", 3, op_bridge}, {"veth", 6, op_veth}, {"enter", 1, op_enter},
		{"route", 2, op_route},   {"del", 1, op_del},    {"elem", 5, op_elem},
	};
	nl_open();
	for (int i = 1; i < argc;) {
		op_argv = argv + i;
		int known = 0;
		if (!strcmp(argv[i], "addr") && i + 2 < argc) {
			add_addr(ifindex(argv[i + 1]), argv[i + 2]);
			i += 3;
			continue;
		}
		if (!strcmp(argv[i], "up") && i + 1 < argc) {
			set_up(ifindex(argv[i + 1]), 0);
			i += 2;
			continue;
		}
		for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
			if (strcmp(argv[i], ops[k].name))
				continue;
			if (i + ops[k].nargs >= argc)
				fail("missing arguments", EINVAL);
			ops[k].run(argv + i + 1);
			i += 1 + ops[k].nargs;
			known = 1;
			break;
		}
		if (!known)
			fail("unknown operation", EINVAL);
	}
	return 0;
}
