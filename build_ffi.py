"""The one cdef of powpow: builds ``powpow._ffi._native`` (cffi out-of-line API mode).

Contract (see ../shared/DESIGN.md, "Native layer contract"):

* API mode only: the C compiler checks every struct layout and constant, no
  hand-copied ABI.  Constants missing on a platform are defined as -1 (or the
  shim returns ``-ENOSYS``), so the cdef is identical everywhere and the build
  never breaks because a header is absent.
* Every shim returns ``-errno`` on failure and retries ``EINTR`` inside;
  ``EAGAIN`` is just a negative value for Python to compare against.
* One C call per batch: ``pp_epoll_wait``/``pp_kevent_wait`` flatten results
  into a caller-owned ``int64_t`` array as (token, events) pairs; ``pp_scan_lines``
  records every CRLF of a header block and the first forbidden byte in one call.
* No callbacks into Python, no allocation per call.

Only ``powpow/_ffi/`` imports the compiled module.
"""
import cffi

CDEF = r"""
static const int PP_HAVE_EPOLL;
static const int PP_HAVE_KQUEUE;
static const int PP_HAVE_EVENTFD;
static const int PP_HAVE_SIGNALFD;
static const int PP_HAVE_INOTIFY;
static const int PP_HAVE_SSE2;
static const int PP_IOV_MAX;

static const int PP_EV_READ;
static const int PP_EV_WRITE;
static const int PP_EV_ERROR;
static const int PP_EV_HUP;
static const int PP_EV_EDGE;
static const int PP_EV_ONESHOT;

static const int PP_IPPROTO_TCP;
static const int PP_SOL_SOCKET;
static const int PP_TCP_NODELAY;
static const int PP_TCP_CORK;
static const int PP_SO_REUSEPORT;

static const int PP_IN_ACCESS;
static const int PP_IN_MODIFY;
static const int PP_IN_ATTRIB;
static const int PP_IN_CLOSE_WRITE;
static const int PP_IN_MOVED_FROM;
static const int PP_IN_MOVED_TO;
static const int PP_IN_CREATE;
static const int PP_IN_DELETE;
static const int PP_IN_DELETE_SELF;
static const int PP_IN_MOVE_SELF;
static const int PP_IN_ISDIR;
static const int PP_IN_IGNORED;
static const int PP_IN_Q_OVERFLOW;

struct iovec { void *iov_base; size_t iov_len; ...; };

/* pollers: results as flat (token, events) int64 pairs */
int pp_epoll_create(void);
int pp_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token);
int pp_epoll_wait(int epfd, int64_t *out, int maxevents, int timeout_ms);
int pp_kqueue_create(void);
int pp_kqueue_ctl(int kq, int fd, int events, int edge, int enable, uint64_t token);
int pp_kqueue_wait(int kq, int64_t *out, int maxevents, int timeout_ms);

/* wake-up and notification fds */
int pp_eventfd(unsigned int initval);
int pp_eventfd_signal(int fd);
int64_t pp_drain(int fd);
int pp_signalfd(int fd, const int *signums, int n);
int pp_signalfd_read(int fd, int *out, int max);
int pp_inotify_init(void);
int pp_inotify_add_watch(int fd, const char *path, uint32_t mask);
int pp_inotify_rm_watch(int fd, int wd);

/* sockets and files */
int pp_accept(int fd);
int64_t pp_recv(int fd, char *buf, size_t len);
int64_t pp_read(int fd, char *buf, size_t len);
int64_t pp_send(int fd, const char *buf, size_t len);
int64_t pp_writev(int fd, const struct iovec *iov, int iovcnt);
int64_t pp_sendfile(int out_fd, int in_fd, int64_t offset, size_t count);
int pp_setsockopt_int(int fd, int level, int opt, int value);
int pp_set_linger(int fd, int onoff, int seconds);
int pp_set_cork(int fd, int on);

/* scanner (SSE2 with a scalar path giving identical results) */
int64_t pp_find_crlf(const char *buf, int64_t start, int64_t end);
int64_t pp_find_double_crlf(const char *buf, int64_t start, int64_t end);
int64_t pp_scan_lines(const char *buf, int64_t start, int64_t end,
                      int64_t line_begin, uint32_t *out, int max_out);
int64_t pp_scan_lines_scalar(const char *buf, int64_t start, int64_t end,
                             int64_t line_begin, uint32_t *out, int max_out);
int64_t pp_find_crlf_scalar(const char *buf, int64_t start, int64_t end);
int64_t pp_find_double_crlf_scalar(const char *buf, int64_t start, int64_t end);

/* test support: n bytes that end exactly where a PROT_NONE page begins */
char *pp_guarded_alloc(size_t n);
void pp_guarded_free(char *p, size_t n);
"""

SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/mman.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#if defined(__linux__)
#  include <sys/epoll.h>
#  include <sys/eventfd.h>
#  include <sys/signalfd.h>
#  include <sys/inotify.h>
#  include <sys/sendfile.h>
#  define PP_LINUX 1
#endif
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) \
    || defined(__NetBSD__) || defined(__DragonFly__)
#  include <sys/event.h>
#  include <sys/time.h>
#  define PP_BSD 1
#endif
#if defined(__SSE2__)
#  include <emmintrin.h>
#  define PP_HAVE_SSE2 1
#else
#  define PP_HAVE_SSE2 0
#endif

#ifdef PP_LINUX
#  define PP_HAVE_EPOLL 1
#  define PP_HAVE_EVENTFD 1
#  define PP_HAVE_SIGNALFD 1
#  define PP_HAVE_INOTIFY 1
#else
#  define PP_HAVE_EPOLL 0
#  define PP_HAVE_EVENTFD 0
#  define PP_HAVE_SIGNALFD 0
#  define PP_HAVE_INOTIFY 0
#endif
#ifdef PP_BSD
#  define PP_HAVE_KQUEUE 1
#else
#  define PP_HAVE_KQUEUE 0
#endif

#ifdef IOV_MAX
#  define PP_IOV_MAX IOV_MAX
#else
#  define PP_IOV_MAX 1024
#endif

/* Event bits: the epoll/poll values on Linux; kqueue results are mapped onto them. */
#define PP_EV_READ 0x001
#define PP_EV_WRITE 0x004
#define PP_EV_ERROR 0x008
#define PP_EV_HUP 0x010
#define PP_EV_EDGE (1u << 31)
#define PP_EV_ONESHOT (1u << 30)

#define PP_IPPROTO_TCP IPPROTO_TCP
#define PP_SOL_SOCKET SOL_SOCKET
#define PP_TCP_NODELAY TCP_NODELAY
#if defined(TCP_CORK)
#  define PP_TCP_CORK TCP_CORK
#elif defined(TCP_NOPUSH)
#  define PP_TCP_CORK TCP_NOPUSH
#else
#  define PP_TCP_CORK (-1)
#endif
#ifdef SO_REUSEPORT
#  define PP_SO_REUSEPORT SO_REUSEPORT
#else
#  define PP_SO_REUSEPORT (-1)
#endif

#ifdef PP_LINUX
#  define PP_IN_ACCESS IN_ACCESS
#  define PP_IN_MODIFY IN_MODIFY
#  define PP_IN_ATTRIB IN_ATTRIB
#  define PP_IN_CLOSE_WRITE IN_CLOSE_WRITE
#  define PP_IN_MOVED_FROM IN_MOVED_FROM
#  define PP_IN_MOVED_TO IN_MOVED_TO
#  define PP_IN_CREATE IN_CREATE
#  define PP_IN_DELETE IN_DELETE
#  define PP_IN_DELETE_SELF IN_DELETE_SELF
#  define PP_IN_MOVE_SELF IN_MOVE_SELF
#  define PP_IN_ISDIR IN_ISDIR
#  define PP_IN_IGNORED IN_IGNORED
#  define PP_IN_Q_OVERFLOW IN_Q_OVERFLOW
#else
#  define PP_IN_ACCESS (-1)
#  define PP_IN_MODIFY (-1)
#  define PP_IN_ATTRIB (-1)
#  define PP_IN_CLOSE_WRITE (-1)
#  define PP_IN_MOVED_FROM (-1)
#  define PP_IN_MOVED_TO (-1)
#  define PP_IN_CREATE (-1)
#  define PP_IN_DELETE (-1)
#  define PP_IN_DELETE_SELF (-1)
#  define PP_IN_MOVE_SELF (-1)
#  define PP_IN_ISDIR (-1)
#  define PP_IN_IGNORED (-1)
#  define PP_IN_Q_OVERFLOW (-1)
#endif

