/* A cap on the memory one thread may hold in large blocks while it runs untrusted code (a chat
 * template that came with a model file).
 *
 * Hooks wrap CPython's object and "mem" allocators (the domains that require the GIL, so the
 * tables below need no lock). While a thread is capped, every block of at least MC_BIG bytes it
 * allocates is recorded with its size; a request that would take the thread's live large blocks
 * past its limit fails (Python raises MemoryError) and sets the thread's `over` flag. Blocks freed
 * or resized by any thread leave the record. Smaller blocks are too many to record (splitting a
 * big text into lines makes millions): the bytes the thread asks for in them are added up instead,
 * frees not subtracted, against a second budget. That one must be generous: a template's loop asks
 * for ~0.5 GB a second in small blocks that it frees at once (a render's own come to a few MB), and
 * such a loop is the time budget's to stop.
 *
 * The hooks are installed once and stay: they pass everything else straight to the allocator they
 * wrap (as tracemalloc's do), so uninstalling is never needed. When something replaced the
 * allocators without calling ours (tracemalloc stopped after we were installed on top of it), a
 * probe allocation at the start shows that no cap is in force, and mc_begin says so. */

#ifndef TRIT_MEMCAP_H
#define TRIT_MEMCAP_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MC_BIG ((size_t)1 << 20)
#define MC_SLOTS 4         /* threads capped at once */
#define MC_TABLE 4096      /* recorded blocks, power of two; at most 3/4 full */

typedef struct {
    void *p;
    size_t size;
    int owner;
} mc_entry;

static mc_entry mc_table[MC_TABLE];
static int mc_count;
static int mc_active;
static int mc_used[MC_SLOTS];
static unsigned long mc_thread[MC_SLOTS];
static size_t mc_live[MC_SLOTS], mc_limit[MC_SLOTS], mc_peak[MC_SLOTS];
static size_t mc_small[MC_SLOTS], mc_small_limit[MC_SLOTS];
static int mc_over[MC_SLOTS];
static PyMemAllocatorEx mc_prev_obj, mc_prev_mem;
static int mc_installed;

