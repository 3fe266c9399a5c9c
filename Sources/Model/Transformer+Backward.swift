// The backward pass of Transformer, in reverse block order (run by `forwardBackward` on the rows
// its forward loaded). Gradients *accumulate* into store.grads (the optimizer zeroes them once per
// step) and are this rank's partial sums until ShardedAdamW sums them over the groups the shard
// specs name.
// Shape legend: as in Transformer.swift.
import Tensor

/// Backward scratch, shared by all blocks.
final class BackwardScratch {
    let dResid, dLn: FloatBuffer  // [N, C]
    let dq, dy: FloatBuffer  // [N, Hl*D]
    let dk, dv: FloatBuffer  // [N, Gl*D]
    let dqRaw, dkRaw: FloatBuffer?  // model.qkNorm: d(q), d(k) before the norm
    let rowSums: FloatBuffer  // [N]: the full q/k norm's row sums (forward and backward)
    let dH, dA: FloatBuffer  // dense FFN: dPre (as pre), dA [N, F]
    let attention = WorkerScratch()  // attention tiles, per thread (forward and backward)
    let dLogits: FloatBuffer  // [N, V]
    let moe: MoEScratch
    let heads: HeadGateScratch?  // MoH
    init(config m: ModelConfig, n: Int, tp: Int, maxTopK: Int) {
        let c = m.nEmbd, sh = AttentionShape(config: m, tp: tp)
        dResid = FloatBuffer(count: n * c); dLn = FloatBuffer(count: n * c)
        dq = FloatBuffer(count: n * sh.ql); dk = FloatBuffer(count: n * sh.kvl)
        dv = FloatBuffer(count: n * sh.kvl); dy = FloatBuffer(count: n * sh.ql)
        dqRaw = m.usesQKNorm ? FloatBuffer(count: n * sh.ql) : nil
        dkRaw = m.usesQKNorm ? FloatBuffer(count: n * sh.kvl) : nil
        rowSums = FloatBuffer(count: m.qkNorm == "full" ? n : 0)
        let dense = m.hasDenseMLP ? n : 0
        dH = FloatBuffer(count: dense * m.ffnPreactWidth); dA = FloatBuffer(count: dense * m.ffHidden)
        dLogits = FloatBuffer(count: n * m.vocabSize)
        moe = MoEScratch(n: n, e: m.nExpert, k: maxTopK)
        heads = m.usesMoH ? HeadGateScratch(config: m, n: n, tp: tp) : nil
    }
}

extension Transformer {
    /// Backpropagates `objective` over `rows`, which forwardPass just ran. Every rank of the world
    /// must call it (the MoE exchanges rows).
    func backward(_ rows: PassRows, objective: Objective) throws {
        let n = rows.n, c = config.nEmbd
        let s = scratch, g = store.grads
        headBackward(lossScale: objective.lossScale, n: n)
        try gradientsFinal?(2 * config.nLayer)
        for l in stride(from: config.nLayer - 1, through: 0, by: -1) {
            // Recomputation writes the same bits forward wrote (same kernels, inputs and order);
            // a block's recomputed output overwrites resid[l + 1], whose readers are done.
            if recompute == .block {
                try attentionForward(layer: l, rows)
                _ = try feedForward(layer: l, rows)
            }
            try feedForwardBackward(layer: l, rows, objective: objective)
            try gradientsFinal?(2 * l + 1)
            if recompute == .attention { try attentionForward(layer: l, rows) }
            try attentionBackward(layer: l, rows)
            try gradientsFinal?(2 * l)
        }
        timed(.embedding) {
            tokens.withUnsafeBufferPointer { tokenIds in
                Embedding.backward(
                    dwte: store.pointer("embed.weight", in: g),
                    dwpe: rope == nil ? store.pointer("pos.weight", in: g) : nil,
                    dOut: s.dResid.base, tokens: tokenIds.baseAddress!, b: rows.batch, t: rows.time, c: c)
            }
        }
        try gradientsFinal?(-1)
    }

    /// Cross-entropy, output head and final norm: leaves d(resid[L]) in scratch.dResid.
    func headBackward(lossScale: Float, n: Int) {
        let m = config, c = m.nEmbd, s = scratch, g = store.grads, p = store.params
        timed(.headLoss) {
            s.dLogits.base.update(repeating: 0, count: n * m.vocabSize)
            targets.withUnsafeBufferPointer { targetIds in
                CrossEntropy.backward(
                    dLogits: s.dLogits.base, logits: logits.base, targets: targetIds.baseAddress!,
                    dLoss: lossScale, n: n, v: m.vocabSize)
            }
            zero(s.dLn, n * c)
            Linear.backward(
                dInp: s.dLn.base, dWeight: store.pointer("head.weight", in: g), dOut: s.dLogits.base,
                inp: lnf.base, weight: store.pointer("head.weight", in: p), n: n, inFeatures: c,
                outFeatures: m.vocabSize)
        }
        zero(s.dResid, n * c)
        timed(.norms) {
            RMSNorm.backward(
                dx: s.dResid.base, dWeight: store.pointer("norm.weight", in: g), dOut: s.dLn.base,
                x: resid[m.nLayer].base, weight: store.pointer("norm.weight", in: p), rstd: rstdf.base, n: n, c: c)
        }
    }

