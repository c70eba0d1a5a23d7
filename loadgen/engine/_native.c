/* The native load-generator engine: the per-message loop of stream connections (TCP and Unix sockets) in C.
 *
 * Python (loadgen/engine/native.py) connects the sockets, starts the run, reports once a second and merges;
 * this module owns everything between: one epoll loop per worker process that sends messages, checks every
 * echoed byte against what was sent, records latencies and keeps the open-loop schedule. The semantics are
 * those of the Python engine (loadgen/engine/stream.py), so results from the two are comparable:
 *
 *   - message seq of connection c is a 16-byte header (c u32, MAGIC u32, seq u64, big-endian) and the body
 *     ring[seq & mask]; below 16 bytes it is ring[(seq + c * 131) & mask] (loadgen/payload.py);
 *   - an echo that differs is "sequence" when it is another message of this connection (fatal: the stream is
 *     out of step) and "corrupt" otherwise (counted, the connection goes on); bytes when nothing is in flight
 *     are "unexpected" (fatal); an echo not complete after --timeout is "lost" (fatal);
 *   - closed loop: `depth` messages in flight, the next sent the moment an echo completes;
 *   - open loop: message k is due at first_due + k * interval, or with a load profile (loadgen/profile.py) at
 *     first_due + T(id + k * sconns), T the schedule's inverse count over its phases; one sent late because the window was full is
 *     timed from when it was due (coordinated omission corrected), one sent late because the timer fired late
 *     from busy_since (the client's own lag, recorded apart);
 *   - an echo counts when it completes inside [warm_ns, end_ns); nothing is sent at or after end_ns.
 *
 * Every byte from the peer is checked against the expected message before anything else uses it; nothing
 * from the peer is ever used as a length or an index except the received header's sequence number, which
 * is only masked into the ring. Memory is bounded: per connection `depth` slots, per worker one receive
 * buffer, and sample arrays that Python empties at least once per second (run() returns early when they
 * hold RETURN_SAMPLES). The GIL is released for the whole of run(); no Python object is touched there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <math.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0xEC40BE4Cu
#define HDR 16
#define RX_BUF (256 * 1024)
#define TX_BUF (64 * 1024) /* whole messages up to this many bytes are built contiguously and sent with send() */
#define MAX_EVENTS 512
#define MAX_KINDS 16
#define KIND_LEN 32
#define N_SAMPLES 5
#define SAMPLE_LEN 240
#define RETURN_SAMPLES ((size_t)1 << 20) /* run() hands back to Python when a sample array holds this many */
#define IOV_USE 64
#define WAKE_TAG UINT64_MAX

enum { I_CORRUPT, I_SEQUENCE, I_UNEXPECTED, I_LOST, I_KINDS };
static const char *const ikind_names[I_KINDS] = {"corrupt", "sequence", "unexpected", "lost"};

enum { ST_DEADLINE = 0, ST_DONE = 1, ST_WAKE = 2, ST_FULL = 3 };

static int have_pwait2 = 1; /* cleared once epoll_pwait2 is found missing or denied: epoll_wait (ms) then */

/* The per-message system calls, made directly. glibc's send(), recv() and epoll_wait() are cancellation points:
   in a process that has ever had a second thread (a Python worker has: numpy, the interpreter's helpers) each
   call also toggles the thread's cancellation state, two atomic operations that cost ~2% of the client's CPU
   per echo here (perf). The engine never uses thread cancellation, so the plain system calls are equivalent. */
#if defined(SYS_sendto) && defined(SYS_recvfrom) && defined(SYS_sendmsg)
static inline ssize_t sys_send(int fd, const void *buf, size_t len) {
    return syscall(SYS_sendto, fd, buf, len, MSG_NOSIGNAL, NULL, 0);
}
static inline ssize_t sys_recv(int fd, void *buf, size_t len) {
    return syscall(SYS_recvfrom, fd, buf, len, 0, NULL, NULL);
}
static inline ssize_t sys_sendmsg(int fd, const struct msghdr *mh) {
    return syscall(SYS_sendmsg, fd, mh, MSG_NOSIGNAL);
}
#else /* architectures that multiplex sockets through socketcall (old i386 headers): the libc calls */
static inline ssize_t sys_send(int fd, const void *buf, size_t len) { return send(fd, buf, len, MSG_NOSIGNAL); }
static inline ssize_t sys_recv(int fd, void *buf, size_t len) { return recv(fd, buf, len, 0); }
static inline ssize_t sys_sendmsg(int fd, const struct msghdr *mh) { return sendmsg(fd, mh, MSG_NOSIGNAL); }
#endif
static inline int sys_epoll_wait_ms(int ep, struct epoll_event *evs, int n, int ms) {
    return (int)syscall(SYS_epoll_pwait, ep, evs, n, ms, NULL, (size_t)8);
}

typedef struct {
    int64_t start, sent;
} Slot;

typedef struct {
    int fd;
    uint32_t id;
    int dead;
    int out_armed;   /* EPOLLOUT registered: bytes are waiting for room in the socket */
    uint64_t seq;    /* next sequence number to create; the oldest in flight is seq - qlen */
    Slot *q;         /* `depth` slots, oldest at qhead */
    uint32_t qhead, qlen;
    uint64_t tx_seq; /* messages [tx_seq, seq) are not completely written; tx_off bytes of tx_seq are */
    size_t tx_off;
    size_t rx_off;   /* bytes of the oldest message already back */
    int rx_bad;      /* the echo being received differs from the message sent */
    int alt_ok;      /* ... and so far equals message alt_seq of this connection (a "sequence" failure) */
    uint64_t alt_seq;
    int64_t first_diff;
    uint8_t rxhdr[HDR]; /* the received header (or the whole of a message shorter than HDR) */
    int64_t count, warm, drained;
    int64_t first_due, busy_since, timer_at;
    int64_t phase;
    Py_ssize_t heap_pos; /* -1: no timer armed */
    Py_ssize_t cursor;   /* profile: the phase this connection's next message falls in (only moves forward) */
} Conn;

typedef struct {
    int64_t *v;
    size_t n, cap;
} Samples;

