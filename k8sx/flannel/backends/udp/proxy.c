/* The udp backend's data plane in C: IP packets between a TUN device and a UDP socket.
 *
 * Why C: every packet crosses the kernel boundary twice on each node; in Python the forwarder
 * tops out far below what a TCP stream offers it. flanneld keeps the same loop in C for the same
 * reason. k8sx compiles this file on first use (cc -O2 -shared) and runs k8sx_udp_proxy() on a
 * thread of its own through ctypes, which releases the GIL for the whole call.
 *
 * One thread moves TUN -> UDP (sendmmsg batches), one UDP -> TUN (recvmmsg batches), and the
 * calling thread takes commands. Control: the agent writes fixed-size commands on a SOCK_SEQPACKET socket (struct k8sx_cmd):
 * set a route (subnet -> peer address and port), delete one, or stop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define K8SX_SET 1
#define K8SX_DEL 2
#define K8SX_STOP 3
#define MAX_ROUTES 4096
#define BATCH 32

struct k8sx_cmd {
    uint32_t cmd;
    uint32_t net;       /* network byte order */
    uint32_t prefixlen;
    uint32_t peer;      /* network byte order */
    uint32_t port;      /* host byte order */
};

struct route {
    uint32_t net, mask;  /* host byte order */
    struct sockaddr_in to;
};

static struct route routes[MAX_ROUTES];
static int nroutes;

static uint32_t mask_of(uint32_t len) { return len == 0 ? 0 : 0xffffffffu << (32 - len); }

static void set_route(const struct k8sx_cmd *c) {
    uint32_t mask = mask_of(c->prefixlen), net = ntohl(c->net) & mask;
    int i;
    for (i = 0; i < nroutes; i++)
        if (routes[i].net == net && routes[i].mask == mask) break;
    if (i == nroutes) {
        if (nroutes == MAX_ROUTES) return;
        nroutes++;
    }
    routes[i].net = net;
    routes[i].mask = mask;
    memset(&routes[i].to, 0, sizeof routes[i].to);
    routes[i].to.sin_family = AF_INET;
    routes[i].to.sin_addr.s_addr = c->peer;
    routes[i].to.sin_port = htons((uint16_t)c->port);
}

static void del_route(const struct k8sx_cmd *c) {
    uint32_t mask = mask_of(c->prefixlen), net = ntohl(c->net) & mask;
    for (int i = 0; i < nroutes; i++)
        if (routes[i].net == net && routes[i].mask == mask) {
            routes[i] = routes[--nroutes];
            return;
        }
}

static const struct sockaddr_in *lookup(uint32_t dst) {
    const struct route *best = NULL;
    for (int i = 0; i < nroutes; i++)
        if ((dst & routes[i].mask) == routes[i].net && (!best || routes[i].mask > best->mask)) best = &routes[i];
    return best ? &best->to : NULL;
}

