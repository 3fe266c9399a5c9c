// The packing loops and the two microkernels of CGemm.h. Every element of C is one chain of fused
// multiply-adds in ascending k, starting from 0 (overwrite) or from C (accumulate): k blocks store
// C and reload it, which rounds nothing, so the bits depend on neither the tile, the ISA, nor how
// rows are split over threads.
#include "CGemm.h"
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define CGEMM_KC 256  // k per block: the A micro-panel (14 x 256 floats, 14 KiB) stays in L1
#define CGEMM_NC 512  // columns per block: its B block (256 x 512 floats, 512 KiB) stays in L2
#define MR512 14
#define NR512 32
#define MR256 6
#define NR256 16
#define MR_MAX 14

static int detected = -1;

int cgemm_bits(void) {
    if (detected < 0) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) detected = 512;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) detected = 256;
        else detected = 0;
    }
    return detected;
}

float *cgemm_thread_scratch(int64_t count) {
    static _Thread_local float *buffer = NULL;
    static _Thread_local int64_t capacity = 0;
    if (count > capacity) {
        free(buffer);
        const size_t bytes = ((size_t)count * sizeof(float) + 63) / 64 * 64;
        buffer = aligned_alloc(64, bytes);
        capacity = buffer ? count : 0;
    }
    return buffer;
}

int cgemm_use_bits(int bits) {
    detected = -1;
    const int best = cgemm_bits();
    if (bits == 256 && best == 512) detected = 256;
    return detected;
}

int64_t cgemm_panel_width(void) { return cgemm_bits() == 512 ? NR512 : NR256; }

int64_t cgemm_packed_size(int64_t k, int64_t n) {
    const int64_t w = cgemm_panel_width();
    return (n + w - 1) / w * w * k;
}

void cgemm_pack_b(int64_t k, int64_t n, int64_t j0, int64_t j1, const float *b, int64_t rsb, int64_t csb,
                  float *out) {
    const int64_t w = cgemm_panel_width();
    for (int64_t p0 = j0; p0 < j1; p0 += w) {
        float *panel = out + p0 * k;  // panel p0 / w starts at (p0 / w) * k * w floats
        const int64_t cols = n - p0 < w ? n - p0 : w;
        if (csb == 1) {
            for (int64_t kk = 0; kk < k; kk++) {
                memcpy(panel + kk * w, b + kk * rsb + p0, (size_t)cols * sizeof(float));
                for (int64_t j = cols; j < w; j++) panel[kk * w + j] = 0;
            }
        } else {
            // Column-strided B (a weight read as its transpose): walk each source row (one j)
            // contiguously along k, writing a strided column of the panel.
            for (int64_t j = 0; j < w; j++) {
                if (j < cols) {
                    const float *src = b + (p0 + j) * csb;
                    for (int64_t kk = 0; kk < k; kk++) panel[kk * w + j] = src[kk * rsb];
                } else {
                    for (int64_t kk = 0; kk < k; kk++) panel[kk * w + j] = 0;
                }
            }
        }
    }
}

// A rows [i, i + mr) x k [pc, pc + kc) into ap, in the layout that copies contiguous runs: rows
// of A contiguous along k (csa == 1) as ap[r * CGEMM_KC + kk] (row-major, A_ROWS); otherwise as
// ap[kk * MR_MAX + r] (k-major, A_COLUMNS), where a column of A is contiguous if rsa == 1.
enum { A_COLUMNS = 0, A_ROWS = 1 };

static int pack_a(int64_t mr, int64_t kc, const float *a, int64_t rsa, int64_t csa, float *ap) {
    if (csa == 1) {
        for (int64_t r = 0; r < mr; r++) memcpy(ap + r * CGEMM_KC, a + r * rsa, (size_t)kc * sizeof(float));
        return A_ROWS;
    }
    for (int64_t kk = 0; kk < kc; kk++) {
        const float *src = a + kk * csa;
        for (int64_t r = 0; r < mr; r++) ap[kk * MR_MAX + r] = src[r * rsa];
    }
    return A_COLUMNS;
}