typedef struct {
    PyObject_HEAD
    Conn *conns;
    Slot *slots;
    Py_ssize_t n;
    int ep;
    int wake_fd;
    size_t size, body;
    uint32_t depth;
    int tiny;
    uint8_t *ring;
    uint32_t mask;
    int64_t interval; /* 0: closed loop (1 with a profile: open loop, the schedule decides) */
    Py_ssize_t nph;   /* profile: its phases (0: none); per phase start_s, dur_s, rate_from, rate_to, cum */
    double *ph;       /* nph x PH_FIELDS, all from Python (loadgen/profile.py), so both engines share the numbers */
    int64_t ptotal;   /* messages the whole profile makes due: message n >= ptotal is never due */
    int64_t sconns;   /* connections in the whole run: connection id sends messages id, id + sconns, ... */
    int64_t warm_ns, end_ns;
    int sending, done, started;
    char outcome[256];
    int has_outcome;
    Py_ssize_t live;
    Samples lat, unc, lag;
    Py_ssize_t *heap;
    Py_ssize_t heap_n;
    char kinds[MAX_KINDS][KIND_LEN];
    int64_t kind_n[MAX_KINDS];
    int nkinds;
    int64_t integ[I_KINDS];
    char samples[N_SAMPLES][SAMPLE_LEN];
    int nsamples;
    uint8_t *rxbuf;
    uint8_t *txbuf;
    int64_t waits, events; /* epoll waits that returned events, and those events: how bursty the echoes came */
    int ready;             /* __init__ succeeded: every method refuses a half-made engine */
} Engine;

static int check_ready(Engine *e) {
    if (!e->ready)
        PyErr_SetString(PyExc_RuntimeError, "the engine was not initialised");
    return e->ready;
}

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* time.perf_counter_ns() on Linux */
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static inline uint32_t get_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void make_hdr(uint8_t *h, uint32_t id, uint64_t seq) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* three stores instead of sixteen: this runs twice per message (to send it and to check its echo) */
    uint32_t a = __builtin_bswap32(id), m = __builtin_bswap32(MAGIC);
    uint64_t s = __builtin_bswap64(seq);
    memcpy(h, &a, 4);
    memcpy(h + 4, &m, 4);
    memcpy(h + 8, &s, 8);
#else
    put_be32(h, id);
    put_be32(h + 4, MAGIC);
    put_be32(h + 8, (uint32_t)(seq >> 32));
    put_be32(h + 12, (uint32_t)seq);
#endif
}

/* The ring holds one `size`-byte message template per body: a 16-byte header slot, then the body (a tiny
   message is its ring entry, with no slot). The engine is single-threaded and send() copies at once, so the
   slot is written with a message's header just before that message is sent or checked: a whole message is
   then one contiguous buffer, with no copy. */
static inline uint8_t *template_of(const Engine *e, const Conn *c, uint64_t seq) {
    if (e->tiny)
        return e->ring + (size_t)((seq + (uint64_t)c->id * 131u) & e->mask) * e->size;
    return e->ring + (size_t)(seq & e->mask) * e->size;
}

/* Message seq, whole and contiguous (its header written into the template's slot). */
static inline const uint8_t *message_of(const Engine *e, const Conn *c, uint64_t seq) {
    uint8_t *m = template_of(e, c, seq);
    if (!e->tiny)
        make_hdr(m, c->id, seq);
    return m;
}

/* The body of message seq (the whole message when tiny). */
static inline const uint8_t *body_of(const Engine *e, const Conn *c, uint64_t seq) {
    return template_of(e, c, seq) + (e->tiny ? 0 : HDR);
}

static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    size_t i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* -- bookkeeping --------------------------------------------------------------------------------------- */

static void finish(Engine *e, const char *reason) {
    if (reason != NULL && !e->has_outcome) {
        snprintf(e->outcome, sizeof e->outcome, "%s", reason);
        e->has_outcome = 1;
    }
    e->sending = 0;
    e->done = 1;
}

static int grow(Engine *e, Samples *s) {
    size_t cap = s->cap ? s->cap * 2 : 65536;
    int64_t *v = realloc(s->v, cap * sizeof *v);
    if (v == NULL) {
        finish(e, "out of memory for latency samples");
        return -1;
    }
    s->v = v;
    s->cap = cap;
    return 0;
}

static inline void push(Engine *e, Samples *s, int64_t x) {
    if (s->n == s->cap && grow(e, s) < 0)
        return;
    s->v[s->n++] = x;
}

static void add_error(Engine *e, const char *kind) {
    for (int i = 0; i < e->nkinds; i++) {
        if (strcmp(e->kinds[i], kind) == 0) {
            e->kind_n[i]++;
            return;
        }
    }
    int i;
    if (e->nkinds < MAX_KINDS - 1) {
        i = e->nkinds++;
        snprintf(e->kinds[i], KIND_LEN, "%s", kind);
    } else { /* the last slot takes every further kind */
        i = MAX_KINDS - 1;
        if (e->nkinds == MAX_KINDS - 1) {
            e->nkinds++;
            snprintf(e->kinds[i], KIND_LEN, "other");
        }
    }
    e->kind_n[i]++;
}

static void errno_kind(int err, char *kind, size_t klen, char *detail, size_t dlen) {
    if (err == ECONNRESET)
        snprintf(kind, klen, "reset");
    else
        snprintf(kind, klen, "errno:%d", err); /* Python names it after the exception class, as its engine does */
    snprintf(detail, dlen, "[Errno %d] %s", err, strerror(err));
}

static void unregister(Engine *e, Conn *c);

static void check_drained(Engine *e) {
    if (e->sending || e->done)
        return;
    for (Py_ssize_t i = 0; i < e->n; i++) {
        const Conn *c = &e->conns[i];
        if (!c->dead && (c->qlen || c->rx_off))
            return;
    }
    finish(e, NULL);
}

/* The server reset or closed a connection: the run cannot go on honestly. */
static void conn_lost(Engine *e, Conn *c, const char *kind, const char *detail) {
    if (c->dead)
        return;
    c->dead = 1;
    unregister(e, c);
    add_error(e, kind);
    e->live--;
    if (e->sending || c->qlen) {
        char why[256];
        snprintf(why, sizeof why, "connection %u lost mid-run: %s", c->id, detail);
        finish(e, why);
    }
}

