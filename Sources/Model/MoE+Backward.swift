// MoE backward, the forward's steps in reverse: combine's backward (the gradient of each kept
// assignment's weight and its output row), the rows out to the experts, each local expert's MLP
// backward, the rows home (summed per token in slot order), then the router and balance loss.
// Shape legend as in MoE.swift.
import Tensor

extension MoELayer {
    /// Backward from dOut[N, C] (the residual gradient at the block output, same on every tp rank).
    /// dx[N, C] (zero on entry) receives d(objective)/d(x) on every tp rank.
    func backward(
        dx: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, x: UnsafePointer<Float>,
        w: MoEWeights, g: MoEWeights, s: MoEState, sc: MoEScratch, auxCoef: Float, zCoef: Float, n: Int,
        globalTokens: Int,
        gatherScratch: UnsafeMutablePointer<Float>, profile: KernelProfile?
    ) throws {
        var clock = RegionClock(profile)
        let dxs = dx + s.rowStart * c
        combineBackward(s: s, sc: sc, dOut: dOut)
        try sendGradientsToExperts(s: s, sc: sc)
        clock.lap(.dispatchCombine)
        let maxRows = s.expertRows.max() ?? 0
        // An expert receives each token at most once: its rows are bounded by the rows one expert
        // can be sent (mostReceivedRows with one local expert), as MemoryEstimate counts them.
        let hidden = sc.hidden.reserve(
            maxRows * (f + preWidth), atMost: mostReceivedRows(s, localExperts: 1) * (f + preWidth))
        // One work item per local expert: its own weight gradients, rows of dXe and scratch.
        let order = s.busiestFirst
        Parallel.forEach(order.count) { item, worker in
            let li = order[item], st = s.expertStart[li], dA = hidden[worker]
            MLP.backward(
                dx: sc.dXe.base + st * c, g: g.ffn[li], dOut: sc.dOe.base + st * c, x: s.xe.base + st * c,
                pre: s.h.base + st * preWidth, a: s.a.base + st * f, w: w.ffn[li],
                dA: dA, dPre: dA + maxRows * f, n: s.expertRows[li], c: c, f: f)
        }
        clock.lap(.experts)
        try returnGradientsHome(s: s, sc: sc, dxs: dxs)
        clock.lap(.dispatchCombine)
        routerBackward(
            s: s, sc: sc, dxs: dxs, x: x + s.rowStart * c, w: w, g: g, auxCoef: auxCoef, zCoef: zCoef,
            tokens: globalTokens)
        clock.lap(.router)
        try ctx.allgatherRowsTP(dx, n: n, c: c, scratch: gatherScratch)
        clock.lap(.dispatchCombine)
    }

    /// Combine's backward: dTopWeight[r, j] = dOut[r] . o (0 for a dropped assignment) and the
    /// gradient of each kept assignment's output row, wt * dOut[r], into sc.dSend (send order), or
    /// in a local layer straight into sc.dOe (send order is expert-major there).
    func combineBackward(s: MoEState, sc: MoEScratch, dOut: UnsafePointer<Float>) {
        let sent = s.sendRows.reduce(0, +)
        if isLocal {
            sc.dOe.reserve(sent * c, atMost: mostReceivedRows(s, localExperts: s.expertRows.count) * c)
        } else {
            sc.dSend.reserve(sent * c, atMost: mostSentRows(s) * c)
        }
        let dTW = sc.dTopWeight.base, home = returned(s), into = isLocal ? sc.dOe.base : sc.dSend.base
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

    /// The output-row gradients to the experts' ranks (alltoallv), permuted expert-major into
    /// sc.dOe (a local layer's are there already); sc.dXe zeroed for the experts' input gradients.
    func sendGradientsToExperts(s: MoEState, sc: MoEScratch) throws {
        let recvTotal = s.recvRows.reduce(0, +)
        let most = mostReceivedRows(s, localExperts: s.expertRows.count) * c
        sc.dXe.reserve(recvTotal * c, atMost: most)
        sc.dXe.base.update(repeating: 0, count: recvTotal * c)
        if isLocal { return }
        sc.dRecv.reserve(recvTotal * c, atMost: most)
        let arrived = try toExperts(s: s, send: sc.dSend.base, recv: sc.dRecv.base)
        sc.dOe.reserve(recvTotal * c, atMost: most)
        expertMajor(s: s, from: arrived, into: sc.dOe.base)
    }

    /// The experts' input gradients sc.dXe back to received order and home (alltoallv; a local
    /// layer's are in send order already), added per token in slot order into dxs [rows, C].
    func returnGradientsHome(s: MoEState, sc: MoEScratch, dxs: UnsafeMutablePointer<Float>) throws {
        if !isLocal {
            receivedOrder(s: s, from: sc.dXe.base, into: sc.dRecv.base)
            try toOwners(s: s, send: sc.dRecv.base, recv: sc.dSend.base)
        }
        let home = isLocal ? sc.dXe.base : sc.dSend.base
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
        s: MoEState, sc: MoEScratch, dxs: UnsafeMutablePointer<Float>, x xs: UnsafePointer<Float>,
        w: MoEWeights, g: MoEWeights, auxCoef: Float, zCoef: Float, tokens: Int
    ) {
        let rows = s.rows
        sc.dProbs.base.update(repeating: 0, count: rows * e)
        LoadBalance.backward(dProbs: sc.dProbs.base, f: s.share.base, dAux: auxCoef, n: rows, e: e, tokens: tokens)
        sc.dLogits.base.update(repeating: 0, count: rows * e)
        Router.backward(
            dLogits: sc.dLogits.base, dTopWeight: sc.dTopWeight.base, dProbsExtra: sc.dProbs.base,
            probs: s.probs.base, topIndex: s.topIndex, topWeight: s.topWeight.base, n: rows, e: e, k: k,
            scratch: sc.rowScratch.base)
        RouterZLoss.backward(
            dLogits: sc.dLogits.base, probs: s.probs.base, lse: s.lse.base, dZ: zCoef, n: rows, e: e, tokens: tokens)
        Linear.backward(
            dInp: dxs, dWeight: trainRouter ? g.router : nil, dOut: sc.dLogits.base, inp: xs, weight: w.router,
            n: rows, inFeatures: c, outFeatures: e)
    }
}
