/*
 * echobench calibration reference: a minimal epoll closed-loop echo client.
 *
 * Not the load generator. It tells how close loadgen/run.py gets to what
 * the machine can do: C, one thread, one epoll set, depth 1, every echo
 * compared with what was sent (memcmp).
 *
 *   echo_client HOST PORT CONNS SIZE DURATION_S WARMUP_S
 *
 * Prints "measure-start" on stdout when the warm-up ends, then one JSON line:
 *   {"messages": N, "seconds": S, "cpu_s": C, "errors": E, "mismatches": M, "epoll_waits": W, "epoll_events": V}
 * (W and V over the measured window: V / W is how many ready connections one wake-up found)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t got;
    uint64_t seq;
    uint64_t count;
    unsigned char *sbuf, *rbuf;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int send_all(int fd, const unsigned char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void stamp(struct conn *c, size_t size) {
    /* the payload depends on connection and sequence: a misplaced echo cannot match */
    size_t k = size < 8 ? size : 8;
    memcpy(c->sbuf, &c->seq, k);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT CONNS SIZE DURATION_S WARMUP_S\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), nconns = atoi(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    double duration = atof(argv[5]), warmup = atof(argv[6]);
    if (nconns < 1 || size < 1 || duration <= 0) {
        fprintf(stderr, "echo_client: bad arguments\n");
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "echo_client: %s is not an IPv4 address\n", host);
        return 2;
    }
    int ep = epoll_create1(0);
    struct conn *cs = calloc((size_t)nconns, sizeof *cs);
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &cs[i];
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            fprintf(stderr, "echo_client: connect: %s\n", strerror(errno));
            return 3;
        }
        c->sbuf = malloc(size);
        c->rbuf = malloc(size);
        for (size_t j = 0; j < size; j++) c->sbuf[j] = (unsigned char)(i * 131 + j * 7);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    for (int i = 0; i < nconns; i++) {
        stamp(&cs[i], size);
        if (send_all(cs[i].fd, cs[i].sbuf, size) < 0) return 3;
    }
    double t0 = now_s(), t_measure = t0 + warmup, t_end = t_measure + duration;
    int measuring = 0;
    uint64_t base = 0, total = 0, errors = 0, mismatches = 0, waits = 0, events = 0;
    double cpu0 = 0, tm0 = 0;
    struct epoll_event evs[1024];
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, 10);
        double t = now_s();
        if (!measuring && t >= t_measure) {
            measuring = 1;
            base = total;
            cpu0 = cpu_s();
            tm0 = t;
            printf("measure-start\n");
            fflush(stdout);
        }
        if (t >= t_end) break;
        if (measuring && n > 0) { /* how bursty the echoes came: ready connections per epoll wake-up */
            waits++;
            events += (uint64_t)n;
        }
        for (int e = 0; e < n; e++) {
            struct conn *c = evs[e].data.ptr;
            ssize_t k = recv(c->fd, c->rbuf + c->got, size - c->got, 0);
            if (k <= 0) {
                if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            c->got += (size_t)k;
            if (c->got < size) continue;
            if (memcmp(c->rbuf, c->sbuf, size) != 0) mismatches++;
            c->got = 0;
            c->seq++;
            c->count++;
            total++;
            stamp(c, size);
            if (send_all(c->fd, c->sbuf, size) < 0) errors++;
        }
    }
    double secs = now_s() - tm0, cpu = cpu_s() - cpu0;
    printf("{\"messages\": %llu, \"seconds\": %.6f, \"cpu_s\": %.6f, \"errors\": %llu, \"mismatches\": %llu, "
           "\"epoll_waits\": %llu, \"epoll_events\": %llu}\n",
           (unsigned long long)(total - base), secs, cpu, (unsigned long long)errors, (unsigned long long)mismatches,
           (unsigned long long)waits, (unsigned long long)events);
    return (errors || mismatches) ? 1 : 0;
}
