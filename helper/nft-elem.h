/*
 * One element of an nf_tables map (ip family) added or deleted over netfilter netlink, in a batch
 * of its own (nf_tables takes changes only in batches). Shared by berth-net (the command) and
 * berth-sys.node (so publishing or unpublishing a port needs no process). Mechanism only.
 */
#ifndef BERTH_NFT_ELEM_H
#define BERTH_NFT_ELEM_H
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct nft_msg {
  struct nlmsghdr h;
  char buf[512];
};

/* appends an attribute (a nest when data is NULL); NULL when the message is full */
static struct rtattr *nft_attr(struct nft_msg *m, unsigned short type, const void *data, size_t len) {
  struct rtattr *a = (struct rtattr *)((char *)m + NLMSG_ALIGN(m->h.nlmsg_len));
  if (NLMSG_ALIGN(m->h.nlmsg_len) + RTA_SPACE(len) > sizeof *m) return NULL;
  a->rta_type = type;
  a->rta_len = (unsigned short)RTA_LENGTH(len);
  if (len) memcpy(RTA_DATA(a), data, len);
  m->h.nlmsg_len = (unsigned)(NLMSG_ALIGN(m->h.nlmsg_len) + RTA_ALIGN(a->rta_len));
  return a;
}

static void nft_nest_end(struct nft_msg *m, struct rtattr *a) {
  a->rta_len = (unsigned short)((char *)m + m->h.nlmsg_len - (char *)a);
}

static void nft_gen(struct nft_msg *m, unsigned char family, unsigned short res, unsigned short type, unsigned short flags, unsigned seq) {
  struct nfgenmsg *g = NLMSG_DATA(&m->h);
  m->h.nlmsg_len = (unsigned)NLMSG_LENGTH(sizeof *g);
  g->nfgen_family = family;
  g->version = NFNETLINK_V0;
  g->res_id = htons(res);
  m->h.nlmsg_type = type;
  m->h.nlmsg_flags = flags;
  m->h.nlmsg_seq = seq;
}

/* Sends a request and reads the kernel's replies up to its answer to message SEQ: 0, or that
 * answer's errno (or the socket's). A set element in a reply sets *found. */
static int nft_exchange(const void *out, size_t len, unsigned seq, int *found) {
  int nf = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (nf < 0) return errno;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  int err = 0, done = 0;
  if (sendto(nf, out, len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) err = errno;
  while (!err && !done) {
    char reply[4096];
    ssize_t n = recv(nf, reply, sizeof reply, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)reply; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_ERROR && h->nlmsg_seq == seq) {
        err = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
        done = 1;
      } else if (found && h->nlmsg_type == ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM))
        *found = 1;
      else if (h->nlmsg_type == NLMSG_DONE)
        done = 1;
    }
  }
  close(nf);
  return err;
}

/* 0, or the errno of the failure (ENOENT: no such table, map or element; EEXIST: there already) */
static int nft_map_elem(int add, const char *table, const char *map, const void *key, size_t keylen, const void *data, size_t datalen) {
  struct nft_msg batch[3];
  memset(batch, 0, sizeof batch);
  nft_gen(&batch[0], AF_UNSPEC, NFNL_SUBSYS_NFTABLES, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1);
  struct nft_msg *m = &batch[1];
  nft_gen(m, NFPROTO_IPV4, 0, (unsigned short)((NFNL_SUBSYS_NFTABLES << 8) | (add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM)),
          (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | (add ? NLM_F_CREATE : 0)), 2);
  struct rtattr *list, *el, *k, *d = NULL;
  if (!nft_attr(m, NFTA_SET_ELEM_LIST_TABLE, table, strlen(table) + 1) || !nft_attr(m, NFTA_SET_ELEM_LIST_SET, map, strlen(map) + 1) ||
      !(list = nft_attr(m, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, NULL, 0)) || !(el = nft_attr(m, NFTA_LIST_ELEM | NLA_F_NESTED, NULL, 0)) ||
      !(k = nft_attr(m, NFTA_SET_ELEM_KEY | NLA_F_NESTED, NULL, 0)) || !nft_attr(m, NFTA_DATA_VALUE, key, keylen))
    return E2BIG;
  nft_nest_end(m, k);
  if (add) {
    if (!(d = nft_attr(m, NFTA_SET_ELEM_DATA | NLA_F_NESTED, NULL, 0)) || !nft_attr(m, NFTA_DATA_VALUE, data, datalen)) return E2BIG;
    nft_nest_end(m, d);
  }
  nft_nest_end(m, el);
  nft_nest_end(m, list);
  nft_gen(&batch[2], AF_UNSPEC, NFNL_SUBSYS_NFTABLES, NFNL_MSG_BATCH_END, NLM_F_REQUEST, 3);
  char out[3 * sizeof(struct nft_msg)];
  size_t len = 0;
  for (int i = 0; i < 3; i++) {
    memcpy(out + len, &batch[i], batch[i].h.nlmsg_len);
    len += NLMSG_ALIGN(batch[i].h.nlmsg_len);
  }
  return nft_exchange(out, len, 2, NULL);
}
/* 1 when the map holds an element with this key, 0 when not (or no such table or map), -errno on
 * failure. A lookup, not a transaction: no wait for an RCU grace period, which a delete pays even
 * for an element that is not there. */
__attribute__((unused)) static int nft_map_elem_exists(const char *table, const char *map, const void *key, size_t keylen) {
  struct nft_msg m;
  memset(&m, 0, sizeof m);
  nft_gen(&m, NFPROTO_IPV4, 0, (unsigned short)((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM), (unsigned short)(NLM_F_REQUEST | NLM_F_ACK), 1);
  struct rtattr *list, *el, *k;
  if (!nft_attr(&m, NFTA_SET_ELEM_LIST_TABLE, table, strlen(table) + 1) || !nft_attr(&m, NFTA_SET_ELEM_LIST_SET, map, strlen(map) + 1) ||
      !(list = nft_attr(&m, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, NULL, 0)) || !(el = nft_attr(&m, NFTA_LIST_ELEM | NLA_F_NESTED, NULL, 0)) ||
      !(k = nft_attr(&m, NFTA_SET_ELEM_KEY | NLA_F_NESTED, NULL, 0)) || !nft_attr(&m, NFTA_DATA_VALUE, key, keylen))
    return -E2BIG;
  nft_nest_end(&m, k);
  nft_nest_end(&m, el);
  nft_nest_end(&m, list);
  int found = 0;
  int err = nft_exchange(&m, m.h.nlmsg_len, 1, &found);
  if (err == ENOENT) return 0;
  return err ? -err : found;
}
#endif