/* Closed by us after a fatal integrity failure. */
static void conn_close(Engine *e, Conn *c) {
    if (c->dead)
        return;
    c->dead = 1;
    unregister(e, c);
    shutdown(c->fd, SHUT_RDWR);
    e->live--;
    if (e->live <= 0)
        finish(e, "every connection was closed after integrity failures");
    else if (!e->sending)
        check_drained(e);
}

static void integrity(Engine *e, Conn *c, int kind, const char *detail, int fatal) {
    e->integ[kind]++;
    if (e->nsamples < N_SAMPLES)
        snprintf(e->samples[e->nsamples++], SAMPLE_LEN, "connection %u: %s", c->id, detail);
    if (fatal)
        conn_close(e, c);
}

/* -- timers (open loop): a binary min-heap of connections by timer_at ------------------------------------ */

static inline void heap_set(Engine *e, Py_ssize_t i, Py_ssize_t ci) {
    e->heap[i] = ci;
    e->conns[ci].heap_pos = i;
}

static void heap_up(Engine *e, Py_ssize_t i) {
    Py_ssize_t ci = e->heap[i];
    int64_t at = e->conns[ci].timer_at;
    while (i > 0) {
        Py_ssize_t p = (i - 1) / 2;
        if (e->conns[e->heap[p]].timer_at <= at)
            break;
        heap_set(e, i, e->heap[p]);
        i = p;
    }
    heap_set(e, i, ci);
}

static void heap_down(Engine *e, Py_ssize_t i) {
    Py_ssize_t ci = e->heap[i];
    int64_t at = e->conns[ci].timer_at;
    for (;;) {
        Py_ssize_t l = 2 * i + 1, m = i;
        int64_t best = at;
        if (l < e->heap_n && e->conns[e->heap[l]].timer_at < best)
            m = l, best = e->conns[e->heap[l]].timer_at;
        if (l + 1 < e->heap_n && e->conns[e->heap[l + 1]].timer_at < best)
            m = l + 1;
        if (m == i)
            break;
        heap_set(e, i, e->heap[m]);
        i = m;
    }
    heap_set(e, i, ci);
}

static void timer_arm(Engine *e, Conn *c, int64_t at) {
    c->timer_at = at;
    Py_ssize_t i = e->heap_n++;
    heap_set(e, i, c - e->conns);
    heap_up(e, i);
}

static void timer_cancel(Engine *e, Conn *c) {
    Py_ssize_t i = c->heap_pos;
    if (i < 0)
        return;
    c->heap_pos = -1;
    Py_ssize_t last = --e->heap_n;
    if (i != last) {
        Py_ssize_t moved = e->heap[last];
        heap_set(e, i, moved);
        heap_up(e, i);
        heap_down(e, e->conns[moved].heap_pos);
    }
}

static void unregister(Engine *e, Conn *c) {
    timer_cancel(e, c);
    epoll_ctl(e->ep, EPOLL_CTL_DEL, c->fd, NULL);
}

/* -- sending ------------------------------------------------------------------------------------------- */

static inline void enqueue(Engine *e, Conn *c, int64_t start, int64_t sent) {
    uint32_t at = c->qhead + c->qlen; /* < 2 * depth: one subtraction, no division per message */
    Slot *s = &c->q[at >= e->depth ? at - e->depth : at];
    s->start = start;
    s->sent = sent;
    c->qlen++;
    c->seq++;
}

static void set_out(Engine *e, Conn *c, int on) {
    if (c->out_armed == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.u64 = (uint64_t)(c - e->conns)};
    epoll_ctl(e->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->out_armed = on;
}

/* Write what is queued; wait for EPOLLOUT when the socket is full. */
static void flush_slow(Engine *e, Conn *c) {
    uint8_t hdrs[IOV_USE][HDR]; /* a 16-byte message (no body) takes one iovec: up to IOV_USE headers */
    while (c->tx_seq < c->seq && !c->dead) {
        ssize_t w;
        uint64_t pending = c->seq - c->tx_seq;
        if (pending == 1 || (c->tx_off == 0 && pending <= TX_BUF / e->size)) {
            /* the common cases: one message (or what is left of it) straight from its template, or a few small
               ones copied into one buffer; one send(), cheaper in the kernel than sendmsg() with iovecs */
            if (pending == 1) {
                w = sys_send(c->fd, message_of(e, c, c->tx_seq) + c->tx_off, e->size - c->tx_off);
            } else {
                uint8_t *p = e->txbuf;
                for (uint64_t s = c->tx_seq; s < c->seq; s++) {
                    memcpy(p, message_of(e, c, s), e->size);
                    p += e->size;
                }
                w = sys_send(c->fd, e->txbuf, (size_t)(p - e->txbuf));
            }
            goto sent;
        }
        struct iovec iov[IOV_USE];
        int k = 0, h = 0;
        uint64_t s = c->tx_seq;
        size_t off = c->tx_off;
        while (s < c->seq && k < IOV_USE - 1) {
            if (e->tiny) {
                iov[k].iov_base = (void *)(body_of(e, c, s) + off);
                iov[k++].iov_len = e->size - off;
            } else {
                if (off < HDR) {
                    make_hdr(hdrs[h], c->id, s);
                    iov[k].iov_base = hdrs[h++] + off;
                    iov[k++].iov_len = HDR - off;
                    off = HDR;
                }
                if (e->body) {
                    iov[k].iov_base = (void *)(body_of(e, c, s) + (off - HDR));
                    iov[k++].iov_len = e->size - off;
                }
            }
            s++;
            off = 0;
        }
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)k};
        w = sys_sendmsg(c->fd, &mh);
    sent:
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_out(e, c, 1);
                return;
            }
            char kind[KIND_LEN], detail[200];
            errno_kind(errno, kind, sizeof kind, detail, sizeof detail);
            conn_lost(e, c, kind, detail);
            return;
        }
        size_t left = (size_t)w;
        while (left) {
            size_t rem = e->size - c->tx_off;
            if (left >= rem) {
                left -= rem;
                c->tx_seq++;
                c->tx_off = 0;
            } else {
                c->tx_off += left;
                left = 0;
            }
        }
    }
    if (!c->dead)
        set_out(e, c, 0);
}

/* The common case inline: one whole message, nothing pending, one send() straight from its template. Anything
   else (a partial write, a full socket, an error, several messages) goes to flush_slow, which retries. */
