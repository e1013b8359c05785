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
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
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

static volatile int stopping;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

/* Wait until fd is readable or 200 ms passed (so a stop request is noticed). */
static void wait_readable(int fd) {
    struct pollfd p = {fd, POLLIN, 0};
    poll(&p, 1, 200);
}

/* TUN -> UDP: up to BATCH packets read without blocking, then one sendmmsg. */
static void *tun_to_net(void *arg) {
    struct ctx *c = arg;
    static uint8_t bufs[BATCH][65536];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in dest[BATCH];
    while (!stopping) {
        int k = 0;
        while (k < BATCH) {
            ssize_t n = read(c->tun, bufs[k], sizeof bufs[k]);
            if (n < 0) break;
            if (n < 20) continue;
            uint32_t dst;
            memcpy(&dst, bufs[k] + 16, 4);
            pthread_mutex_lock(&table_lock);
            const struct sockaddr_in *to = lookup(ntohl(dst));
            if (to) dest[k] = *to;
            pthread_mutex_unlock(&table_lock);
            if (!to) {
                unreachable(c->tun, bufs[k], n, c->own_be);
                continue;
            }
            if (!ttl_step(bufs[k], n)) continue;
            iov[k].iov_base = bufs[k];
            iov[k].iov_len = (size_t)n;
            memset(&msgs[k], 0, sizeof msgs[k]);
            msgs[k].msg_hdr.msg_iov = &iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            msgs[k].msg_hdr.msg_name = &dest[k];
            msgs[k].msg_hdr.msg_namelen = sizeof dest[k];
            k++;
        }
        int sent = 0;
        while (sent < k) {
            int r = sendmmsg(c->sock, msgs + sent, (unsigned)(k - sent), 0);
            if (r > 0) {
                sent += r;
            } else if (errno == EAGAIN || errno == ENOBUFS) {
                struct pollfd p = {c->sock, POLLOUT, 0};
                poll(&p, 1, 50);
            } else {
                sent++; /* unreachable peer and the like: drop this one, as the kernel would */
            }
        }
        if (k == 0) wait_readable(c->tun);
    }
    return NULL;
}

/* UDP -> TUN: recvmmsg in batches, each packet written into the TUN. */
static void *net_to_tun(void *arg) {
    struct ctx *c = arg;
    static uint8_t bufs[BATCH][65536];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = sizeof bufs[i];
    }
    while (!stopping) {
        for (int i = 0; i < BATCH; i++) {
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int r = recvmmsg(c->sock, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (r <= 0) {
            wait_readable(c->sock);
            continue;
        }
        for (int i = 0; i < r; i++)
            if (ttl_step(bufs[i], msgs[i].msg_len)) (void)!write(c->tun, bufs[i], msgs[i].msg_len);
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
