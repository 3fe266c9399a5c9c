// RMSNorm over rows split across ranks (OLMoE's q/k norm over the whole projection, whose
// columns tensor parallelism splits): each rank holds c of a row's cTotal channels. The two row
// sums (x . x forward, (w dy) . x backward) are computed locally, summed over the ranks by the
// caller, then used here, so that every rank normalises by the whole row. With one rank
// (c == cTotal) the results are RMSNorm.forward/backward's bits.
// Shape legend: N rows, c local channels of cTotal.

extension RMSNorm {
    /// sums[r] = x[r] . x[r] over this rank's channels.
    public static func partialSquares(_ sums: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, n: Int, c: Int) {
        forEachRow(n) { r in sums[r] = RowMath.dot(x + r * c, x + r * c, c) }
    }

    /// out = x * rstd * w with rstd = 1 / sqrt(sums / cTotal + eps); sums are whole-row sums.
    public static func forwardSplit(
        out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, sums: UnsafePointer<Float>, n: Int, c: Int, cTotal: Int, eps: Float
    ) {
        forEachRow(n) { r in
            let xr = x + r * c, o = out + r * c
            let s = 1 / (sums[r] / Float(cTotal) + eps).squareRoot()
            rstd[r] = s
            for i in 0..<c { o[i] = xr[i] * s * weight[i] }
        }
    }

    /// dots[r] = (w * dy[r]) . x[r] over this rank's channels.
    public static func partialDots(
        _ dots: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, n: Int, c: Int
    ) {
        forEachRow(n) { r in dots[r] = RowMath.dot(weight, dOut + r * c, x + r * c, c) }
    }

    /// dx += rstd * (w*dy - x * rstd^2 * dots / cTotal); dw += dy * x * rstd; dots are whole-row.
    /// Work items of `rowGrain` rows; each sums its rows' dw into its own partial, and the
    /// partials are added into dw in item order.
    public static func backwardSplit(
        dx: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
        x: UnsafePointer<Float>, weight: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
        dots: UnsafePointer<Float>, n: Int, c: Int, cTotal: Int
    ) {
        let items = (n + rowGrain - 1) / rowGrain
        let partial = UnsafeMutablePointer<Float>.allocate(capacity: max(1, items * c))
        defer { partial.deallocate() }
        partial.initialize(repeating: 0, count: max(1, items * c))
        Parallel.forEach(items) { item, _ in
            let dw = partial + item * c
            for r in (item * rowGrain)..<min(n, item * rowGrain + rowGrain) {
                let xr = x + r * c, dy = dOut + r * c, dxr = dx + r * c, s = rstd[r]
                let k = s * s * dots[r] / Float(cTotal)
                for i in 0..<c {
                    dxr[i] += s * (weight[i] * dy[i] - xr[i] * k)
                    dw[i] += dy[i] * xr[i] * s
                }
            }
        }
        for item in 0..<items { for i in 0..<c { dWeight[i] += partial[item * c + i] } }
    }
}
