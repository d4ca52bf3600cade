/* powpow's native layer: platform constants and the C functions that
   build_ffi.py declares to cffi (its cdef must match the prototypes here).

   Shim contract: every function returns -errno on failure and retries EINTR
   inside; EAGAIN is just a negative value.  Constants missing on a platform
   are -1 (or the shim returns -ENOSYS), so the cdef is the same everywhere. */
#ifndef POWPOW_H
#define POWPOW_H
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE 1
#endif
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#if defined(__linux__)
#  include <sys/epoll.h>
#  include <sys/eventfd.h>
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
/* PP_NO_SSE2 builds the scalar scanner only (tests compare both builds). */
#if defined(__SSE2__) && !defined(PP_NO_SSE2)
#  define PP_HAVE_SSE2 1
#else
#  define PP_HAVE_SSE2 0
#endif

#ifdef PP_LINUX
#  define PP_HAVE_EPOLL 1
#  define PP_HAVE_EVENTFD 1
#  define PP_HAVE_INOTIFY 1
#else
#  define PP_HAVE_EPOLL 0
#  define PP_HAVE_EVENTFD 0
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

/* pollers: results as flat (token, events) int64 pairs -- pp_sys.c.  The wait
   calls return -EINTR when a signal arrived (not retried: the caller lets the
   interpreter run its handlers, then polls again). */
int pp_epoll_create(void);
int pp_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token);
int pp_epoll_wait(int epfd, int64_t *out, int maxevents, int timeout_ms);
int pp_kqueue_create(void);
int pp_kqueue_ctl(int kq, int fd, int events, int edge, int enable, uint64_t token);
int pp_kqueue_wait(int kq, int64_t *out, int maxevents, int timeout_ms);

/* wake-up and notification fds -- pp_sys.c */
int pp_eventfd(unsigned int initval);
int pp_eventfd_signal(int fd);
int64_t pp_drain(int fd);
int pp_inotify_init(void);
int pp_inotify_add_watch(int fd, const char *path, uint32_t mask);
int pp_inotify_rm_watch(int fd, int wd);

/* sockets and files -- pp_sys.c */
int pp_accept(int fd);
int64_t pp_recv(int fd, char *buf, size_t len);
int64_t pp_read(int fd, char *buf, size_t len);
int64_t pp_send(int fd, const char *buf, size_t len);
int64_t pp_writev(int fd, const struct iovec *iov, int iovcnt);
int64_t pp_sendfile(int out_fd, int in_fd, int64_t offset, size_t count);
int pp_setsockopt_int(int fd, int level, int opt, int value);
int pp_set_linger(int fd, int onoff, int seconds);
int pp_set_cork(int fd, int on);

/* CRLF scanner, SSE2 where available -- pp_scan.c */
int64_t pp_find_crlf(const char *buf, int64_t start, int64_t end);
int64_t pp_find_double_crlf(const char *buf, int64_t start, int64_t end);
int64_t pp_scan_lines(const char *buf, int64_t start, int64_t end,
                      int64_t line_begin, uint32_t *out, int max_out);
#define PP_HEAD_SIG ((int64_t)1 << 28)
#define PP_HEAD_SAME ((int64_t)1 << 29)
#define PP_HEAD_MAX_OUT ((1 << 28) - 1)
int64_t pp_scan_head(const char *b, int64_t start, int64_t end, uint32_t *out, int max_out,
                     uint32_t *colons, char *sig, int64_t sig_cap, const char *last, int64_t last_len);
int pp_same_at(const char *buf, int64_t pos, const char *block, int64_t n);

/* WebSocket masking, SSE2 where available -- pp_ws.c */
void pp_ws_mask(const char *src, char *dst, int64_t n, const unsigned char *key, int64_t phase);

#endif /* POWPOW_H */