// Element (r, kk) of a packed A micro-panel in `layout` (a compile-time constant in the tiles).
#define A_AT(layout, ap, r, kk) ((layout) == A_ROWS ? (ap)[(r) * CGEMM_KC + (kk)] : (ap)[(kk) * MR_MAX + (r)])

// ---- AVX-512F: MR x 32 tile, two zmm accumulators per row, masked edges ----

static inline __attribute__((always_inline, target("avx512f"))) void tile512(
    const int mr, const int edge, const int layout, int64_t kc, const float *ap, const float *bp, int64_t ldb,
    float *c, int64_t ldc, int load, int64_t nr) {
    __m512 lo[MR512], hi[MR512];
    const __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
#pragma clang loop unroll(full)
    for (int r = 0; r < mr; r++) {
        lo[r] = load ? _mm512_maskz_loadu_ps(m0, c + r * ldc) : _mm512_setzero_ps();
        hi[r] = load ? _mm512_maskz_loadu_ps(m1, c + r * ldc + 16) : _mm512_setzero_ps();
    }
    for (int64_t kk = 0; kk < kc; kk++) {
        const __m512 b0 = edge ? _mm512_maskz_loadu_ps(m0, bp + kk * ldb) : _mm512_loadu_ps(bp + kk * ldb);
        const __m512 b1 = edge ? _mm512_maskz_loadu_ps(m1, bp + kk * ldb + 16) : _mm512_loadu_ps(bp + kk * ldb + 16);
#pragma clang loop unroll(full)
        for (int r = 0; r < mr; r++) {
            const __m512 av = _mm512_set1_ps(A_AT(layout, ap, r, kk));
            lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
            hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
        }
    }
#pragma clang loop unroll(full)
    for (int r = 0; r < mr; r++) {
        _mm512_mask_storeu_ps(c + r * ldc, m0, lo[r]);
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, hi[r]);
    }
}

// One case of a kernel's switch over the row count M: the tile specialised for the A layout and
// for whether the panel is full (nr == WIDTH) or an edge (masked B loads).
#define TILE_CASE(TILE, WIDTH, M) \
    case M: \
        if (layout == A_ROWS && nr == WIDTH) TILE(M, 0, A_ROWS, kc, ap, bp, ldb, c, ldc, load, nr); \
        else if (layout == A_ROWS) TILE(M, 1, A_ROWS, kc, ap, bp, ldb, c, ldc, load, nr); \
        else if (nr == WIDTH) TILE(M, 0, A_COLUMNS, kc, ap, bp, ldb, c, ldc, load, nr); \
        else TILE(M, 1, A_COLUMNS, kc, ap, bp, ldb, c, ldc, load, nr); \
        break;
#define TILE512_CASE(M) TILE_CASE(tile512, NR512, M)

__attribute__((target("avx512f"))) static void kernel512(int64_t mr, int layout, int64_t kc, const float *ap,
                                                         const float *bp, int64_t ldb, float *c, int64_t ldc, int load,
                                                         int64_t nr) {
    switch (mr) {
        TILE512_CASE(1) TILE512_CASE(2) TILE512_CASE(3) TILE512_CASE(4) TILE512_CASE(5) TILE512_CASE(6)
        TILE512_CASE(7) TILE512_CASE(8) TILE512_CASE(9) TILE512_CASE(10) TILE512_CASE(11) TILE512_CASE(12)
        TILE512_CASE(13) TILE512_CASE(14)
    default: break;
    }
}

// ---- AVX2 + FMA: MR x 16 tile, two ymm accumulators per row, masked edges ----

