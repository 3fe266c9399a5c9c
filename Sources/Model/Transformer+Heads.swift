// Mixture-of-Head attention in the model (model.attention = moh): between the attention core and
// the output projection, each row's head outputs are scaled by the head router's gates
// (Tensor/HeadRouter.swift), so wo sums the heads with the router's weights. Every head is still
// computed (the gates select, they save no FLOPs here). Under tp every rank scores all H heads
// from its replicated rows and gates its own Hl; in backward it sends its own heads' gate
// gradients through the router, and the partial router gradients and dx sum over tp like the
// projections' (the router reduces over the world).
// Shape legend as in Transformer.swift; R head router rows.
import Tensor

/// A block's head-router state, kept from forward for backward.
final class HeadGateState {
    let logits, probs: FloatBuffer  // [N, R]
    let gates, chosen: FloatBuffer  // [N, H]
    let gated: FloatBuffer  // [N, Cl]: y scaled by the gates, wo's input
    init(config m: ModelConfig, n: Int, tp: Int) {
        let r = m.headRouterRows, h = m.nHead
        logits = FloatBuffer(count: n * r); probs = FloatBuffer(count: n * r)
        gates = FloatBuffer(count: n * h); chosen = FloatBuffer(count: n * h)
        gated = FloatBuffer(count: n * m.qWidth / tp)
    }
}

/// Backward scratch of the head router, shared by all blocks.
final class HeadGateScratch {
    let dGated: FloatBuffer  // [N, Cl]
    let dGates: FloatBuffer  // [N, H]
    let dLogits: FloatBuffer  // [N, R]
    init(config m: ModelConfig, n: Int, tp: Int) {
        dGated = FloatBuffer(count: n * m.qWidth / tp)
        dGates = FloatBuffer(count: n * m.nHead)
        dLogits = FloatBuffer(count: n * m.headRouterRows)
    }
}

extension Transformer {
    /// wo's input for block l: its attention output y [N, Hl*D], or with MoH y gated per head from
    /// the router's scores of rmsnorm1's output (the state kept for backward).
    func gateHeads(layer l: Int, n: Int) -> UnsafeMutablePointer<Float> {
        let a = blocks[l]
        guard let hs = a.heads, let router = weights[l].headRouter else { return a.y.base }
        let m = config, tp = ctx.mesh.tp, hl = m.nHead / tp
        Linear.forward(
            out: hs.logits.base, inp: a.ln1.base, weight: router, n: n, inFeatures: m.nEmbd,
            outFeatures: m.headRouterRows)
        HeadRouter.forward(
            gates: hs.gates.base, probs: hs.probs.base, chosen: hs.chosen.base, logits: hs.logits.base, n: n,
            h: m.nHead, shared: m.mohSharedHeads, active: m.activeRoutedHeads)
        HeadRouter.scale(
            out: hs.gated.base, y: a.y.base, gates: hs.gates.base, n: n, heads: hl, first: ctx.mesh.tpIndex * hl,
            h: m.nHead, d: m.headSize, ldc: m.qWidth / tp)
        return hs.gated.base
    }

    /// Where wo's backward writes d(its input): scratch.dy, or with MoH the gated rows' gradient
    /// (zeroed), which `gateHeadsBackward` turns into dy.
    func woInputGradient(layer l: Int, n: Int) -> UnsafeMutablePointer<Float> {
        guard blocks[l].heads != nil, let hg = scratch.heads else { return scratch.dy.base }
        let cl = config.qWidth / ctx.mesh.tp
        hg.dGated.base.update(repeating: 0, count: n * cl)
        return hg.dGated.base
    }

    /// MoH backward, first half: dy = gates * d(gated) for this rank's heads, and the router
    /// logits' gradient from this rank's heads' gate gradients (the other heads' count as zero).
    func gateHeadsBackward(layer l: Int, n: Int) {
        guard let hs = blocks[l].heads, let hg = scratch.heads else { return }
        let m = config, tp = ctx.mesh.tp, hl = m.nHead / tp
        hg.dGates.base.update(repeating: 0, count: n * m.nHead)
        HeadRouter.scaleBackward(
            dy: scratch.dy.base, dGates: hg.dGates.base, dOut: hg.dGated.base, y: blocks[l].y.base,
            gates: hs.gates.base, n: n, heads: hl, first: ctx.mesh.tpIndex * hl, h: m.nHead, d: m.headSize,
            ldc: m.qWidth / tp)
        hg.dLogits.base.update(repeating: 0, count: n * m.headRouterRows)
        HeadRouter.backward(
            dLogits: hg.dLogits.base, dGates: hg.dGates.base, probs: hs.probs.base, chosen: hs.chosen.base, n: n,
            h: m.nHead, shared: m.mohSharedHeads)
    }

    /// MoH backward, second half: the router's weight gradient, and its dx added into
    /// scratch.dLn (before the tp sum).
    func headRouterBackward(layer l: Int, n: Int) {
        guard blocks[l].heads != nil, let hg = scratch.heads, let router = weights[l].headRouter else { return }
        Linear.backward(
            dInp: scratch.dLn.base, dWeight: gradients[l].headRouter, dOut: hg.dLogits.base, inp: blocks[l].ln1.base,
            weight: router, n: n, inFeatures: config.nEmbd, outFeatures: config.headRouterRows)
    }
}
