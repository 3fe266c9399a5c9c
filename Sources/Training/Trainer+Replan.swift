// Online re-placement: measured routing load (an EMA of tokens per expert, and the last steps'
// counts), a plan from the scheduler's planner every `replan.every` steps (placements compared by
// their mean predicted step time over those steps), adopted only when its predicted gain over
// `replan.horizon` steps beats the predicted migration cost; migration moves each expert's
// weights and both AdamW moments to its new ranks exactly (point-to-point, raw floats), so training
// continues as if it had resumed from a checkpoint with the new placement.
import Clock
import Comm
import Foundation
import JSON
import Model
import Placement
import Tensor

extension Trainer {
    /// Folds this step's global expert counts into the load statistics.
    func updateLoad(_ counts: [[Int]], stepMs: Double) {
        load.add(counts)
        windowStepMs.append(stepMs)
    }

    /// The measured load the planner uses: the moving average of tokens per expert per layer.
    public var loadEMA: [[Double]] { load.mean }

    /// Measured links of this run's world (see LinkProbe), and the cores each node's ranks share.
    struct Link { var intraGBps: Double, interGBps: Double, latencyUs: Double, cores: [Int] }

    /// Measures the world's links (alltoallv bandwidth inside a node and across nodes, latency)
    /// and counts each node's cores (online processors / BLAS threads per rank, the least any
    /// of its ranks reports).
    func measureLink() throws -> Link {
        let world = ctx.comms.world, nodeOf = ctx.nodeOf
        let intra = try LinkProbe.alltoallvGBps(world, nodeOf: nodeOf, sameNode: true, floatsPerPeer: 1 << 18)
        let inter = try LinkProbe.alltoallvGBps(world, nodeOf: nodeOf, sameNode: false, floatsPerPeer: 1 << 18)
        let latency = try LinkProbe.alltoallvLatencyUs(world, rounds: 50)
        let cores = try NodeMap.cores(world, nodeOf: nodeOf, threadsPerRank: env.blasThreads)
        // No peer of a kind (one node; one rank per node): nothing moves over that link.
        return Link(
            intraGBps: intra > 0 ? intra : 1e3, interGBps: inter > 0 ? inter : 1e3, latencyUs: latency, cores: cores)
    }

    /// The cost model's view of this run: its nodes (by host name), each rank computing at `rate`
    /// FLOP/s, linked at the measured bandwidths and latency.
    func costInputs(rate: Double, link: Link) -> (shape: MoEShape, cluster: Cluster, nodeOf: [Int]) {
        let shape = job.model.moeShape(baseBytesPerRank: 0)
        let nodes = (0...(ctx.nodeOf.max() ?? 0)).map { n in
            ClusterNode(
                name: "node\(n)", slots: ctx.nodeOf.filter { $0 == n }.count, memoryPerSlotGB: 1e6, cores: link.cores[n]
            )
        }
        let cluster = Cluster(
            nodes: nodes, intraNodeGBps: link.intraGBps, interNodeGBps: link.interGBps,
            intraNodeLatencyUs: link.latencyUs, interNodeLatencyUs: link.latencyUs, gflopsPerSlot: rate / 1e9)
        return (shape, cluster, ctx.nodeOf)
    }