#define PP_RETRY(expr) do { r = (expr); } while (r < 0 && errno == EINTR)

/* ---------------------------------------------------------------- pollers */

int pp_epoll_create(void) {
#ifdef PP_LINUX
    int r = epoll_create1(EPOLL_CLOEXEC);
    return r < 0 ? -errno : r;
#else
    return -ENOSYS;
#endif
}

int pp_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token) {
#ifdef PP_LINUX
    struct epoll_event ev;
    uint32_t e = 0;
    if (events & PP_EV_READ) e |= EPOLLIN | EPOLLRDHUP;
    if (events & PP_EV_WRITE) e |= EPOLLOUT;
    if (events & PP_EV_EDGE) e |= EPOLLET;
    if (events & PP_EV_ONESHOT) e |= EPOLLONESHOT;
    ev.events = e;
    ev.data.u64 = token;
    return epoll_ctl(epfd, op, fd, &ev) < 0 ? -errno : 0;
#else
    return -ENOSYS;
#endif
}

int pp_epoll_wait(int epfd, int64_t *out, int maxevents, int timeout_ms) {
#ifdef PP_LINUX
    /* The kernel writes its struct epoll_event array (12 bytes each on x86-64,
       16 elsewhere) into the tail of `out`; we then widen event i into the
       16-byte pair i from the front.  Pair i ends at 16(i+1) <= 4M + 12(i+1),
       where event i+1 begins, so nothing is overwritten before it is read. */
    struct epoll_event *evs = (struct epoll_event *)((char *)out
        + 2 * sizeof(int64_t) * (size_t)maxevents - sizeof(struct epoll_event) * (size_t)maxevents);
    int r, i;
    PP_RETRY(epoll_wait(epfd, evs, maxevents, timeout_ms));
    if (r < 0) return -errno;
    for (i = 0; i < r; i++) {
        uint64_t tok = evs[i].data.u64;
        uint32_t e = evs[i].events, m = 0;
        if (e & (EPOLLIN | EPOLLPRI)) m |= PP_EV_READ;
        if (e & EPOLLOUT) m |= PP_EV_WRITE;
        if (e & EPOLLERR) m |= PP_EV_ERROR;
        if (e & (EPOLLHUP | EPOLLRDHUP)) m |= PP_EV_HUP;
        out[2 * i] = (int64_t)tok;
        out[2 * i + 1] = (int64_t)m;
    }
    return r;
#else
    return -ENOSYS;
#endif
}

int pp_kqueue_create(void) {
#ifdef PP_BSD
    int r = kqueue();
    if (r < 0) return -errno;
    fcntl(r, F_SETFD, FD_CLOEXEC);
    return r;
#else
    return -ENOSYS;
#endif
}

int pp_kqueue_ctl(int kq, int fd, int events, int edge, int enable, uint64_t token) {
#ifdef PP_BSD
    /* Both filters are always set: one is added/enabled, the other deleted. */
    struct kevent ch[2];
    int n = 0, r;
    unsigned short flags = EV_ADD | (edge ? EV_CLEAR : 0);
    if (enable && (events & PP_EV_READ))
        EV_SET(&ch[n++], fd, EVFILT_READ, flags, 0, 0, (void *)(uintptr_t)token);
    else
        EV_SET(&ch[n++], fd, EVFILT_READ, EV_DELETE, 0, 0, 0);
    if (enable && (events & PP_EV_WRITE))
        EV_SET(&ch[n++], fd, EVFILT_WRITE, flags, 0, 0, (void *)(uintptr_t)token);
    else
        EV_SET(&ch[n++], fd, EVFILT_WRITE, EV_DELETE, 0, 0, 0);
    for (int i = 0; i < n; i++) {
        PP_RETRY(kevent(kq, &ch[i], 1, NULL, 0, NULL));
        if (r < 0 && errno != ENOENT) return -errno;
    }
    return 0;
#else
    return -ENOSYS;
#endif
}

