// The FMA loops of CPeak.h: 12 accumulators hide the FMA latency (4-5 cycles) on two pipes.
#include "CPeak.h"
#include <immintrin.h>

#define CPEAK_ACCUMULATORS 12

__attribute__((target("avx512f"))) static double fma512(long iterations, float *sink) {
    __m512 acc[CPEAK_ACCUMULATORS];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < CPEAK_ACCUMULATORS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < iterations; n++) {
        for (int i = 0; i < CPEAK_ACCUMULATORS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    __m512 s = acc[0];
    for (int i = 1; i < CPEAK_ACCUMULATORS; i++) s = _mm512_add_ps(s, acc[i]);
    *sink = _mm512_reduce_add_ps(s);
    return 2.0 * 16 * CPEAK_ACCUMULATORS * (double)iterations;
}

__attribute__((target("avx2,fma"))) static double fma256(long iterations, float *sink) {
    __m256 acc[CPEAK_ACCUMULATORS];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CPEAK_ACCUMULATORS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long n = 0; n < iterations; n++) {
        for (int i = 0; i < CPEAK_ACCUMULATORS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    __m256 s = acc[0];
    for (int i = 1; i < CPEAK_ACCUMULATORS; i++) s = _mm256_add_ps(s, acc[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    *sink = out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
    return 2.0 * 8 * CPEAK_ACCUMULATORS * (double)iterations;
}

int cpeak_fma_bits(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 512;
    if (__builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2")) return 256;
    return 0;
}

double cpeak_fma(long iterations, float *sink) {
    switch (cpeak_fma_bits()) {
    case 512: return fma512(iterations, sink);
    case 256: return fma256(iterations, sink);
    default: *sink = 0; return 0;
    }
}
