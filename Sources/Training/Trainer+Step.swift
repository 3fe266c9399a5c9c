// One optimizer step and its record: batch -> forward -> backward -> gradient reduction -> clip
// -> AdamW (skipped, parameters unchanged, when the loss or gradient norm is not finite), then
// the step event, the progress line and the run's throughput accounting.
import Clock
import Comm
import JSON
import Model
import Placement
import Tensor

/// What one step measured (the same on every rank, except `ranks`' own entries).
struct StepResult {
    let step: Int
    let loss: Float  // global mean over the step's tokens
    let norm: Double  // global gradient norm before clipping
    let aux: Double  // mean balance loss over the MoE blocks
    let lr: Double
    let stop: Bool  // some rank was asked to stop
    var zLoss = 0.0  // mean router z-loss over the MoE blocks (and micro-batches)
    var expertCounts: [[Int]] = []  // tokens per expert per MoE block, global, summed over micro-batches
    var dropped: [Int] = []  // assignments over capacity per MoE block, global, summed over micro-batches
    var applied = false  // false: non-finite loss or norm, the update was skipped
    var topK = 0  // experts per token at this step (train.topKSchedule)
    /// Per rank: step ms, alltoallv ms, allreduce ms, expert rows received (4 values a rank).
    var ranks: [Double] = []

    /// Wall-clock seconds of the slowest rank (what the step cost the world).
    var slowestSeconds: Double { stride(from: 0, to: ranks.count, by: 4).map { ranks[$0] }.max()! / 1000 }
}

/// What a run has done so far (and the non-finite steps in a row).
struct RunProgress {
    var summary = TrainSummary()
    var badInARow = 0
    var timedSeconds = 0.0, timedTokens = 0  // every applied step but the first (warmup), plus re-planning
    var stragglers: StragglerWatch
    init(firstStep: Int, stragglers: StragglerWatch) {
        summary.firstStep = firstStep
        self.stragglers = stragglers
    }
}

/// A failed save that must stop training (checkpoint.onError = stop); already logged.
struct CheckpointSaveFailed: Error {}

extension Trainer {
    var tokensPerStep: Int { job.train.batchSize * job.model.seqLen }

    /// A warning event (and a line) when a window of steps finds a straggler.
    func reportStraggler(_ r: StepResult, _ watch: inout StragglerWatch) {
        let compute = stride(from: 0, to: r.ranks.count, by: 4).map { r.ranks[$0] - r.ranks[$0 + 1] - r.ranks[$0 + 2] }
        guard let s = watch.add(step: r.step, computeMs: compute) else { return }
        let message =
            "rank \(s.rank) is a straggler: over steps \(s.firstStep)-\(s.lastStep) it computed "
            + String(
                format: "%.0f ms a step, %.2fx the median of the other ranks (%.0f ms)", s.meanMs, s.ratio,
                s.othersMedianMs)
            + "; its node may be loaded, throttled or slower (train.stragglerRatio = \(job.train.stragglerRatio))"
        log?.write([
            "event": "warning", "step": .number(Double(r.step)), "time": .number(unixTime()),
            "kind": "straggler", "rank": .integer(s.rank), "ratio": .number(s.ratio), "message": .string(message)
        ])
        say("warning: " + message)
    }

    /// Runs step `step` on this rank's slice of the global batch. Collective.
    func step(_ step: Int, stopRequested: () -> Bool) throws -> StepResult {
        let t0 = monotonicSeconds()
        ctx.stats = CommStats()
        let lr = schedule.lr(at: step)
        // The gradients zeroed in 1 MB blocks over the rank's threads (every step, 4 bytes a parameter).
        let grads = model.store.grads
        Parallel.forEachBlock(grads.count, grain: 1 << 18) { r in
            (grads.base + r.lowerBound).update(repeating: 0, count: r.count)
        }
        model.activeTopK = topKSchedule.k(at: step)
        let routing = try microBatches(step)
        if step == job.train.testNaNStep && ctx.mesh.rank == job.train.testNaNRank { model.store.grads[0] = .nan }
        let tClip = monotonicSeconds()
        try model.reduceGradients()
        let norm = try model.globalGradNorm()
        // One world allreduce: the global loss (tp rank 0 of each dp group counts its rows) and the stop flag.
        var shared = [ctx.mesh.tpIndex == 0 ? routing.lossSum : 0, stopRequested() ? 1 : 0]
        try ctx.allreduceWorld(&shared)
        var r = StepResult(
            step: step, loss: Float(shared[0] / Double(tokensPerStep)), norm: norm, aux: routing.aux, lr: lr,
            stop: shared[1] > 0, zLoss: routing.z, expertCounts: routing.counts, dropped: routing.dropped,
            topK: model.activeTopK)
        model.profile?.add(.optimizer, monotonicSeconds() - tClip)
        guard r.loss.isFinite && norm.isFinite else { return r }
        adamStep += 1
        let tAdam = monotonicSeconds()
        applyAdamW(lr: Float(lr), step: adamStep, gradScale: GradClip.factor(norm: norm, maxNorm: job.train.gradClip))
        try model.gatherShardedParameters()
        routerBias?.update(counts: routing.counts, rate: Float(job.train.routerBiasRate))
        model.profile?.add(.optimizer, monotonicSeconds() - tAdam)
        let seconds = monotonicSeconds() - t0
        stepSeconds.append(seconds)
        let s = ctx.stats
        r.ranks = try ctx.comms.world.allgather([
            seconds * 1000, s.alltoallvSeconds * 1000, s.allreduceSeconds * 1000, Double(s.expertRowsReceived)
        ])
        r.applied = true
        return r
    }

