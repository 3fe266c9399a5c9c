// The attention's input side, shared by training (Transformer) and generation (Decoder):
// rmsnorm1, the q/k/v projections of this rank's heads, the optional q/k RMSNorm (per head,
// Qwen3; or over the whole projection, OLMoE, whose row sums span the tp group), and rope.
// Backward runs it in reverse. Shape legend as in Transformer.swift, with Hl query and Gl
// key/value heads on this rank: q, y [N, Hl*D]; k, v [N, Gl*D].
import Tensor

/// This rank's share of the attention heads and the row widths of its buffers.
struct AttentionShape {
    let hl: Int  // query heads
    let gl: Int  // key/value heads
    let d: Int  // head size
    var ql: Int { hl * d }  // q, y, dq, dy row width
    var kvl: Int { gl * d }  // k, v, dk, dv row width

    init(config m: ModelConfig, tp: Int) {
        hl = m.nHead / tp; gl = m.kvHeads / tp; d = m.headSize
    }
}

/// Block l's q/k norm weights (nil without model.qkNorm).
struct QKNormWeights {
    let q, k: UnsafeMutablePointer<Float>
}

extension Transformer {
    var attentionShape: AttentionShape { AttentionShape(config: config, tp: ctx.mesh.tp) }
    var normEps: Float { Float(config.rmsNormEps) }

    /// a.ln1 = rmsnorm1(x); a.q, a.k, a.v of this rank's heads (q/k normed, rotated by `rope`
    /// at `position(row)`). With q/k norm the projections' outputs are kept in a.qRaw, a.kRaw.
    func projectQKV(layer l: Int, n: Int, rope: RopeTable?, position: @escaping (Int) -> Int) throws {
        let m = config, c = m.nEmbd, sh = attentionShape, w = weights[l], a = blocks[l], x = resid[l].base
        timed(.norms) {
            RMSNorm.forward(out: a.ln1.base, rstd: a.rstd1.base, x: x, weight: w.norm1, n: n, c: c, eps: normEps)
        }
        let qOut = a.qk?.qRaw.base ?? a.q.base, kOut = a.qk?.kRaw.base ?? a.k.base
        timed(.attnProjections) {
            Linear.forward(out: qOut, inp: a.ln1.base, weight: w.wq, n: n, inFeatures: c, outFeatures: sh.ql)
            Linear.forward(out: kOut, inp: a.ln1.base, weight: w.wk, n: n, inFeatures: c, outFeatures: sh.kvl)
            Linear.forward(out: a.v.base, inp: a.ln1.base, weight: w.wv, n: n, inFeatures: c, outFeatures: sh.kvl)
        }
        if let norms = w.qkNorm, let qk = a.qk {
            try qkNorm(qk.qRaw, into: a.q, rstd: qk.qRstd, weight: norms.q, n: n, heads: sh.hl)
            try qkNorm(qk.kRaw, into: a.k, rstd: qk.kRstd, weight: norms.k, n: n, heads: sh.gl)
        }
        if let rope { timed(.attnCore) { rotate(a.q.base, a.k.base, n: n, table: rope, inverse: false, position) } }
    }

    /// out = rmsnorm(raw) per head (qkNorm head: rows of D) or per row over the whole projection
    /// (qkNorm full: the sums of squares added over the tp group first).
    func qkNorm(
        _ raw: FloatBuffer, into out: FloatBuffer, rstd: FloatBuffer, weight: UnsafePointer<Float>, n: Int, heads: Int
    ) throws {
        let d = config.headSize, width = heads * d
        if config.qkNorm == "head" {
            timed(.norms) {
                RMSNorm.forward(
                    out: out.base, rstd: rstd.base, x: raw.base, weight: weight, n: n * heads, c: d, eps: normEps)
            }
            return
        }
        let sums = scratch.rowSums.base
        RMSNorm.partialSquares(sums, x: raw.base, n: n, c: width)
        try ctx.allreduce(sums, n, over: ctx.comms.tp)
        timed(.norms) {
            RMSNorm.forwardSplit(
                out: out.base, rstd: rstd.base, x: raw.base, weight: weight, sums: sums, n: n, c: width,
                cTotal: width * ctx.mesh.tp, eps: normEps)
        }
    }