static const int32_t mask_source[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static inline __attribute__((always_inline, target("avx2,fma"))) __m256i mask256(int64_t lanes) {
    const int64_t n = lanes < 0 ? 0 : lanes > 8 ? 8 : lanes;
    return _mm256_loadu_si256((const __m256i *)(mask_source + 8 - n));
}

static inline __attribute__((always_inline, target("avx2,fma"))) void tile256(
    const int mr, const int edge, const int layout, int64_t kc, const float *ap, const float *bp, int64_t ldb,
    float *c, int64_t ldc, int load, int64_t nr) {
    __m256 lo[MR256], hi[MR256];
    const __m256i m0 = mask256(nr), m1 = mask256(nr - 8);
#pragma clang loop unroll(full)
    for (int r = 0; r < mr; r++) {
        lo[r] = load ? _mm256_maskload_ps(c + r * ldc, m0) : _mm256_setzero_ps();
        hi[r] = load ? _mm256_maskload_ps(c + r * ldc + 8, m1) : _mm256_setzero_ps();
    }
    for (int64_t kk = 0; kk < kc; kk++) {
        const __m256 b0 = edge ? _mm256_maskload_ps(bp + kk * ldb, m0) : _mm256_loadu_ps(bp + kk * ldb);
        const __m256 b1 = edge ? _mm256_maskload_ps(bp + kk * ldb + 8, m1) : _mm256_loadu_ps(bp + kk * ldb + 8);
#pragma clang loop unroll(full)
        for (int r = 0; r < mr; r++) {
            const __m256 av = _mm256_set1_ps(A_AT(layout, ap, r, kk));
            lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
            hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
        }
    }
#pragma clang loop unroll(full)
    for (int r = 0; r < mr; r++) {
        _mm256_maskstore_ps(c + r * ldc, m0, lo[r]);
        _mm256_maskstore_ps(c + r * ldc + 8, m1, hi[r]);
    }
}

#define TILE256_CASE(M) TILE_CASE(tile256, NR256, M)

__attribute__((target("avx2,fma"))) static void kernel256(int64_t mr, int layout, int64_t kc, const float *ap,
                                                         const float *bp, int64_t ldb, float *c, int64_t ldc, int load,
                                                         int64_t nr) {
    switch (mr) {
        TILE256_CASE(1) TILE256_CASE(2) TILE256_CASE(3) TILE256_CASE(4) TILE256_CASE(5) TILE256_CASE(6)
    default: break;
    }
}

// ---- The blocked loops ----

void cgemm_run(int64_t i0, int64_t i1, int64_t n, int64_t k, const float *a, int64_t rsa, int64_t csa,
               const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate) {
    const int bits = cgemm_bits();
    if (bits == 0 || i1 <= i0 || n <= 0) return;
    const int64_t mrMax = bits == 512 ? MR512 : MR256, w = bits == 512 ? NR512 : NR256;
    if (k == 0) {
        if (!accumulate)
            for (int64_t i = i0; i < i1; i++) memset(c + i * ldc, 0, (size_t)n * sizeof(float));
        return;
    }
    float ap[MR_MAX * CGEMM_KC] __attribute__((aligned(64)));
    for (int64_t jc = 0; jc < n; jc += CGEMM_NC) {
        const int64_t jEnd = n - jc < CGEMM_NC ? n : jc + CGEMM_NC;
        for (int64_t pc = 0; pc < k; pc += CGEMM_KC) {
            const int64_t kc = k - pc < CGEMM_KC ? k - pc : CGEMM_KC;
            const int load = accumulate || pc > 0;
            for (int64_t ic = i0; ic < i1; ic += mrMax) {
                const int64_t mr = i1 - ic < mrMax ? i1 - ic : mrMax;
                const int layout = pack_a(mr, kc, a + ic * rsa + pc * csa, rsa, csa, ap);
                for (int64_t j = jc; j < jEnd; j += w) {
                    // A packed panel j / w starts at j * k floats, rows w apart; rows of a plain B
                    // are ldb apart.
                    const float *bp = ldb == 0 ? b + j * k + pc * w : b + pc * ldb + j;
                    const int64_t nr = n - j < w ? n - j : w;
                    float *cp = c + ic * ldc + j;
                    if (bits == 512) kernel512(mr, layout, kc, ap, bp, ldb == 0 ? w : ldb, cp, ldc, load, nr);
                    else kernel256(mr, layout, kc, ap, bp, ldb == 0 ? w : ldb, cp, ldc, load, nr);
                }
            }
        }
    }
}