int pp_kqueue_wait(int kq, int64_t *out, int maxevents, int timeout_ms) {
#ifdef PP_BSD
    struct kevent evs[256];
    struct timespec ts, *tsp = NULL;
    int r, i;
    if (maxevents > 256) maxevents = 256;
    if (timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    PP_RETRY(kevent(kq, NULL, 0, evs, maxevents, tsp));
    if (r < 0) return -errno;
    for (i = 0; i < r; i++) {
        int64_t m = 0;
        if (evs[i].filter == EVFILT_READ) m |= PP_EV_READ;
        if (evs[i].filter == EVFILT_WRITE) m |= PP_EV_WRITE;
        if (evs[i].flags & EV_ERROR) m |= PP_EV_ERROR;
        if (evs[i].flags & EV_EOF) m |= PP_EV_HUP;
        out[2 * i] = (int64_t)(uintptr_t)evs[i].udata;
        out[2 * i + 1] = m;
    }
    return r;
#else
    return -ENOSYS;
#endif
}

/* ---------------------------------------------------------------- fds */

int pp_eventfd(unsigned int initval) {
#ifdef PP_LINUX
    int r = eventfd(initval, EFD_NONBLOCK | EFD_CLOEXEC);
    return r < 0 ? -errno : r;
#else
    return -ENOSYS;
#endif
}

int pp_eventfd_signal(int fd) {
    uint64_t one = 1;
    ssize_t r;
    PP_RETRY(write(fd, &one, sizeof one));
    if (r < 0) return errno == EAGAIN ? 0 : -errno;  /* counter saturated: already awake */
    return 0;
}

int64_t pp_drain(int fd) {
    char buf[4096];
    int64_t total = 0;
    ssize_t r;
    for (;;) {
        PP_RETRY(read(fd, buf, sizeof buf));
        if (r > 0) { total += r; continue; }
        if (r == 0) return total;
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? total : -errno;
    }
}

int pp_signalfd(int fd, const int *signums, int n) {
#ifdef PP_LINUX
    sigset_t set;
    int r;
    sigemptyset(&set);
    for (int i = 0; i < n; i++) sigaddset(&set, signums[i]);
    r = signalfd(fd, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return r < 0 ? -errno : r;
#else
    return -ENOSYS;
#endif
}

int pp_signalfd_read(int fd, int *out, int max) {
#ifdef PP_LINUX
    struct signalfd_siginfo si[16];
    int n = 0;
    ssize_t r;
    if (max > 16) max = 16;
    PP_RETRY(read(fd, si, sizeof(si[0]) * (size_t)max));
    if (r < 0) return (errno == EAGAIN) ? 0 : -errno;
    for (n = 0; n < (int)(r / (ssize_t)sizeof(si[0])); n++) out[n] = (int)si[n].ssi_signo;
    return n;
#else
    return -ENOSYS;
#endif
}

int pp_inotify_init(void) {
#ifdef PP_LINUX
    int r = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    return r < 0 ? -errno : r;
#else
    return -ENOSYS;
#endif
}

int pp_inotify_add_watch(int fd, const char *path, uint32_t mask) {
#ifdef PP_LINUX
    int r = inotify_add_watch(fd, path, mask);
    return r < 0 ? -errno : r;
#else
    return -ENOSYS;
#endif
}

int pp_inotify_rm_watch(int fd, int wd) {
#ifdef PP_LINUX
    return inotify_rm_watch(fd, wd) < 0 ? -errno : 0;
#else
    return -ENOSYS;
#endif
}

/* ---------------------------------------------------------------- sockets */

int pp_accept(int fd) {
    int r;
#ifdef PP_LINUX
    PP_RETRY(accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC));
    return r < 0 ? -errno : r;
#else
    PP_RETRY(accept(fd, NULL, NULL));
    if (r < 0) return -errno;
    fcntl(r, F_SETFL, fcntl(r, F_GETFL) | O_NONBLOCK);
    fcntl(r, F_SETFD, FD_CLOEXEC);
    return r;
#endif
}

int64_t pp_recv(int fd, char *buf, size_t len) {
    ssize_t r;
    PP_RETRY(recv(fd, buf, len, 0));
    return r < 0 ? -errno : (int64_t)r;
}

int64_t pp_read(int fd, char *buf, size_t len) {
    ssize_t r;
    PP_RETRY(read(fd, buf, len));
    return r < 0 ? -errno : (int64_t)r;
}

#ifndef MSG_NOSIGNAL
#  define MSG_NOSIGNAL 0   /* BSD: SO_NOSIGPIPE is set on the socket instead */
#endif

int64_t pp_send(int fd, const char *buf, size_t len) {
    ssize_t r;
    PP_RETRY(send(fd, buf, len, MSG_NOSIGNAL));
    return r < 0 ? -errno : (int64_t)r;
}

int64_t pp_writev(int fd, const struct iovec *iov, int iovcnt) {
    ssize_t r;
    if (iovcnt > PP_IOV_MAX) iovcnt = PP_IOV_MAX;
    if (iovcnt <= 0) return 0;
    PP_RETRY(writev(fd, iov, iovcnt));
    return r < 0 ? -errno : (int64_t)r;
}

int64_t pp_sendfile(int out_fd, int in_fd, int64_t offset, size_t count) {
#if defined(PP_LINUX)
    off_t off = (off_t)offset;
    ssize_t r;
    PP_RETRY(sendfile(out_fd, in_fd, &off, count));
    return r < 0 ? -errno : (int64_t)r;
#elif defined(__APPLE__)
    off_t len = (off_t)count;
    int r = sendfile(in_fd, out_fd, (off_t)offset, &len, NULL, 0);
    if (r < 0 && len == 0) return errno == EINTR ? -EAGAIN : -errno;
    return (int64_t)len;
#elif defined(__FreeBSD__) || defined(__DragonFly__)
    off_t sbytes = 0;
    int r = sendfile(in_fd, out_fd, (off_t)offset, count, NULL, &sbytes, 0);
    if (r < 0 && sbytes == 0) return errno == EINTR ? -EAGAIN : -errno;
    return (int64_t)sbytes;
#else
    return -ENOSYS;
#endif
}

int pp_setsockopt_int(int fd, int level, int opt, int value) {
    if (opt < 0) return -ENOPROTOOPT;
    return setsockopt(fd, level, opt, &value, sizeof value) < 0 ? -errno : 0;
}

int pp_set_linger(int fd, int onoff, int seconds) {
    struct linger l;
    l.l_onoff = onoff;
    l.l_linger = seconds;
    return setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) < 0 ? -errno : 0;
}

