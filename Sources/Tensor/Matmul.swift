// Matrix products: `sgemm` (cblas_sgemm) and `Linear`, which runs on CGemm (Gemm.swift) where the
// CPU has a kernel and on sgemm otherwise or with SWITCHYARD_GEMM=blas. Row-major throughout.
// Shape legend: N rows (tokens), I input features, O output features.
// Weights are stored [O, I] (PyTorch's Linear layout), so forward is out = inp @ W^T.
// Backward *accumulates* into dInp and dW (+=), as every backward in this target does.
import COpenBLAS

public enum Transpose: Sendable { case no, yes }

/// C[M,N] = alpha * op(A) @ op(B) + beta * C, row-major, through cblas_sgemm.
///
/// `lda`, `ldb`, `ldc` are the row strides of A, B, C as stored (before op).
@inline(__always)
public func sgemm(
    _ transA: Transpose, _ transB: Transpose, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    if m == 0 || n == 0 { return }
    if k == 0 {
        // BLAS leaves C * beta; make that explicit so empty experts behave.
        for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : c[i * ldc + j] * beta } }
        return
    }
    cblas_sgemm(
        CblasRowMajor,
        transA == .no ? CblasNoTrans : CblasTrans,
        transB == .no ? CblasNoTrans : CblasTrans,
        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// A linear layer without bias: out[N, O] = inp[N, I] @ W[O, I]^T.
/// Work items (see Parallel.swift): row blocks of `rowGrain` for out and dInp, blocks of
/// `weightRowGrain` weight rows for dW (each sums over all N rows in one call). Every call
/// re-packs the operand the items share: at small.json's expert shapes, one thread, dW items of
/// 64 rows ran at 128 GFLOP/s and items of 256 at 150 (projections: 109 and 138). Going from 64
/// to 256 changed no bit of tiny.json's or small.json's losses and gradient norms over 200 steps;
/// 512-row row items did change bits (tiny.json's losses by 1.9e-3), so row items stay at 256.
public enum Linear {
    public static let rowGrain = 256
    public static let weightRowGrain = 256

    /// out[N, O] = inp[N, I] @ w[O, I]^T; with `accumulate`, adds into out.
    public static func forward(
        out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, n: Int, inFeatures: Int, outFeatures: Int,
        accumulate: Bool = false
    ) {
        if Gemm.engine == .own && n >= Gemm.ownForwardRows {
            Gemm.forward(
                out: out, inp: inp, weight: weight, n: n, inFeatures: inFeatures, outFeatures: outFeatures,
                accumulate: accumulate, rowGrain: rowGrain)
            return
        }
        Parallel.forEachBlock(n, grain: rowGrain) { rows in
            sgemm(
                .no, .yes, m: rows.count, n: outFeatures, k: inFeatures, a: inp + rows.lowerBound * inFeatures,
                lda: inFeatures, b: weight, ldb: inFeatures, beta: accumulate ? 1 : 0,
                c: out + rows.lowerBound * outFeatures, ldc: outFeatures)
        }
    }

    /// dInp[N, I] += dOut[N, O] @ w[O, I];  dW[O, I] += dOut^T @ inp.
    /// Pass nil for a gradient that is not needed. `overwriteInput`: dInp = instead of +=, for
    /// scratch that would otherwise be zeroed first (the same bits: 0 + x = x).
    public static func backward(
        dInp: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
        dOut: UnsafePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        n: Int, inFeatures: Int, outFeatures: Int, overwriteInput: Bool = false
    ) {
        let rowItems = dInp == nil ? 0 : blocks(n, rowGrain)
        let weightItems = dWeight == nil || n == 0 ? 0 : blocks(outFeatures, weightRowGrain)
        // The dW items first: each is the larger, so threads that take them early finish with
        // the rest (items are taken in order from a shared counter).
        let own = Gemm.engine == .own
        Parallel.forEach(weightItems + rowItems) { item, _ in
            if own {
                ownItem(
                    item, weightItems: weightItems, dInp, dWeight, dOut, inp, weight, n, inFeatures, outFeatures,
                    overwriteInput)
            } else if item < weightItems, let dWeight {
                let o0 = item * weightRowGrain, rows = min(weightRowGrain, outFeatures - o0)
                sgemm(
                    .yes, .no, m: rows, n: inFeatures, k: n, a: dOut + o0, lda: outFeatures,
                    b: inp, ldb: inFeatures, beta: 1, c: dWeight + o0 * inFeatures, ldc: inFeatures)
            } else if let dInp {
                let r0 = (item - weightItems) * rowGrain, rows = min(rowGrain, n - r0)
                sgemm(
                    .no, .no, m: rows, n: inFeatures, k: outFeatures, a: dOut + r0 * outFeatures, lda: outFeatures,
                    b: weight, ldb: inFeatures, beta: overwriteInput ? 0 : 1, c: dInp + r0 * inFeatures,
                    ldc: inFeatures)
            }
        }
    }

    /// One backward work item on CGemm: weight rows first, then input rows, as the BLAS items.
    @inline(__always) static func ownItem(
        _ item: Int, weightItems: Int, _ dInp: UnsafeMutablePointer<Float>?, _ dWeight: UnsafeMutablePointer<Float>?,
        _ dOut: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ n: Int,
        _ inFeatures: Int, _ outFeatures: Int, _ overwriteInput: Bool
    ) {
        if item < weightItems, let dWeight {
            let o0 = item * weightRowGrain
            Gemm.weightGradient(
                rows: o0..<min(outFeatures, o0 + weightRowGrain), dWeight: dWeight, dOut: dOut, inp: inp, n: n,
                inFeatures: inFeatures, outFeatures: outFeatures)
        } else if let dInp {
            let r0 = (item - weightItems) * rowGrain
            Gemm.inputGradient(
                rows: r0..<min(n, r0 + rowGrain), dInp: dInp, dOut: dOut, weight: weight, inFeatures: inFeatures,
                outFeatures: outFeatures, overwrite: overwriteInput)
        }
    }

    @inline(__always) static func blocks(_ total: Int, _ grain: Int) -> Int { (total + grain - 1) / grain }
}