static size_t mc_hash(const void *p) {
    return (size_t)((((uint64_t)(uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull) >> 40) & (MC_TABLE - 1);
}

static int mc_slot(void) {
    unsigned long me = PyThread_get_thread_ident();
    for (int s = 0; s < MC_SLOTS; s++)
        if (mc_used[s] && mc_thread[s] == me) return s;
    return -1;
}

static long mc_find(const void *p) {
    for (size_t i = mc_hash(p);; i = (i + 1) & (MC_TABLE - 1)) {
        if (mc_table[i].p == p) return (long)i;
        if (!mc_table[i].p) return -1;
    }
}

static void mc_insert(void *p, size_t size, int owner) {
    size_t i = mc_hash(p);
    while (mc_table[i].p) i = (i + 1) & (MC_TABLE - 1);
    mc_table[i].p = p;
    mc_table[i].size = size;
    mc_table[i].owner = owner;
    mc_count++;
}

/* Linear probing's deletion: move later entries of the same run back into the hole. */
static void mc_remove_at(size_t hole) {
    mc_table[hole].p = NULL;
    mc_count--;
    for (size_t j = (hole + 1) & (MC_TABLE - 1); mc_table[j].p; j = (j + 1) & (MC_TABLE - 1)) {
        size_t home = mc_hash(mc_table[j].p);
        /* the entry at j may fill the hole when its home is not in (hole, j] (cyclically) */
        int between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!between) {
            mc_table[hole] = mc_table[j];
            mc_table[j].p = NULL;
            hole = j;
        }
    }
}

static void mc_forget(void *p) {
    long i = mc_find(p);
    if (i < 0) return;
    mc_live[mc_table[i].owner] -= mc_table[i].size;
    mc_remove_at((size_t)i);
}

/* The first refusal: the MemoryError's unwinding (tracebacks, frames, the handlers' own code) needs
 * a little memory, so each budget gets MC_GRACE more, once. */
#define MC_GRACE ((size_t)64 << 20)

static void mc_refuse(int s) {
    if (!mc_over[s]) {
        mc_over[s] = 1;
        mc_limit[s] += MC_GRACE;
        mc_small_limit[s] += MC_GRACE;
    }
}

/* May thread slot s hold `size` more bytes (after giving back `old`)? */
static int mc_admit(int s, size_t old, size_t size) {
    if (size > mc_limit[s] || mc_live[s] - old > mc_limit[s] - size || mc_count >= MC_TABLE / 4 * 3) {
        mc_refuse(s);
        return 0;
    }
    return 1;
}

/* Count `size` bytes asked for in a small block; 0 when that is past the budget. */
static int mc_count_small(int s, size_t size) {
    if (size > mc_small_limit[s] - mc_small[s]) {
        mc_refuse(s);
        return 0;
    }
    mc_small[s] += size;
    return 1;
}

static void mc_record(void *p, size_t size, int s) {
    mc_insert(p, size, s);
    mc_live[s] += size;
    if (mc_live[s] > mc_peak[s]) mc_peak[s] = mc_live[s];
}

static void *mc_malloc(void *ctx, size_t size) {
    PyMemAllocatorEx *prev = (PyMemAllocatorEx *)ctx;
    int s;
    if (!mc_active || (s = mc_slot()) < 0) return prev->malloc(prev->ctx, size);
    if (size < MC_BIG) return mc_count_small(s, size) ? prev->malloc(prev->ctx, size) : NULL;
    if (!mc_admit(s, 0, size)) return NULL;
    void *p = prev->malloc(prev->ctx, size);
    if (p) mc_record(p, size, s);
    return p;
}

static void *mc_calloc(void *ctx, size_t nelem, size_t elsize) {
    PyMemAllocatorEx *prev = (PyMemAllocatorEx *)ctx;
    int s;
    if (!mc_active || (elsize && nelem > SIZE_MAX / elsize) || (s = mc_slot()) < 0)
        return prev->calloc(prev->ctx, nelem, elsize);
    if (nelem * elsize < MC_BIG)
        return mc_count_small(s, nelem * elsize) ? prev->calloc(prev->ctx, nelem, elsize) : NULL;
    if (!mc_admit(s, 0, nelem * elsize)) return NULL;
    void *p = prev->calloc(prev->ctx, nelem, elsize);
    if (p) mc_record(p, nelem * elsize, s);
    return p;
}

static void *mc_realloc(void *ctx, void *ptr, size_t size) {
    PyMemAllocatorEx *prev = (PyMemAllocatorEx *)ctx;
    int s = mc_active ? mc_slot() : -1;
    if (s >= 0 && size < MC_BIG && !mc_count_small(s, size)) return NULL;
    if (!mc_count && (s < 0 || size < MC_BIG)) return prev->realloc(prev->ctx, ptr, size);
    if (size < MC_BIG) s = -1; /* counted, not recorded */
    long i = ptr && mc_count ? mc_find(ptr) : -1;
    size_t old = (i >= 0 && mc_table[i].owner == s) ? mc_table[i].size : 0;
    if (s >= 0 && !mc_admit(s, old, size)) return NULL;
    void *p = prev->realloc(prev->ctx, ptr, size);
    if (!p) return NULL; /* ptr is still valid and still recorded */
    if (i >= 0) mc_forget(ptr);
    if (s >= 0) mc_record(p, size, s);
    return p;
}

static void mc_free(void *ctx, void *ptr) {
    PyMemAllocatorEx *prev = (PyMemAllocatorEx *)ctx;
    if (mc_count && ptr) mc_forget(ptr);
    prev->free(prev->ctx, ptr);
}

static void mc_install(void) {
    PyMemAllocatorEx hook;
    if (mc_installed) return;
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &mc_prev_obj);
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &mc_prev_mem);
    hook.malloc = mc_malloc;
    hook.calloc = mc_calloc;
    hook.realloc = mc_realloc;
    hook.free = mc_free;
    hook.ctx = &mc_prev_obj;
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &hook);
    hook.ctx = &mc_prev_mem;
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &hook);
    mc_installed = 1;
}

/* Cap the calling thread at `limit` bytes in live large blocks and `small_limit` bytes asked for in
 * small ones. Returns its slot, -1 when MC_SLOTS
 * threads are capped already, -2 when the hooks are not in the allocator chain. The GIL must be
 * held (as for everything here). */
static int mc_begin(size_t limit, size_t small_limit) {
    int s;
    mc_install();
    if (mc_slot() >= 0) return -1; /* capped already: nesting is not supported */
    for (s = 0; s < MC_SLOTS && mc_used[s]; s++) {}
    if (s == MC_SLOTS) return -1;
    mc_used[s] = 1;
    mc_thread[s] = PyThread_get_thread_ident();
    mc_live[s] = mc_peak[s] = mc_small[s] = 0;
    mc_over[s] = 0;
    mc_limit[s] = limit > MC_BIG ? limit : MC_BIG;
    mc_small_limit[s] = small_limit > MC_BIG ? small_limit : MC_BIG;
    mc_active++;
    void *probe = PyObject_Malloc(MC_BIG);
    int seen = probe && mc_find(probe) >= 0;
    PyObject_Free(probe);
    mc_peak[s] = mc_small[s] = 0;
    if (!seen) {
        mc_used[s] = 0;
        mc_active--;
        return -2;
    }
    return s;
}

/* End slot s's cap; its blocks that are still alive leave the record. Returns whether a request
 * was refused; *peak gets the peak of its live large blocks, *small the bytes asked for in small
 * ones. */
static int mc_end(int s, size_t *peak, size_t *small) {
    if (s < 0 || s >= MC_SLOTS || !mc_used[s]) return 0;
    for (size_t i = 0; i < MC_TABLE;) {
        if (mc_table[i].p && mc_table[i].owner == s)
            mc_remove_at(i); /* an entry may move into i: look at it again */
        else
            i++;
    }
    mc_used[s] = 0;
    mc_active--;
    *peak = mc_peak[s];
    *small = mc_small[s];
    return mc_over[s];
}

#endif
