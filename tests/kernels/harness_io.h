/* What the kernel test harnesses (isa_harness.c, qk_harness.c) share: the input and output files,
 * reading records and aligned buffers, writing, and dying with an exit status. Each harness
 * defines HARNESS_NAME (the prefix of its error messages) before including this. */
#ifndef TQ_HARNESS_IO_H
#define TQ_HARNESS_IO_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static FILE *fin, *fout;

static void die(const char *what, int code) {
    fprintf(stderr, HARNESS_NAME ": %s\n", what);
    exit(code);
}

static int32_t rd_i32(void) {
    int32_t v;
    if (fread(&v, 4, 1, fin) != 1) die("truncated input", 2);
    return v;
}

/* A buffer whose pointer p sits `off` bytes past a 64-byte boundary; free(raw) releases it. */
typedef struct {
    void *raw;
    uint8_t *p;
} tq_buf;

/* n bytes from the input into a new tq_buf */
static tq_buf buf_read(size_t n, size_t off) {
    tq_buf b;
    b.raw = malloc(n + 64 + off + 1);
    if (!b.raw) die("out of memory", 2);
    b.p = (uint8_t *)((((uintptr_t)b.raw + 63) & ~(uintptr_t)63) + off);
    if (n && fread(b.p, 1, n, fin) != n) die("truncated input", 2);
    return b;
}

static void wr(const void *p, size_t n) {
    if (n && fwrite(p, 1, n, fout) != n) die("write failed", 2);
}

/* Opens the input and output files and writes the table name (16 bytes, NUL padded). */
static void harness_begin(const char *in, const char *out, const char *table) {
    fin = fopen(in, "rb");
    fout = fopen(out, "wb");
    if (!fin || !fout) die("cannot open files", 2);
    char name[16] = {0};
    strncpy(name, table, sizeof(name) - 1);
    wr(name, sizeof(name));
}

static int harness_end(void) {
    fclose(fin);
    if (fclose(fout) != 0) die("write failed", 2);
    return 0;
}

#endif
