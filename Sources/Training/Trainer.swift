// The step loop: batch -> forward -> backward -> clip -> AdamW, with logging, evaluation,
// non-finite-step protection and a clean stop on request (SIGTERM/SIGINT).
// Every rank runs the loop: its dp group's slice of the global batch, the model share its
// (dp, tp) position and the expert placement give it; gradients are reduced per shard spec.
import Checkpoint
import Comm
import JSON
import Model
import Placement
import Tensor

/// Facts about where the run executes, for the `start` event and MFU.
public struct RunEnvironment: Sendable {
    public var blasCore: String
    /// "Prescott->SkylakeX" when switchyard overrode OpenBLAS's generic fallback, else nil.
    public var blasCoreOverride: String? = nil
    public var blasThreads: Int
    public var host: String
    public var cpu: String
    public init(blasCore: String, blasThreads: Int, host: String, cpu: String) {
        self.blasCore = blasCore; self.blasThreads = blasThreads; self.host = host; self.cpu = cpu
    }
}

/// An error during training (after validation), naming what went wrong.
public struct TrainError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What a run did.
public struct TrainSummary: Sendable {
    public var firstStep = 0  // the step this run started at (after resume)
    public var losses: [Float] = []  // per step from firstStep (NaN for skipped steps)
    public var evals: [(step: Int, loss: Double)] = []
    public var stoppedEarly = false
    public var tokensPerSec = 0.0  // mean over the run, excluding the first step
}

public final class Trainer {
    public let job: Job
    public internal(set) var ctx: ParallelContext
    public internal(set) var model: Transformer
    public let sampler: BatchSampler
    let log: RunLog?
    let say: (String) -> Void
    let env: RunEnvironment
    let adam: AdamWConfig
    let schedule: LRSchedule
    /// This dp group's samples of every global batch: [sampleStart, sampleEnd).
    public let sampleStart: Int, sampleEnd: Int
    /// The first step to run (set by `resume`) and the AdamW updates applied so far.
    public internal(set) var startStep = 0
    public internal(set) var adamStep = 0
    /// Saves checkpoints (nil when checkpoint.every is 0).
    let writer: CheckpointWriter?
    /// Set by `resume`, for the start event.
    public var resumeInfo: ResumeInfo?

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

    /// Called after every applied step with its index (benchmarks use it to skip warmup).
    public var onStepEnd: ((Int) -> Void)?
    /// Wall-clock seconds of each applied step, in order.
    public private(set) var stepSeconds: [Double] = []
    /// Per-rank sgemm peak (FLOP/s) used for MFU.
    public let peakFlops: Double

    /// Checks the job against the data and the world size without communicating, so every rank
    /// reaches the same verdict before the first collective. Returns the layout and placement.
    public static func validate(job: Job, data: TokenData, world: Int) throws -> (dp: Int, tp: Int, plan: PlacementPlan)
    {
        try job.validate()
        let layout = try job.resolveLayout(world: world)
        _ = try BatchSampler(
            data: data, seqLen: job.model.seqLen, seed: job.seed,
            valFraction: job.data.valFraction, needsEval: job.train.evalEvery > 0)
        return layout
    }

    /// Builds this rank's share of the model. Collective over `comm` (it splits the mesh groups):
    /// call it on every rank after `validate` passed everywhere.
    /// `nodeOf` (tests) overrides the node of each rank, which is otherwise found by host name:
    /// replicated experts serve the tokens of their own node.
    public init(
        job: Job, comm: any Communicator, data: TokenData, log: RunLog?, environment: RunEnvironment,
        say: @escaping (String) -> Void = { print($0) }, nodeOf: [Int]? = nil
    ) throws {
        let (dp, tp, plan) = try Trainer.validate(job: job, data: data, world: comm.size)
        self.job = job
        self.log = log
        self.say = say
        self.env = environment
        load = LoadStats(decay: job.replan.emaDecay)
        let nodes = try nodeOf ?? NodeMap.byHost(comm, host: environment.host).nodeOf
        ctx = ParallelContext(comms: try MeshComms(world: comm, dp: dp, tp: tp), plan: plan, nodeOf: nodes)
        sampler = try BatchSampler(
            data: data, seqLen: job.model.seqLen, seed: job.seed,
            valFraction: job.data.valFraction, needsEval: job.train.evalEvery > 0)
        let d = ctx.mesh.dpIndex, b = job.train.batchSize
        sampleStart = d * b / dp
        sampleEnd = (d + 1) * b / dp
        model = Transformer(
            config: job.model, maxBatch: sampleEnd - sampleStart, context: ctx,
            moe: MoEOptions(
                capacityFactor: job.train.capacityFactor, logitBias: job.train.routerSkewBias(experts: job.model.nExpert)))
        model.store.initialize(seed: UInt64(job.seed))
        let t = job.train
        adam = AdamWConfig(
            beta1: Float(t.beta1), beta2: Float(t.beta2), eps: Float(t.eps), weightDecay: Float(t.weightDecay))
        schedule = LRSchedule(maxLR: t.lr, minLR: t.minLr, warmup: t.warmupSteps, total: t.steps)
        peakFlops = t.peakGflops > 0 ? t.peakGflops * 1e9 : SgemmPeak.measure(seconds: 0.3)
        writer =
            job.checkpoint.every > 0
            ? CheckpointWriter(
                root: job.runDirectory + "/checkpoints", comm: comm, keep: job.checkpoint.keep,
                keepEvery: job.checkpoint.keepEvery)
            : nil
        writer?.reserve(floats: 3 * model.store.infos.filter(\.countsInNorm).reduce(0) { $0 + $1.count })
    }

