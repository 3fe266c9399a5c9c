// Migration to a new expert placement: the new store is built beside the old one; a rank that
// already held an expert keeps its copy, a new holder receives weights and both AdamW moments
// from the lowest old holder, point-to-point, straight from the old store into the new one.
import Comm
import Model
import Placement

extension Replanner {
    /// This rank's store under `newPlan`: everything but the experts copied from `old`, every
    /// expert replica moved to its new ranks with its AdamW moments, bit for bit. Collective
    /// (point-to-point between old and new holders). Returns the new context and store.
    static func migrate(_ old: ParameterStore, _ ctx: ParallelContext, to newPlan: PlacementPlan, model m: ModelConfig)
        throws -> (ParallelContext, ParameterStore)
    {
        let oldPlan = ctx.plan
        let newCtx = ParallelContext(
            comms: ctx.comms, plan: newPlan, nodeOf: ctx.nodeOf, shardMoments: ctx.shardMoments)
        let fresh = ParameterStore(config: m, layout: newCtx.layout, zeroed: false)
        // Everything but the experts keeps its layout.
        for info in fresh.infos where !ModelConfig.isExpertParameter(info.name) {
            guard let o = old.info(info.name) else { continue }
            (fresh.params.base + info.offset).update(from: old.params.base + o.offset, count: info.count)
            for (a, b) in [(old.adamM, fresh.adamM), (old.adamV, fresh.adamV)] {
                (b.base + info.momentOffset).update(from: a.base + o.momentOffset, count: info.momentCount)
            }
        }
        // Experts: a rank that already held an expert keeps its copy (replicas are bitwise equal);
        // a new holder receives weights and moments from the lowest old holder, point-to-point,
        // straight from the old store into the new one (no staging buffers).
        let me = ctx.comms.world.rank
        let moeBlocks = m.moeBlocks
        let half = m.nEmbd * m.ffHidden
        var sends: [PeerBuffer<Float>] = [], receives: [PeerMutableBuffer<Float>] = []
        for (l, layer) in newPlan.layers.enumerated() {
            for (e, ranks) in layer.enumerated() {
                let held = oldPlan.layers[l][e], src = held.min()!
                for d in ranks {
                    for (from, to) in [(old.params, fresh.params), (old.adamM, fresh.adamM), (old.adamV, fresh.adamV)] {
                        for w in m.ffnMatrices {
                            let n = ModelConfig.expertWeight(block: moeBlocks[l], expert: e, matrix: w)
                            if d == me && held.contains(me) {
                                fresh.pointer(n, in: to).update(from: old.pointer(n, in: from), count: half)
                            } else if d == me {
                                receives.append(
                                    PeerMutableBuffer(
                                        peer: src, buffer: .init(start: fresh.pointer(n, in: to), count: half)))
                            } else if src == me && !held.contains(d) {
                                sends.append(
                                    PeerBuffer(peer: d, buffer: .init(start: old.pointer(n, in: from), count: half)))
                            }
                        }
                    }
                }
            }
        }
        try ctx.comms.world.exchange(sends: sends, receives: receives)
        return (newCtx, fresh)
    }
}
