/* Portable thread pool; see threadpool.h for the design. */
#include "threadpool.h"

#include <stdlib.h>

#if defined(_WIN32)
#include <windows.h>
typedef HANDLE tq_thread_t;
typedef SRWLOCK tq_mutex_t;
typedef CONDITION_VARIABLE tq_cond_t;
#define tq_mutex_init(m) InitializeSRWLock(m)
#define tq_mutex_destroy(m) ((void)0)
#define tq_mutex_lock(m) AcquireSRWLockExclusive(m)
#define tq_mutex_unlock(m) ReleaseSRWLockExclusive(m)
#define tq_cond_init(c) InitializeConditionVariable(c)
#define tq_cond_destroy(c) ((void)0)
#define tq_cond_wait(c, m) SleepConditionVariableSRW(c, m, INFINITE, 0)
#define tq_cond_broadcast(c) WakeAllConditionVariable(c)
#define tq_yield() SwitchToThread()
static double tq_now(void) {
    LARGE_INTEGER f, t;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&t);
    return (double)t.QuadPart / (double)f.QuadPart;
}
static long tq_atomic_add(volatile long *p, long v) { return InterlockedExchangeAdd(p, v); }
static long tq_atomic_load(volatile long *p) { return InterlockedCompareExchange(p, 0, 0); }
#else
#include <pthread.h>
#include <sched.h>
#include <time.h>
typedef pthread_t tq_thread_t;
typedef pthread_mutex_t tq_mutex_t;
typedef pthread_cond_t tq_cond_t;
#define tq_mutex_init(m) pthread_mutex_init(m, NULL)
#define tq_mutex_destroy(m) pthread_mutex_destroy(m)
#define tq_mutex_lock(m) pthread_mutex_lock(m)
#define tq_mutex_unlock(m) pthread_mutex_unlock(m)
#define tq_cond_init(c) pthread_cond_init(c, NULL)
#define tq_cond_destroy(c) pthread_cond_destroy(c)
#define tq_cond_wait(c, m) pthread_cond_wait(c, m)
#define tq_cond_broadcast(c) pthread_cond_broadcast(c)
#define tq_yield() sched_yield()
static double tq_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}
static long tq_atomic_add(volatile long *p, long v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static long tq_atomic_load(volatile long *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
#endif

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#include <immintrin.h>
#define tq_cpu_relax() _mm_pause()
#elif defined(__aarch64__) && !defined(_MSC_VER)
#define tq_cpu_relax() __asm__ volatile("yield")
#else
#define tq_cpu_relax() ((void)0)
#endif

/* How long a waiting thread spins before it yields, and yields before it sleeps. The gaps between
 * two jobs inside one token are microseconds (norms, quantization), so a short spin keeps those
 * cheap; between tokens (sampling in Python) threads go to sleep and give the core back. */
#define TQ_SPIN 4000
#define TQ_YIELDS 8

typedef struct {
    tq_pool *pool;
    int ith;
} tq_worker;

struct tq_pool {
    int nth;
    volatile long gen;     /* job generation, bumped by each tq_pool_run */
    volatile long closed;  /* generation of the last job whose work is all handed out */
    volatile long active;  /* workers inside the current job's function */
    volatile long stop;
    long sleepers;         /* workers blocked on job_cv, guarded by mu */
    long waiting;          /* caller blocked on done_cv, guarded by mu */
    tq_task_fn fn;
    void *arg;
    tq_mutex_t mu;
    tq_cond_t job_cv, done_cv;
    tq_thread_t *threads;  /* nth - 1 */
    tq_worker *workers;    /* nth - 1 */
    /* the caller's alone (only it reads or writes these) */
    long solo_left;        /* jobs it still runs alone */
    long solo_len;         /* how many after the next late worker */
    long clean;            /* jobs in a row run together without a late worker */
    tq_pool_stats stats;
};

long tq_counter_take(tq_counter *c) { return tq_atomic_add(&c->next, 1); }

void tq_split_reset(tq_split *s, long total, int nparts) {
    if (nparts > TQ_SPLIT_MAX) nparts = TQ_SPLIT_MAX;
    if (nparts > total) nparts = total > 0 ? (int)total : 1;
    if (nparts < 1) nparts = 1;
    s->n = nparts;
    for (int p = 0; p < nparts; p++) {
        s->part[p].r.next = total * p / nparts;
        s->part[p].r.end = total * (p + 1) / nparts;
    }
}

long tq_split_take(tq_split *s, int ith) {
    for (int k = 0; k < s->n; k++) {
        tq_split_part *p = &s->part[(ith + k) % s->n];
        if (tq_atomic_load(&p->r.next) >= p->r.end) continue;
        const long c = tq_atomic_add(&p->r.next, 1);
        if (c < p->r.end) return c;
    }
    return -1;
}

long tq_split_take_run(tq_split *s, int ith, long most, long *count) {
    tq_split_part *own = &s->part[ith % s->n];
    if (most > 1 && own->r.end - tq_atomic_load(&own->r.next) > 2 * most) {
        const long c = tq_atomic_add(&own->r.next, most);
        if (c < own->r.end) {
            *count = own->r.end - c < most ? own->r.end - c : most;
            return c;
        }
    }
    *count = 1;
    return tq_split_take(s, ith);
}

int tq_pool_threads(const tq_pool *pool) { return pool->nth; }

int tq_pool_width(const tq_pool *pool) { return pool->solo_left > 0 ? 1 : pool->nth; }

/* Wait until *p != old (mode 0) or *p == 0 (mode 1): spin, yield, then sleep on cv. */
static int tq_ready(volatile long *p, long old, int mode) {
    const long v = tq_atomic_load(p);
    return mode ? v == 0 : v != old;
}

static void tq_wait(tq_pool *pool, volatile long *p, long old, int mode, tq_cond_t *cv, long *nwait) {
    for (int i = 0; i < TQ_SPIN; i++) {
        if (tq_ready(p, old, mode)) return;
        tq_cpu_relax();
    }
    for (int i = 0; i < TQ_YIELDS; i++) {
        if (tq_ready(p, old, mode)) return;
        tq_yield();
    }
    tq_mutex_lock(&pool->mu);
    while (!tq_ready(p, old, mode) && !(mode == 0 && tq_atomic_load(&pool->stop))) {
        (*nwait)++;
        tq_cond_wait(cv, &pool->mu);
        (*nwait)--;
    }
    tq_mutex_unlock(&pool->mu);
}

static void tq_worker_leave(tq_pool *pool) {
    if (tq_atomic_add(&pool->active, -1) == 1) {
        tq_mutex_lock(&pool->mu);
        if (pool->waiting) tq_cond_broadcast(&pool->done_cv);
        tq_mutex_unlock(&pool->mu);
    }
}

#if defined(_WIN32)
static DWORD WINAPI tq_worker_main(LPVOID p)
#else
static void *tq_worker_main(void *p)
#endif
{
    tq_worker *w = (tq_worker *)p;
    tq_pool *pool = w->pool;
    long seen = 0;
    for (;;) {
        tq_wait(pool, &pool->gen, seen, 0, &pool->job_cv, &pool->sleepers);
        if (tq_atomic_load(&pool->stop)) break;
        const long g = tq_atomic_load(&pool->gen);
        seen = g;
        /* Enter the job only while it is still open. Jobs hand out their work in chunks from a
         * shared counter, so a worker that wakes late (its core taken by another process) simply
         * finds nothing left, and the caller never waits for a worker that has not entered:
         * under contention a job costs the work, not a scheduler time slice per worker. The
         * enter/close handshake is seq_cst on both sides (Dekker): either the worker sees the job
         * closed and backs out, or the caller sees it active and waits for it to leave. */
        tq_atomic_add(&pool->active, 1);
        if (tq_atomic_load(&pool->closed) != g && tq_atomic_load(&pool->gen) == g)
            pool->fn(pool->arg, w->ith, pool->nth);
        tq_worker_leave(pool);
    }
    return 0;
}

tq_pool *tq_pool_new(int nthreads) {
    if (nthreads < 1) nthreads = 1;
    tq_pool *pool = (tq_pool *)calloc(1, sizeof(tq_pool));
    if (!pool) return NULL;
    pool->nth = nthreads;
    pool->solo_len = TQ_SOLO_MIN;
    tq_mutex_init(&pool->mu);
    tq_cond_init(&pool->job_cv);
    tq_cond_init(&pool->done_cv);
    if (nthreads > 1) {
        pool->threads = (tq_thread_t *)calloc((size_t)nthreads - 1, sizeof(tq_thread_t));
        pool->workers = (tq_worker *)calloc((size_t)nthreads - 1, sizeof(tq_worker));
        if (!pool->threads || !pool->workers) {
            free(pool->threads);
            free(pool->workers);
            free(pool);
            return NULL;
        }
        for (int i = 0; i < nthreads - 1; i++) {
            pool->workers[i].pool = pool;
            pool->workers[i].ith = i + 1;
#if defined(_WIN32)
            pool->threads[i] = CreateThread(NULL, 0, tq_worker_main, &pool->workers[i], 0, NULL);
            const int failed = pool->threads[i] == NULL;
#else
            const int failed = pthread_create(&pool->threads[i], NULL, tq_worker_main, &pool->workers[i]) != 0;
#endif
            if (failed) {
                pool->nth = i + 1; /* keep the threads that did start */
                break;
            }
        }
    }
    return pool;
}

void tq_pool_run(tq_pool *pool, tq_task_fn fn, void *arg) {
    if (pool->nth == 1) {
        fn(arg, 0, 1);
        return;
    }
    pool->stats.jobs++;
    if (pool->solo_left > 0) {
        pool->solo_left--;
        pool->stats.solo++;
        fn(arg, 0, pool->nth);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    const long g = tq_atomic_add(&pool->gen, 1) + 1; /* publishes fn/arg (seq_cst) */
    tq_mutex_lock(&pool->mu);
    if (pool->sleepers) tq_cond_broadcast(&pool->job_cv);
    tq_mutex_unlock(&pool->mu);
    const double t_start = tq_now();
    fn(arg, 0, pool->nth); /* returns when every chunk has been handed out */
    tq_atomic_add(&pool->closed, g - tq_atomic_load(&pool->closed)); /* closed = g */
    int late = 0;
    if (!tq_ready(&pool->active, 0, 1)) { /* chunks still in flight: wait for them */
        const double t0 = tq_now();
        tq_wait(pool, &pool->active, 0, 1, &pool->done_cv, &pool->waiting);
        const double waited = tq_now() - t0;
        late = waited >= TQ_LATE_S && waited >= t0 - t_start; /* see TQ_LATE_S */
    }
    if (!late) {
        if (++pool->clean == TQ_SOLO_CLEAN) pool->solo_len = TQ_SOLO_MIN;
        return;
    }
    pool->stats.late++;
    pool->clean = 0;
    pool->solo_left = pool->solo_len;
    pool->solo_len = pool->solo_len * 2 > TQ_SOLO_MAX ? TQ_SOLO_MAX : pool->solo_len * 2;
}

tq_pool_stats tq_pool_get_stats(const tq_pool *pool) { return pool->stats; }

void tq_pool_free(tq_pool *pool) {
    if (!pool) return;
    tq_atomic_add(&pool->stop, 1);
    tq_mutex_lock(&pool->mu);
    tq_cond_broadcast(&pool->job_cv);
    tq_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->nth - 1; i++) {
#if defined(_WIN32)
        WaitForSingleObject(pool->threads[i], INFINITE);
        CloseHandle(pool->threads[i]);
#else
        pthread_join(pool->threads[i], NULL);
#endif
    }
    tq_cond_destroy(&pool->job_cv);
    tq_cond_destroy(&pool->done_cv);
    tq_mutex_destroy(&pool->mu);
    free(pool->threads);
    free(pool->workers);
    free(pool);
}
