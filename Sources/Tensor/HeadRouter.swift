// Mixture-of-Head attention's head router (MoH, Jin et al. 2024, "Multi-Head Attention as
// Mixture-of-Head Attention"): per row, a gate for every head from router logits. Shared heads
// 0..<S are always active, gated alpha1 * softmax(shared logits); of the routed heads S..<H the top
// A by logit are active, gated alpha2 * softmax(routed logits) (the softmax over all routed heads,
// not renormalised over the A chosen, as in the paper); [alpha1, alpha2] = softmax of the two mix
// logits (the two-stage weighting). Without shared heads there is no mix: alpha2 = 1.
// Shape legend: N rows, H heads, S shared heads, A active routed heads, R router rows (H + 2, or
// H when S = 0) in the order [shared S | routed H - S | mix 2], Hl local heads, D head size.
// Backward *accumulates* into dLogits.

public enum HeadRouter {
    /// Router rows R for H heads of which S are shared.
    public static func rows(heads h: Int, shared s: Int) -> Int { s > 0 ? h + 2 : h }

    /// gates[N, H] from logits[N, R]; probs[N, R] keeps the three softmaxes (shared, routed, mix)
    /// and chosen[N, H] is 1 for an active head, 0 otherwise (both for backward). Top-A by logit,
    /// the lower head index winning ties.
    public static func forward(
        gates: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>, chosen: UnsafeMutablePointer<Float>,
        logits: UnsafePointer<Float>, n: Int, h: Int, shared s: Int, active: Int
    ) {
        precondition(s >= 0 && s < h && active >= 1 && active <= h - s, "MoH needs 0 <= S < H and 1 <= A <= H - S")
        let r = rows(heads: h, shared: s)
        Parallel.forEachBlock(n, grain: 256) { block in
            for i in block {
                let l = logits + i * r, p = probs + i * r, g = gates + i * h, m = chosen + i * h
                softmax(p, l, s)
                softmax(p + s, l + s, h - s)
                var alpha1: Float = 0, alpha2: Float = 1
                if s > 0 {
                    softmax(p + h, l + h, 2)
                    alpha1 = p[h]; alpha2 = p[h + 1]
                }
                for j in 0..<s { g[j] = alpha1 * p[j]; m[j] = 1 }
                for j in s..<h { g[j] = 0; m[j] = 0 }
                for _ in 0..<active {
                    var best = -1
                    for j in s..<h where m[j] == 0 && (best < 0 || l[j] > l[best]) { best = j }
                    m[best] = 1
                    g[best] = alpha2 * p[best]
                }
            }
        }
    }

    /// dLogits[N, R] += d gates / d logits applied to dGates[N, H] (from forward's probs, chosen):
    /// shared j: d alpha1 = sum dg s, d s = alpha1 dg; routed j: d alpha2 = sum dg r m, d r = alpha2 m dg;
    /// then each softmax's backward, p (dp - <p, dp>).
    public static func backward(
        dLogits: UnsafeMutablePointer<Float>, dGates: UnsafePointer<Float>, probs: UnsafePointer<Float>,
        chosen: UnsafePointer<Float>, n: Int, h: Int, shared s: Int
    ) {
        let r = rows(heads: h, shared: s)
        Parallel.forEachBlock(n, grain: 256) { block in
            var dp = [Float](repeating: 0, count: r)
            for i in block {
                let p = probs + i * r, dg = dGates + i * h, m = chosen + i * h, dl = dLogits + i * r
                let alpha1: Float = s > 0 ? p[h] : 0, alpha2: Float = s > 0 ? p[h + 1] : 1
                var dAlpha1: Float = 0, dAlpha2: Float = 0
                for j in 0..<s {
                    dAlpha1 += dg[j] * p[j]
                    dp[j] = alpha1 * dg[j]
                }
                for j in s..<h {
                    dAlpha2 += dg[j] * p[j] * m[j]
                    dp[j] = alpha2 * m[j] * dg[j]
                }
                softmaxBackward(dl, p, dp, s)
                softmaxBackward(dl + s, p + s, dp[s...], h - s)
                if s > 0 {
                    dp[h] = dAlpha1; dp[h + 1] = dAlpha2
                    softmaxBackward(dl + h, p + h, dp[h...], 2)
                }
            }
        }
    }

    /// out[N, Hl*D] = y with head j's D columns times gates[row, first + j] (ldc: row stride of y
    /// and out; gates has H columns).
    public static func scale(
        out: UnsafeMutablePointer<Float>, y: UnsafePointer<Float>, gates: UnsafePointer<Float>,
        n: Int, heads hl: Int, first: Int, h: Int, d: Int, ldc: Int
    ) {
        Parallel.forEachBlock(n, grain: 256) { block in
            for i in block {
                for j in 0..<hl {
                    let g = gates[i * h + first + j], o = i * ldc + j * d
                    for c in 0..<d { out[o + c] = g * y[o + c] }
                }
            }
        }
    }

    /// Backward of `scale` from dOut: dy = dOut * gate (overwritten) and dGates[row, first + j] =
    /// sum_c y * dOut (overwritten; other heads' columns untouched).
    public static func scaleBackward(
        dy: UnsafeMutablePointer<Float>, dGates: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
        y: UnsafePointer<Float>, gates: UnsafePointer<Float>, n: Int, heads hl: Int, first: Int, h: Int, d: Int,
        ldc: Int
    ) {
        Parallel.forEachBlock(n, grain: 256) { block in
            for i in block {
                for j in 0..<hl {
                    let g = gates[i * h + first + j], o = i * ldc + j * d
                    var dot: Float = 0
                    for c in 0..<d {
                        dot += y[o + c] * dOut[o + c]
                        dy[o + c] = g * dOut[o + c]
                    }
                    dGates[i * h + first + j] = dot
                }
            }
        }
    }

    /// p[0..<count] = softmax(l[0..<count]) (nothing for count 0).
    static func softmax(_ p: UnsafeMutablePointer<Float>, _ l: UnsafePointer<Float>, _ count: Int) {
        guard count > 0 else { return }
        var mx = -Float.infinity
        for j in 0..<count where l[j] > mx { mx = l[j] }
        var sum: Float = 0
        for j in 0..<count {
            p[j] = FastMath.exp(l[j] - mx)
            sum += p[j]
        }
        let inv = 1 / sum
        for j in 0..<count { p[j] *= inv }
    }

    /// dl[0..<count] += p (dp - <p, dp>), dp read from the slice's first `count` elements.
    static func softmaxBackward(
        _ dl: UnsafeMutablePointer<Float>, _ p: UnsafePointer<Float>, _ dp: ArraySlice<Float>, _ count: Int
    ) {
        let base = dp.startIndex
        var dot: Float = 0
        for j in 0..<count { dot += p[j] * dp[base + j] }
        for j in 0..<count { dl[j] += p[j] * (dp[base + j] - dot) }
    }

    static func softmaxBackward(
        _ dl: UnsafeMutablePointer<Float>, _ p: UnsafePointer<Float>, _ dp: [Float], _ count: Int
    ) {
        softmaxBackward(dl, p, dp[0...], count)
    }
}
