// Causal multi-head self-attention core (after the Q/K/V projections, before the output one).
// Shape legend: B batch, T time, H heads (local to this rank), D head size, C = H*D.
// q, k, v, y are [B, T, ldc] rows where head h owns columns h*D ..< (h+1)*D; ldc >= H*D
// lets a tensor-parallel rank work on its own heads. att is [B, H, T, T] (softmax
// probabilities; zero above the diagonal). Scale is 1/sqrt(D).
// Backward *accumulates* into dq, dk, dv.

public enum Attention {
    /// y = softmax(mask(q k^T * scale)) v, per (b, h). Saves att for backward.
    public static func forward(y: UnsafeMutablePointer<Float>, att: UnsafeMutablePointer<Float>,
                               q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                               b: Int, t: Int, h: Int, d: Int, ldc: Int) {
        let scale = 1 / Float(d).squareRoot()
        for bi in 0..<b {
            for hi in 0..<h {
                let off = bi * t * ldc + hi * d
                let a = att + (bi * h + hi) * t * t
                sgemm(.no, .yes, m: t, n: t, k: d, alpha: scale, a: q + off, lda: ldc,
                      b: k + off, ldb: ldc, beta: 0, c: a, ldc: t)
                for i in 0..<t { softmaxCausalRow(a + i * t, length: i + 1, rowCount: t) }
                sgemm(.no, .no, m: t, n: d, k: t, a: a, lda: t, b: v + off, ldb: ldc,
                      beta: 0, c: y + off, ldc: ldc)
            }
        }
    }

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
    public static func backward(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
                                dv: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                                q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                att: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                                b: Int, t: Int, h: Int, d: Int, ldc: Int) {
        let scale = 1 / Float(d).squareRoot()
        for bi in 0..<b {
            for hi in 0..<h {
                let off = bi * t * ldc + hi * d
                let a = att + (bi * h + hi) * t * t
                // datt[T, T] = dy v^T
                sgemm(.no, .yes, m: t, n: t, k: d, a: dy + off, lda: ldc, b: v + off, ldb: ldc,
                      beta: 0, c: scratch, ldc: t)
                sgemm(.yes, .no, m: t, n: d, k: t, a: a, lda: t, b: dy + off, ldb: ldc,
                      beta: 1, c: dv + off, ldc: ldc)
                for i in 0..<t {
                    let ar = a + i * t, dr = scratch + i * t
                    var dot: Float = 0
                    for j in 0...i { dot += ar[j] * dr[j] }
                    for j in 0...i { dr[j] = ar[j] * (dr[j] - dot) }
                    for j in (i + 1)..<t { dr[j] = 0 }
                }
                sgemm(.no, .no, m: t, n: d, k: t, alpha: scale, a: scratch, lda: t, b: k + off, ldb: ldc,
                      beta: 1, c: dq + off, ldc: ldc)
                sgemm(.yes, .no, m: t, n: d, k: t, alpha: scale, a: scratch, lda: t, b: q + off, ldb: ldc,
                      beta: 1, c: dk + off, ldc: ldc)
            }
        }
    }
}
