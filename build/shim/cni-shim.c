#define _GNU_SOURCE
/*
 * cni-shim: what /opt/cni/bin/<type> points at. It hands the request to the pre-forked
 * `cni-plugins serve` (wire protocol 1, described at the top of cni_plugins/serve.py), so
 * that a served plugin call costs no Python start-up.
 *
 *     /opt/cni/bin/loopback -> .../cni-shim     plugin = basename(argv[0])
 *     cni-shim loopback ARGS...                 plugin = argv[1] (development form)
 *
 * It lives next to the multi-call Python executable `cni-plugins` ("the target"). Either
 * the server answers the request, or the shim execs {target, plugin, args...} ("the
 * fallback", the standalone path), which then sees exactly the stdin the runtime wrote.
 *
 * Until the whole request is sent, any problem means the fallback: nothing was done yet.
 * Once it is sent, the only fallback is the server's own "M" (version mismatch) or "U"
 * (refused, nothing done) answer; anything else that goes wrong is CNI error 11, "try
 * again later", since the server may or may not have acted.
 *
 * Every fd opened here is close-on-exec: the fallback inherits fds 0-2 and nothing else.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef CNI_PLUGINS_VERSION
#error "build with -DCNI_PLUGINS_VERSION='\"x.y.z\"' (build/shim/build.sh does)"
#endif

#define DEFAULT_SOCKET "/run/cni-plugins/serve.sock"
#define HEADER 9                        /* magic (5) + big-endian body length (4) */
#define MAX_REQUEST ((size_t)4 << 20)   /* whole frame; a larger request runs standalone */
#define MAX_REPLY ((size_t)16 << 20)    /* body */
#define CHUNK ((size_t)64 << 10)
#define CONNECT_TIMEOUT_MS 2000
#define IO_TIMEOUT_MS 10000             /* once a reply has begun: each read's limit */
#define REPLY_TIMEOUT_S 300             /* its first byte: plugin work (DHCP...) may be long */
#define TRY_AGAIN "the cni-plugins server failed during the request; try again later"

extern char **environ;

static char *target;                    /* dirname(realpath(/proc/self/exe)) + /cni-plugins */
static char **fallback_argv;            /* {target, plugin, args..., NULL} */
static void (*old_sigpipe)(int);        /* restored for the fallback */
static const char *config = "";         /* the stdin bytes, once read: for cniVersion */
static size_t config_len;

/* ---- a growing byte buffer ------------------------------------------------------------ */

struct buf {
    char *data;
    size_t len, cap;
    bool failed;                        /* an allocation failed; later appends do nothing */
};

static bool buf_reserve(struct buf *b, size_t more) {
    if (b->failed) return false;
    if (more <= b->cap - b->len) return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < more && cap <= SIZE_MAX / 2)
        cap *= 2;
    char *p = cap - b->len >= more ? realloc(b->data, cap) : NULL;
    if (!p) {
        b->failed = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

static void buf_add(struct buf *b, const void *p, size_t n) {
    if (n > 0 && buf_reserve(b, n)) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
    }
}

static void buf_text(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }
static void buf_cstr(struct buf *b, const char *s) { buf_add(b, s, strlen(s) + 1); }

static uint32_t get_be32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* ---- waiting, writing, CNI errors ----------------------------------------------------- */

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until fd is ready for `events` or the deadline passes: 1 ready, 0 timeout, -1 error.
 * POLLERR/POLLHUP count as ready: the next read or write tells what happened. */
static int wait_fd(int fd, short events, long long deadline) {
    for (long long left; (left = deadline - now_ms()) > 0;) {
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) return -1;
    }
    return 0;
}

