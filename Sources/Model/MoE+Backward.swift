// MoE backward, the forward's steps in reverse: combine's backward (the gradient of each kept
// assignment's weight and its output row), the rows out to the experts, each local expert's MLP
// backward, the rows home (summed per token in slot order), then the router and balance loss.
// The dispatcher moves the rows (MoE+Dispatch.swift). Shape legend as in MoE.swift.
import Tensor

extension MoELayer {
    /// Backward from dOut[N, C] (the residual gradient at the block output, same on every tp rank)
    /// of the forward's input x[N, C]. dx[N, C] (zero on entry) receives d(objective)/d(x) on
    /// every tp rank; the router's and the local experts' gradients accumulate into `g`.
    func backward(
        dx: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, n: Int,
        globalTokens: Int, objective: Objective, profile: KernelProfile?
    ) throws {
        var clock = RegionClock(profile)
        let dxs = dx + s.rowStart * c
        combineBackward(dOut: dOut)
        try dispatcher.gradientsToExperts(s, sc)
        clock.lap(.dispatchCombine)
        expertsBackward()
        clock.lap(.experts)
        try addGradientsHome(dxs)
        clock.lap(.dispatchCombine)
        routerBackward(
            dxs: dxs, x: x + s.rowStart * c, auxCoef: objective.auxCoef, zCoef: objective.zCoef, tokens: globalTokens)
        clock.lap(.router)
        try ctx.allgatherRowsTP(dx, n: n, c: c, scratch: gatherScratch)
        clock.lap(.dispatchCombine)
    }

    /// Combine's backward: dTopWeight[r, j] = dOut[r] . o (0 for a dropped assignment) and the
    /// gradient of each kept assignment's output row, wt * dOut[r], at its send slot of the
    /// dispatcher's output gradients.
    func combineBackward(dOut: UnsafePointer<Float>) {
        let into = dispatcher.outputGradients(s, sc), home = dispatcher.returned(s)
        let dTW = sc.dTopWeight.base
        Parallel.forEachBlock(s.rows, grain: Self.rowGrain) { block in
            for r in block {
                let d = dOut + (s.rowStart + r) * c
                for j in 0..<k {
                    if s.dropped[r * k + j] {
                        dTW[r * k + j] = 0
                        continue
                    }
                    let slot = Int(s.sendSlot[r * k + j])
                    let o = home + slot * c, dst = into + slot * c
                    let wt = s.topWeight.base[r * k + j]
                    var dot: Float = 0
                    for i in 0..<c {
                        dot += d[i] * o[i]
                        dst[i] = wt * d[i]
                    }
                    dTW[r * k + j] = dot
                }
            }
        }
    }

    /// Each local expert's MLP backward, one work item per expert: its own weight gradients, rows
    /// of sc.dXe and scratch.
    func expertsBackward() {
        let maxRows = s.expertRows.max() ?? 0
        // An expert receives each token at most once: its rows are bounded by the rows one expert
        // can be sent (one local expert), as MemoryEstimate counts them.
        let bound = shape.mostReceivedRows(s, sources: dispatcher.sources, localExperts: 1)
        let hidden = sc.hidden.reserve(maxRows * (f + preWidth), atMost: bound * (f + preWidth))
        let order = s.busiestFirst
        Parallel.forEach(order.count) { item, worker in
            let li = order[item], st = s.expertStart[li], dA = hidden[worker]
            MLP.backward(
                dx: sc.dXe.base + st * c, g: g.ffn[li], dOut: sc.dOe.base + st * c, x: s.xe.base + st * c,
                pre: s.h.base + st * preWidth, a: s.a.base + st * f, w: w.ffn[li],
                dA: dA, dPre: dA + maxRows * f, n: s.expertRows[li], c: c, f: f)
        }
    }

    /// The experts' input gradients home (send order), added per token in slot order into dxs [rows, C].
    func addGradientsHome(_ dxs: UnsafeMutablePointer<Float>) throws {
        let home = try dispatcher.gradientsHome(s, sc)
        Parallel.forEachBlock(s.rows, grain: Self.rowGrain) { block in
            for r in block {
                let d = dxs + r * c
                for j in 0..<k where !s.dropped[r * k + j] {
                    let src = home + Int(s.sendSlot[r * k + j]) * c
                    for i in 0..<c { d[i] += src[i] }
                }
            }
        }
    }

    /// Balance loss and router backward: dLogits from dTopWeight and the balance loss's dProbs,
    /// then the router's dx (added into dxs) and dW.
    func routerBackward(
        dxs: UnsafeMutablePointer<Float>, x xs: UnsafePointer<Float>, auxCoef: Float, zCoef: Float, tokens: Int
    ) {
        let rows = s.rows
        sc.dProbs.base.update(repeating: 0, count: rows * e)
        LoadBalance.backward(dProbs: sc.dProbs.base, f: s.share.base, dAux: auxCoef, n: rows, e: e, tokens: tokens)
        sc.dLogits.base.update(repeating: 0, count: rows * e)
        Router.backward(
            dLogits: sc.dLogits.base, dTopWeight: sc.dTopWeight.base, dProbsExtra: sc.dProbs.base,
            probs: s.probs.base, topIndex: s.topIndex, topWeight: s.topWeight.base, n: rows, e: e, k: k,
            scratch: sc.rowScratch.base, normalize: normTopK)
        RouterZLoss.backward(
            dLogits: sc.dLogits.base, probs: s.probs.base, lse: s.lse.base, dZ: zCoef, n: rows, e: e, tokens: tokens)
        Linear.backward(
            dInp: dxs, dWeight: trainRouter ? g.router : nil, dOut: sc.dLogits.base, inp: xs, weight: w.router,
            n: rows, inFeatures: c, outFeatures: e)
    }
}
