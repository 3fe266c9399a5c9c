// The MoE FFN at one rank (all experts local): router -> top-k -> dropless dispatch
// (tokens gathered per expert) -> one MLP sgemm pair per expert -> weighted combine.
// Shape legend: N tokens, C channels, F hidden, E experts, K top-k, S = N*K slots.
// Forward *adds* into the residual stream; backward *accumulates* into dx and weight grads.
import Tensor

/// Pointers to one MoE block's weights (or their gradients) in a ParameterStore buffer.
struct MoEWeights {
    let router: UnsafeMutablePointer<Float>   // [E, C]
    let w1: [UnsafeMutablePointer<Float>]     // E x [F, C]
    let w2: [UnsafeMutablePointer<Float>]     // E x [C, F]
}

enum MoE {
    /// out[N, C] += sum_k w[n, k] * expert_{i[n, k]}(x[n]); returns the balance loss aux.
    static func forward(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, w: MoEWeights,
                        act: MoEActivations, n: Int, c: Int, f: Int, e: Int, k: Int, profile: KernelProfile? = nil) -> Float {
        var clock = RegionClock(profile)
        Linear.forward(out: act.logits.base, inp: x, weight: w.router, n: n, inFeatures: c, outFeatures: e)
        Router.forward(probs: act.probs.base, topIndex: act.topIndex, topWeight: act.topWeight.base,
                       logits: act.logits.base, n: n, e: e, k: k)
        let aux = LoadBalance.forward(f: act.share.base, probs: act.probs.base, topIndex: act.topIndex, n: n, e: e, k: k)
        clock.lap(.router)
        dispatch(act: act, x: x, n: n, c: c, e: e, k: k)
        clock.lap(.dispatchCombine)
        for ex in 0..<e where act.counts[ex] > 0 {
            let s = act.offsets[ex]
            MLP.forward(o: act.o.base + s * c, h: act.h.base + s * f, a: act.a.base + s * f,
                        x: act.xe.base + s * c, w1: w.w1[ex], w2: w.w2[ex], n: act.counts[ex], c: c, f: f)
        }
        clock.lap(.experts)
        // Combine in token order, slot order: a fixed summation order.
        for r in 0..<n {
            let dst = out + r * c
            for j in 0..<k {
                let wt = act.topWeight.base[r * k + j]
                let src = act.o.base + Int(act.slotOf[r * k + j]) * c
                for i in 0..<c { dst[i] += wt * src[i] }
            }
        }
        clock.lap(.dispatchCombine)
        return aux
    }

    /// Groups the N*K assignments by expert (token order inside each) and gathers inputs.
    static func dispatch(act: MoEActivations, x: UnsafePointer<Float>, n: Int, c: Int, e: Int, k: Int) {
        for ex in 0..<e { act.counts[ex] = 0 }
        for i in 0..<(n * k) { act.counts[Int(act.topIndex[i])] += 1 }
        var acc = 0
        for ex in 0..<e { act.offsets[ex] = acc; acc += act.counts[ex] }
        var fill = act.offsets
        for r in 0..<n {
            for j in 0..<k {
                let ex = Int(act.topIndex[r * k + j])
                let slot = fill[ex]
                fill[ex] += 1
                act.slotOf[r * k + j] = Int32(slot)
                act.tokenOf[slot] = Int32(r)
                (act.xe.base + slot * c).update(from: x + r * c, count: c)
            }
        }
    }

    /// Backward from dOut[N, C] (the residual gradient at the block output).
    /// dx[N, C] += d(loss)/d(x); weight gradients accumulate into g. auxCoef is d(objective)/d(aux).
    static func backward(dx: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
                         w: MoEWeights, g: MoEWeights, act: MoEActivations, scratch: FFNScratch,
                         auxCoef: Float, n: Int, c: Int, f: Int, e: Int, k: Int, profile: KernelProfile? = nil) {
        var clock = RegionClock(profile)
        let dO = scratch.dO.base, dTW = scratch.dTopWeight.base
        for r in 0..<n {
            let d = dOut + r * c
            for j in 0..<k {
                let slot = Int(act.slotOf[r * k + j])
                let o = act.o.base + slot * c, dst = dO + slot * c
                let wt = act.topWeight.base[r * k + j]
                var dot: Float = 0
                for i in 0..<c { dot += d[i] * o[i]; dst[i] = wt * d[i] }
                dTW[r * k + j] = dot
            }
        }
        let dxe = scratch.dxe.base
        dxe.update(repeating: 0, count: n * k * c)
        clock.lap(.dispatchCombine)
        for ex in 0..<e where act.counts[ex] > 0 {
            let s = act.offsets[ex]
            MLP.backward(dx: dxe + s * c, dw1: g.w1[ex], dw2: g.w2[ex], dOut: dO + s * c, x: act.xe.base + s * c,
                         h: act.h.base + s * f, a: act.a.base + s * f, w1: w.w1[ex], w2: w.w2[ex],
                         dA: scratch.dA.base, dH: scratch.dH.base, n: act.counts[ex], c: c, f: f)
        }
        clock.lap(.experts)
        for r in 0..<n {
            let d = dx + r * c
            for j in 0..<k {
                let src = dxe + Int(act.slotOf[r * k + j]) * c
                for i in 0..<c { d[i] += src[i] }
            }
        }
        clock.lap(.dispatchCombine)
        scratch.dProbs.base.update(repeating: 0, count: n * e)
        LoadBalance.backward(dProbs: scratch.dProbs.base, f: act.share.base, dAux: auxCoef, n: n, e: e)
        scratch.dLogits.base.update(repeating: 0, count: n * e)
        Router.backward(dLogits: scratch.dLogits.base, dTopWeight: dTW, dProbsExtra: scratch.dProbs.base,
                        probs: act.probs.base, topIndex: act.topIndex, topWeight: act.topWeight.base,
                        n: n, e: e, k: k, scratch: scratch.rowScratch.base)
        Linear.backward(dInp: dx, dWeight: g.router, dOut: scratch.dLogits.base, inp: x, weight: w.router,
                        n: n, inFeatures: c, outFeatures: e)
        clock.lap(.router)
    }
}

/// Charges consecutive spans of a function to profile regions (no clock calls without a profile).
struct RegionClock {
    let profile: KernelProfile?
    var last: Double
    init(_ p: KernelProfile?) { profile = p; last = p == nil ? 0 : monotonicSeconds() }
    @inline(__always) mutating func lap(_ r: ProfileRegion) {
        guard let p = profile else { return }
        let t = monotonicSeconds()
        p.add(r, t - last)
        last = t
    }
}
