// Causal multi-head self-attention core (after the Q/K/V projections, before the output one),
// in the manner of FlashAttention-2 for CPU caches: a tile of queries meets tiles of keys with
// an online softmax, so no T x T matrix exists; tiles above the diagonal are skipped. Forward
// saves only the output and each row's log-sum-exp; backward recomputes the tiles' scores.
// Memory: O(T) per (batch, head) plus two [queryTile, keyTile] tiles per thread.
// Shape legend: B batch, T time, H query heads and G key/value heads (local to this rank; query
// head h reads key/value head h / (H / G): grouped-query attention, G = H for multi-head), D
// head size. q, y are [B, T, ldq] rows where head h owns columns h*D ..< (h+1)*D; k, v are
// [B, T, ldkv] likewise for the G heads. lse is [B, H, T]. Scale is 1/sqrt(D).
// Work items: forward the (b, h) pairs; backward the (b, g) pairs, each running the query heads
// of its group in order (they add into the same dk, dv), so results do not depend on the
// thread count. Backward *accumulates* into dq, dk, dv.

public enum Attention {
    /// Query rows per tile.
    public static let queryTile = 64
    /// Key rows per tile (a multiple of queryTile, so every row's last key tile holds its diagonal).
    public static let keyTile = 256

    /// Floats of per-thread scratch that forward and backward take from `scratch`.
    static let scratchPerWorker = 2 * queryTile * keyTile + 2 * queryTile

    /// y = softmax(mask(q k^T * scale)) v, per (b, h); lse[b, h, i] = log sum_j exp(s_ij).
    public static func forward(
        y: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
        q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        b: Int, t: Int, h: Int, kvHeads g: Int, d: Int, ldq: Int, ldkv: Int, scratch: WorkerScratch
    ) {
        let bufs = scratch.reserve(scratchPerWorker)
        Parallel.forEach(b * h) { item, worker in
            let bi = item / h, hi = item % h, qOff = bi * t * ldq + hi * d
            let kvOff = bi * t * ldkv + (hi / (h / g)) * d
            let head = Head(q: q + qOff, k: k + kvOff, v: v + kvOff, t: t, d: d, ldq: ldq, ldkv: ldkv)
            for r0 in stride(from: 0, to: t, by: queryTile) {
                head.forwardTile(
                    r0: r0, y: y + qOff, lse: lse + item * t, s: bufs[worker],
                    stats: bufs[worker] + 2 * queryTile * keyTile)
            }
        }
    }

    /// dv += P^T dy; dS = P * (dy v^T - rowsum(dy * y)); dq += dS k * scale; dk += dS^T q * scale,
    /// with P recomputed from q, k and lse tile by tile.
    public static func backward(
        dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
        dv: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
        q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        y: UnsafePointer<Float>, lse: UnsafePointer<Float>,
        b: Int, t: Int, h: Int, kvHeads g: Int, d: Int, ldq: Int, ldkv: Int, scratch: WorkerScratch
    ) {
        let bufs = scratch.reserve(scratchPerWorker), group = h / g
        Parallel.forEach(b * g) { item, worker in
            let bi = item / g, kvOff = bi * t * ldkv + (item % g) * d
            for hi in ((item % g) * group)..<((item % g + 1) * group) {
                let qOff = bi * t * ldq + hi * d
                let head = Head(q: q + qOff, k: k + kvOff, v: v + kvOff, t: t, d: d, ldq: ldq, ldkv: ldkv)
                let grads = HeadGradients(
                    dq: dq + qOff, dk: dk + kvOff, dv: dv + kvOff, dy: dy + qOff, y: y + qOff)
                for r0 in stride(from: 0, to: t, by: queryTile) {
                    head.backwardTile(
                        r0: r0, grads: grads, lse: lse + (bi * h + hi) * t, s: bufs[worker],
                        dp: bufs[worker] + queryTile * keyTile, rowDot: bufs[worker] + 2 * queryTile * keyTile)
                }
            }
        }
    }
}

/// One (batch, head) slice: q, k, v point at its first row; q (and y, dq, dy) rows are ldq apart,
/// k and v (and dk, dv) rows ldkv apart.
private struct Head {
    let q, k, v: UnsafePointer<Float>
    let t, d, ldq, ldkv: Int
    var scale: Float { 1 / Float(d).squareRoot() }

    /// Keys [c0, c0 + cols) that query rows [r0, r0 + rows) can see in the key tile at c0.
    func keyColumns(r0: Int, rows: Int, c0: Int) -> Int { min(Attention.keyTile, r0 + rows - c0) }

    /// s[rows, cols] (row stride keyTile) = scale * q[r0 ..< r0+rows] k[c0 ..< c0+cols]^T.
    func scores(r0: Int, rows: Int, c0: Int, cols: Int, into s: UnsafeMutablePointer<Float>) {
        sgemm(
            .no, .yes, m: rows, n: cols, k: d, alpha: scale, a: q + r0 * ldq, lda: ldq,
            b: k + c0 * ldkv, ldb: ldkv, beta: 0, c: s, ldc: Attention.keyTile)
    }

