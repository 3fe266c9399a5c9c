// RMSNorm: y = x / sqrt(mean(x^2) + eps) * w, no bias (eps: model.rmsNormEps, 1e-5 by default).
// Shape legend: N rows (B*T tokens), C channels. The row sums (x . x forward, (w dy) . x
// backward) are RowMath.dot's 8 lanes, not one serial chain.
// Backward *accumulates* into dx and dw.

public enum RMSNorm {
    public static let eps: Float = 1e-5
    /// Rows per work item of backward (its dw sums are per item, then added in item order).
    public static let rowGrain = 256

    /// out[N, C] = x * rstd * w; rstd[N] is saved for backward.
    public static func forward(
        out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
        x: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int, c: Int, eps: Float = RMSNorm.eps
    ) {
        forEachRow(n) { r in
            let xr = x + r * c, o = out + r * c
            let s = 1 / (RowMath.dot(xr, xr, c) / Float(c) + eps).squareRoot()
            rstd[r] = s
            for i in 0..<c { o[i] = xr[i] * s * weight[i] }
        }
    }

    /// dx += rstd * (w*dy - x * rstd^2 * mean(w*dy*x));  dw += dy * x * rstd: the split form
    /// (RMSNorm+Split.swift) with the whole row on this rank.
    public static func backward(
        dx: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>,
        dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        rstd: UnsafePointer<Float>, n: Int, c: Int
    ) {
        let dots = UnsafeMutablePointer<Float>.allocate(capacity: max(1, n))
        defer { dots.deallocate() }
        partialDots(dots, dOut: dOut, x: x, weight: weight, n: n, c: c)
        backwardSplit(
            dx: dx, dWeight: dWeight, dOut: dOut, x: x, weight: weight, rstd: rstd, dots: dots, n: n, c: c, cTotal: c)
    }
}