    var isLogRank: Bool { ctx.mesh.rank == 0 }

    /// Runs every step (or until `stopRequested` turns true on any rank, between steps).
    /// Rank 0 logs. Every rank of the world must call it.
    public func run(stopRequested: () -> Bool = { false }) throws -> TrainSummary {
        let t = job.train, m = job.model
        let tokensPerStep = t.batchSize * m.seqLen
        let localB = sampleEnd - sampleStart
        let flopsPerToken = m.flopsPerToken(seqLen: m.seqLen)
        var summary = TrainSummary()
        log?.write(startEvent(flopsPerToken: flopsPerToken))
        say(
            "switchyard: training \(job.name) for \(t.steps) steps on \(ctx.mesh.world) rank(s) (dp \(ctx.mesh.dp) x tp \(ctx.mesh.tp)), \(m.totalParams) parameters (\(model.store.count) on rank 0), \(tokensPerStep) tokens/step, BLAS core \(env.blasCore) x\(env.blasThreads), log \(log?.path ?? "-")"
        )
        var badInARow = 0
        var timedSeconds = 0.0, timedTokens = 0
        summary.firstStep = startStep
        var stoppedBy: String? = nil
        for step in startStep..<t.steps {
            guard try pollSave(block: false) else { stoppedBy = "checkpoint-error"; break }
            let t0 = monotonicSeconds()
            ctx.stats = CommStats()
            let lr = schedule.lr(at: step)
            let (x, y) = sampler.batch(step: step, first: sampleStart, count: localB)
            _ = try model.forward(
                tokens: x, targets: y, batch: localB, time: m.seqLen,
                tokenOffset: sampleStart * m.seqLen, globalTokens: tokensPerStep)
            model.store.grads.zero()
            try model.backward(lossScale: 1 / Float(tokensPerStep), auxCoef: Float(t.auxLossCoef))
            let tClip = monotonicSeconds()
            try model.reduceGradients()
            let norm = try model.globalGradNorm()
            // One world allreduce: the global loss (tp rank 0 of each dp group counts its rows) and the stop flag.
            var shared = [ctx.mesh.tpIndex == 0 ? model.lastLossSum : 0, stopRequested() ? 1 : 0]
            try ctx.allreduceWorld(&shared)
            let loss = Float(shared[0] / Double(tokensPerStep))
            let stop = shared[1] > 0
            GradClip.scale(model.store.grads.base, count: model.store.count, norm: norm, maxNorm: t.gradClip)
            model.profile?.add(.optimizer, monotonicSeconds() - tClip)
            let aux = model.lastAux.isEmpty ? 0 : Double(model.lastAux.reduce(0, +)) / Double(model.lastAux.count)
            if !loss.isFinite || !norm.isFinite {
                badInARow += 1
                summary.losses.append(.nan)
                log?.write([
                    "event": "warning", "step": .number(Double(step)), "time": .number(unixTime()),
                    "message": .string(
                        "non-finite loss (\(loss)) or gradient norm (\(norm)); step skipped, parameters unchanged")
                ])
                say("warning: step \(step): non-finite loss or gradient; step skipped (\(badInARow)/\(t.maxBadSteps))")
                if badInARow >= t.maxBadSteps {
                    throw TrainError(
                        "\(badInARow) consecutive non-finite steps (train.maxBadSteps = \(t.maxBadSteps)) ending at step \(step); lower train.lr or check the data"
                    )
                }
                // A stop request still ends the run here (no checkpoint: the state did not change
                // since the last one, and a checkpoint is never written from non-finite state).
                if stop { summary.stoppedEarly = true; break }
                continue
            }
            badInARow = 0
            adamStep += 1
            let tAdam = monotonicSeconds()
            applyAdamW(lr: Float(lr), step: adamStep)
            model.profile?.add(.optimizer, monotonicSeconds() - tAdam)
            let seconds = monotonicSeconds() - t0
            stepSeconds.append(seconds)
            // Per-rank timings, gathered once per step.
            let mine = [
                seconds * 1000, ctx.stats.alltoallvSeconds * 1000, ctx.stats.allreduceSeconds * 1000,
                Double(ctx.stats.expertRowsReceived)
            ]
            let all = try ctx.comms.world.allgather(mine)
            let slowest = stride(from: 0, to: all.count, by: 4).map { all[$0] }.max()! / 1000
            if step > startStep { timedSeconds += slowest; timedTokens += tokensPerStep }  // the first step warms up
            let tps = Double(tokensPerStep) / slowest
            let mflops = tps * flopsPerToken
            summary.losses.append(loss)
            updateLoad(stepMs: slowest * 1000)
            onStepEnd?(step)
            log?.write(
                stepEvent(
                    step: step, loss: loss, aux: aux, lr: lr, norm: norm, seconds: slowest, tps: tps,
                    mflops: mflops, ranks: all))
            if step % t.logEvery == 0 || step == t.steps - 1 {
                say(
                    String(
                        format:
                            "step %5d/%d | loss %.4f | aux %.3f | lr %.2e | gnorm %.3f | %6.0f ms | %7.0f tok/s | mfu %.2f",
                        step, t.steps, loss, aux, lr, norm, slowest * 1000, tps,
                        mflops / (peakFlops * Double(ctx.mesh.world))))
            }
            if t.evalEvery > 0 && ((step + 1) % t.evalEvery == 0 || step == t.steps - 1) {
                let v = try evaluate()
                summary.evals.append((step, v))
                log?.write([
                    "event": "eval", "step": .number(Double(step)), "time": .number(unixTime()),
                    "valLoss": .number(v), "windows": .number(Double(t.evalWindows))
                ])
                say(String(format: "eval  step %5d | val loss %.4f over %d windows", step, v, t.evalWindows))
            }
            let isLast = step == t.steps - 1
            if job.replan.every > 0 && (step + 1) % job.replan.every == 0 && !isLast {
                guard try pollSave(block: true) else { stoppedBy = "checkpoint-error"; break }
                // Planning and migration are training time: the run's tokens/s pays for them.
                timedSeconds += try replan(step: step)
            }
            if stop && !isLast {
                summary.stoppedEarly = true
                say(
                    "switchyard: stop requested; finished step \(step)"
                        + (writer == nil ? ", stopping (checkpoint.every = 0: nothing saved)" : ", saving and stopping")
                )
            }
            if writer != nil && ((step + 1) % job.checkpoint.every == 0 || isLast || summary.stoppedEarly) {
                // At most one save in flight: finish the previous one, then snapshot this state;
                // the write goes on in the background. The last save (end or signal) is waited for.
                guard try pollSave(block: true) else { stoppedBy = "checkpoint-error"; break }
                startSave(steps: step + 1)
                if isLast || summary.stoppedEarly {
                    guard try pollSave(block: true) else { stoppedBy = "checkpoint-error"; break }
                }
            }
            if summary.stoppedEarly { break }
        }
        if stoppedBy == nil, try !pollSave(block: true) { stoppedBy = "checkpoint-error" }
        if stoppedBy != nil { return try finishWithError(summary) }
        summary.tokensPerSec = timedSeconds > 0 ? Double(timedTokens) / timedSeconds : 0
        log?.write([
            "event": "end", "time": .number(unixTime()),
            "step": .number(Double(summary.firstStep + summary.losses.count - 1)),
            "reason": .string(summary.stoppedEarly ? "signal" : "completed"),
            "tokensPerSec": .number(summary.tokensPerSec)
        ])
        return summary
    }

