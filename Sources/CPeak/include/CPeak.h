// CPeak: the FMA peak of one core, the physical limit MFU is also measured against (besides the
// sgemm peak): a loop of independent fused multiply-adds of the widest vectors the CPU has
// (512-bit with AVX-512F, else 256-bit with FMA3), chosen at run time.
#ifndef CPEAK_H
#define CPEAK_H

/// The width in bits of the vectors cpeak_fma runs: 512, 256, or 0 without FMA.
int cpeak_fma_bits(void);
/// Runs `iterations` rounds of 12 independent vector FMAs; returns the FLOPs done (2 per lane per
/// FMA). `sink` receives a value depending on every result, so the loop cannot be dropped.
double cpeak_fma(long iterations, float *sink);
#endif
