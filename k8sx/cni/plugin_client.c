/*
 * k8sx CNI plugin client, native: the interpreter named in the "#!" line of k8sx's installed plugin
 * executables (k8sx cni install-plugins compiles it next to them).
 *
 * Why it exists: a Python interpreter needs ~20 ms just to start, and a runtime that execs plugins
 * (containerd, cnitool) pays that for every plugin of a chain. This client starts in ~1 ms and speaks
 * the same wire format as k8sx/cni/plugin_client.py to `k8sx cni plugind`:
 *   request:  u32 header length, u32 stdin length (big-endian), header = module NUL KEY=VALUE NUL ...,
 *             then stdin; a descriptor of the caller's network namespace rides on the first chunk
 *             (SCM_RIGHTS);
 *   reply:    i32 exit status (big-endian), then the plugin's stdout until EOF.
 * The kernel runs it as `client <script>`; the plugin's module is the script's
 * "# k8sx-cni-plugin: <module>" line. When no daemon accepts the connection, it execs the Python
 * interpreter on the script itself (stdin still unread), which runs the plugin in-process.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef K8SX_PYTHON
#error "compile with -DK8SX_PYTHON='\"/path/to/python\"'"
#endif

#define DEFAULT_SOCKET "/run/k8sx/cni-plugind.sock"
#define MARKER "# k8sx-cni-plugin:"

extern char **environ;

struct buf {
    char *data;
    size_t len, cap;
};

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* The spec's error object on stdout, exit status 1. */
static void fail(int code, const char *msg, const char *details) {
    printf("{\n    \"cniVersion\": \"1.1.0\",\n    \"code\": %d,\n    \"msg\": ", code);
    json_string(msg);
    printf(",\n    \"details\": ");
    json_string(details);
    printf("\n}\n");
    exit(1);
}

static void append(struct buf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) fail(5, "k8sx plugin client: out of memory", "");
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void read_all(int fd, struct buf *b) {
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n == 0) return;
        if (n < 0) {
            if (errno == EINTR) continue;
            fail(5, "k8sx plugin client: read failed", strerror(errno));
        }
        append(b, chunk, (size_t)n);
    }
}

/* The module named by the marker line within the script's first 256 bytes. */
static void read_module(const char *script, char *module, size_t size) {
    char head[257];
    int fd = open(script, O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(5, "k8sx plugin client: cannot open the plugin script", strerror(errno));
    ssize_t n = read(fd, head, 256);
    close(fd);
    if (n < 0) n = 0;
    head[n] = '\0';
    char *at = strstr(head, MARKER);
    if (!at) fail(999, "k8sx plugin client: no k8sx-cni-plugin marker in the plugin script", "");
    at += strlen(MARKER);
    while (*at == ' ') at++;
    size_t len = strcspn(at, "\r\n");
    if (len == 0 || len >= size) fail(999, "k8sx plugin client: bad k8sx-cni-plugin marker", "");
    memcpy(module, at, len);
    module[len] = '\0';
}

static void send_all(int sock, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(sock, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            fail(11, "k8sx plugin client: the daemon stopped reading", strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "k8sx plugin client: run a k8sx CNI plugin executable instead\n");
        return 2;
    }
    const char *script = argv[1];
    char module[200];
    read_module(script, module, sizeof module);

    const char *path = getenv("K8SX_CNI_PLUGIND_SOCKET");
    if (!path || !*path) path = DEFAULT_SOCKET;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || strlen(path) >= sizeof addr.sun_path) fail(5, "k8sx plugin client: bad socket", path);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
        /* No daemon: the script runs the plugin itself; stdin is still unread. */
        close(sock);
        char *args[] = {K8SX_PYTHON, "-IS", (char *)script, NULL};
        execv(K8SX_PYTHON, args);
        fail(50, "k8sx plugin unavailable: no daemon and the Python interpreter cannot be executed", K8SX_PYTHON);
    }

    struct buf header = {0}, input = {0}, reply = {0};
    append(&header, module, strlen(module));
    for (char **e = environ; *e; e++) {
        append(&header, "", 1);
        append(&header, *e, strlen(*e));
    }
    read_all(0, &input);

    uint32_t lengths[2] = {htonl((uint32_t)header.len), htonl((uint32_t)input.len)};
    int nsfd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) fail(5, "k8sx plugin client: cannot open its network namespace", strerror(errno));
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec iov = {.iov_base = lengths, .iov_len = sizeof lengths};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &nsfd, sizeof(int));
    ssize_t sent;
    do {
        sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) fail(11, "k8sx plugin client: cannot talk to the daemon", strerror(errno));
    close(nsfd);
    send_all(sock, (const char *)lengths + sent, sizeof lengths - (size_t)sent);
    send_all(sock, header.data, header.len);
    if (input.len) send_all(sock, input.data, input.len);
    shutdown(sock, SHUT_WR);

    read_all(sock, &reply);
    close(sock);
    if (reply.len < 4) fail(11, "the k8sx plugin daemon closed the connection", path);
    int32_t status;
    uint32_t raw;
    memcpy(&raw, reply.data, 4);
    status = (int32_t)ntohl(raw);
    for (size_t off = 4; off < reply.len;) {
        ssize_t w = write(1, reply.data + off, reply.len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        off += (size_t)w;
    }
    return status;
}