static inline void flush(Engine *e, Conn *c) {
    if (c->seq - c->tx_seq == 1 && c->tx_off == 0 && !c->out_armed && !c->dead) {
        ssize_t w = sys_send(c->fd, message_of(e, c, c->tx_seq), e->size);
        if (w == (ssize_t)e->size) {
            c->tx_seq++;
            return;
        }
        if (w > 0) {
            c->tx_off = (size_t)w; /* a partial write: the rest goes through flush_slow */
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            set_out(e, c, 1);
            return;
        } else if (errno != EINTR) { /* report this error: a retry would see EPIPE where this was ECONNRESET */
            char kind[KIND_LEN], detail[200];
            errno_kind(errno, kind, sizeof kind, detail, sizeof detail);
            conn_lost(e, c, kind, detail);
            return;
        }
    }
    flush_slow(e, c);
}

#define PH_FIELDS 5
#define NEVER INT64_MAX

/* Seconds from a phase's start until n of its messages are due: the inverse of n(dt) = r0 dt + slope dt^2 / 2,
   the stable root (loadgen/profile.py Phase.time_of, the same arithmetic). */
static double phase_time_of(const double *p, double n) {
    if (n <= 0)
        return 0.0;
    double a = (p[3] - p[2]) / p[1] / 2, b = p[2];
    if (fabs(a) < 1e-12)
        return n / b;
    double disc = b * b + 4 * a * n;
    return 2 * n / (b + sqrt(disc > 0 ? disc : 0.0));
}

static inline int64_t due_of(const Engine *e, Conn *c) {
    if (e->nph == 0)
        return c->first_due + (int64_t)c->seq * e->interval;
    if (c->seq > (uint64_t)(e->ptotal / e->sconns)) /* past the schedule's end (and n below cannot overflow) */
        return NEVER;
    int64_t n = (int64_t)c->id + (int64_t)c->seq * e->sconns;
    if (n >= e->ptotal || n < 0)
        return NEVER;
    /* the phase in which the count passes n: cum[i] <= n < cum[i + 1] (phases that make nothing due are passed) */
    while (c->cursor + 1 < e->nph && e->ph[(c->cursor + 1) * PH_FIELDS + 4] <= (double)n)
        c->cursor++;
    const double *p = &e->ph[c->cursor * PH_FIELDS];
    double t = p[0] + phase_time_of(p, (double)n - p[4]);
    return c->first_due + (int64_t)(t * 1e9);
}

/* Open loop: send every message that is due, up to depth in flight; arm a timer for the next. */
static void pump(Engine *e, Conn *c, int64_t now, int from_timer) {
    if (from_timer && c->qlen < e->depth) {
        /* only a connection with room in its window waited on the client's timer: lateness until now is the
           client's (timed from now, reported as lag); a full window means the server is behind */
        c->busy_since = now;
        int64_t lag = now - due_of(e, c);
        push(e, &e->lag, lag > 0 ? lag : 0);
    }
    while (c->qlen < e->depth && e->sending) {
        int64_t due = due_of(e, c);
        if (due >= e->end_ns)
            return;
        if (due > now) {
            if (c->heap_pos < 0)
                timer_arm(e, c, due);
            return;
        }
        enqueue(e, c, due > c->busy_since ? due : c->busy_since, now);
    }
}

static void send_more(Engine *e, Conn *c, int64_t now) {
    if (e->interval) {
        pump(e, c, now, 0);
    } else {
        while (c->qlen < e->depth)
            enqueue(e, c, now, now);
    }
    flush(e, c);
}

/* -- receiving ----------------------------------------------------------------------------------------- */

/* Compare len bytes at offset rx_off of message s with what was sent. */
static void rx_segment(Engine *e, Conn *c, uint64_t s, const uint8_t *d, size_t len) {
    size_t off = c->rx_off;
    if (e->tiny) {
        const uint8_t *exp = body_of(e, c, s) + off;
        memcpy(c->rxhdr + off, d, len); /* off + len <= size < HDR */
        if (!c->rx_bad && memcmp(d, exp, len) != 0) {
            c->rx_bad = 1;
            c->first_diff = (int64_t)(off + first_diff(d, exp, len));
        }
        return;
    }
    if (off < HDR) {
        size_t h = len < HDR - off ? len : HDR - off;
        uint8_t eh[HDR];
        make_hdr(eh, c->id, s);
        memcpy(c->rxhdr + off, d, h);
        if (!c->rx_bad && memcmp(d, eh + off, h) != 0) {
            c->rx_bad = 1;
            c->first_diff = (int64_t)(off + first_diff(d, eh + off, h));
        }
        off += h;
        d += h;
        len -= h;
        if (off == HDR && c->rx_bad) { /* is it another message of this connection? */
            uint64_t g = ((uint64_t)get_be32(c->rxhdr + 8) << 32) | get_be32(c->rxhdr + 12);
            c->alt_ok = get_be32(c->rxhdr) == c->id && get_be32(c->rxhdr + 4) == MAGIC && g != s;
            c->alt_seq = g;
        }
    }
    if (len) {
        const uint8_t *exp = body_of(e, c, s) + (off - HDR);
        if (!c->rx_bad) {
            if (memcmp(d, exp, len) != 0) {
                c->rx_bad = 1;
                c->alt_ok = 0; /* the header was this message's own */
                c->first_diff = (int64_t)(off + first_diff(d, exp, len));
            }
        } else if (c->alt_ok) {
            const uint8_t *alt = body_of(e, c, c->alt_seq) + (off - HDR);
            if (memcmp(d, alt, len) != 0)
                c->alt_ok = 0;
        }
    }
}

/* An echo that differs from what was sent: classify it, count it; fatal unless merely corrupt. */
static __attribute__((noinline)) void rx_failure(Engine *e, Conn *c, uint64_t s) {
    int kind = I_CORRUPT;
    if (e->tiny) {
        for (uint32_t i = 0; i <= e->mask; i++) {
            if (memcmp(c->rxhdr, e->ring + (size_t)i * e->size, e->size) == 0) {
                kind = I_SEQUENCE; /* another ring entry: a misplaced message */
                break;
            }
        }
    } else if (c->alt_ok) {
        kind = I_SEQUENCE;
    }
    char detail[200];
    snprintf(detail, sizeof detail, "message %llu: %s (first differing byte at offset %lld)",
             (unsigned long long)s, ikind_names[kind], (long long)c->first_diff);
    integrity(e, c, kind, detail, kind != I_CORRUPT);
    c->rx_bad = 0;
    c->alt_ok = 0;
}

