/* Bounded load client for perf/bench_tcp.py (compiled there with cc; never committed as a binary).
 *   tcp_load pingpong HOST PORT CONNS MSGSIZE SECONDS -> "roundtrips N seconds S"
 *   tcp_load bulk HOST PORT BYTES                     -> "bytes N seconds S" (sent and echoed back)
 *   tcp_load idle HOST PORT CONNS                     -> opens CONNS connections, prints "ready", holds them until stdin closes
 * One epoll thread; each ping-pong connection has exactly one message in flight.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static int dial(const char *host, int port) {
    struct sockaddr_in a; memset(&a, 0, sizeof a);
    a.sin_family = AF_INET; a.sin_port = htons(port); inet_pton(AF_INET, host, &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); exit(1); }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: see source\n"); return 2; }
    const char *mode = argv[1], *host = argv[2];
    int port = atoi(argv[3]);
    int ep = epoll_create1(0);
    struct epoll_event evs[1024];
    if (!strcmp(mode, "pingpong")) {
        int n = atoi(argv[4]), size = atoi(argv[5]); double secs = atof(argv[6]);
        int *fds = calloc(n, sizeof(int)), *got = calloc(n, sizeof(int));
        char *msg = malloc(size), buf[65536];
        memset(msg, 'x', size);
        for (int i = 0; i < n; i++) {
            fds[i] = dial(host, port);
            struct epoll_event e = {.events = EPOLLIN, .data.u32 = i};
            epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
        }
        long rt = 0; double t0 = now(), end = t0 + secs;
        for (int i = 0; i < n; i++) send(fds[i], msg, size, 0);
        while (now() < end) {
            int k = epoll_wait(ep, evs, 1024, 100);
            for (int j = 0; j < k; j++) {
                int i = evs[j].data.u32;
                ssize_t r = recv(fds[i], buf, sizeof buf, 0);
                if (r <= 0) { if (r < 0 && errno == EAGAIN) continue; fprintf(stderr, "server closed\n"); return 1; }
                got[i] += r;
                if (got[i] >= size) { got[i] -= size; rt++; send(fds[i], msg, size, 0); }
            }
        }
        printf("roundtrips %ld seconds %.4f\n", rt, now() - t0);
        return 0;
    }
    if (!strcmp(mode, "bulk")) {
        long total = atol(argv[4]), sent = 0, recvd = 0;
        int fd = dial(host, port);
        static char out[1 << 18], in[1 << 18];
        memset(out, 'y', sizeof out);
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT, .data.u32 = 0};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
        double t0 = now();
        while (recvd < total) {
            int k = epoll_wait(ep, evs, 4, 1000);
            if (k <= 0) continue;
            if (sent < total) {
                long want = total - sent < (long)sizeof out ? total - sent : (long)sizeof out;
                ssize_t w = send(fd, out, want, 0);
                if (w > 0) sent += w;
                if (sent == total) { e.events = EPOLLIN; epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e); }
            }
            for (;;) {
                ssize_t r = recv(fd, in, sizeof in, 0);
                if (r > 0) { recvd += r; continue; }
                if (r == 0) { fprintf(stderr, "server closed early\n"); return 1; }
                break;
            }
        }
        printf("bytes %ld seconds %.4f\n", recvd, now() - t0);
        return 0;
    }
    if (!strcmp(mode, "idle")) {
        int n = atoi(argv[4]);
        for (int i = 0; i < n; i++) dial(host, port);
        printf("ready\n"); fflush(stdout);
        char c; while (read(0, &c, 1) > 0) {}
        return 0;
    }
    return 2;
}