    /// Forward and backward of this rank's slice as train.microBatches micro-batches, gradients
    /// accumulated in store.grads. The loss is the mean over the step's tokens; the balance loss
    /// of each micro-batch is computed over the whole world's m-th micro-batch, and the objective
    /// takes their mean. Returns this rank's loss sum, the mean balance loss over blocks and
    /// micro-batches, and the routing counts summed over them.
    func microBatches(_ step: Int) throws -> (
        lossSum: Double, aux: Double, z: Double, counts: [[Int]], dropped: [Int]
    ) {
        let micro = job.train.microBatches, seqLen = job.model.seqLen, rows = sampleEnd - sampleStart
        var lossSum = 0.0, auxSum = 0.0, zSum = 0.0, counts: [[Int]] = [], dropped: [Int] = []
        for m in 0..<micro {
            let part = Trainer.microBatch(m, of: micro, rows: rows)
            let first = sampleStart + part.lowerBound
            let (x, y) = sampler.batch(step: step, first: first, count: part.count)
            _ = try model.forward(
                tokens: x, targets: y, batch: part.count, time: seqLen, tokenOffset: first * seqLen,
                globalTokens: microTokens(m))
            try model.backward(
                lossScale: 1 / Float(tokensPerStep), auxCoef: Float(job.train.auxLossCoef) / Float(micro),
                zCoef: Float(job.train.zLossCoef) / Float(micro))
            lossSum += model.lastLossSum
            if !model.lastAux.isEmpty { auxSum += Double(model.lastAux.reduce(0, +)) / Double(model.lastAux.count) }
            if !model.lastZ.isEmpty { zSum += Double(model.lastZ.reduce(0, +)) / Double(model.lastZ.count) }
            let c = model.expertTokenCounts, d = model.droppedAssignments
            counts = counts.isEmpty ? c : zip(counts, c).map { zip($0, $1).map(+) }
            dropped = dropped.isEmpty ? d : zip(dropped, d).map(+)
        }
        return (lossSum, auxSum / Double(micro), zSum / Double(micro), counts, dropped)
    }

    /// Logs a step: a skipped one as a warning (too many in a row end the run), an applied one as
    /// a step event, the progress line every train.logEvery steps, and its time and load.
    func record(_ r: StepResult, into progress: inout RunProgress) throws {
        let t = job.train
        guard r.applied else {
            progress.badInARow += 1
            progress.summary.losses.append(.nan)
            log?.write([
                "event": "warning", "step": .number(Double(r.step)), "time": .number(unixTime()),
                "message": .string(
                    "non-finite loss (\(r.loss)) or gradient norm (\(r.norm)); step skipped, parameters unchanged")
            ])
            say(
                "warning: step \(r.step): non-finite loss or gradient; step skipped "
                    + "(\(progress.badInARow)/\(t.maxBadSteps))"
            )
            if progress.badInARow >= t.maxBadSteps {
                throw TrainError(
                    "\(progress.badInARow) consecutive non-finite steps (train.maxBadSteps = \(t.maxBadSteps)) "
                        + "ending at step \(r.step); lower train.lr or check the data")
            }
            return
        }
        progress.badInARow = 0
        reportStraggler(r, &progress.stragglers)
        let slowest = r.slowestSeconds
        if r.step > startStep {  // the first step warms up
            progress.timedSeconds += slowest
            progress.timedTokens += tokensPerStep
        }
        progress.summary.losses.append(r.loss)
        updateLoad(r.expertCounts, stepMs: slowest * 1000)
        onStepEnd?(r.step)
        let tps = Double(tokensPerStep) / slowest
        let mfu = tps * flopsPerToken(topK: r.topK) / (peakFlops * Double(ctx.mesh.world))
        log?.write(stepEvent(r, tps: tps))
        if r.step % t.logEvery == 0 || r.step == t.steps - 1 {
            say(
                String(
                    format: "step %5d/%d | loss %.4f | aux %.3f | lr %.2e | gnorm %.3f | %6.0f ms | %7.0f tok/s"
                        + " | mfu %.2f", r.step, t.steps, r.loss, r.aux, r.lr, r.norm, slowest * 1000, tps, mfu))
        }
    }