    /// FFN: resid[l+1] = mid + ffn(rmsnorm2(mid)); dResid flows to mid unchanged and through the
    /// FFN (MoE or dense): on return scratch.dResid holds d(mid).
    func feedForwardBackward(layer l: Int, _ rows: PassRows, objective: Objective) throws {
        let n = rows.n, c = config.nEmbd, s = scratch
        let w = weights[l], gw = gradients[l], a = blocks[l]
        zero(s.dLn, n * c)
        if let layer = moeLayers[l] {
            try layer.backward(
                dx: s.dLn.base, dOut: s.dResid.base, x: a.ln2.base, n: n, globalTokens: rows.globalTokens,
                objective: objective, profile: profile)
            // After the MoE's backward, which writes every row of dLn: the shared experts add theirs.
            timed(.denseFFN) {
                for (i, sw) in w.shared.enumerated() {
                    MLP.backward(
                        dx: s.dLn.base, g: gw.shared[i], dOut: s.dResid.base, x: a.ln2.base, pre: a.sharedPre[i].base,
                        a: a.sharedAct[i].base, w: sw, dA: s.dA.base, dPre: s.dH.base, n: n, c: c, f: config.ffHidden)
                }
            }
        } else {
            timed(.denseFFN) {
                MLP.backward(
                    dx: s.dLn.base, g: gw.ffn!, dOut: s.dResid.base, x: a.ln2.base, pre: a.h!.base, a: a.a!.base,
                    w: w.ffn!, dA: s.dA.base, dPre: s.dH.base, n: n, c: c, f: config.ffHidden)
            }
        }
        timed(.norms) {
            RMSNorm.backward(
                dx: s.dResid.base, dWeight: gw.norm2, dOut: s.dLn.base, x: a.mid.base, weight: w.norm2,
                rstd: a.rstd2.base, n: n, c: c)
        }
    }

    /// Attention: mid = x + allreduce_tp(attn_local(rmsnorm1(x)) @ wo_local^T); on return
    /// scratch.dResid holds d(resid[l]).
    func attentionBackward(layer l: Int, _ rows: PassRows) throws {
        let n = rows.n, m = config, c = m.nEmbd, sh = attentionShape, s = scratch
        let w = weights[l], gw = gradients[l], a = blocks[l]
        timed(.attnProjections) {
            zero(s.dy, n * sh.ql)
            // With MoH, wo saw the gated rows: its input gradient goes to them, then to dy.
            Linear.backward(
                dInp: woInputGradient(layer: l, n: n), dWeight: gw.wo, dOut: s.dResid.base,
                inp: a.heads?.gated.base ?? a.y.base, weight: w.wo, n: n, inFeatures: sh.ql, outFeatures: c)
            gateHeadsBackward(layer: l, n: n)
        }
        timed(.attnCore) {
            zero(s.dq, n * sh.ql)
            zero(s.dk, n * sh.kvl)
            zero(s.dv, n * sh.kvl)
            Attention.backward(
                dq: s.dq.base, dk: s.dk.base, dv: s.dv.base, dy: s.dy.base, q: a.q.base, k: a.k.base,
                v: a.v.base, y: a.y.base, lse: a.lse.base, b: rows.batch, t: rows.time, h: sh.hl, kvHeads: sh.gl,
                d: sh.d, ldq: sh.ql, ldkv: sh.kvl, scratch: s.attention)
        }
        try projectQKVBackward(layer: l, rows)
        // Each tp rank holds its heads' share of d(rmsnorm1 output): sum them.
        try ctx.allreduce(s.dLn.base, n * c, over: ctx.comms.tp)
        timed(.norms) {
            RMSNorm.backward(
                dx: s.dResid.base, dWeight: gw.norm1, dOut: s.dLn.base, x: resid[l].base, weight: w.norm1,
                rstd: a.rstd1.base, n: n, c: c)
        }
    }

    @inline(__always) func zero(_ buf: FloatBuffer, _ count: Int) { buf.base.update(repeating: 0, count: count) }
}