static bool write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && (errno == EINTR
                      || (errno == EAGAIN && wait_fd(fd, POLLOUT, now_ms() + IO_TIMEOUT_MS) == 1)))
            continue;
        if (w < 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static bool is_version_char(char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
        || c == '.' || c == '+' || c == '-';
}

/* The top-level "cniVersion" of the config on stdin, for our own errors; "1.1.0" when it is
 * absent or not a plain version string. A scanner, not a parser: it follows strings (and
 * their escapes) and the nesting depth, so that a nested one (a prevResult's) is never
 * taken. As with json.loads, the last top-level occurrence counts. */
static const char *config_version(void) {
    static char version[33];
    const char *s = config;
    size_t n = config_len, i = 0;
    long depth = 0;
    bool key_next = false;              /* a string here, at depth 1, is a key */

    strcpy(version, "1.1.0");
    while (i < n && is_space(s[i]))
        i++;
    if (i >= n || s[i] != '{') return version;
    for (; i < n; i++) {
        if (s[i] == '{' || s[i] == '[') {
            depth++;
            key_next = s[i] == '{' && depth == 1;
        } else if (s[i] == '}' || s[i] == ']') {
            depth--;
            key_next = false;
        } else if (s[i] == ',') {
            key_next = depth == 1;
        } else if (s[i] == '"') {
            size_t start = ++i, j, k;
            while (i < n && s[i] != '"')
                i += s[i] == '\\' ? 2 : 1;
            if (i >= n)
                break;                  /* unterminated string */
            if (key_next && depth == 1 && i - start == 10 && !memcmp(s + start, "cniVersion", 10)) {
                for (j = i + 1; j < n && (is_space(s[j]) || s[j] == ':'); j++)
                    ;
                for (k = j + 1; k < n && k - j <= 32 && is_version_char(s[k]); k++)
                    ;                   /* at most 32 version characters after the quote */
                strcpy(version, "1.1.0");
                if (j < n && s[j] == '"' && k < n && s[k] == '"' && k - j > 1) {
                    memcpy(version, s + j + 1, k - j - 1);
                    version[k - j - 1] = '\0';
                }
            }
            key_next = false;           /* the value string, if any, is skipped next */
        }
    }
    return version;
}

static void json_string(struct buf *b, const char *s) {
    buf_text(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8] = {'\\', (char)c};
        if (c < 0x20)
            buf_add(b, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", c));
        else if (c == '"' || c == '\\')
            buf_add(b, esc, 2);
        else
            buf_add(b, s, 1);
    }
    buf_text(b, "\"");
}

/* Print a CNI error (pretty-printed JSON) on stdout and exit 1. */
static _Noreturn void cni_error(int code, const char *msg, const char *details) {
    struct buf b = {0};
    char num[16];
    snprintf(num, sizeof num, "%d", code);
    buf_text(&b, "{\n    \"cniVersion\": ");
    json_string(&b, config_version());
    buf_text(&b, ",\n    \"code\": ");
    buf_text(&b, num);
    buf_text(&b, ",\n    \"msg\": ");
    json_string(&b, msg);
    if (details) {
        buf_text(&b, ",\n    \"details\": ");
        json_string(&b, details);
    }
    buf_text(&b, "\n}\n");
    if (b.failed) {
        static const char oom[] =
            "{\"cniVersion\": \"1.1.0\", \"code\": 5, \"msg\": \"cni-shim: out of memory\"}\n";
        write_all(1, oom, sizeof oom - 1);
    } else {
        write_all(1, b.data, b.len);
    }
    exit(1);
}

/* The request is out and no usable answer came back: error 11, with `fmt` as details. */
__attribute__((format(printf, 1, 2))) static _Noreturn void try_again(const char *fmt, ...) {
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    cni_error(11, TRY_AGAIN, why);
}

/* Error 5 (I/O failure): "<what><arg>: <strerror(err)>". */
static _Noreturn void io_error(const char *what, const char *arg, int err) {
    struct buf m = {0};
    buf_text(&m, what);
    buf_text(&m, arg);
    buf_text(&m, ": ");
    buf_cstr(&m, strerror(err));
    cni_error(5, m.failed ? what : m.data, NULL);
}

/* ---- the fallback: run the standalone plugin ------------------------------------------ */

static _Noreturn void fallback(void) {
    struct stat self, other;
    if (stat(target, &other) == 0 && stat("/proc/self/exe", &self) == 0
        && self.st_dev == other.st_dev && self.st_ino == other.st_ino) {
        errno = ELOOP;                  /* the target is this shim: exec'ing would loop */
    } else {
        signal(SIGPIPE, old_sigpipe);   /* as the runtime gave it to us */
        execv(target, fallback_argv);
        signal(SIGPIPE, SIG_IGN);
    }
    io_error("failed to exec ", target, errno);
}

/* The fallback, with fd 0 replaced by a memfd holding exactly what the runtime wrote: the
 * `len` bytes already read, then (when `rest`) whatever fd 0 still holds. */
static _Noreturn void handover(const char *data, size_t len, bool rest) {
    static char chunk[CHUNK];
    if (len == 0 && !rest)
        fallback();                     /* nothing consumed: fd 0 is as the runtime left it */
    int fd = memfd_create("cni-stdin", MFD_CLOEXEC);
    bool ok = fd >= 0 && write_all(fd, data, len);
    while (ok && rest) {
        ssize_t r = read(0, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            break;                      /* EOF, or a read error: the rest is lost either way */
        ok = write_all(fd, chunk, (size_t)r);
    }
    if (!ok || lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) < 0)
        io_error("failed to hand stdin over to ", target, errno);
    fallback();
}

/* ---- talking to the server ------------------------------------------------------------ */

/* A socket owned by root (or by us) that nobody else may connect to,
 * in a directory only its owner can write to; anything else may be an impostor. */
static bool trusted(const char *path) {
    uid_t me = geteuid();
    struct stat sock, dir;
    const char *slash = strrchr(path, '/');
    char *parent = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    bool ok = parent && stat(path, &sock) == 0 && stat(parent, &dir) == 0
        && S_ISSOCK(sock.st_mode) && (sock.st_uid == 0 || sock.st_uid == me)
        && !(sock.st_mode & 077) && (dir.st_uid == 0 || dir.st_uid == me) && !(dir.st_mode & 022);
    free(parent);
    return ok;
}

/* A non-blocking connection to the server, or -1. A full backlog is EAGAIN: a failure. */
static int connect_server(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n >= sizeof addr.sun_path) return -1;
    memcpy(addr.sun_path, path, n + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) return fd;
    if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, now_ms() + CONNECT_TIMEOUT_MS) == 1) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) return fd;
    }
    close(fd);
    return -1;
}