static uint16_t csum(const uint8_t *p, size_t n) {
    uint32_t s = 0;
    for (; n > 1; n -= 2, p += 2) s += (uint32_t)(p[0] << 8 | p[1]);
    if (n) s += (uint32_t)(p[0] << 8);
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

/* TTL - 1 with an incremental checksum update (RFC 1624); 0 when the packet must be dropped. */
static int ttl_step(uint8_t *pkt, ssize_t n) {
    if (n < 20 || (pkt[0] >> 4) != 4 || pkt[8] <= 1) return 0;
    pkt[8]--;
    uint32_t s = (uint32_t)(pkt[10] << 8 | pkt[11]) + 0x0100;
    s = (s & 0xffff) + (s >> 16);
    pkt[10] = (uint8_t)(s >> 8);
    pkt[11] = (uint8_t)s;
    return 1;
}

static void unreachable(int tun, const uint8_t *pkt, ssize_t n, uint32_t own_be) {
    uint8_t out[20 + 8 + 60 + 8];
    size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;
    size_t quoted = ihl + 8 < (size_t)n ? ihl + 8 : (size_t)n;
    if (quoted > 68) quoted = 68;
    size_t total = 20 + 8 + quoted;
    memset(out, 0, 28);
    out[0] = 0x45;
    out[2] = (uint8_t)(total >> 8);
    out[3] = (uint8_t)total;
    out[8] = 64;
    out[9] = 1; /* ICMP */
    memcpy(out + 12, &own_be, 4);
    memcpy(out + 16, pkt + 12, 4);
    uint16_t c = csum(out, 20);
    out[10] = (uint8_t)(c >> 8);
    out[11] = (uint8_t)c;
    out[20] = 3; /* destination unreachable */
    out[21] = 0; /* net unreachable */
    memcpy(out + 28, pkt, quoted);
    c = csum(out + 20, 8 + quoted);
    out[22] = (uint8_t)(c >> 8);
    out[23] = (uint8_t)c;
    (void)!write(tun, out, total);
}

struct ctx {
    int tun, sock;
    uint32_t own_be;
};

/* The TUN is opened with IFF_VNET_HDR and TCP segmentation offload: the kernel hands over TCP
 * super-packets (up to 64 KB) which are cut here into MTU-sized packets, so the wire carries
 * exactly what flanneld sends (one IP packet per datagram); received packets of one TCP flow are
 * merged back into one super-packet before they enter the TUN. Per-packet kernel work (forwarding,
 * netfilter, the bridge, the pod's TCP) then happens once per 64 KB instead of once per 1.4 KB. */
struct vnet_hdr {
    uint8_t flags, gso_type;
    uint16_t hdr_len, gso_size, csum_start, csum_offset;
};
#define VNET_NEEDS_CSUM 1
#define VNET_GSO_NONE 0
#define VNET_GSO_TCPV4 1
#define TUNSETOFFLOAD_ 0x400454d0
#define TUN_F_CSUM_ 0x01
#define TUN_F_TSO4_ 0x02
#define SLOTS 64
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#define SLOT 2048

static volatile int stopping;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

/* Wait until fd is readable or 200 ms passed (so a stop request is noticed). */
static void wait_readable(int fd) {
    struct pollfd p = {fd, POLLIN, 0};
    poll(&p, 1, 200);
}

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s) {
    for (; n > 1; n -= 2, p += 2) s += (uint32_t)(p[0] << 8 | p[1]);
    if (n) s += (uint32_t)(p[0] << 8);
    return s;
}