    /// Plans from the measured load and, if it pays, migrates. Collective; every rank decides the
    /// same (the load is the same global counts everywhere). Returns the seconds it took on the
    /// slowest rank (planning and migration), which the run counts as training time.
    @discardableResult
    func replan(step: Int) throws -> Double {
        let t0 = monotonicSeconds()
        let measured = closeMeasurementWindow(step: step)
        guard !loadEMA.isEmpty else { return 0 }
        if link == nil { link = try measureLink() }
        let tokens = Double(job.train.batchSize * job.model.seqLen)
        let (shape, cluster, nodeOf) = calibratedCostInputs(measuredMs: measured, tokens: tokens)
        // Migration moves bytes and rebuilds each rank's store (parameters and both moments are
        // copied): predicted at the alltoallv bandwidth until one has been measured, then at the
        // last migration's effective rate over those bytes (allocation and page faults included).
        let rebuild = 12 * Double(model.store.count)
        var moveCluster = cluster
        if let g = migrationGBps { moveCluster.intraNodeGBps = g; moveCluster.interNodeGBps = g }
        let steps = load.recent
        var proposed = try Planner.plan(
            load: loadEMA, shape: shape, cluster: cluster, world: ctx.mesh.world, nodeOf: nodeOf, current: ctx.plan,
            stepLoads: steps)
        // A gain accrues only over the steps this run still has.
        let horizon = min(job.replan.horizon, job.train.steps - step - 1)
        var d = Planner.shouldAdopt(
            current: ctx.plan, proposed: proposed, load: loadEMA, tokens: tokens, shape: shape,
            cluster: moveCluster, nodeOf: nodeOf, horizon: horizon, rebuildBytes: rebuild, stepLoads: steps)
        // Every rank computed the same from the same global counts, unless a rate differs in the
        // last bit; rank 0's decision is the one every rank carries out.
        (proposed, d.adopt) = try agree(plan: proposed, adopt: d.adopt)
        if d.adopt, let short = try migrationMemoryShortfall(proposed) {
            d.adopt = false
            let message = "placement: step \(step): not migrating to the proposed placement: \(short)"
            log?.write([
                "event": "warning", "step": .number(Double(step)), "time": .number(unixTime()),
                "kind": "placement-memory", "message": .string(message)
            ])
            say("warning: " + message)
        }
        func predicted(_ p: PlacementPlan) -> Double {
            Planner.expectedStepSeconds(
                plan: p, load: loadEMA, stepLoads: steps, tokens: tokens, shape: shape, cluster: cluster,
                nodeOf: nodeOf)
        }
        var o = ReplanOutcome(
            step: step, oldPlan: ctx.plan, newPlan: proposed, decision: d, horizon: horizon,
            before: predicted(ctx.plan), after: predicted(proposed), measuredMs: measured,
            movedBytes: Planner.migrationBytes(from: ctx.plan, to: proposed, shape: shape),
            gflopsPerRank: cluster.gflopsPerSlot)
        if d.adopt {
            say(
                String(
                    format: "placement: step %d: predicted %.1f -> %.1f ms/step (measured %.1f); migrating %.1f MB",
                    step, o.before * 1000, o.after * 1000, measured, o.movedBytes / 1e6))
        }
        let tMove = monotonicSeconds()
        if d.adopt {
            try migrate(to: proposed)
            adoptedAwaitingMeasure = (step, o.after * 1000)
        }
        // Wall time of this re-plan on the slowest rank: planning, and migration if adopted.
        var took = [monotonicSeconds() - tMove, monotonicSeconds() - t0]
        try ctx.comms.world.allreduce(&took, op: .max)
        (o.migrationSeconds, o.replanSeconds) = (d.adopt ? took[0] : 0, took[1])
        if d.adopt && o.movedBytes > 0 && took[0] > 0 { migrationGBps = (o.movedBytes + rebuild) / took[0] / 1e9 }
        log?.write(decisionEvent(o))
        return took[1]
    }

    /// The mean step time (ms) since the last re-plan; logs how the last adopted plan's prediction
    /// compares with it. Starts a new window.
    func closeMeasurementWindow(step: Int) -> Double {
        let measured = windowStepMs.isEmpty ? 0 : windowStepMs.reduce(0, +) / Double(windowStepMs.count)
        windowStepMs = []
        if let a = adoptedAwaitingMeasure {
            log?.write([
                "event": "placement", "step": .number(Double(step)), "time": .number(unixTime()), "phase": "measured",
                "adoptedAtStep": .number(Double(a.step)), "predictedStepMs": .number(a.predictedMs),
                "measuredStepMs": .number(measured)
            ])
            adoptedAwaitingMeasure = nil
        }
        return measured
    }

    /// The cost model's inputs with the rate calibrated on the current placement: the rate at
    /// which the model predicts the step time just measured (the sgemm peak overstates what
    /// training kernels reach). Uncalibrated (the peak) before any step was measured.
    func calibratedCostInputs(measuredMs: Double, tokens: Double) -> (shape: MoEShape, cluster: Cluster, nodeOf: [Int])
    {
        let atPeak = costInputs(rate: peakFlops, link: link!)
        guard measuredMs > 0 else { return atPeak }
        let seconds = Planner.expectedStepSeconds(
            plan: ctx.plan, load: loadEMA, stepLoads: load.recent, tokens: tokens, shape: atPeak.shape,
            cluster: atPeak.cluster, nodeOf: atPeak.nodeOf)
        return costInputs(rate: peakFlops * seconds / (measuredMs / 1000), link: link!)
    }

    /// What one re-plan decided and measured, for its `placement` event.
    struct ReplanOutcome {
        let step: Int, oldPlan: PlacementPlan, newPlan: PlacementPlan
        let decision: (adopt: Bool, gainSeconds: Double, migrationSeconds: Double)
        let horizon: Int
        let before: Double, after: Double, measuredMs: Double  // predicted step seconds; measured ms
        let movedBytes: Double, gflopsPerRank: Double
        var migrationSeconds = 0.0, replanSeconds = 0.0
    }

