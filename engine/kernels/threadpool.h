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

/* Shared chunk counter for dynamic scheduling inside one task. */
typedef struct {
    volatile long next;
} tq_counter;
static inline void tq_counter_reset(tq_counter *c) { c->next = 0; }
long tq_counter_take(tq_counter *c); /* atomically returns the old value and adds 1 */

#ifdef __cplusplus
}
#endif

#endif