static uint16_t fold(uint32_t s) {
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t pseudo(const uint8_t *ip, uint32_t l4len, uint8_t proto) {
    uint32_t s = sum16(ip + 12, 8, 0);
    return s + proto + l4len;
}

static void ip_csum(uint8_t *ip, size_t ihl) {
    ip[10] = ip[11] = 0;
    put16(ip + 10, (uint16_t)~fold(sum16(ip, ihl, 0)));
}

struct outq {
    uint8_t slot[SLOTS][SLOT];
    struct mmsghdr msgs[SLOTS];
    struct iovec iov[SLOTS];
    struct sockaddr_in dest[SLOTS];
    int n;
};

static void flush(struct ctx *c, struct outq *q) {
    int sent = 0;
    while (sent < q->n) {
        int r = sendmmsg(c->sock, q->msgs + sent, (unsigned)(q->n - sent), 0);
        if (r > 0) {
            sent += r;
        } else if (errno == EAGAIN || errno == ENOBUFS) {
            struct pollfd p = {c->sock, POLLOUT, 0};
            poll(&p, 1, 50);
        } else {
            sent++; /* unreachable peer and the like: drop this one, as the kernel would */
        }
    }
    q->n = 0;
}

/* Queue one finished IP packet (already in q->slot[q->n]) for dest. */
static void queue(struct ctx *c, struct outq *q, size_t len, const struct sockaddr_in *to) {
    int k = q->n;
    q->dest[k] = *to;
    q->iov[k].iov_base = q->slot[k];
    q->iov[k].iov_len = len;
    memset(&q->msgs[k], 0, sizeof q->msgs[k]);
    q->msgs[k].msg_hdr.msg_iov = &q->iov[k];
    q->msgs[k].msg_hdr.msg_iovlen = 1;
    q->msgs[k].msg_hdr.msg_name = &q->dest[k];
    q->msgs[k].msg_hdr.msg_namelen = sizeof q->dest[k];
    if (++q->n == SLOTS) flush(c, q);
}

/* Equal-sized packets laid end to end, sent as one UDP_SEGMENT write: the kernel makes one
 * datagram of each (segmenting as late as the device allows), so the wire is unchanged. */
static void send_segments(struct ctx *c, uint8_t *buf, size_t len, size_t seg, const struct sockaddr_in *to) {
    char ctrl[CMSG_SPACE(sizeof(uint16_t))];
    struct iovec iov = {buf, len};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    memset(ctrl, 0, sizeof ctrl);
    m.msg_name = (void *)to;
    m.msg_namelen = sizeof *to;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (len > seg) {
        m.msg_control = ctrl;
        m.msg_controllen = sizeof ctrl;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t g = (uint16_t)seg;
        memcpy(CMSG_DATA(cm), &g, sizeof g);
    }
    for (int tries = 0; tries < 100; tries++) {
        if (sendmsg(c->sock, &m, 0) >= 0) return;
        if (errno != EAGAIN && errno != ENOBUFS) return;
        struct pollfd p = {c->sock, POLLOUT, 0};
        poll(&p, 1, 50);
    }
}

/* One packet read from the TUN: finish its checksum or cut it into segments, then queue each. */
static void from_tun(struct ctx *c, struct outq *q, const struct vnet_hdr *h, uint8_t *pkt, size_t n) {
    if (n < 20 || (pkt[0] >> 4) != 4) return;
    uint32_t dst;
    memcpy(&dst, pkt + 16, 4);
    struct sockaddr_in to;
    pthread_mutex_lock(&table_lock);
    const struct sockaddr_in *r = lookup(ntohl(dst));
    if (r) to = *r;
    pthread_mutex_unlock(&table_lock);
    if (!r) {
        unreachable(c->tun, pkt, (ssize_t)n, c->own_be);
        return;
    }
    size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;
    if (h->gso_type == VNET_GSO_TCPV4 && pkt[9] == 6 && n > ihl + 20) {
        size_t thl = (size_t)(pkt[ihl + 12] >> 4) * 4, hl = ihl + thl, mss = h->gso_size;
        if (thl < 20 || mss == 0 || hl + mss > SLOT || n <= hl || !ttl_step(pkt, (ssize_t)n)) return;
        if (q->n) flush(c, q); /* keep the flow in order */
        static uint8_t out[65536];
        uint32_t seq = get32(pkt + ihl + 4);
        uint16_t id = get16(pkt + 4);
        uint8_t flags = pkt[ihl + 13];
        size_t used = 0, segs = 0;
        for (size_t off = hl, i = 0; off < n; off += mss, i++) {
            size_t len = n - off < mss ? n - off : mss;
            if (used + hl + len > 65000 || segs == 64) {
                send_segments(c, out, used, hl + mss, &to);
                used = segs = 0;
            }
            uint8_t *sg = out + used;
            memcpy(sg, pkt, hl);
            memcpy(sg + hl, pkt + off, len);
            put16(sg + 2, (uint16_t)(hl + len));
            put16(sg + 4, (uint16_t)(id + i));
            put32(sg + ihl + 4, seq + (uint32_t)(off - hl));
            uint8_t f = flags;
            if (off + len < n) f &= (uint8_t)~0x09; /* FIN and PSH only on the last segment */
            if (i > 0) f &= (uint8_t)~0x80;          /* CWR only on the first */
            sg[ihl + 13] = f;
            ip_csum(sg, ihl);
            sg[ihl + 16] = sg[ihl + 17] = 0;
            uint32_t sum = sum16(sg + ihl, thl + len, pseudo(sg, (uint32_t)(thl + len), 6));
            put16(sg + ihl + 16, (uint16_t)~fold(sum));
            used += hl + len;
            segs++;
        }
        if (used) send_segments(c, out, used, hl + mss, &to);
        return;
    }
    if (n > SLOT) return;
    uint8_t *s = q->slot[q->n];
    memcpy(s, pkt, n);
    if (h->flags & VNET_NEEDS_CSUM && (size_t)h->csum_start + h->csum_offset + 2 <= n) {
        /* the checksum field already holds the pseudo-header sum: fold in the rest */
        uint16_t v = (uint16_t)~fold(sum16(s + h->csum_start, n - h->csum_start, 0));
        put16(s + h->csum_start + h->csum_offset, v ? v : (s[9] == 17 ? 0xffff : 0));
    }
    if (ttl_step(s, (ssize_t)n)) queue(c, q, n, &to);
}

static void *tun_to_net(void *arg) {
    struct ctx *c = arg;
    static uint8_t buf[65536 + sizeof(struct vnet_hdr)];
    static struct outq q;
    while (!stopping) {
        int k = 0;
        for (; k < BATCH; k++) {
            ssize_t n = read(c->tun, buf, sizeof buf);
            if (n < (ssize_t)sizeof(struct vnet_hdr)) break;
            struct vnet_hdr h;
            memcpy(&h, buf, sizeof h);
            from_tun(c, &q, &h, buf + sizeof h, (size_t)n - sizeof h);
        }
        if (q.n) flush(c, &q);
        if (k == 0) wait_readable(c->tun);
    }
    return NULL;
}

/* Whether b continues a's TCP flow so that both fit in one super-packet (same addresses, ports,
 * header sizes and options, only ACK/PSH set, b's sequence right after a's data). */
static int continues(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, size_t mss) {
    if (alen < 40 || blen < 40) return 0;
    if ((a[0] != 0x45) || b[0] != 0x45 || a[9] != 6 || b[9] != 6) return 0;
    if (memcmp(a + 12, b + 12, 8) || memcmp(a + 20, b + 20, 4)) return 0;
    if ((a[6] & 0x3f) || a[7] || (b[6] & 0x3f) || b[7]) return 0;   /* fragments */
    size_t thl = (size_t)(a[32] >> 4) * 4;
    if (thl < 20 || thl != (size_t)(b[32] >> 4) * 4 || alen < 20 + thl || blen <= 20 + thl) return 0;
    if (memcmp(a + 40, b + 40, thl - 20)) return 0;
    if ((a[33] & ~0x10) || (b[33] & ~0x18)) return 0;                /* a: ACK only; b: ACK, PSH */
    if (memcmp(a + 28, b + 28, 4) || memcmp(a + 34, b + 34, 2)) return 0; /* same ack and window */
    size_t apay = alen - 20 - thl;
    if (apay != mss || blen - 20 - thl > mss || blen <= 20 + thl) return 0;
    return get32(b + 24) == get32(a + 24) + (uint32_t)apay;
}

#define RB 8
#define MAXP (RB * 64)

/* Write packets [i, j) of one flow into the TUN: alone as they are, or merged into one super-packet. */
static void to_tun(struct ctx *c, uint8_t **pk, size_t *ln, int i, int j, size_t mss) {
    enum { HDR = sizeof(struct vnet_hdr) };
    static uint8_t big[HDR + 65535];
    struct vnet_hdr h;
    memset(&h, 0, sizeof h);
    if (j == i + 1) {
        memcpy(big, &h, HDR);
        memcpy(big + HDR, pk[i], ln[i]);
        (void)!write(c->tun, big, HDR + ln[i]);
        return;
    }
    uint8_t *p = pk[i];
    size_t thl = (size_t)(p[32] >> 4) * 4, hl = 20 + thl, off = HDR + hl;
    memcpy(big + HDR, p, hl);
    for (int k = i; k < j; k++) {
        memcpy(big + off, pk[k] + hl, ln[k] - hl);
        off += ln[k] - hl;
    }
    uint8_t *ip = big + HDR;
    ip[33] |= pk[j - 1][33] & 0x08; /* PSH of the last segment */
    put16(ip + 2, (uint16_t)(off - HDR));
    ip_csum(ip, 20);
    put16(ip + 36, fold(pseudo(ip, (uint32_t)(off - HDR - 20), 6)));
    h.flags = VNET_NEEDS_CSUM;
    h.gso_type = VNET_GSO_TCPV4;
    h.hdr_len = (uint16_t)hl;
    h.gso_size = (uint16_t)mss;
    h.csum_start = 20;
    h.csum_offset = 16;
    memcpy(big, &h, HDR);
    (void)!write(c->tun, big, off);
}

/* UDP -> TUN: recvmmsg with UDP_GRO (the kernel hands over runs of datagrams of one sender at
 * once), split into IP packets, consecutive segments of one TCP flow merged, written to the TUN. */
static void *net_to_tun(void *arg) {
    struct ctx *c = arg;
    static uint8_t bufs[RB][65536];
    static char ctrl[RB][CMSG_SPACE(sizeof(int))];
    static uint8_t *pk[MAXP];
    static size_t ln[MAXP];
    struct mmsghdr msgs[RB];
    struct iovec iov[RB];
    int one = 1;
    setsockopt(c->sock, SOL_UDP, UDP_GRO, &one, sizeof one); /* best effort: without it, one datagram per read */
    for (int i = 0; i < RB; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = sizeof bufs[i];
    }
    while (!stopping) {
        for (int i = 0; i < RB; i++) {
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = ctrl[i];
            msgs[i].msg_hdr.msg_controllen = sizeof ctrl[i];
        }
        int r = recvmmsg(c->sock, msgs, RB, MSG_DONTWAIT, NULL);
        if (r <= 0) {
            wait_readable(c->sock);
            continue;
        }
        int np = 0;
        for (int m = 0; m < r; m++) {
            size_t len = msgs[m].msg_len, seg = len;
            for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msgs[m].msg_hdr); cm; cm = CMSG_NXTHDR(&msgs[m].msg_hdr, cm))
                if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
                    int g;
                    memcpy(&g, CMSG_DATA(cm), sizeof g);
                    if (g > 0) seg = (size_t)g;
                }
            for (size_t off = 0; off < len && np < MAXP; off += seg) {
                size_t n = len - off < seg ? len - off : seg;
                if (!ttl_step(bufs[m] + off, (ssize_t)n)) continue;
                pk[np] = bufs[m] + off;
                ln[np++] = n;
            }
        }
        for (int i = 0; i < np;) {
            uint8_t *p = pk[i];
            size_t n = ln[i];
            int j = i + 1;
            size_t mss = 0;
            if (n > 40 && p[0] == 0x45 && p[9] == 6) {
                size_t thl = (size_t)(p[32] >> 4) * 4, total = n;
                mss = n > 20 + thl ? n - 20 - thl : 0;
                while (j < np && mss && total + ln[j] - 20 - thl <= 65535 &&
                       continues(pk[j - 1], ln[j - 1], pk[j], ln[j], mss)) {
                    total += ln[j] - 20 - thl;
                    j++;
                    if (ln[j - 1] - 20 - thl < mss) break; /* a short segment ends the run */
                }
            }
            to_tun(c, pk, ln, i, j, mss);
            i = j;
        }
    }
    return NULL;
}