    /// Model FLOPs per token with `topK` experts per token (nil: model.topK).
    func flopsPerToken(topK: Int? = nil) -> Double {
        var m = job.model
        m.topK = topK ?? m.topK
        return m.flopsPerToken(seqLen: m.seqLen)
    }

    /// The line `train` prints first.
    var startLine: String {
        let m = job.model, mesh = ctx.mesh
        return "switchyard: training \(job.name) for \(job.train.steps) steps on \(mesh.world) rank(s) "
            + "(dp \(mesh.dp) x tp \(mesh.tp)), \(m.totalParams) parameters (\(model.store.count) on rank 0), "
            + "\(tokensPerStep) tokens/step, BLAS core \(env.blasCore) x\(env.blasThreads), log \(log?.path ?? "-")"
    }

    func startEvent() -> JSONValue {
        let m = job.model
        return [
            "event": "start", "time": .number(unixTime()), "job": .string(job.name),
            "world": .number(Double(ctx.mesh.world)), "dp": .number(Double(ctx.mesh.dp)),
            "tp": .number(Double(ctx.mesh.tp)),
            "nodeOfRank": .array(ctx.nodeOf.map { .number(Double($0)) }),
            "placement": ctx.plan.json,
            "totalSteps": .number(Double(job.train.steps)),
            "parameters": .number(Double(m.totalParams)), "parametersRank0": .number(Double(model.store.count)),
            "activeNonEmbeddingParameters": .number(Double(m.activeNonEmbeddingParams)),
            "flopsPerToken": .number(flopsPerToken()), "tokensPerStep": .number(Double(tokensPerStep)),
            "positions": .string(m.positions), "ffn": .string(m.ffn),
            "flopsPerTokenParts": .object(
                m.flopsPerTokenParts(seqLen: m.seqLen).sorted { $0.key < $1.key }.map { ($0.key, .number($0.value)) }),
            "blasCore": .string(env.blasCore), "blasCoreOverride": env.blasCoreOverride.map { .string($0) } ?? .null,
            "blasThreads": .number(Double(env.blasThreads)),
            "memoryEstimateBytesPerRank": memoryEstimateJSON,
            "peakFlops": .number(peakFlops), "host": .string(env.host), "cpu": .string(env.cpu),
            "data": .string(sampler.data.path), "dataTokens": .number(Double(sampler.data.tokens.count)),
            "resumedFrom": resumeInfo.map { ["step": .number(Double($0.step)), "path": .string($0.path)] } ?? .null,
            "checkpointSkipped": .array(
                (resumeInfo?.skipped ?? []).map { ["path": .string($0.path), "problem": .string($0.problem)] })
        ]
    }

    func stepEvent(_ r: StepResult, tps: Double) -> JSONValue {
        func column(_ i: Int) -> JSONValue {
            .array(stride(from: i, to: r.ranks.count, by: 4).map { .number(r.ranks[$0]) })
        }
        let load: [JSONValue] = r.expertCounts.map { .array($0.map { .number(Double($0)) }) }
        let mflops = tps * flopsPerToken(topK: r.topK)
        return [
            "event": "step", "step": .number(Double(r.step)), "time": .number(unixTime()),
            "loss": .number(Double(r.loss)), "auxLoss": .number(r.aux), "zLoss": .number(r.zLoss),
            "lr": .number(r.lr),
            "gradNorm": .number(r.norm), "stepMs": .number(r.slowestSeconds * 1000), "tokensPerSec": .number(tps),
            "modelFlopsPerSec": .number(mflops), "mfu": .number(mflops / (peakFlops * Double(ctx.mesh.world))),
            "expertLoad": .array(load), "droppedTokens": .array(r.dropped.map { .number(Double($0)) }),
            "rankStepMs": column(0), "rankAlltoallvMs": column(1), "rankAllreduceMs": column(2),
            "rankExpertRows": column(3), "topK": .integer(r.topK)
        ]
    }
}
