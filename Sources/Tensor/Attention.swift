// Causal multi-head self-attention core (after the Q/K/V projections, before the output one).
// Shape legend: B batch, T time, H heads (local to this rank), D head size, C = H*D.
// q, k, v, y are [B, T, ldc] rows where head h owns columns h*D ..< (h+1)*D; ldc >= H*D
// lets a tensor-parallel rank work on its own heads. att is [B, H, T, T] (softmax
// probabilities; zero above the diagonal). Scale is 1/sqrt(D).
// Backward *accumulates* into dq, dk, dv.
// Causality is exploited in blocks of `blockRows` query rows: rows [r0, r1) only need keys
// [0, r1), so each block's products stop there (about 60% of the full T x T work at T = 256).

public enum Attention {
    /// y = softmax(mask(q k^T * scale)) v, per (b, h). Saves att for backward.
    public static func forward(
        y: UnsafeMutablePointer<Float>, att: UnsafeMutablePointer<Float>,
        q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        b: Int, t: Int, h: Int, d: Int, ldc: Int
    ) {
        let scale = 1 / Float(d).squareRoot()
        for bi in 0..<b {
            for hi in 0..<h {
                let off = bi * t * ldc + hi * d
                let a = att + (bi * h + hi) * t * t
                for r0 in stride(from: 0, to: t, by: blockRows) {
                    let rows = min(blockRows, t - r0), keys = r0 + rows
                    let ab = a + r0 * t
                    sgemm(
                        .no, .yes, m: rows, n: keys, k: d, alpha: scale, a: q + off + r0 * ldc, lda: ldc,
                        b: k + off, ldb: ldc, beta: 0, c: ab, ldc: t)
                    for i in 0..<rows { softmaxCausalRow(ab + i * t, length: r0 + i + 1, rowCount: t) }
                    sgemm(
                        .no, .no, m: rows, n: d, k: keys, a: ab, lda: t, b: v + off, ldb: ldc,
                        beta: 0, c: y + off + r0 * ldc, ldc: ldc)
                }
            }
        }
    }

    /// Query rows per causal block.
    public static let blockRows = 64

    @inline(__always)
    static func softmaxCausalRow(_ row: UnsafeMutablePointer<Float>, length: Int, rowCount: Int) {
        var mx = -Float.infinity
        for j in 0..<length where row[j] > mx { mx = row[j] }
        var sum: Float = 0
        for j in 0..<length {
            let e = FastMath.exp(row[j] - mx)
            row[j] = e
            sum += e
        }
        let inv = 1 / sum
        for j in 0..<length { row[j] *= inv }
        for j in length..<rowCount { row[j] = 0 }
    }

    /// Backward through the core. `scratch` holds T*T floats.
    /// dv += att^T dy; dS = att * (datt - rowsum(att * datt)); dq += dS k * scale; dk += dS^T q * scale.
    public static func backward(
        dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
        dv: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
        q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        att: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>,
        b: Int, t: Int, h: Int, d: Int, ldc: Int
    ) {
        let scale = 1 / Float(d).squareRoot()
        for bi in 0..<b {
            for hi in 0..<h {
                let off = bi * t * ldc + hi * d
                let a = att + (bi * h + hi) * t * t
                for r0 in stride(from: 0, to: t, by: blockRows) {
                    let rows = min(blockRows, t - r0), keys = r0 + rows
                    let ab = a + r0 * t, sb = scratch + r0 * t
                    let dyb = dy + off + r0 * ldc
                    // datt[rows, keys] = dy v^T;  dv[keys] += att^T dy.
                    sgemm(
                        .no, .yes, m: rows, n: keys, k: d, a: dyb, lda: ldc, b: v + off, ldb: ldc,
                        beta: 0, c: sb, ldc: t)
                    sgemm(
                        .yes, .no, m: keys, n: d, k: rows, a: ab, lda: t, b: dyb, ldb: ldc,
                        beta: 1, c: dv + off, ldc: ldc)
                    for r in 0..<rows {
                        let i = r0 + r
                        let ar = ab + r * t, dr = sb + r * t
                        var dot: Float = 0
                        for j in 0...i { dot += ar[j] * dr[j] }
                        for j in 0...i { dr[j] = ar[j] * (dr[j] - dot) }
                        for j in (i + 1)..<keys { dr[j] = 0 }
                    }
                    sgemm(
                        .no, .no, m: rows, n: d, k: keys, alpha: scale, a: sb, lda: t, b: k + off, ldb: ldc,
                        beta: 1, c: dq + off + r0 * ldc, ldc: ldc)
                    sgemm(
                        .yes, .no, m: keys, n: d, k: rows, alpha: scale, a: sb, lda: t, b: q + off + r0 * ldc, ldb: ldc,
                        beta: 1, c: dk + off, ldc: ldc)
                }
            }
        }
    }
}