/* The oldest message's echo is complete. Returns -1 when the connection was closed. */
static inline int rx_complete(Engine *e, Conn *c, uint64_t s, int64_t now) {
    if (c->rx_bad) {
        rx_failure(e, c, s);
        if (c->dead)
            return -1;
    }
    Slot *sl = &c->q[c->qhead];
    if (++c->qhead == e->depth)
        c->qhead = 0;
    c->qlen--;
    c->rx_off = 0;
    if (now >= e->warm_ns && now < e->end_ns) {
        push(e, &e->lat, now - sl->start);
        if (e->interval)
            push(e, &e->unc, now - sl->sent);
        c->count++;
    } else if (now >= e->end_ns) {
        c->drained++;
    } else {
        c->warm++;
    }
    return 0;
}

static void conn_read(Engine *e, Conn *c) {
    ssize_t r = sys_recv(c->fd, e->rxbuf, RX_BUF);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        char kind[KIND_LEN], detail[200];
        errno_kind(errno, kind, sizeof kind, detail, sizeof detail);
        conn_lost(e, c, kind, detail);
        return;
    }
    if (r == 0) {
        conn_lost(e, c, "eof", "the server closed the connection");
        return;
    }
    int64_t now = now_ns();
    const uint8_t *d = e->rxbuf;
    size_t n = (size_t)r, pos = 0;
    if (n == e->size && c->rx_off == 0 && c->qlen) {
        /* the common case: exactly the oldest message in flight, whole: one compare against it */
        uint64_t s = c->seq - c->qlen;
        if (memcmp(d, message_of(e, c, s), n) == 0) {
            rx_complete(e, c, s, now); /* rx_bad is 0: cannot fail */
            pos = n;
        }
    }
    while (pos < n) {
        if (c->qlen == 0) {
            char detail[200];
            snprintf(detail, sizeof detail, "%zu bytes arrived that were never sent (duplicated?)", n - pos);
            integrity(e, c, I_UNEXPECTED, detail, 1);
            return;
        }
        uint64_t s = c->seq - c->qlen;
        size_t take = e->size - c->rx_off;
        if (take > n - pos)
            take = n - pos;
        rx_segment(e, c, s, d + pos, take);
        c->rx_off += take;
        pos += take;
        if (c->rx_off == e->size && rx_complete(e, c, s, now) < 0)
            return;
    }
    if (e->sending && now < e->end_ns)
        send_more(e, c, now);
    else if (!c->qlen && !c->rx_off)
        check_drained(e);
}

/* -- the Python face ----------------------------------------------------------------------------------- */

static void Engine_dealloc(Engine *e) {
    if (e->conns != NULL && e->ep >= 0) /* ep is valid only once __init__ ran */
        close(e->ep);
    free(e->conns);
    free(e->slots);
    free(e->ring);
    free(e->ph);
    free(e->lat.v);
    free(e->unc.v);
    free(e->lag.v);
    free(e->heap);
    free(e->rxbuf);
    free(e->txbuf);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

/* The profile's phases, checked: a sequence of (start_s, dur_s, rate_from, rate_to, cum) tuples of finite numbers,
   back to back from 0, durations > 0, rates and counts >= 0 and counts never falling; ptotal at most the last
   count rounded up; sconns >= 1; open loop (interval > 0). */
static int load_profile(Engine *e, PyObject *profile, long long ptotal, long long sconns, long long interval) {
    PyObject *pl = PySequence_Fast(profile, "profile must be a sequence of phases");
    if (pl == NULL)
        return -1;
    int rc = -1;
    Py_ssize_t nph = PySequence_Fast_GET_SIZE(pl);
    if (nph < 1 || nph > 100000 || interval <= 0 || sconns < 1 || sconns > UINT32_MAX + 1LL || ptotal < 0) {
        PyErr_SetString(PyExc_ValueError, "a profile needs 1 to 100000 phases, interval_ns > 0, sched_conns >= 1 "
                                          "and profile_total >= 0");
        goto done;
    }
    e->ph = malloc((size_t)nph * PH_FIELDS * sizeof(double));
    if (e->ph == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nph; i++) {
        PyObject *t = PySequence_Fast(PySequence_Fast_GET_ITEM(pl, i), "a phase must be a sequence");
        if (t == NULL)
            goto done;
        int ok = PySequence_Fast_GET_SIZE(t) == PH_FIELDS;
        for (int k = 0; ok && k < PH_FIELDS; k++) {
            double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(t, k));
            if (v == -1.0 && PyErr_Occurred()) {
                Py_DECREF(t);
                goto done;
            }
            ok = isfinite(v) && v >= 0 && v <= 1e15;
            e->ph[i * PH_FIELDS + k] = v;
        }
        Py_DECREF(t);
        double *p = &e->ph[i * PH_FIELDS];
        if (!ok || p[1] <= 0 || (i == 0 ? p[0] != 0 || p[4] != 0 :
                                 fabs(p[0] - (p[-PH_FIELDS] + p[1 - PH_FIELDS])) > 1e-6 || p[4] < p[4 - PH_FIELDS])) {
            PyErr_Format(PyExc_ValueError, "profile phase %zd: (start_s, dur_s, rate_from, rate_to, cum) must be "
                                           "finite, >= 0, back to back from 0, with dur_s > 0 and cum not falling", i);
            goto done;
        }
    }
    double last = e->ph[(nph - 1) * PH_FIELDS + 4], p1 = e->ph[(nph - 1) * PH_FIELDS + 1];
    double r0 = e->ph[(nph - 1) * PH_FIELDS + 2], r1 = e->ph[(nph - 1) * PH_FIELDS + 3];
    double whole = last + r0 * p1 + (r1 - r0) / p1 * p1 * p1 / 2; /* the count at the profile's end */
    if ((double)ptotal > ceil(whole) + 1) {
        PyErr_SetString(PyExc_ValueError, "profile_total is beyond what the phases make due");
        goto done;
    }
    e->nph = nph;
    e->ptotal = ptotal;
    e->sconns = sconns;
    rc = 0;
done:
    Py_DECREF(pl);
    return rc;
}

