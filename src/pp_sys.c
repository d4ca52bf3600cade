/* System call shims of powpow's native layer: pollers, wake-up and
   notification fds, sockets, sendfile.  See powpow.h for the contract. */
#include "powpow.h"

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
    (void)epfd;
    (void)op;
    (void)fd;
    (void)events;
    (void)token;
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
    /* EINTR is returned, not retried: the caller goes back to the interpreter,
       which runs the signal's Python handler (Ctrl-C's KeyboardInterrupt), and
       polls again with a fresh timeout.  Retrying here would leave a loop with
       no timers deaf to Ctrl-C until some fd became ready. */
    r = epoll_wait(epfd, evs, maxevents, timeout_ms);
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
    (void)epfd;
    (void)out;
    (void)maxevents;
    (void)timeout_ms;
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
    (void)kq;
    (void)fd;
    (void)events;
    (void)edge;
    (void)enable;
    (void)token;
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
    r = kevent(kq, NULL, 0, evs, maxevents, tsp);  /* EINTR returned: see pp_epoll_wait */
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
    (void)kq;
    (void)out;
    (void)maxevents;
    (void)timeout_ms;
    return -ENOSYS;
#endif
}

/* ---------------------------------------------------------------- fds */

int pp_eventfd(unsigned int initval) {
#ifdef PP_LINUX
    int r = eventfd(initval, EFD_NONBLOCK | EFD_CLOEXEC);
    return r < 0 ? -errno : r;
#else
    (void)initval;
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
    (void)fd;
    (void)path;
    (void)mask;
    return -ENOSYS;
#endif
}

int pp_inotify_rm_watch(int fd, int wd) {
#ifdef PP_LINUX
    return inotify_rm_watch(fd, wd) < 0 ? -errno : 0;
#else
    (void)fd;
    (void)wd;
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
    (void)out_fd;
    (void)in_fd;
    (void)offset;
    (void)count;
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
