/* A small portable thread pool (pthreads / Win32) with no OpenMP runtime to ship.
 *
 * tq_pool_run(pool, fn, arg) runs fn(arg, ith, nth) on the caller (ith 0) and on every worker
 * that wakes up while the job is open, and returns when the caller's fn has returned and no worker
 * is inside fn any more. So fn MUST split its work dynamically: chunks handed out by an atomic
 * counter (tq_counter), each thread taking chunks until none are left; it may not assume that all
 * nth threads run it (ith only selects per-thread scratch memory). In exchange a worker whose core
 * is taken by another process costs nothing: the others take its chunks, and nobody waits for it
 * to wake up (a worker that loses its core while it holds chunks does cost a wait: see TQ_LATE_S
 * below). Workers spin briefly on the job counter and then sleep on a condition variable, so
 * an idle pool does not burn a core either (busy-waiting barriers collapse under contention). */
#ifndef TQ_THREADPOOL_H
#define TQ_THREADPOOL_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tq_pool tq_pool;
typedef void (*tq_task_fn)(void *arg, int ith, int nth);

tq_pool *tq_pool_new(int nthreads); /* NULL on failure; nthreads >= 1 */
void tq_pool_free(tq_pool *pool);
int tq_pool_threads(const tq_pool *pool);
/* The threads the next tq_pool_run will use: 1 while the caller runs jobs alone (below), else
 * tq_pool_threads. A job splits its work into this many parts (tq_split_reset), so that a caller
 * alone streams each matrix in long runs instead of stealing it chunk by chunk. */
int tq_pool_width(const tq_pool *pool);
void tq_pool_run(tq_pool *pool, tq_task_fn fn, void *arg);
/* A worker whose core another process's thread took while it held chunks keeps the caller waiting
 * at the job's end for the rest of that time slice (milliseconds; a chunk itself takes tens of
 * microseconds). When a job's end waits TQ_LATE_S or longer, and longer than the caller's own part
 * of the job took (a job whose caller worked longer than it then waited still ended sooner than
 * the caller alone would have: prompt jobs of milliseconds, whose worker, asleep between jobs, can
 * take a fraction of a millisecond to wake on a VM), the caller runs the next jobs alone
 * (the split still hands it every chunk, and no result depends on which thread computed it):
 * TQ_SOLO_MIN jobs at first, twice as many each time a worker is late again right after, up to
 * TQ_SOLO_MAX (~14 tokens of BitNet 2B4T, 151 jobs each); after TQ_SOLO_CLEAN jobs in a row run
 * together without a late worker, the next lapse starts from TQ_SOLO_MIN again. So when another
 * program keeps a core busy, decode runs at one thread's speed instead of losing a time slice at
 * every lapse, and it tries all threads again within a fraction of a second. Measured on the 2-vCPU
 * VM with a spinning process on one core (BitNet 2B4T shape, Q8_0 head, two threads, medians of six
 * alternating runs): 24.3 -> 26.4 tok/s, where one thread alone under the same load ran 26.2-28.1.
 * -DTQ_SOLO_MIN=0 turns it off (for such measurements). */
#define TQ_LATE_S 500e-6
#ifndef TQ_SOLO_MIN
#define TQ_SOLO_MIN 32
#endif
#define TQ_SOLO_MAX 2048
#define TQ_SOLO_CLEAN 1024
/* Since the pool was made: jobs run (none counted at one thread), the jobs whose end waited on a
 * late worker, and the jobs the caller then ran alone. */
typedef struct {
    long jobs, late, solo;
} tq_pool_stats;
tq_pool_stats tq_pool_get_stats(const tq_pool *pool);

/* Over-aligns a type to a cache line (64 bytes): shared counters get a line of their own. */
#if defined(_MSC_VER) && !defined(__clang__)
#define TQ_LINE_ALIGNED __declspec(align(64))
#else
#define TQ_LINE_ALIGNED __attribute__((aligned(64)))
#endif

/* Shared chunk counter for dynamic scheduling inside one task, alone on its cache line so that
 * taking a chunk does not evict the task's other fields from the other cores. */
typedef struct TQ_LINE_ALIGNED {
    volatile long next;
} tq_counter;
static inline void tq_counter_reset(tq_counter *c) { c->next = 0; }
long tq_counter_take(tq_counter *c); /* atomically returns the old value and adds 1 */

/* Chunks 0..total-1 split into one contiguous range per thread, each with its own counter (on its
 * own cache line). Thread ith takes from range ith first, front to back, then from the others'
 * ranges, so on a quiet machine every thread streams one contiguous part of a matrix (the
 * hardware prefetchers see one long stream per core, not every nth chunk), while a thread whose
 * core is taken still loses its chunks to the others. */
#define TQ_SPLIT_MAX 64
/* Aligned, so that each range is exactly one cache line: unaligned (a task on the caller's stack),
 * one thread's `end` could share a line with the next thread's `next`, and the task's other fields
 * with a counter, so every take moved a line between the cores. */
typedef union TQ_LINE_ALIGNED {
    struct {
        volatile long next;
        long end;
    } r;
    char pad[64];
} tq_split_part;
typedef struct {
    int n;
    tq_split_part part[TQ_SPLIT_MAX];
} tq_split;
void tq_split_reset(tq_split *s, long total, int nparts);
long tq_split_take(tq_split *s, int ith); /* a chunk index, or -1 when none is left */
/* Like tq_split_take, but up to `most` consecutive chunks of thread ith's own range at once while
 * more than 2 * most are left there (the caller streams them as one piece); near the end of its
 * range, and when taking from the others, one at a time. Returns the first index and sets *count,
 * or returns -1. */
long tq_split_take_run(tq_split *s, int ith, long most, long *count);

#ifdef __cplusplus
}
#endif

#endif