static int Engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"fds", "conn_ids", "size", "depth", "ring", "interval_ns", "phases_ns", "wake_fd",
                            "profile", "profile_total", "sched_conns", NULL};
    PyObject *fds, *ids, *ring, *phases, *profile = Py_None;
    Py_ssize_t size, depth;
    long long interval, ptotal = 0, sconns = 0;
    int wake_fd;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOnnOLOi|OLL", names, &fds, &ids, &size, &depth, &ring, &interval,
                                     &phases, &wake_fd, &profile, &ptotal, &sconns))
        return -1;
    if (e->conns != NULL || e->ring != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Engine.__init__ called twice");
        return -1;
    }
    e->ep = -1;
    if (size < 1 || depth < 1 || depth > (1 << 20) || interval < 0) {
        PyErr_SetString(PyExc_ValueError, "size and depth must be >= 1 (depth <= 2**20), interval_ns >= 0");
        return -1;
    }
    PyObject *fl = PySequence_Fast(fds, "fds must be a sequence"), *il = NULL, *pl = NULL, *rl = NULL;
    if (fl == NULL)
        return -1;
    int rc = -1;
    if ((il = PySequence_Fast(ids, "conn_ids must be a sequence")) == NULL ||
        (pl = PySequence_Fast(phases, "phases_ns must be a sequence")) == NULL ||
        (rl = PySequence_Fast(ring, "ring must be a sequence of bytes")) == NULL)
        goto out;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fl), rn = PySequence_Fast_GET_SIZE(rl);
    if (PySequence_Fast_GET_SIZE(il) != n || PySequence_Fast_GET_SIZE(pl) != n) {
        PyErr_SetString(PyExc_ValueError, "fds, conn_ids and phases_ns must have the same length");
        goto out;
    }
    if (rn < 1 || (rn & (rn - 1)) != 0) {
        PyErr_SetString(PyExc_ValueError, "the ring must hold a power-of-two number of bodies");
        goto out;
    }
    e->size = (size_t)size;
    e->tiny = size < HDR;
    e->body = e->tiny ? (size_t)size : (size_t)size - HDR;
    e->depth = (uint32_t)depth;
    e->interval = interval;
    e->mask = (uint32_t)(rn - 1);
    e->wake_fd = wake_fd;
    e->ring = malloc((size_t)rn * e->size);
    e->conns = calloc(n ? (size_t)n : 1, sizeof(Conn));
    e->slots = calloc((size_t)(n ? n : 1) * (size_t)depth, sizeof(Slot));
    e->heap = calloc(n ? (size_t)n : 1, sizeof(Py_ssize_t));
    e->rxbuf = malloc(RX_BUF);
    e->txbuf = malloc(TX_BUF);
    if (!e->ring || !e->conns || !e->slots || !e->heap || !e->rxbuf || !e->txbuf) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < rn; i++) {
        PyObject *b = PySequence_Fast_GET_ITEM(rl, i);
        if (!PyBytes_Check(b) || (size_t)PyBytes_GET_SIZE(b) != e->body) {
            PyErr_SetString(PyExc_ValueError, "every ring entry must be bytes of the body's length");
            goto out;
        }
        memcpy(e->ring + (size_t)i * e->size + (e->tiny ? 0 : HDR), PyBytes_AS_STRING(b), e->body);
    }
    if (profile != Py_None && load_profile(e, profile, ptotal, sconns, interval) < 0)
        goto out;
    e->n = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        Conn *c = &e->conns[i];
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(fl, i));
        if (fd == -1 && PyErr_Occurred())
            goto out;
        long long id = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(il, i));
        if (id == -1 && PyErr_Occurred())
            goto out;
        long long ph = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(pl, i));
        if (ph == -1 && PyErr_Occurred())
            goto out;
        if (fd < 0 || fd > INT_MAX || id < 0 || id > UINT32_MAX || ph < 0 || (e->nph && id >= e->sconns)) {
            PyErr_SetString(PyExc_ValueError, "bad fd, connection id or phase");
            goto out;
        }
        c->fd = (int)fd;
        c->id = (uint32_t)id;
        c->phase = ph;
        c->q = e->slots + (size_t)i * (size_t)depth;
        c->heap_pos = -1;
    }
    e->ep = epoll_create1(EPOLL_CLOEXEC);
    if (e->ep < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
        if (epoll_ctl(e->ep, EPOLL_CTL_ADD, e->conns[i].fd, &ev) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto out;
        }
    }
    if (wake_fd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_TAG};
        if (epoll_ctl(e->ep, EPOLL_CTL_ADD, wake_fd, &ev) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto out;
        }
    }
    e->live = n;
    e->ready = 1;
    rc = 0;
out:
    Py_XDECREF(fl);
    Py_XDECREF(il);
    Py_XDECREF(pl);
    Py_XDECREF(rl);
    return rc;
}

static PyObject *Engine_start(Engine *e, PyObject *args) {
    if (!check_ready(e))
        return NULL;
    long long t0, warm, end;
    if (!PyArg_ParseTuple(args, "LLL", &t0, &warm, &end))
        return NULL;
    if (e->started) {
        PyErr_SetString(PyExc_RuntimeError, "the engine was started already");
        return NULL;
    }
    e->started = 1;
    e->warm_ns = warm;
    e->end_ns = end;
    e->sending = 1;
    for (Py_ssize_t i = 0; i < e->n && !e->done; i++) {
        Conn *c = &e->conns[i];
        if (c->dead)
            continue;
        if (e->interval) {
            c->first_due = t0 + c->phase;
            c->busy_since = 0;
            pump(e, c, now_ns(), 1);
            flush(e, c);
        } else {
            send_more(e, c, now_ns());
        }
    }
    Py_RETURN_NONE;
}