/* The namespaces the server is to act in: our network and mount namespaces, and the one
 * CNI_NETNS names when it can be opened (O_NONBLOCK: a FIFO there must not hang us).
 * Returns the number of fds (2 or 3), or -1. */
static int open_namespaces(int fds[3]) {
    fds[0] = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    fds[1] = open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (fds[0] < 0 || fds[1] < 0) {
        for (int i = 0; i < 2; i++)
            if (fds[i] >= 0) close(fds[i]);
        return -1;
    }
    const char *netns = getenv("CNI_NETNS");
    if (netns && *netns && (fds[2] = open(netns, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) >= 0)
        return 3;
    return 2;
}

/* Append fd 0 to b until EOF (0) or until b holds more than `limit` bytes (1); -1 on a read
 * error, or when memory runs out (then b->failed). */
static int read_stdin(struct buf *b, size_t limit) {
    while (b->len <= limit) {
        if (!buf_reserve(b, CHUNK)) return -1;
        ssize_t r = read(0, b->data + b->len, b->cap - b->len);
        if (r == 0) return 0;
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        b->len += (size_t)r;
    }
    return 1;
}

/* Send the whole frame, the namespace fds riding on its first chunk. */
static bool send_frame(int sock, char *p, size_t n, const int *fds, int nfds) {
    union {
        char buf[CMSG_SPACE(3 * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    bool fds_sent = false;
    while (n > 0) {
        struct iovec iov = {.iov_base = p, .iov_len = n};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        if (!fds_sent) {
            memset(&ctl, 0, sizeof ctl);
            msg.msg_control = ctl.buf;
            msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
            memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
        }
        ssize_t w = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (w < 0 && (errno == EINTR
                      || (errno == EAGAIN && wait_fd(sock, POLLOUT, now_ms() + IO_TIMEOUT_MS) == 1)))
            continue;
        if (w < 0) return false;
        fds_sent = true;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Receive exactly n bytes of the reply frame into p: never more than asked. `*got` counts
 * the frame's bytes so far: the first must arrive by `first_deadline`, each later read
 * within IO_TIMEOUT_MS. EOF, an error or a timeout: error 11. */
static void recv_exact(int sock, char *p, size_t n, size_t *got, long long first_deadline,
                       int reply_timeout)
{
    while (n > 0) {
        ssize_t r = recv(sock, p, n, 0);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            *got += (size_t)r;
            continue;
        }
        if (r == 0) try_again("incomplete reply (%zu bytes)", *got);
        if (errno == EINTR) continue;
        if (errno != EAGAIN) try_again("reading the reply: %s", strerror(errno));
        int ready = wait_fd(sock, POLLIN, *got ? now_ms() + IO_TIMEOUT_MS : first_deadline);
        if (ready < 0) try_again("waiting for the reply: %s", strerror(errno));
        if (ready == 0 && *got)
            try_again("reply stalled after %zu bytes (nothing for %d s)", *got, IO_TIMEOUT_MS / 1000);
        if (ready == 0) try_again("no reply within %d s", reply_timeout);
    }
}

/* CNI_PLUGINS_REPLY_TIMEOUT: whole seconds (1..1000000), else the default. */
static int reply_timeout(void) {
    const char *s = getenv("CNI_PLUGINS_REPLY_TIMEOUT");
    char *end;
    if (!s || !*s) return REPLY_TIMEOUT_S;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || *end || v < 1 || v > 1000000 ? REPLY_TIMEOUT_S : (int)v;
}

int main(int argc, char **argv) {
    old_sigpipe = signal(SIGPIPE, SIG_IGN);

    /* the target, and the fallback's argv */
    char *self = realpath("/proc/self/exe", NULL);
    if (!self) io_error("cannot resolve ", "/proc/self/exe", errno);
    size_t dir_len = (size_t)(strrchr(self, '/') - self);    /* absolute: there is a '/' */
    target = malloc(dir_len + sizeof "/cni-plugins");
    fallback_argv = calloc((size_t)argc + 3, sizeof *fallback_argv);     /* NULL-ended */
    if (!target || !fallback_argv) io_error("cni-shim", "", ENOMEM);
    memcpy(target, self, dir_len);
    memcpy(target + dir_len, "/cni-plugins", sizeof "/cni-plugins");
    free(self);

    const char *name = argc > 0 ? argv[0] : "cni-shim";
    name = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    const char *plugin = name;
    int first = 1;                      /* argv index of the first argument after the type */
    if (strcmp(name, "cni-shim") == 0) {
        plugin = argc > 1 ? argv[1] : NULL;
        first = 2;
    }
    size_t k = 0;
    fallback_argv[k++] = target;
    if (plugin) {
        fallback_argv[k++] = (char *)plugin;
        for (int i = first; i < argc; i++)
            fallback_argv[k++] = argv[i];
    }
    if (!plugin)
        fallback();                     /* `cni-shim` alone: the target prints its usage */

    /* the server, if there is one we trust and it accepts. Without fds 0-2 the socket
     * could become "stdin" or "stdout": leave that case to the standalone path. */
    const char *command = getenv("CNI_COMMAND");
    if (!command || !*command) fallback();
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0) fallback();
    const char *path = getenv("CNI_PLUGINS_SOCKET");
    path = path && *path ? path : DEFAULT_SOCKET;
    if (!trusted(path)) fallback();
    int sock = connect_server(path);
    int fds[3], nfds = sock < 0 ? -1 : open_namespaces(fds);
    if (nfds < 0) fallback();

    /* the request: version \0 plugin \0 fds \0 KEY=VALUE \0 ... \0 \0 stdin */
    struct buf frame = {0};
    buf_add(&frame, "CNIQ1\0\0\0\0", HEADER);
    buf_cstr(&frame, CNI_PLUGINS_VERSION);
    buf_cstr(&frame, plugin);
    buf_cstr(&frame, nfds == 3 ? "own,netns" : "own");
    for (char **e = environ; *e; e++)
        if (strchr(*e, '=') && **e != '=') buf_cstr(&frame, *e);
    buf_add(&frame, "", 1);
    if (frame.failed || frame.len > MAX_REQUEST)
        fallback();                     /* stdin not read yet */
    size_t prefix = frame.len;
    int in = strcmp(command, "VERSION") ? read_stdin(&frame, MAX_REQUEST) : 0;
    config = frame.data + prefix;
    config_len = frame.len - prefix;
    bool sent = false;
    if (in == 0) {
        size_t body = frame.len - HEADER;
        for (int i = 0; i < 4; i++)
            frame.data[5 + i] = (char)(body >> (24 - 8 * i) & 0xff);
        sent = send_frame(sock, frame.data, frame.len, fds, nfds);
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    if (!sent)                          /* too large, unreadable, or not all sent: standalone */
        handover(config, config_len, in == 1 || frame.failed);

    /* the reply: "CNIR1" size body, body[0] the kind */
    int timeout = reply_timeout();
    long long first_deadline = now_ms() + (long long)timeout * 1000;
    char header[HEADER];
    size_t got = 0;
    recv_exact(sock, header, HEADER, &got, first_deadline, timeout);
    size_t size = get_be32(header + 5);
    if (memcmp(header, "CNIR1", 5) != 0) try_again("not a cni-plugins reply");
    if (size == 0) try_again("empty reply");
    if (size > MAX_REPLY) try_again("reply too large (%zu bytes announced)", size);
    char *body = malloc(size);
    if (!body) try_again("no memory for a reply of %zu bytes", size);
    recv_exact(sock, body, size, &got, first_deadline, timeout);
    close(sock);
    if (body[0] == 'M' || body[0] == 'U')
        handover(config, config_len, false);    /* mismatch or refused: nothing was done */
    if (body[0] != 'R') try_again("unknown reply kind 0x%02x", (unsigned char)body[0]);

    /* "R" code(1) n(4) stdout(n) stderr(the rest) */
    size_t n = size >= 6 ? get_be32(body + 2) : 0;
    if (size < 6 || n > size - 6) try_again("malformed reply (%zu bytes)", size);
    write_all(2, body + 6 + n, size - 6 - n);
    write_all(1, body + 6, n);
    int code = (unsigned char)body[1];
    free(body);
    free(frame.data);
    return code;
}
