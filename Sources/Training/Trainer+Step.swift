// One optimizer step and its record, as llm.c's loop: the batch, model.forwardBackward per
// micro-batch, optimizer.step (ShardedAdamW: skipped, parameters unchanged, when the loss or
// gradient norm is not finite), then the step event, the progress line and the throughput.
import Clock
import Comm
import JSON
import Model
import Placement
import RunEvents
import Tensor

/// One rank's share of a step's time, gathered from every rank once per step.
struct RankTiming {
    var stepMs: Double
    var alltoallvMs: Double
    var allreduceMs: Double
    var expertRows: Double  // rows this rank's experts received
    /// Time not spent in the exchanges or reductions.
    var computeMs: Double { stepMs - alltoallvMs - allreduceMs }

    var values: [Double] { [stepMs, alltoallvMs, allreduceMs, expertRows] }
    /// Every rank's timing from one allgather of `values` (rank-major).
    static func gather(_ mine: RankTiming, over world: any Communicator) throws -> [RankTiming] {
        let all = try world.allgather(mine.values), n = mine.values.count
        return stride(from: 0, to: all.count, by: n).map {
            RankTiming(stepMs: all[$0], alltoallvMs: all[$0 + 1], allreduceMs: all[$0 + 2], expertRows: all[$0 + 3])
        }
    }
}

/// A step's model outputs over its micro-batches: loss sums, routing counts and drops summed, the
/// balance and z losses (each a mean over the MoE blocks) averaged over the micro-batches.
struct MicroBatchTotals {
    var lossSum = 0.0
    var aux = 0.0, z = 0.0
    var expertCounts: [[Int]] = []  // [MoE block][E], global
    var dropped: [Int] = []  // per MoE block, global
    var microBatches = 0

    mutating func add(_ o: StepOutputs) {
        lossSum += o.lossSum
        aux += o.meanAux
        z += o.meanZ
        expertCounts =
            expertCounts.isEmpty ? o.expertCounts : zip(expertCounts, o.expertCounts).map { zip($0, $1).map(+) }
        dropped = dropped.isEmpty ? o.dropped : zip(dropped, o.dropped).map(+)
        microBatches += 1
    }

    /// The means over the micro-batches.
    var meanAux: Double { aux / Double(microBatches) }
    var meanZ: Double { z / Double(microBatches) }
}

/// What one step measured (the same on every rank).
struct StepResult {
    let step: Int
    let loss: Float  // global mean over the step's tokens
    let norm: Double  // global gradient norm before clipping
    let lr: Double
    let stop: Bool  // some rank was asked to stop
    let outputs: MicroBatchTotals
    var applied = false  // false: non-finite loss or norm, the update was skipped
    var topK = 0  // experts per token at this step (train.topKSchedule)
    var ranks: [RankTiming] = []  // every rank's, in rank order (applied steps)

