"""The one cdef of powpow: builds ``powpow._ffi._native`` (cffi out-of-line API mode).

The C lives in ``src/``: ``powpow.h`` (constants, prototypes), ``pp_sys.c``
(syscall shims), ``pp_scan.c`` (the CRLF scanner), ``pp_ws.c`` (WebSocket
masking), ``pp_cpy.c`` (CPython only: GC-free Timer instances), ``pp_cpyio.c`` (CPython
only: the stream hot path's socket calls as FASTCALL builtins).  It compiles with
``-Wall -Wextra`` without a warning; ``tests/native`` builds a separate,
test-only module from the same ``pp_scan.c`` that also exposes the scalar
scanner and a guard-page allocator -- neither ships in ``_native``.

Contract (see ../shared/DESIGN.md, "Native layer contract"):

* API mode only: the C compiler checks every struct layout and constant, no
  hand-copied ABI.  Constants missing on a platform are defined as -1 (or the
  shim returns ``-ENOSYS``), so the cdef is identical everywhere and the build
  never breaks because a header is absent.
* Every shim returns ``-errno`` on failure and retries ``EINTR`` inside;
  ``EAGAIN`` is just a negative value for Python to compare against.
* One C call per batch: ``pp_epoll_wait``/``pp_kqueue_wait`` flatten results
  into a caller-owned ``int64_t`` array as (token, events) pairs; ``pp_scan_lines``
  records every CRLF of a header block and the first forbidden byte in one call.
* No callbacks into Python, no allocation per call.

Only ``powpow/_ffi/`` imports the compiled module.
"""
import os

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
SOURCES = ["pp_sys.c", "pp_scan.c", "pp_ws.c", "pp_cpy.c", "pp_cpyio.c"]
CFLAGS = ["-O2", "-std=gnu99", "-Wall", "-Wextra"]

CDEF = r"""
static const int PP_HAVE_EPOLL;
static const int PP_HAVE_KQUEUE;
static const int PP_HAVE_EVENTFD;
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

/* scanner: SSE2 where available, scalar tails (identical results) */
int64_t pp_find_crlf(const char *buf, int64_t start, int64_t end);
int64_t pp_find_double_crlf(const char *buf, int64_t start, int64_t end);
int64_t pp_scan_lines(const char *buf, int64_t start, int64_t end,
                      int64_t line_begin, uint32_t *out, int max_out);
/* scan_lines of a head + colon offset of every field line + names signature (pp_scan.c) */
int64_t pp_scan_head(const char *b, int64_t start, int64_t end, uint32_t *out, int max_out,
                     uint32_t *colons, char *sig, int64_t sig_cap, const char *last, int64_t last_len);
/* 1 if buf[pos:pos+n] == block[:n] (memcmp; the caller checks the bounds) */
int pp_same_at(const char *buf, int64_t pos, const char *block, int64_t n);

/* CPython: instances of this class (id(cls)) are not tracked by the cyclic GC (pp_cpy.c) */
int pp_gc_untrack_type(intptr_t type_addr);

/* ---- I/O (issue 13): CPython-only FASTCALL socket builtins put into a dict (pp_cpyio.c) ---- */
int pp_cpy_io_install(intptr_t dict_addr);
/* ---- end of I/O block ---- */

/* WebSocket: dst[i] = src[i] ^ key[(i + phase) % 4]; src == dst allowed */
void pp_ws_mask(const char *src, char *dst, int64_t n, const unsigned char *key, int64_t phase);
"""


def _rel(path: str) -> str:
    # setuptools wants source paths relative to the project root (the cwd of
    # a pip build); keep them relative when they are below the cwd.
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


ffibuilder = cffi.FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "powpow._ffi._native",
    '#include "powpow.h"\n',
    sources=[_rel(os.path.join(SRC, name)) for name in SOURCES],
    include_dirs=[_rel(SRC)],
    depends=[_rel(os.path.join(SRC, "powpow.h"))],
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":
    os.chdir(HERE)
    ffibuilder.compile(verbose=True)
