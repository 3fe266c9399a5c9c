// Online re-placement: measured routing load (an EMA of tokens per expert), a plan from the
// scheduler's planner every `replan.every` steps, adopted only when its predicted gain over
// `replan.horizon` steps beats the predicted migration cost; migration moves each expert's
// weights and both AdamW moments to its new ranks exactly (point-to-point, raw floats), so training
// continues as if it had resumed from a checkpoint with the new placement.
import Comm
import Foundation
import JSON
import Model
import Placement

extension Trainer {
    /// Folds this step's global expert counts into the load EMA.
    func updateLoad(stepMs: Double) {
        let counts = model.expertTokenCounts.map { $0.map(Double.init) }
        let d = job.replan.emaDecay
        if loadEMA.count != counts.count { loadEMA = counts } else {
            for l in 0..<counts.count { for e in 0..<counts[l].count { loadEMA[l][e] = d * loadEMA[l][e] + (1 - d) * counts[l][e] } }
        }
        windowStepMs.append(stepMs)
    }

    /// The cost model's view of this run: one node of `world` slots computing at `rate` FLOP/s.
    func costInputs(rate: Double) -> (shape: MoEShape, cluster: Cluster, nodeOf: [Int]) {
        let m = job.model
        let world = ctx.mesh.world
        let expertFlops = 6 * Double(m.moeLayerCount * m.topK * 2 * m.nEmbd * m.ffHidden)
        let shape = MoEShape(nEmbd: m.nEmbd, ffHidden: m.ffHidden, nExpert: m.nExpert, moeLayers: m.moeLayerCount,
                             denseFlopsPerToken: m.flopsPerToken(seqLen: m.seqLen) - expertFlops, baseBytesPerRank: 0)
        let cluster = Cluster(nodes: [ClusterNode(name: "this", slots: world, memoryPerSlotGB: 1e6)], intraNodeGBps: 8, interNodeGBps: 8,
                              intraNodeLatencyUs: 5, interNodeLatencyUs: 5, gflopsPerSlot: rate / 1e9)
        return (shape, cluster, Array(repeating: 0, count: world))
    }

    /// Plans from the measured load and, if it pays, migrates. Collective; every rank decides the
    /// same (the load is the same global counts everywhere).
    func replan(step: Int) throws {
        let measured = windowStepMs.isEmpty ? 0 : windowStepMs.reduce(0, +) / Double(windowStepMs.count)
        windowStepMs = []
        if let a = adoptedAwaitingMeasure {
            log?.write(["event": "placement", "step": .number(Double(step)), "time": .number(unixTime()), "phase": "measured",
                        "adoptedAtStep": .number(Double(a.step)), "predictedStepMs": .number(a.predictedMs), "measuredStepMs": .number(measured)])
            adoptedAwaitingMeasure = nil
        }
        guard !loadEMA.isEmpty else { return }
        // Calibrate the rate on the current placement: the rate at which the model predicts the
        // step time just measured (the sgemm peak overstates what training kernels reach).
        let tokens = Double(job.train.batchSize * job.model.seqLen)
        var (shape, cluster, nodeOf) = costInputs(rate: peakFlops)
        if measured > 0 {
            let atPeak = Planner.predict(plan: ctx.plan, load: loadEMA, tokens: tokens, shape: shape, cluster: cluster, nodeOf: nodeOf).stepSeconds
            (shape, cluster, nodeOf) = costInputs(rate: peakFlops * atPeak / (measured / 1000))
        }
        let proposed = try Planner.plan(load: loadEMA, shape: shape, cluster: cluster, world: ctx.mesh.world)
        let d = Planner.shouldAdopt(current: ctx.plan, proposed: proposed, load: loadEMA, tokens: tokens, shape: shape,
                                    cluster: cluster, nodeOf: nodeOf, horizon: job.replan.horizon)
        let before = Planner.predict(plan: ctx.plan, load: loadEMA, tokens: tokens, shape: shape, cluster: cluster, nodeOf: nodeOf).stepSeconds
        let after = Planner.predict(plan: proposed, load: loadEMA, tokens: tokens, shape: shape, cluster: cluster, nodeOf: nodeOf).stepSeconds
        func plan(_ p: PlacementPlan) -> JSONValue { .array(p.layers.map { .array($0.map { .array($0.map { .number(Double($0)) }) }) }) }
        log?.write(["event": "placement", "step": .number(Double(step)), "time": .number(unixTime()), "phase": "decision",
                    "adopted": .bool(d.adopt), "oldPlan": plan(ctx.plan), "newPlan": plan(proposed),
                    "predictedStepMsBefore": .number(before * 1000), "predictedStepMsAfter": .number(after * 1000),
                    "measuredStepMsBefore": .number(measured), "predictedGainMs": .number(d.gainSeconds * 1000),
                    "migrationBytes": .number(Planner.migrationBytes(from: ctx.plan, to: proposed, shape: shape)),
                    "predictedMigrationMs": .number(d.migrationSeconds * 1000),
                    "load": .array(loadEMA.map { .array($0.map { .number($0) }) })])
        guard d.adopt else { return }
        say(String(format: "placement: step %d: predicted %.1f -> %.1f ms/step (measured %.1f); migrating %.1f MB",
                   step, before * 1000, after * 1000, measured, Planner.migrationBytes(from: ctx.plan, to: proposed, shape: shape) / 1e6))
        try migrate(to: proposed)
        adoptedAwaitingMeasure = (step, after * 1000)
    }

