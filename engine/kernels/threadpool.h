/* A small portable thread pool (pthreads / Win32) with no OpenMP runtime to ship.
 *
 * tq_pool_run(pool, fn, arg) runs fn(arg, ith, nth) on the caller (ith 0) and on every worker
 * that wakes up while the job is open, and returns when the caller's fn has returned and no worker
 * is inside fn any more. So fn MUST split its work dynamically: chunks handed out by an atomic
 * counter (tq_counter), each thread taking chunks until none are left; it may not assume that all
 * nth threads run it (ith only selects per-thread scratch memory). In exchange a worker whose core
 * is taken by another process costs nothing: the others take its chunks, and nobody waits for it
 * to wake up. Workers spin briefly on the job counter and then sleep on a condition variable, so
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
void tq_pool_run(tq_pool *pool, tq_task_fn fn, void *arg);

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