/* Run until `until` (ns, CLOCK_MONOTONIC), the end of the run, a readable wake_fd, or full sample arrays. */
static PyObject *Engine_run(Engine *e, PyObject *args) {
    if (!check_ready(e))
        return NULL;
    long long until;
    if (!PyArg_ParseTuple(args, "L", &until))
        return NULL;
    if (!e->started) {
        PyErr_SetString(PyExc_RuntimeError, "run() before start()");
        return NULL;
    }
    int status = ST_DEADLINE, err = 0;
    struct epoll_event *evs = PyMem_RawMalloc(sizeof(struct epoll_event) * MAX_EVENTS);
    if (evs == NULL)
        return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        int64_t now = now_ns();
        while (e->heap_n > 0 && e->conns[e->heap[0]].timer_at <= now && !e->done) {
            Conn *c = &e->conns[e->heap[0]];
            timer_cancel(e, c);
            pump(e, c, now, 1);
            flush(e, c);
        }
        if (e->done) {
            status = ST_DONE;
            break;
        }
        if (now >= until) {
            status = ST_DEADLINE;
            break;
        }
        if (e->lat.n >= RETURN_SAMPLES || e->unc.n >= RETURN_SAMPLES || e->lag.n >= RETURN_SAMPLES) {
            status = ST_FULL;
            break;
        }
        int64_t wake_at = until;
        if (e->heap_n > 0 && e->conns[e->heap[0]].timer_at < wake_at)
            wake_at = e->conns[e->heap[0]].timer_at;
        int64_t wait = wake_at - now;
        struct timespec ts = {.tv_sec = wait / 1000000000LL, .tv_nsec = wait % 1000000000LL};
        int k = -1;
#if defined(SYS_epoll_pwait2) && defined(__LP64__) /* the kernel takes a 64-bit timespec: ours is one on LP64 */
        if (have_pwait2) {
            k = (int)syscall(SYS_epoll_pwait2, e->ep, evs, MAX_EVENTS, &ts, NULL, (size_t)8); /* ns timeouts */
            if (k < 0 && (errno == ENOSYS || errno == EPERM)) /* kernels before 5.11; seccomp filters that deny it */
                have_pwait2 = 0;
        }
#else
        (void)ts;
        have_pwait2 = 0;
#endif
        if (!have_pwait2)
            k = sys_epoll_wait_ms(e->ep, evs, MAX_EVENTS, (int)((wait + 999999) / 1000000));
        if (k < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            break;
        }
        int woken = 0;
        if (k > 0) {
            e->waits++;
            e->events += k;
        }
        for (int j = 0; j < k; j++) {
            if (evs[j].data.u64 == WAKE_TAG) {
                woken = 1;
                continue;
            }
            Conn *c = &e->conns[evs[j].data.u64];
            if (c->dead)
                continue;
            if (evs[j].events & EPOLLOUT)
                flush(e, c);
            if (!c->dead && (evs[j].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                conn_read(e, c);
        }
        if (woken) {
            status = ST_WAKE;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(evs);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(status);
}

static PyObject *take_samples(Samples *s) {
    PyObject *b = PyBytes_FromStringAndSize((const char *)s->v, (Py_ssize_t)(s->n * sizeof(int64_t)));
    if (b != NULL)
        s->n = 0;
    return b;
}

/* (latency, uncorrected, lag): int64 nanoseconds as bytes; the arrays are emptied. */
static PyObject *Engine_take(Engine *e, PyObject *Py_UNUSED(ignored)) {
    if (!check_ready(e))
        return NULL;
    PyObject *a = take_samples(&e->lat), *b = NULL, *c = NULL;
    if (a == NULL)
        return NULL;
    if (e->interval && (b = take_samples(&e->unc)) == NULL)
        goto fail;
    if ((c = take_samples(&e->lag)) == NULL)
        goto fail;
    PyObject *t = PyTuple_Pack(3, a, b ? b : Py_None, c);
    Py_DECREF(a);
    Py_XDECREF(b);
    Py_DECREF(c);
    return t;
fail:
    Py_DECREF(a);
    Py_XDECREF(b);
    return NULL;
}

static PyObject *Engine_measured(Engine *e, PyObject *Py_UNUSED(ignored)) {
    if (!check_ready(e))
        return NULL;
    long long total = 0;
    for (Py_ssize_t i = 0; i < e->n; i++)
        total += e->conns[i].count;
    return PyLong_FromLongLong(total);
}

static PyObject *Engine_finish(Engine *e, PyObject *args) {
    if (!check_ready(e))
        return NULL;
    const char *reason = NULL;
    if (!PyArg_ParseTuple(args, "z", &reason))
        return NULL;
    finish(e, reason);
    Py_RETURN_NONE;
}

/* The parent's pipe reached EOF: stop watching it (it would stay readable and wake every run() at once). */
static PyObject *Engine_unwatch_wake(Engine *e, PyObject *Py_UNUSED(ignored)) {
    if (!check_ready(e))
        return NULL;
    if (e->wake_fd >= 0) {
        epoll_ctl(e->ep, EPOLL_CTL_DEL, e->wake_fd, NULL);
        e->wake_fd = -1;
    }
    Py_RETURN_NONE;
}

/* Ctrl-C: stop sending and drain; the run ends when nothing is in flight (or when Python gives up). */
static PyObject *Engine_interrupt(Engine *e, PyObject *Py_UNUSED(ignored)) {
    if (!check_ready(e))
        return NULL;
    if (!e->has_outcome) {
        snprintf(e->outcome, sizeof e->outcome, "interrupted");
        e->has_outcome = 1;
    }
    e->sending = 0;
    for (Py_ssize_t i = 0; i < e->n; i++)
        timer_cancel(e, &e->conns[i]);
    check_drained(e);
    Py_RETURN_NONE;
}

/* Stop sending: the drain begins (finishes at once when nothing is in flight). */
static PyObject *Engine_stop_sending(Engine *e, PyObject *Py_UNUSED(ignored)) {
    if (!check_ready(e))
        return NULL;
    e->sending = 0;
    for (Py_ssize_t i = 0; i < e->n; i++)
        timer_cancel(e, &e->conns[i]);
    check_drained(e);
    Py_RETURN_NONE;
}

/* Every echo still incomplete after limit_ns: counted as a timeout and a lost message (fatal). */
static PyObject *Engine_check_timeouts(Engine *e, PyObject *args) {
    if (!check_ready(e))
        return NULL;
    long long now, limit;
    double secs;
    if (!PyArg_ParseTuple(args, "LLd", &now, &limit, &secs))
        return NULL;
    for (Py_ssize_t i = 0; i < e->n; i++) {
        Conn *c = &e->conns[i];
        if (c->dead || !c->qlen || now - c->q[c->qhead].sent <= limit)
            continue;
        add_error(e, "timeout");
        char detail[200];
        snprintf(detail, sizeof detail, "echo of message %llu not complete after %g s (%zu of %zu bytes back)",
                 (unsigned long long)(c->seq - c->qlen), secs, c->rx_off, e->size);
        integrity(e, c, I_LOST, detail, 1);
    }
    Py_RETURN_NONE;
}

/* The drain is over (or the run was cut short): take in what the kernel already holds (echoes, resets, EOFs:
   checked, never counted, as the window closed at measured_end), then whatever is still in flight is lost. */
static PyObject *Engine_give_up(Engine *e, PyObject *args) {
    if (!check_ready(e))
        return NULL;
    long long measured_end;
    int count_lost;
    if (!PyArg_ParseTuple(args, "Lp", &measured_end, &count_lost))
        return NULL;
    if (measured_end < e->end_ns)
        e->end_ns = measured_end;
    e->sending = 0;
    struct epoll_event evs[64];
    for (Py_ssize_t round = 0; round <= e->n / 64 + 1; round++) {
        int k = sys_epoll_wait_ms(e->ep, evs, 64, 0);
        if (k <= 0)
            break;
        for (int j = 0; j < k; j++) {
            if (evs[j].data.u64 == WAKE_TAG)
                continue;
            Conn *c = &e->conns[evs[j].data.u64];
            if (!c->dead && (evs[j].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                conn_read(e, c);
        }
    }
    for (Py_ssize_t i = 0; i < e->n && count_lost; i++) {
        Conn *c = &e->conns[i];
        if (c->dead || !c->qlen)
            continue;
        add_error(e, "timeout");
        char detail[200];
        snprintf(detail, sizeof detail, "%u echo(es) still missing at the end of the drain", c->qlen);
        integrity(e, c, I_LOST, detail, 1);
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_result(Engine *e, PyObject *Py_UNUSED(ignored)) {
    if (!check_ready(e))
        return NULL;
    PyObject *per_conn = PyList_New(e->n), *errors = PyDict_New(), *integ = PyDict_New(), *samples = PyList_New(0);
    PyObject *res = NULL;
    if (!per_conn || !errors || !integ || !samples)
        goto out;
    long long total = 0;
    for (Py_ssize_t i = 0; i < e->n; i++) {
        const Conn *c = &e->conns[i];
        PyObject *v = PyLong_FromLongLong(c->count);
        if (v == NULL)
            goto out;
        PyList_SET_ITEM(per_conn, i, v);
        total += c->warm + c->count + c->drained;
    }
    for (int i = 0; i < e->nkinds; i++) {
        PyObject *v = PyLong_FromLongLong(e->kind_n[i]);
        if (v == NULL || PyDict_SetItemString(errors, e->kinds[i], v) < 0) {
            Py_XDECREF(v);
            goto out;
        }
        Py_DECREF(v);
    }
    for (int i = 0; i < I_KINDS; i++) {
        if (!e->integ[i])
            continue;
        PyObject *v = PyLong_FromLongLong(e->integ[i]);
        if (v == NULL || PyDict_SetItemString(integ, ikind_names[i], v) < 0) {
            Py_XDECREF(v);
            goto out;
        }
        Py_DECREF(v);
    }
    for (int i = 0; i < e->nsamples; i++) {
        PyObject *s = PyUnicode_DecodeUTF8(e->samples[i], (Py_ssize_t)strlen(e->samples[i]), "replace");
        if (s == NULL || PyList_Append(samples, s) < 0) {
            Py_XDECREF(s);
            goto out;
        }
        Py_DECREF(s);
    }
    res = Py_BuildValue("{s:O,s:L,s:O,s:O,s:O,s:z,s:O,s:n,s:L,s:L}", "per_conn", per_conn, "messages_total", total,
                        "errors", errors, "integrity", integ, "integrity_samples", samples, "outcome",
                        e->has_outcome ? e->outcome : NULL, "done", e->done ? Py_True : Py_False, "live", e->live,
                        "epoll_waits", (long long)e->waits, "epoll_events", (long long)e->events);
out:
    Py_XDECREF(per_conn);
    Py_XDECREF(errors);
    Py_XDECREF(integ);
    Py_XDECREF(samples);
    return res;
}

static PyMethodDef Engine_methods[] = {
    {"start", (PyCFunction)Engine_start, METH_VARARGS, "start(t0_ns, warm_ns, end_ns): send the first messages."},
    {"run", (PyCFunction)Engine_run, METH_VARARGS,
     "run(until_ns) -> status: 0 deadline, 1 done, 2 wake_fd readable, 3 sample arrays full (take them)."},
    {"take", (PyCFunction)Engine_take, METH_NOARGS, "take() -> (latency, uncorrected or None, lag): int64 ns as bytes."},
    {"measured", (PyCFunction)Engine_measured, METH_NOARGS, "Echoes counted in the measured window so far."},
    {"finish", (PyCFunction)Engine_finish, METH_VARARGS, "finish(reason or None): end the run."},
    {"stop_sending", (PyCFunction)Engine_stop_sending, METH_NOARGS, "The drain begins."},
    {"check_timeouts", (PyCFunction)Engine_check_timeouts, METH_VARARGS,
     "check_timeouts(now_ns, limit_ns, seconds): echoes older than the limit are lost."},
    {"give_up", (PyCFunction)Engine_give_up, METH_VARARGS,
     "give_up(measured_end_ns, count_lost): the drain is over; pending events taken in; what is still in flight "
     "is lost (count_lost true) or was cut short by an interrupt (false: not counted)."},
    {"interrupt", (PyCFunction)Engine_interrupt, METH_NOARGS, "Ctrl-C: stop sending, drain, end."},
    {"unwatch_wake", (PyCFunction)Engine_unwatch_wake, METH_NOARGS, "Stop watching wake_fd (the parent is gone)."},
    {"result", (PyCFunction)Engine_result, METH_NOARGS, "Counts, errors and integrity failures so far."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "loadgen.engine._native.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Engine(fds, conn_ids, size, depth, ring, interval_ns, phases_ns, wake_fd): one worker's stream "
              "connections. The fds stay owned by the caller.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native",
    "The native per-message loop of the load generator (stream transports); see loadgen/engine/native.py.", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "MAGIC", MAGIC);
    return m;
}
