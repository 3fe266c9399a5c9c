// Online re-placement: measured routing load (an EMA of tokens per expert, and the last steps'
// counts), a plan from the scheduler's planner every `replan.every` steps (placements compared by
// their mean predicted step time over those steps), adopted only when its predicted gain over
// `replan.horizon` steps beats the predicted migration cost; migration moves each expert's
// weights and both AdamW moments to its new ranks exactly (point-to-point, raw floats), so training
// continues as if it had resumed from a checkpoint with the new placement.
// Replanner is the component: its own state (the measurement window, the measured links, the
// calibration, the last migration's rate), called from the loop through Trainer.replanIfDue;
// the migration itself is Replanner+Migration.swift.
import Clock
import Comm
import Foundation
import JSON
import Model
import Placement
import RunEvents
import Tensor

/// Online re-placement's state and decisions. One per Trainer; every rank holds the same state
/// (it is fed global counts and the slowest rank's step time).
public final class Replanner {
    let job: Job
    let log: RunLog?
    let say: (String) -> Void
    /// Per-rank sgemm peak (FLOP/s): the cost model's rate before calibration.
    let peakFlops: Double
    let threadsPerRank: Int
    /// Measured routing load: an exponential moving average of tokens per expert per MoE layer.
    var load: LoadStats
    /// Step times since the last re-placement decision (ms), and a plan waiting for its measurement.
    var windowStepMs: [Double] = []
    var adoptedAwaitingMeasure: (step: Int, predictedMs: Double)?
    /// The world's alltoallv bandwidth (GB/s) inside and across nodes and its latency (us),
    /// measured at the first re-plan.
    var link: Link?
    /// Effective GB/s of the last migration (allocation and copies included); nil before one.
    var migrationGBps: Double?
    /// Bytes this node has free (NodeMemory); a re-plan migrates only if the new store fits.
    public var freeMemory: () -> Double = { NodeMemory.available().bytes }

    init(job: Job, log: RunLog?, say: @escaping (String) -> Void, peakFlops: Double, threadsPerRank: Int) {
        self.job = job
        self.log = log
        self.say = say
        self.peakFlops = peakFlops
        self.threadsPerRank = threadsPerRank
        load = LoadStats(decay: job.replan.emaDecay)
    }

