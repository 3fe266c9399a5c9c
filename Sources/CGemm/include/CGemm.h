// CGemm: Switchyard's own single-threaded fp32 matrix product for the shapes a model step runs
// (projections, experts, heads: tens to thousands of rows, 64-4096 columns), written so that no
// operand is re-packed per call more than once: B is read in place when its rows are contiguous,
// else packed into column panels by the caller once per call, and each thread copies only the A
// micro-panels of the rows it owns.
// A register-blocked microkernel of fused multiply-adds: 14 x 32 with AVX-512F, 6 x 16 with
// AVX2+FMA, chosen at run time. The sum over k runs in a fixed order (k blocks of CGEMM_KC, each
// in ascending k) that depends only on the shape, never on the thread count or the ISA's tile.
#ifndef CGEMM_H
#define CGEMM_H
#include <stdint.h>

/// The vector width in bits of the kernel in use: 512, 256, or 0 (no kernel on this CPU: callers
/// use BLAS).
int cgemm_bits(void);

/// Uses the kernel of `bits` (512 or 256) if this CPU has it, else the best it has; returns the
/// width now in use. Tests run both kernels on an AVX-512 machine with it. Not thread-safe: call
/// before any product.
int cgemm_use_bits(int bits);

/// Columns per packed panel of B (32 with AVX-512F, 16 with AVX2): callers size buffers with
/// cgemm_packed_size.
int64_t cgemm_panel_width(void);

/// Floats a packed B of k rows and n columns takes: ceil(n / panel width) panels of k x width.
int64_t cgemm_packed_size(int64_t k, int64_t n);

/// Packs columns [j0, j1) of B (k x n, element (kk, j) at b[kk * rsb + j * csb]) into `out`, laid
/// out as cgemm_packed_size(k, n) floats; j0 and j1 must be multiples of the panel width (j1 may
/// be n). The padding columns of the last panel are zero. Several threads may pack disjoint
/// column ranges of one buffer.
void cgemm_pack_b(int64_t k, int64_t n, int64_t j0, int64_t j1, const float *b, int64_t rsb, int64_t csb,
                  float *out);

/// C[i, j] (+)= sum_kk A(i, kk) B(kk, j) for rows [i0, i1) of C, all n columns, with A(i, kk) at
/// a[i * rsa + kk * csa], B(kk, j) at b[kk * ldb + j], or, with ldb == 0, B packed by
/// cgemm_pack_b, and C(i, j) at c[i * ldc + j]. accumulate == 0 overwrites C (beta 0: C is not
/// read), otherwise adds to it (beta 1). Rows are computed
/// independently of one another and of [i0, i1): any split of the rows gives the same bits.
void cgemm_run(int64_t i0, int64_t i1, int64_t n, int64_t k, const float *a, int64_t rsa, int64_t csa,
               const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate);

/// A buffer of at least `count` floats owned by the calling thread (64-byte aligned), kept and
/// grown between calls; valid until the thread's next call. NULL if memory ran out.
float *cgemm_thread_scratch(int64_t count);
#endif