    /// Ends a run stopped by a failed checkpoint (checkpoint.onError = stop).
    func finishWithError(_ summary: TrainSummary) throws -> TrainSummary {
        log?.write(["event": "end", "time": .number(unixTime()), "reason": "checkpoint-error"])
        throw TrainError(
            "a checkpoint could not be saved (see the warning above) and checkpoint.onError = stop; the last good checkpoint in \(checkpointRoot) is intact"
        )
    }

    /// AdamW over every named tensor (decay only where the tensor asks for it).
    func applyAdamW(lr: Float, step: Int) {
        let s = model.store
        for info in s.infos {
            AdamW.update(
                params: s.params.base + info.offset, grads: s.grads.base + info.offset,
                m: s.adamM.base + info.offset, v: s.adamV.base + info.offset, count: info.count,
                lr: lr, step: step, config: adam, decay: info.decay)
        }
    }

    /// Mean cross-entropy over the fixed held-out windows. dp group d evaluates windows
    /// [d*N/dp, (d+1)*N/dp); every rank makes the same number of forward calls (groups that run
    /// out of windows repeat one and drop its loss), since each call exchanges rows.
    public func evaluate() throws -> Double {
        let n = job.train.evalWindows, t = job.model.seqLen
        let dp = ctx.mesh.dp, d = ctx.mesh.dpIndex
        let w0 = d * n / dp, w1 = (d + 1) * n / dp
        let b = sampleEnd - sampleStart
        let calls = (0..<dp).map { g -> Int in
            let windows = (g + 1) * n / dp - g * n / dp
            let batch = (g + 1) * job.train.batchSize / dp - g * job.train.batchSize / dp
            return (windows + batch - 1) / batch
        }.max()!
        var total = 0.0
        for call in 0..<calls {
            let first = w0 + call * b
            let count = max(0, min(b, w1 - first))
            let (x, y) =
                count > 0
                ? sampler.evalBatch(first: first, count: count, of: n) : sampler.evalBatch(first: 0, count: 1, of: n)
            _ = try model.forward(
                tokens: x, targets: y, batch: max(count, 1), time: t, tokenOffset: first * t,
                globalTokens: n * t)
            if count > 0 { total += model.lastLossSum }
        }
        var v = [ctx.mesh.tpIndex == 0 ? total : 0]
        try ctx.allreduceWorld(&v)
        return v[0] / Double(n * t)
    }

