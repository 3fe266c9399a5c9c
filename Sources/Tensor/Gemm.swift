// Switchyard's own matrix products (the CGemm C target) behind Linear, and the choice between them
// and OpenBLAS. Shape legend as in Matmul.swift: N rows, I input features, O output features.
//
// CGemm computes every output as one chain of fused multiply-adds in ascending k, whatever the
// tile, the ISA (AVX-512F or AVX2+FMA) or the split of rows over threads, so its results are
// repeatable across thread counts and machines with either kernel. OpenBLAS sums in its own
// blocked order: switching engines changes results in the last bits, never the layout contract.
import CGemm
import Glibc

public enum GemmEngine: String, Sendable, CaseIterable {
    /// CGemm's microkernels: x W^T from W^T packed once per call, dY W and dY^T x read in place.
    case own
    /// OpenBLAS's sgemm for every product (what every release before this one used).
    case blas
}

public enum Gemm {
    /// The engine Linear uses, chosen once at start-up: `own` where the CPU has a CGemm kernel,
    /// unless the environment sets SWITCHYARD_GEMM=blas (comparisons, and the fallback).
    nonisolated(unsafe) public static var engine: GemmEngine = defaultEngine

    /// The width of CGemm's vectors on this CPU: 512 (AVX-512F), 256 (AVX2+FMA) or 0 (none).
    public static var kernelBits: Int { Int(cgemm_bits()) }

    /// Uses CGemm's kernel of `bits` (512 or 256) where this CPU has it, else its best; returns the
    /// width in use. Call before any product (tests, and bench's kernel comparison).
    @discardableResult public static func useKernel(bits: Int) -> Int { Int(cgemm_use_bits(Int32(bits))) }

    /// The engine in words, for run headers: "CGemm 512-bit" or "OpenBLAS".
    public static var engineName: String { engine == .own ? "CGemm \(kernelBits)-bit" : "OpenBLAS" }

    /// `own` if this CPU has a kernel and SWITCHYARD_GEMM is not `blas`.
    public static var defaultEngine: GemmEngine {
        if let raw = getenv("SWITCHYARD_GEMM"), String(cString: raw) == "blas" { return .blas }
        return kernelBits > 0 ? .own : .blas
    }

    /// Forward products of fewer rows go to OpenBLAS: packing W^T costs O x I copies a call, which
    /// pays for itself from about this many rows (measured on AMD EPYC Zen 4, one thread: 64 rows
    /// x 512 x 256 ran 80 GFLOP/s packed vs OpenBLAS's 90; 512 rows 100 vs 99).
    public static let ownForwardRows = 128

    /// Panels of output features each packing work item copies.
    static let packItemColumns = 256

    /// out[N, O] (+)= inp[N, I] @ w[O, I]^T on CGemm: w^T packed into this thread's scratch (the
    /// panels in parallel), then row blocks of `rowGrain`.
    static func forward(
        out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int,
        inFeatures i: Int, outFeatures o: Int, accumulate: Bool, rowGrain: Int
    ) {
        guard let packed = cgemm_thread_scratch(cgemm_packed_size(Int64(i), Int64(o))) else {
            fatalError("CGemm: no memory for a packed \(o) x \(i) weight")
        }
        Parallel.forEachBlock(o, grain: packItemColumns) { cols in
            cgemm_pack_b(
                Int64(i), Int64(o), Int64(cols.lowerBound), Int64(cols.upperBound), weight, 1, Int64(i), packed)
        }
        Parallel.forEachBlock(n, grain: rowGrain) { rows in
            cgemm_run(
                Int64(rows.lowerBound), Int64(rows.upperBound), Int64(o), Int64(i), inp, Int64(i), 1, packed, 0,
                out, Int64(o), accumulate ? 1 : 0)
        }
    }

    /// Rows [r0, r1) of dInp[N, I] (+)= dOut[N, O] @ w[O, I], w read in place.
    @inline(__always) static func inputGradient(
        rows: Range<Int>, dInp: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, inFeatures i: Int, outFeatures o: Int, overwrite: Bool
    ) {
        cgemm_run(
            Int64(rows.lowerBound), Int64(rows.upperBound), Int64(i), Int64(o), dOut, Int64(o), 1, weight, Int64(i),
            dInp, Int64(i), overwrite ? 0 : 1)
    }

    /// Rows [o0, o1) of dW[O, I] += dOut[N, O]^T @ inp[N, I], both read in place.
    @inline(__always) static func weightGradient(
        rows: Range<Int>, dWeight: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
        inp: UnsafePointer<Float>, n: Int, inFeatures i: Int, outFeatures o: Int
    ) {
        cgemm_run(
            Int64(rows.lowerBound), Int64(rows.upperBound), Int64(i), Int64(n), dOut, 1, Int64(o), inp, Int64(i),
            dWeight, Int64(i), 1)
    }
}