    /// Rope on this rank's heads of q [N, ql] and k [N, kvl] in place (inverse: backward on dq
    /// and dk), row r at position(r), in row blocks.
    func rotate(
        _ q: UnsafeMutablePointer<Float>, _ k: UnsafeMutablePointer<Float>, n: Int, table: RopeTable, inverse: Bool,
        _ position: @escaping (Int) -> Int
    ) {
        let sh = attentionShape
        Parallel.forEachBlock(n, grain: Linear.rowGrain) { block in
            for (x, heads) in [(q, sh.hl), (k, sh.gl)] {
                let ld = heads * sh.d
                Rope.apply(
                    x + block.lowerBound * ld, rows: block.count, heads: heads, d: sh.d, ldc: ld, table: table,
                    inverse: inverse
                ) { position(block.lowerBound + $0) }
            }
        }
    }
}

extension Transformer {
    /// From d(q), d(k), d(v) of this rank's heads in scratch back through rope and the q/k norm
    /// to the projections' weight gradients and d(ln1) in scratch.dLn (this rank's heads' share:
    /// the caller sums it over tp).
    func projectQKVBackward(layer l: Int, _ rows: PassRows) throws {
        let n = rows.n, t = rows.time, c = config.nEmbd, sh = attentionShape, s = scratch
        let w = weights[l], gw = gradients[l], a = blocks[l]
        if let rope { timed(.attnCore) { rotate(s.dq.base, s.dk.base, n: n, table: rope, inverse: true) { $0 % t } } }
        var dq = s.dq.base, dk = s.dk.base
        if let norms = w.qkNorm, let grads = gw.qkNorm, let qk = a.qk, let dqRaw = s.dqRaw, let dkRaw = s.dkRaw {
            try qkNormBackward(
                dOut: s.dq, dx: dqRaw, raw: qk.qRaw, rstd: qk.qRstd, weight: norms.q, dWeight: grads.q, n: n,
                heads: sh.hl)
            try qkNormBackward(
                dOut: s.dk, dx: dkRaw, raw: qk.kRaw, rstd: qk.kRstd, weight: norms.k, dWeight: grads.k, n: n,
                heads: sh.gl)
            (dq, dk) = (dqRaw.base, dkRaw.base)
        }
        timed(.attnProjections) {
            zero(s.dLn, n * c)
            for (dOut, weight, dWeight, width) in [
                (dq, w.wq, gw.wq, sh.ql), (dk, w.wk, gw.wk, sh.kvl), (s.dv.base, w.wv, gw.wv, sh.kvl)
            ] {
                Linear.backward(
                    dInp: s.dLn.base, dWeight: dWeight, dOut: dOut, inp: a.ln1.base, weight: weight, n: n,
                    inFeatures: c, outFeatures: width)
            }
            headRouterBackward(layer: l, n: n)
        }
    }

    /// dx = d(raw) of the q/k norm from d(out); its weight's gradient accumulates (full: the
    /// row dot products added over the tp group first).
    func qkNormBackward(
        dOut: FloatBuffer, dx: FloatBuffer, raw: FloatBuffer, rstd: FloatBuffer, weight: UnsafePointer<Float>,
        dWeight: UnsafeMutablePointer<Float>, n: Int, heads: Int
    ) throws {
        let d = config.headSize, width = heads * d
        zero(dx, n * width)
        if config.qkNorm == "head" {
            timed(.norms) {
                RMSNorm.backward(
                    dx: dx.base, dWeight: dWeight, dOut: dOut.base, x: raw.base, weight: weight, rstd: rstd.base,
                    n: n * heads, c: d)
            }
            return
        }
        let dots = scratch.rowSums.base
        RMSNorm.partialDots(dots, dOut: dOut.base, x: raw.base, weight: weight, n: n, c: width)
        try ctx.allreduce(dots, n, over: ctx.comms.tp)
        timed(.norms) {
            RMSNorm.backwardSplit(
                dx: dx.base, dWeight: dWeight, dOut: dOut.base, x: raw.base, weight: weight, rstd: rstd.base,
                dots: dots, n: n, c: width, cTotal: width * ctx.mesh.tp)
        }
    }
}