    /// Query rows [r0, r0 + rows) against every key tile up to the diagonal, online softmax;
    /// y accumulates the unnormalised output and is divided by the row sums at the end.
    /// stats: [2, queryTile] (running max, running sum).
    func forwardTile(
        r0: Int, y: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
        s: UnsafeMutablePointer<Float>, stats: UnsafeMutablePointer<Float>
    ) {
        let rows = min(Attention.queryTile, t - r0), kt = Attention.keyTile
        let mx = stats, sum = stats + Attention.queryTile
        for c0 in stride(from: 0, to: r0 + rows, by: kt) {
            let cols = keyColumns(r0: r0, rows: rows, c0: c0)
            scores(r0: r0, rows: rows, c0: c0, cols: cols, into: s)
            for i in 0..<rows {
                let valid = min(cols, r0 + i + 1 - c0), row = s + i * kt
                let tileMax = RowMath.max(row, valid), m = c0 == 0 ? tileMax : Swift.max(mx[i], tileMax)
                let rowSum = RowMath.expShiftedSum(row, valid, shift: m)
                for j in valid..<cols { row[j] = 0 }
                if c0 == 0 {
                    sum[i] = rowSum
                } else {
                    let alpha = FastMath.exp(mx[i] - m), yr = y + (r0 + i) * ldq
                    sum[i] = sum[i] * alpha + rowSum
                    for x in 0..<d { yr[x] *= alpha }
                }
                mx[i] = m
            }
            sgemm(
                .no, .no, m: rows, n: d, k: cols, a: s, lda: kt, b: v + c0 * ldkv, ldb: ldkv,
                beta: c0 == 0 ? 0 : 1, c: y + r0 * ldq, ldc: ldq)
        }
        for i in 0..<rows {
            let inv = 1 / sum[i], yr = y + (r0 + i) * ldq
            for x in 0..<d { yr[x] *= inv }
            lse[r0 + i] = mx[i] + Float(logDouble(Double(sum[i])))
        }
    }

    /// Query rows [r0, r0 + rows) against every key tile up to the diagonal: recomputes
    /// P = exp(s - lse) per tile, then the four gradient products. rowDot: [queryTile].
    func backwardTile(
        r0: Int, grads g: HeadGradients, lse: UnsafePointer<Float>,
        s: UnsafeMutablePointer<Float>, dp: UnsafeMutablePointer<Float>, rowDot: UnsafeMutablePointer<Float>
    ) {
        let rows = min(Attention.queryTile, t - r0), kt = Attention.keyTile
        let dyTile = g.dy + r0 * ldq
        for i in 0..<rows { rowDot[i] = RowMath.dot(dyTile + i * ldq, g.y + (r0 + i) * ldq, d) }
        for c0 in stride(from: 0, to: r0 + rows, by: kt) {
            let cols = keyColumns(r0: r0, rows: rows, c0: c0)
            scores(r0: r0, rows: rows, c0: c0, cols: cols, into: s)
            // dp[rows, cols] = dy v^T
            sgemm(
                .no, .yes, m: rows, n: cols, k: d, a: dyTile, lda: ldq, b: v + c0 * ldkv, ldb: ldkv,
                beta: 0, c: dp, ldc: kt)
            for i in 0..<rows {
                let valid = min(cols, r0 + i + 1 - c0), row = s + i * kt, dpr = dp + i * kt
                let l = lse[r0 + i], dot = rowDot[i]
                for j in 0..<valid {
                    let p = FastMath.exp(row[j] - l)
                    row[j] = p
                    dpr[j] = p * (dpr[j] - dot)
                }
                for j in valid..<cols {
                    row[j] = 0
                    dpr[j] = 0
                }
            }
            // dv[keys] += P^T dy;  dq += dS k * scale;  dk[keys] += dS^T q * scale.
            sgemm(
                .yes, .no, m: cols, n: d, k: rows, a: s, lda: kt, b: dyTile, ldb: ldq,
                beta: 1, c: g.dv + c0 * ldkv, ldc: ldkv)
            sgemm(
                .no, .no, m: rows, n: d, k: cols, alpha: scale, a: dp, lda: kt, b: k + c0 * ldkv, ldb: ldkv,
                beta: 1, c: g.dq + r0 * ldq, ldc: ldq)
            sgemm(
                .yes, .no, m: cols, n: d, k: rows, alpha: scale, a: dp, lda: kt, b: q + r0 * ldq, ldb: ldq,
                beta: 1, c: g.dk + c0 * ldkv, ldc: ldkv)
        }
    }
}

/// Gradient pointers of one (batch, head) slice, laid out as `Head`'s inputs.
private struct HeadGradients {
    let dq, dk, dv: UnsafeMutablePointer<Float>
    let dy, y: UnsafePointer<Float>
}