    func decisionEvent(_ o: ReplanOutcome) -> JSONValue {
        let d = o.decision
        return [
            "event": "placement", "step": .number(Double(o.step)), "time": .number(unixTime()), "phase": "decision",
            "adopted": .bool(d.adopt), "oldPlan": o.oldPlan.json, "newPlan": o.newPlan.json,
            "predictedStepMsBefore": .number(o.before * 1000), "predictedStepMsAfter": .number(o.after * 1000),
            "measuredStepMsBefore": .number(o.measuredMs), "predictedGainMs": .number(d.gainSeconds * 1000),
            "migrationBytes": .number(o.movedBytes),
            "predictedMigrationMs": .number(d.migrationSeconds * 1000), "horizonSteps": .number(Double(o.horizon)),
            "migrationMs": .number(o.migrationSeconds * 1000),
            "replanMs": .number(o.replanSeconds * 1000), "alltoallvGBps": .number(link!.intraGBps),
            "alltoallvInterNodeGBps": .number(link!.interGBps),
            "alltoallvLatencyUs": .number(link!.latencyUs),
            "coresPerNode": .array(link!.cores.map { .number(Double($0)) }),
            "computeGflopsPerRank": .number(o.gflopsPerRank),
            "load": .array(loadEMA.map { .array($0.map { .number($0) }) })
        ]
    }

    /// Migration builds the new store beside the old one, so each node needs the new placement's
    /// parameters, gradients and moments free for its ranks on top of what they hold now. nil when
    /// every node has that room, else what is short (the same on every rank). Collective.
    func migrationMemoryShortfall(_ plan: PlacementPlan) throws -> String? {
        let e = Trainer.memoryEstimate(
            job: job, world: ctx.mesh.world, tp: ctx.mesh.tp, plan: plan, threads: env.blasThreads)
        let onNode = ctx.nodeOf.filter { $0 == ctx.nodeOf[ctx.mesh.rank] }.count
        var short = [e.stateBytes * Double(onNode) - freeMemory()]
        try ctx.comms.world.allreduce(&short, op: .max)
        guard short[0] > 0 else { return nil }
        return String(
            format: "its parameters, gradients and moments (%.2f GB a rank) need %.2f GB more than a node has "
                + "free; the run keeps its placement (free memory on the nodes, or leave replan.every at 0)",
            e.stateBytes / 1e9, short[0] / 1e9)
    }

    /// Rank 0's plan and adoption, broadcast: (adopt, then for every layer, expert and rank
    /// whether that rank holds the expert).
    func agree(plan: PlacementPlan, adopt: Bool) throws -> (PlacementPlan, Bool) {
        let world = ctx.mesh.world
        var flat: [Int64] = [adopt ? 1 : 0]
        for layer in plan.layers {
            for ranks in layer { for r in 0..<world { flat.append(ranks.contains(r) ? 1 : 0) } }
        }
        try ctx.comms.world.broadcast(&flat, root: 0)
        var at = 1
        let layers = plan.layers.map { layer in
            layer.map { _ in
                (0..<world).filter { r in
                    defer { at += 1 }; return flat[at] == 1
                }
            }
        }
        return (PlacementPlan(layers: layers), flat[0] == 1)
    }

    /// Moves every expert replica to its new ranks with its AdamW moments, bit for bit, and
    /// rebuilds this rank's model share for the new placement.
    func migrate(to newPlan: PlacementPlan) throws {
        let old = model.store, oldPlan = ctx.plan
        let newCtx = ParallelContext(
            comms: ctx.comms, plan: newPlan, nodeOf: ctx.nodeOf, shardMoments: ctx.shardMoments)
        let fresh = ParameterStore(config: job.model, layout: newCtx.layout, zeroed: false)
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
        let moeBlocks = job.model.moeBlocks
        let half = job.model.nEmbd * job.model.ffHidden
        var sends: [PeerBuffer<Float>] = [], receives: [PeerMutableBuffer<Float>] = []
        for (l, layer) in newPlan.layers.enumerated() {
            for (e, ranks) in layer.enumerated() {
                let held = oldPlan.layers[l][e], src = held.min()!
                for d in ranks {
                    for (from, to) in [(old.params, fresh.params), (old.adamM, fresh.adamM), (old.adamV, fresh.adamV)] {
                        for w in job.model.ffnMatrices {
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
        model = Transformer(rebinding: model, context: newCtx, store: fresh)
        optimizer.rebind(store: fresh, context: newCtx)
        ctx = newCtx
        reserveSnapshot(for: fresh)
    }
}