int pp_set_cork(int fd, int on) {
    return pp_setsockopt_int(fd, IPPROTO_TCP, PP_TCP_CORK, on);
}

/* ---------------------------------------------------------------- scanner
   Semantics shared with the pure twins in powpow/_ffi/_scan.py:
   find_crlf: offset of the CR of the first "\r\n" wholly inside [start, end), or -1.
   find_double_crlf: offset of the first "\r\n\r\n" wholly inside [start, end), or -1.
   scan_lines: walk [start, end); record the offset of the CR of every CRLF in
   out[]; stop after a CRLF that begins a line (offset == line_begin, or == end
   of the previous CRLF: the blank line that ends a header block), when out is
   full, or at the first forbidden byte (a control byte other than HTAB, i.e.
   0x00-0x08, 0x0A-0x1F, 0x7F, where CR and LF are allowed only as a CRLF pair).
   A CR in the last byte is pending (its LF may still arrive) and not forbidden.
   Returns n | ((bad + 1) << 32), bad = -1 if none. */

static inline int pp_is_special(unsigned char c) {
    return (c < 0x20 && c != 0x09) || c == 0x7f;
}

int64_t pp_find_crlf_scalar(const char *b, int64_t start, int64_t end) {
    const unsigned char *buf = (const unsigned char *)b;
    for (int64_t i = start; i + 1 < end; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n') return i;
    return -1;
}

int64_t pp_find_crlf(const char *b, int64_t start, int64_t end) {
    int64_t i = start;
#if PP_HAVE_SSE2
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    /* Compare block i against CR and block i+1 against LF: a pair that
       straddles two 16-byte blocks is found like any other. */
    while (i + 17 <= end) {
        __m128i a = _mm_loadu_si128((const __m128i *)(b + i));
        __m128i c = _mm_loadu_si128((const __m128i *)(b + i + 1));
        int m = _mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(a, cr), _mm_cmpeq_epi8(c, lf)));
        if (m) return i + __builtin_ctz((unsigned)m);
        i += 16;
    }
#endif
    return pp_find_crlf_scalar(b, i, end);
}