    var aux: Double { outputs.meanAux }
    var zLoss: Double { outputs.meanZ }
    /// Wall-clock seconds of the slowest rank (what the step cost the world).
    var slowestSeconds: Double { ranks.map(\.stepMs).max()! / 1000 }
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
        guard let s = watch.add(step: r.step, computeMs: r.ranks.map(\.computeMs)) else { return }
        let message =
            "rank \(s.rank) is a straggler: over steps \(s.firstStep)-\(s.lastStep) it computed "
            + String(
                format: "%.0f ms a step, %.2fx the median of the other ranks (%.0f ms)", s.meanMs, s.ratio,
                s.othersMedianMs)
            + "; its node may be loaded, throttled or slower (train.stragglerRatio = \(job.train.stragglerRatio))"
        log?.write(
            .event(
                .warning,
                [
                    .step: .number(Double(r.step)), .time: .number(unixTime()),
                    .kind: "straggler", .rank: .integer(s.rank), .ratio: .number(s.ratio), .message: .string(message)
                ]))
        say("warning: " + message)
    }

    /// Runs step `step` on this rank's slice of the global batch. Collective.
    func step(_ step: Int, stopRequested: () -> Bool) throws -> StepResult {
        let t0 = monotonicSeconds()
        ctx.stats = CommStats()
        let lr = schedule.lr(at: step)
        optimizer.zeroGradients()
        model.activeTopK = topKSchedule.k(at: step)
        let out = try forwardBackward(step)
        if step == job.train.testNaNStep && ctx.mesh.rank == job.train.testNaNRank { model.store.grads[0] = .nan }
        // One world allreduce: the global loss (tp rank 0 of each dp group counts its rows) and the stop flag.
        var shared = [ctx.mesh.tpIndex == 0 ? out.lossSum : 0, stopRequested() ? 1 : 0]
        try ctx.allreduceWorld(&shared)
        let loss = Float(shared[0] / Double(tokensPerStep))
        let update = try optimizer.step(lr: lr, loss: loss, expertCounts: out.expertCounts)
        var r = StepResult(
            step: step, loss: loss, norm: update.gradNorm, lr: lr, stop: shared[1] > 0, outputs: out,
            topK: model.activeTopK)
        guard update.applied else { return r }
        let seconds = monotonicSeconds() - t0
        stepSeconds.append(seconds)
        let s = ctx.stats
        let mine = RankTiming(
            stepMs: seconds * 1000, alltoallvMs: s.alltoallvSeconds * 1000, allreduceMs: s.allreduceSeconds * 1000,
            expertRows: Double(s.expertRowsReceived))
        r.ranks = try RankTiming.gather(mine, over: ctx.comms.world)
        r.applied = true
        return r
    }

    /// Forward and backward of this rank's slice as train.microBatches micro-batches, gradients
    /// accumulated in store.grads. The loss is the mean over the step's tokens; the balance loss
    /// of each micro-batch is computed over the whole world's m-th micro-batch, and the objective
    /// takes their mean. Returns this rank's loss sum, the routing counts and drops summed over
    /// the micro-batches, and each block's balance and z losses as their mean over them.
    func forwardBackward(_ step: Int) throws -> MicroBatchTotals {
        let micro = job.train.microBatches, seqLen = job.model.seqLen, rows = sampleEnd - sampleStart
        let objective = Objective(
            lossScale: 1 / Float(tokensPerStep), auxCoef: Float(job.train.auxLossCoef) / Float(micro),
            zCoef: Float(job.train.zLossCoef) / Float(micro))
        var total = MicroBatchTotals()
        defer { model.gradientsFinal = nil }
        for m in 0..<micro {
            if m == micro - 1 && job.train.overlapReduce && optimizer.beginOverlappedReduction() {
                model.gradientsFinal = { [optimizer] stage in try optimizer.gradientsFinal(stage: stage) }
            }
            let part = Trainer.microBatch(m, of: micro, rows: rows)
            let first = sampleStart + part.lowerBound
            let (x, y) = try sampler.batch(step: step, first: first, count: part.count)
            let out = try model.forwardBackward(
                MicroBatch(
                    tokens: x, targets: y, batch: part.count, time: seqLen, tokenOffset: first * seqLen,
                    globalTokens: microTokens(m)),
                objective: objective)
            total.add(out)
        }
        return total
    }

    /// Logs a step: a skipped one as a warning (too many in a row end the run), an applied one as
    /// a step event, the progress line every train.logEvery steps, and its time and load.
    func record(_ r: StepResult, into progress: inout RunProgress) throws {
        let t = job.train
        guard r.applied else {
            progress.badInARow += 1
            progress.summary.losses.append(.nan)
            log?.write(
                .event(
                    .warning,
                    [
                        .step: .number(Double(r.step)), .time: .number(unixTime()), .kind: "nonFiniteStep",
                        .message: .string(
                            "non-finite loss (\(r.loss)) or gradient norm (\(r.norm)); step skipped, "
                                + "parameters unchanged")
                    ]))
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
        progress.summary.finalStepExpertCounts = r.outputs.expertCounts
        progress.summary.finalStepDropped = r.outputs.dropped
        replanner.record(counts: r.outputs.expertCounts, stepMs: slowest * 1000)
        onStepEnd?(r.step)
        let tps = Double(tokensPerStep) / slowest
        let mfu = tps * flopsPerToken(topK: r.topK) / runPeakFlops
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
            + "\(tokensPerStep) tokens/step, BLAS core \(env.blasCore) x\(env.blasThreads), "
            + "matrix products \(Gemm.engineName), log \(log?.path ?? "-")"
    }

    func startEvent() -> JSONValue {
        let m = job.model
        return .event(
            .start,
            [
                .time: .number(unixTime()), .job: .string(job.name),
                .world: .number(Double(ctx.mesh.world)), .dp: .number(Double(ctx.mesh.dp)),
                .tp: .number(Double(ctx.mesh.tp)),
                .nodeOfRank: .array(ctx.nodeOf.map { .number(Double($0)) }),
                .placement: ctx.plan.json,
                .totalSteps: .number(Double(job.train.steps)),
                .parameters: .number(Double(m.totalParams)), .parametersRank0: .number(Double(model.store.count)),
                .activeNonEmbeddingParameters: .number(Double(m.activeNonEmbeddingParams)),
                .flopsPerToken: .number(flopsPerToken()), .tokensPerStep: .number(Double(tokensPerStep)),
                .positions: .string(m.positions), .ffn: .string(m.ffn),
                .flopsPerTokenParts: .object(
                    m.flopsPerTokenParts(seqLen: m.seqLen).sorted { $0.key < $1.key }.map {
                        ($0.key, .number($0.value))
                    }),
                .blasCore: .string(env.blasCore), .blasCoreOverride: env.blasCoreOverride.map { .string($0) } ?? .null,
                .blasThreads: .number(Double(env.blasThreads)),
                .gemm: .string(Gemm.engine == .own ? "cgemm\(Gemm.kernelBits)" : "openblas"),
                .memoryEstimateBytesPerRank: memoryEstimateJSON,
                .peakFlops: .number(peakFlops), .host: .string(env.host), .cpu: .string(env.cpu),
                .data: .string(sampler.data.path), .dataTokens: .number(Double(sampler.data.count)),
                .resumedFrom: resumeInfo.map { ["step": .number(Double($0.step)), "path": .string($0.path)] } ?? .null,
                .checkpointSkipped: .array(
                    (resumeInfo?.skipped ?? []).map { ["path": .string($0.path), "problem": .string($0.problem)] })
            ])
    }

    func stepEvent(_ r: StepResult, tps: Double) -> JSONValue {
        func column(_ value: (RankTiming) -> Double) -> JSONValue { .array(r.ranks.map { .number(value($0)) }) }
        let load: [JSONValue] = r.outputs.expertCounts.map { .array($0.map { .number(Double($0)) }) }
        let mflops = tps * flopsPerToken(topK: r.topK)
        return .event(
            .step,
            [
                .step: .number(Double(r.step)), .time: .number(unixTime()),
                .loss: .number(Double(r.loss)), .auxLoss: .number(r.aux), .zLoss: .number(r.zLoss),
                .lr: .number(r.lr),
                .gradNorm: .number(r.norm), .stepMs: .number(r.slowestSeconds * 1000), .tokensPerSec: .number(tps),
                .modelFlopsPerSec: .number(mflops), .mfu: .number(mflops / runPeakFlops),
                .expertLoad: .array(load), .droppedTokens: .array(r.outputs.dropped.map { .number(Double($0)) }),
                .rankStepMs: column(\.stepMs), .rankAlltoallvMs: column(\.alltoallvMs),
                .rankAllreduceMs: column(\.allreduceMs), .rankExpertRows: column(\.expertRows), .topK: .integer(r.topK)
            ])
    }
}