    /// Moves every expert replica to its new ranks with its AdamW moments, bit for bit, and
    /// rebuilds this rank's model share for the new placement.
    func migrate(to newPlan: PlacementPlan) throws {
        let old = model.store, oldPlan = ctx.plan
        let newCtx = ParallelContext(comms: ctx.comms, plan: newPlan)
        let fresh = ParameterStore(config: job.model, layout: newCtx.layout)
        // Everything but the experts keeps its layout.
        for info in fresh.infos where !info.name.contains(".moe.experts.") {
            guard let o = old.info(info.name) else { continue }
            for (a, b) in [(old.params, fresh.params), (old.adamM, fresh.adamM), (old.adamV, fresh.adamV)] {
                (b.base + info.offset).update(from: a.base + o.offset, count: info.count)
            }
        }
        // Experts: a rank that already held an expert keeps its copy (replicas are bitwise equal);
        // a new holder receives weights and moments from the lowest old holder, point-to-point,
        // straight from the old store into the new one (no staging buffers).
        let me = ctx.comms.world.rank
        let moeBlocks = (0..<job.model.nLayer).filter(job.model.isMoE)
        let half = job.model.nEmbd * job.model.ffHidden
        var sends: [PeerBuffer<Float>] = [], receives: [PeerMutableBuffer<Float>] = []
        for (l, layer) in newPlan.layers.enumerated() {
            for (e, ranks) in layer.enumerated() {
                let held = oldPlan.layers[l][e], src = held.min()!
                let p = "layers.\(moeBlocks[l]).moe.experts.\(e)."
                for d in ranks {
                    for (from, to) in [(old.params, fresh.params), (old.adamM, fresh.adamM), (old.adamV, fresh.adamV)] {
                        for n in [p + "w1.weight", p + "w2.weight"] {
                            if d == me && held.contains(me) {
                                fresh.pointer(n, in: to).update(from: old.pointer(n, in: from), count: half)
                            } else if d == me {
                                receives.append(PeerMutableBuffer(peer: src, buffer: .init(start: fresh.pointer(n, in: to), count: half)))
                            } else if src == me && !held.contains(d) {
                                sends.append(PeerBuffer(peer: d, buffer: .init(start: old.pointer(n, in: from), count: half)))
                            }
                        }
                    }
                }
            }
        }
        try ctx.comms.world.exchange(sends: sends, receives: receives)
        let profile = model.profile
        model = Transformer(config: job.model, maxBatch: sampleEnd - sampleStart, context: newCtx, store: fresh,
                            capacityFactor: job.train.capacityFactor, routerSkew: job.train.routerSkew,
                            routerSkewStride: job.train.routerSkewStride)
        model.profile = profile
        ctx = newCtx
        writer?.reserve(floats: 3 * fresh.infos.filter(\.countsInNorm).reduce(0) { $0 + $1.count })
    }
}