    func startEvent(flopsPerToken: Double) -> JSONValue {
        let m = job.model
        return [
            "event": "start", "time": .number(unixTime()), "job": .string(job.name),
            "world": .number(Double(ctx.mesh.world)), "dp": .number(Double(ctx.mesh.dp)),
            "tp": .number(Double(ctx.mesh.tp)),
            "nodeOfRank": .array(ctx.nodeOf.map { .number(Double($0)) }),
            "placement": .array(ctx.plan.layers.map { .array($0.map { .array($0.map { .number(Double($0)) }) }) }),
            "totalSteps": .number(Double(job.train.steps)),
            "parameters": .number(Double(m.totalParams)), "parametersRank0": .number(Double(model.store.count)),
            "activeNonEmbeddingParameters": .number(Double(m.activeNonEmbeddingParams)),
            "flopsPerToken": .number(flopsPerToken), "tokensPerStep": .number(Double(job.train.batchSize * m.seqLen)),
            "blasCore": .string(env.blasCore), "blasCoreOverride": env.blasCoreOverride.map { .string($0) } ?? .null,
            "blasThreads": .number(Double(env.blasThreads)),
            "peakFlops": .number(peakFlops), "host": .string(env.host), "cpu": .string(env.cpu),
            "data": .string(sampler.data.path), "dataTokens": .number(Double(sampler.data.tokens.count)),
            "resumedFrom": resumeInfo.map { ["step": .number(Double($0.step)), "path": .string($0.path)] } ?? .null,
            "checkpointSkipped": .array(
                (resumeInfo?.skipped ?? []).map { ["path": .string($0.path), "problem": .string($0.problem)] })
        ]
    }

    func stepEvent(
        step: Int, loss: Float, aux: Double, lr: Double, norm: Double, seconds: Double,
        tps: Double, mflops: Double, ranks: [Double]
    ) -> JSONValue {
        func column(_ i: Int) -> JSONValue {
            .array(stride(from: i, to: ranks.count, by: 4).map { .number(ranks[$0]) })
        }
        let load: [JSONValue] = model.expertTokenCounts.map { .array($0.map { .number(Double($0)) }) }
        return [
            "event": "step", "step": .number(Double(step)), "time": .number(unixTime()),
            "loss": .number(Double(loss)), "auxLoss": .number(aux), "lr": .number(lr), "gradNorm": .number(norm),
            "stepMs": .number(seconds * 1000), "tokensPerSec": .number(tps), "modelFlopsPerSec": .number(mflops),
            "mfu": .number(mflops / (peakFlops * Double(ctx.mesh.world))), "expertLoad": .array(load),
            "droppedTokens": .array(model.droppedAssignments.map { .number(Double($0)) }),
            "rankStepMs": column(0), "rankAlltoallvMs": column(1), "rankAllreduceMs": column(2),
            "rankExpertRows": column(3)
        ]
    }
}