int64_t pp_find_double_crlf_scalar(const char *b, int64_t start, int64_t end) {
    const unsigned char *buf = (const unsigned char *)b;
    for (int64_t i = start; i + 3 < end; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n')
            return i;
    return -1;
}

int64_t pp_find_double_crlf(const char *b, int64_t start, int64_t end) {
    int64_t i = start;
#if PP_HAVE_SSE2
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    while (i + 19 <= end) {
        __m128i m0 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(b + i)), cr);
        __m128i m1 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(b + i + 1)), lf);
        __m128i m2 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(b + i + 2)), cr);
        __m128i m3 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(b + i + 3)), lf);
        int m = _mm_movemask_epi8(_mm_and_si128(_mm_and_si128(m0, m1), _mm_and_si128(m2, m3)));
        if (m) return i + __builtin_ctz((unsigned)m);
        i += 16;
    }
#endif
    return pp_find_double_crlf_scalar(b, i, end);
}

/* Handle the special byte at i.  Returns 1 to stop, 0 to go on (with *pi advanced). */
static inline int pp_scan_special(const unsigned char *buf, int64_t *pi, int64_t end,
                                  int64_t *line_begin, uint32_t *out, int *n, int max_out,
                                  int64_t *bad) {
    int64_t i = *pi;
    if (buf[i] == '\r') {
        if (i + 1 >= end) return 1;                 /* pending CR */
        if (buf[i + 1] != '\n') { *bad = i; return 1; }
        out[(*n)++] = (uint32_t)i;
        if (i == *line_begin) return 1;             /* blank line: block ends */
        *line_begin = i + 2;
        *pi = i + 2;
        return *n >= max_out;
    }
    *bad = i;
    return 1;
}

int64_t pp_scan_lines_scalar(const char *b, int64_t start, int64_t end,
                             int64_t line_begin, uint32_t *out, int max_out) {
    const unsigned char *buf = (const unsigned char *)b;
    int64_t i = start, bad = -1;
    int n = 0;
    if (max_out <= 0) return 0;
    while (i < end) {
        if (!pp_is_special(buf[i])) { i++; continue; }
        if (pp_scan_special(buf, &i, end, &line_begin, out, &n, max_out, &bad)) break;
    }
    return (int64_t)n | ((bad + 1) << 32);
}

int64_t pp_scan_lines(const char *b, int64_t start, int64_t end,
                      int64_t line_begin, uint32_t *out, int max_out) {
#if PP_HAVE_SSE2
    const unsigned char *buf = (const unsigned char *)b;
    const __m128i c1f = _mm_set1_epi8(0x1f), c7f = _mm_set1_epi8(0x7f), tab = _mm_set1_epi8(0x09);
    int64_t i = start, bad = -1;
    int n = 0;
    if (max_out <= 0) return 0;
    while (i < end) {
        if (i + 16 <= end) {
            /* special = (v <= 0x1f unsigned, except HTAB) or v == 0x7f */
            __m128i v = _mm_loadu_si128((const __m128i *)(buf + i));
            __m128i low = _mm_cmpeq_epi8(_mm_max_epu8(v, c1f), c1f);
            __m128i sp = _mm_andnot_si128(_mm_cmpeq_epi8(v, tab), _mm_or_si128(low, _mm_cmpeq_epi8(v, c7f)));
            int m = _mm_movemask_epi8(sp);
            if (!m) { i += 16; continue; }
            i += __builtin_ctz((unsigned)m);
        } else if (!pp_is_special(buf[i])) {
            i++;
            continue;
        }
        if (pp_scan_special(buf, &i, end, &line_begin, out, &n, max_out, &bad)) break;
    }
    return (int64_t)n | ((bad + 1) << 32);
#else
    return pp_scan_lines_scalar(b, start, end, line_begin, out, max_out);
#endif
}

/* ---------------------------------------------------------------- tests */

char *pp_guarded_alloc(size_t n) {
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = (n + (size_t)page - 1) / (size_t)page + 1;
    char *base = mmap(NULL, pages * (size_t)page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return NULL;
    mprotect(base + (pages - 1) * (size_t)page, (size_t)page, PROT_NONE);
    return base + (pages - 1) * (size_t)page - n;
}

void pp_guarded_free(char *p, size_t n) {
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = (n + (size_t)page - 1) / (size_t)page + 1;
    char *base = p + n - (pages - 1) * (size_t)page;
    munmap(base, pages * (size_t)page);
}
"""

ffibuilder = cffi.FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "powpow._ffi._native",
    SOURCE,
    extra_compile_args=["-O2", "-std=gnu99"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