/* Runs until STOP arrives on ctl (or its other end closes): one thread per direction, commands here. */
int k8sx_udp_proxy(int tun, int sock, int ctl, uint32_t own_be) {
    struct ctx c = {tun, sock, own_be};
    pthread_t a, b;
    fcntl(tun, F_SETFL, fcntl(tun, F_GETFL) | O_NONBLOCK);
    fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK);
    stopping = 0;
    if (ioctl(tun, TUNSETOFFLOAD_, TUN_F_CSUM_ | TUN_F_TSO4_) < 0) return -errno;
    if (pthread_create(&a, NULL, tun_to_net, &c)) return -errno;
    if (pthread_create(&b, NULL, net_to_tun, &c)) {
        stopping = 1;
        pthread_join(a, NULL);
        return -errno;
    }
    for (;;) {
        struct k8sx_cmd cmd;
        ssize_t n = recv(ctl, &cmd, sizeof cmd, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || (n == sizeof cmd && cmd.cmd == K8SX_STOP)) break;
        if (n != sizeof cmd) continue;
        pthread_mutex_lock(&table_lock);
        if (cmd.cmd == K8SX_SET) set_route(&cmd);
        if (cmd.cmd == K8SX_DEL) del_route(&cmd);
        pthread_mutex_unlock(&table_lock);
    }
    stopping = 1;
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return 0;
}
