/* CPU feature probe: CPUID + XGETBV on x86 (the OS must save the vector state, not just the CPU
 * have the instructions), getauxval / sysctl / IsProcessorFeaturePresent on ARM. */
#include <stdlib.h>
#include <string.h>

#include "tq.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define TQ_X86 1
#if defined(_MSC_VER)
#include <intrin.h>
static void tq_cpuid(int leaf, int sub, unsigned r[4]) {
    int v[4];
    __cpuidex(v, leaf, sub);
    for (int i = 0; i < 4; i++) r[i] = (unsigned)v[i];
}
static unsigned long long tq_xgetbv(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void tq_cpuid(int leaf, int sub, unsigned r[4]) {
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
static unsigned long long tq_xgetbv(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif
#endif

#if defined(__aarch64__) || defined(_M_ARM64)
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#elif defined(_WIN32)
#include <windows.h>
#endif
#endif

static unsigned tq_probe(void) {
    unsigned f = 0;
#ifdef TQ_X86
    unsigned r[4];
    tq_cpuid(0, 0, r);
    const unsigned max_leaf = r[0];
    char vendor[13];
    memcpy(vendor, &r[1], 4); /* EBX, EDX, ECX: "AuthenticAMD", "GenuineIntel", ... */
    memcpy(vendor + 4, &r[3], 4);
    memcpy(vendor + 8, &r[2], 4);
    vendor[12] = 0;
    if (!strcmp(vendor, "AuthenticAMD") || !strcmp(vendor, "HygonGenuine")) f |= TQ_CPU_AMD;
    tq_cpuid(1, 0, r);
    const int osxsave = (r[2] >> 27) & 1, fma = (r[2] >> 12) & 1, f16c = (r[2] >> 29) & 1;
    if (!osxsave || max_leaf < 7) return f;
    const unsigned long long xcr0 = tq_xgetbv();
    const int ymm_ok = (xcr0 & 0x6) == 0x6;     /* SSE + AVX state */
    const int zmm_ok = (xcr0 & 0xe6) == 0xe6;   /* + opmask, ZMM_Hi256, Hi16_ZMM */
    tq_cpuid(7, 0, r);
    const unsigned max_sub7 = r[0];
    const int avx2 = (r[1] >> 5) & 1;
    const int avx512f = (r[1] >> 16) & 1, avx512bw = (r[1] >> 30) & 1, avx512vl = (r[1] >> 31) & 1;
    const int vnni = (r[2] >> 11) & 1, vbmi = (r[2] >> 1) & 1;
    if (ymm_ok && avx2 && fma && f16c) f |= TQ_CPU_AVX2;
    if ((f & TQ_CPU_AVX2) && max_sub7 >= 1) {
        tq_cpuid(7, 1, r);
        if ((r[0] >> 4) & 1) f |= TQ_CPU_AVXVNNI; /* leaf 7.1 EAX bit 4 */
    }
    if ((f & TQ_CPU_AVX2) && zmm_ok && avx512f && avx512bw && avx512vl) {
        f |= TQ_CPU_AVX512;
        if (vnni) f |= TQ_CPU_AVX512VNNI;
        if (vbmi) f |= TQ_CPU_AVX512VBMI;
    }
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
    f |= TQ_CPU_NEON; /* Advanced SIMD is mandatory on AArch64 */
#if defined(__linux__)
    if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) f |= TQ_CPU_NEON_DOTPROD;
#elif defined(__APPLE__)
    int v = 0;
    size_t len = sizeof(v);
    if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &len, NULL, 0) == 0 && v)
        f |= TQ_CPU_NEON_DOTPROD;
#elif defined(_WIN32)
    if (IsProcessorFeaturePresent(PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE)) f |= TQ_CPU_NEON_DOTPROD;
#endif
#endif
    return f;
}

int tq_env_flag(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

int tq_head_prefetch_far(void) {
    const char *v = getenv("TRIT_HEAD_PREFETCH_FAR");
    if (v && *v) return strcmp(v, "0") != 0;
    return !(tq_cpu_features() & TQ_CPU_AMD);
}

unsigned tq_cpu_features(void) {
    static volatile int done = 0;
    static unsigned features = 0;
    if (!done) {
        features = tq_probe();
        done = 1;
    }
    return features;
}