    /// Folds a step's global expert counts and its time (the slowest rank's) into the statistics.
    func record(counts: [[Int]], stepMs: Double) {
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
    func measureLink(_ ctx: ParallelContext) throws -> Link {
        let world = ctx.comms.world, nodeOf = ctx.nodeOf
        let intra = try LinkProbe.alltoallvGBps(world, nodeOf: nodeOf, sameNode: true, floatsPerPeer: 1 << 18)
        let inter = try LinkProbe.alltoallvGBps(world, nodeOf: nodeOf, sameNode: false, floatsPerPeer: 1 << 18)
        let latency = try LinkProbe.alltoallvLatencyUs(world, rounds: 50)
        let cores = try NodeMap.cores(world, nodeOf: nodeOf, threadsPerRank: threadsPerRank)
        // No peer of a kind (one node; one rank per node): nothing moves over that link.
        return Link(
            intraGBps: intra > 0 ? intra : 1e3, interGBps: inter > 0 ? inter : 1e3, latencyUs: latency, cores: cores)
    }

    /// The cost model's view of this run: its nodes (by host name), each rank computing at `rate`
    /// FLOP/s, linked at the measured bandwidths and latency.
    func costInputs(_ ctx: ParallelContext, rate: Double, link: Link) -> CostInputs {
        let shape = job.model.moeShape(baseBytesPerRank: 0)
        let nodes = (0...(ctx.nodeOf.max() ?? 0)).map { n in
            ClusterNode(
                name: "node\(n)", slots: ctx.nodeOf.filter { $0 == n }.count, memoryPerSlotGB: 1e6, cores: link.cores[n]
            )
        }
        let cluster = Cluster(
            nodes: nodes, intraNodeGBps: link.intraGBps, interNodeGBps: link.interGBps,
            intraNodeLatencyUs: link.latencyUs, interNodeLatencyUs: link.latencyUs, gflopsPerSlot: rate / 1e9)
        return CostInputs(shape: shape, cluster: cluster, nodeOf: ctx.nodeOf)
    }

    /// What the cost model is given: the MoE's shape, the cluster, each rank's node.
    struct CostInputs {
        let shape: MoEShape
        var cluster: Cluster
        let nodeOf: [Int]
    }

    /// Plans from the measured load and, if it pays, has `migrate` move to the new placement.
    /// Collective; every rank decides the same (the load is the same global counts everywhere).
    /// Returns the seconds it took on the slowest rank (planning and migration), which the run
    /// counts as training time.
    func replan(step: Int, ctx: ParallelContext, parameters: Int, migrate: (PlacementPlan) throws -> Void) throws
        -> Double
    {
        let t0 = monotonicSeconds()
        let measured = closeMeasurementWindow(step: step)
        guard !loadEMA.isEmpty else { return 0 }
        if link == nil { link = try measureLink(ctx) }
        // Migration moves bytes and rebuilds each rank's store (parameters and both moments are
        // copied): predicted at the alltoallv bandwidth until one has been measured, then at the
        // last migration's effective rate over those bytes (allocation and page faults included).
        let rebuild = 12 * Double(parameters)
        var o = try decide(step: step, ctx: ctx, measuredMs: measured, rebuildBytes: rebuild)
        let tMove = monotonicSeconds()
        if o.decision.adopt {
            try migrate(o.newPlan)
            adoptedAwaitingMeasure = (step, o.after * 1000)
        }
        // Wall time of this re-plan on the slowest rank: planning, and migration if adopted.
        var took = [monotonicSeconds() - tMove, monotonicSeconds() - t0]
        try ctx.comms.world.allreduce(&took, op: .max)
        (o.migrationSeconds, o.replanSeconds) = (o.decision.adopt ? took[0] : 0, took[1])
        if o.decision.adopt && o.movedBytes > 0 && took[0] > 0 {
            migrationGBps = (o.movedBytes + rebuild) / took[0] / 1e9
        }
        log?.write(decisionEvent(o))
        return took[1]
    }

    /// The planner's proposal, whether it pays over the steps left, the world's agreement and the
    /// memory check: what this re-plan will do. Collective.
    func decide(step: Int, ctx: ParallelContext, measuredMs: Double, rebuildBytes: Double) throws -> ReplanOutcome {
        let tokens = Double(job.train.batchSize * job.model.seqLen)
        let inputs = calibratedCostInputs(ctx, measuredMs: measuredMs, tokens: tokens)
        var moveCluster = inputs.cluster
        if let g = migrationGBps { moveCluster.intraNodeGBps = g; moveCluster.interNodeGBps = g }
        let steps = load.recent
        var proposed = try Planner.plan(
            load: loadEMA, shape: inputs.shape, cluster: inputs.cluster, world: ctx.mesh.world,
            nodeOf: inputs.nodeOf, current: ctx.plan, stepLoads: steps)
        // A gain accrues only over the steps this run still has.
        let horizon = min(job.replan.horizon, job.train.steps - step - 1)
        var d = Planner.shouldAdopt(
            current: ctx.plan, proposed: proposed, load: loadEMA, tokens: tokens, shape: inputs.shape,
            cluster: moveCluster, nodeOf: inputs.nodeOf, horizon: horizon, rebuildBytes: rebuildBytes,
            stepLoads: steps)
        // Every rank computed the same from the same global counts, unless a rate differs in the
        // last bit; rank 0's decision is the one every rank carries out.
        (proposed, d.adopt) = try agree(ctx, plan: proposed, adopt: d.adopt)
        if d.adopt, let short = try migrationMemoryShortfall(ctx, plan: proposed) {
            d.adopt = false
            let message = "placement: step \(step): not migrating to the proposed placement: \(short)"
            log?.write(
                .event(
                    .warning,
                    [
                        .step: .number(Double(step)), .time: .number(unixTime()),
                        .kind: "placement-memory", .message: .string(message)
                    ]))
            say("warning: " + message)
        }
        func predicted(_ p: PlacementPlan) -> Double {
            Planner.expectedStepSeconds(
                plan: p, load: loadEMA, stepLoads: steps, tokens: tokens, shape: inputs.shape,
                cluster: inputs.cluster, nodeOf: inputs.nodeOf)
        }
        let o = ReplanOutcome(
            step: step, oldPlan: ctx.plan, newPlan: proposed, decision: d, horizon: horizon,
            before: predicted(ctx.plan), after: predicted(proposed), measuredMs: measuredMs,
            movedBytes: Planner.migrationBytes(from: ctx.plan, to: proposed, shape: inputs.shape),
            gflopsPerRank: inputs.cluster.gflopsPerSlot)
        if d.adopt {
            say(
                String(
                    format: "placement: step %d: predicted %.1f -> %.1f ms/step (measured %.1f); migrating %.1f MB",
                    step, o.before * 1000, o.after * 1000, measuredMs, o.movedBytes / 1e6))
        }
        return o
    }

    /// The mean step time (ms) since the last re-plan; logs how the last adopted plan's prediction
    /// compares with it. Starts a new window.
    func closeMeasurementWindow(step: Int) -> Double {
        let measured = windowStepMs.isEmpty ? 0 : windowStepMs.reduce(0, +) / Double(windowStepMs.count)
        windowStepMs = []
        if let a = adoptedAwaitingMeasure {
            log?.write(
                .event(
                    .placement,
                    [
                        .step: .number(Double(step)), .time: .number(unixTime()), .phase: "measured",
                        .adoptedAtStep: .number(Double(a.step)), .predictedStepMs: .number(a.predictedMs),
                        .measuredStepMs: .number(measured)
                    ]))
            adoptedAwaitingMeasure = nil
        }
        return measured
    }

    /// The cost model's inputs with the rate calibrated on the current placement: the rate at
    /// which the model predicts the step time just measured (the sgemm peak overstates what
    /// training kernels reach). Uncalibrated (the peak) before any step was measured.
    func calibratedCostInputs(_ ctx: ParallelContext, measuredMs: Double, tokens: Double) -> CostInputs {
        let atPeak = costInputs(ctx, rate: peakFlops, link: link!)
        guard measuredMs > 0 else { return atPeak }
        let seconds = Planner.expectedStepSeconds(
            plan: ctx.plan, load: loadEMA, stepLoads: load.recent, tokens: tokens, shape: atPeak.shape,
            cluster: atPeak.cluster, nodeOf: atPeak.nodeOf)
        return costInputs(ctx, rate: peakFlops * seconds / (measuredMs / 1000), link: link!)
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
        return .event(
            .placement,
            [
                .step: .number(Double(o.step)), .time: .number(unixTime()), .phase: "decision",
                .adopted: .bool(d.adopt), .oldPlan: o.oldPlan.json, .newPlan: o.newPlan.json,
                .predictedStepMsBefore: .number(o.before * 1000), .predictedStepMsAfter: .number(o.after * 1000),
                .measuredStepMsBefore: .number(o.measuredMs), .predictedGainMs: .number(d.gainSeconds * 1000),
                .migrationBytes: .number(o.movedBytes),
                .predictedMigrationMs: .number(d.migrationSeconds * 1000), .horizonSteps: .number(Double(o.horizon)),
                .migrationMs: .number(o.migrationSeconds * 1000),
                .replanMs: .number(o.replanSeconds * 1000), .alltoallvGBps: .number(link!.intraGBps),
                .alltoallvInterNodeGBps: .number(link!.interGBps),
                .alltoallvLatencyUs: .number(link!.latencyUs),
                .coresPerNode: .array(link!.cores.map { .number(Double($0)) }),
                .computeGflopsPerRank: .number(o.gflopsPerRank),
                .load: .array(loadEMA.map { .array($0.map { .number($0) }) })
            ])
    }

    /// Migration builds the new store beside the old one, so each node needs the new placement's
    /// parameters, gradients and moments free for its ranks on top of what they hold now. nil when
    /// every node has that room, else what is short (the same on every rank). Collective.
    func migrationMemoryShortfall(_ ctx: ParallelContext, plan: PlacementPlan) throws -> String? {
        let e = Trainer.memoryEstimate(
            job: job, world: ctx.mesh.world, tp: ctx.mesh.tp, plan: plan, threads: threadsPerRank)
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
    func agree(_ ctx: ParallelContext, plan: PlacementPlan, adopt: Bool) throws -> (PlacementPlan, Bool) {
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
}
