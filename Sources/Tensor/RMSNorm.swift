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

    /// dx += rstd * (w*dy - x * rstd^2 * mean(w*dy*x));  dw += dy * x * rstd.
    public static func backward(
        dx: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>,
        dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        rstd: UnsafePointer<Float>, n: Int, c: Int
    ) {
        // Work items of `rowGrain` rows; each sums its rows' dw into its own partial, and the
        // partials are added into dw in item order.
        let items = (n + rowGrain - 1) / rowGrain
        let partial = UnsafeMutablePointer<Float>.allocate(capacity: max(1, items * c))
        defer { partial.deallocate() }
        partial.initialize(repeating: 0, count: max(1, items * c))
        Parallel.forEach(items) { item, _ in
            let dw = partial + item * c
            for r in (item * rowGrain)..<min(n, item * rowGrain + rowGrain) {
                let xr = x + r * c, dy = dOut + r * c, dxr = dx + r * c
                let s = rstd[r]
                let k = s * s * RowMath.dot(weight, dy, xr, c) / Float(c)
                for i in 0..<c {
                    dxr[i] += s * (weight[i] * dy[i] - xr[i] * k)
                    dw[i] += dy[i] * xr[i] * s
                }
            }
        }
        for item in 0..<items { for i in 0..<c { dWeight[i] += partial[item * c + i] } }
    }
}
