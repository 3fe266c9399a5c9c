// The step loop: batch -> model.forwardBackward -> optimizer.step -> record, with logging,
// evaluation, non-finite-step protection and a clean stop on request (SIGTERM/SIGINT).
// Every rank runs the loop: its dp group's slice of the global batch, the model share its
// (dp, tp) position and the expert placement give it; gradients are reduced per shard spec.
import Checkpoint
import Comm
import JSON
import Model
import Placement
import RunEvents
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
    /// The last applied step's global tokens per expert [MoE block][E] and dropped assignments per
    /// MoE block (summed over its micro-batches).
    public var finalStepExpertCounts: [[Int]] = []
    public var finalStepDropped: [Int] = []
}

public final class Trainer {
    public let job: Job
    public internal(set) var ctx: ParallelContext
    public internal(set) var model: Transformer
    public let sampler: BatchSampler
    let log: RunLog?
    let say: (String) -> Void
    let env: RunEnvironment
    /// Owns the update: gradient reduction, norm, clipping, AdamW, ZeRO-1, router biases.
    public internal(set) var optimizer: ShardedAdamW
    let schedule: LRSchedule
    /// This dp group's samples of every global batch: [sampleStart, sampleEnd).
    public let sampleStart: Int, sampleEnd: Int
    /// The first step to run (set by `resume`).
    public internal(set) var startStep = 0
    /// Saves checkpoints (nil when checkpoint.every is 0).
    let writer: CheckpointWriter?
    /// Set by `resume`, for the start event.
    public var resumeInfo: ResumeInfo?

    /// Online re-placement of experts (replan.every): measured load, links, decisions, migration.
    public let replanner: Replanner

    /// Experts per token by step (train.topKSchedule, parsed once).
    let topKSchedule: TopKSchedule

    /// Called after every applied step with its index (benchmarks use it to skip warmup).
    public var onStepEnd: ((Int) -> Void)?
    /// Wall-clock seconds of each applied step, in order.
    public internal(set) var stepSeconds: [Double] = []
    /// Per-rank sgemm peak (FLOP/s) used for MFU.
    public let peakFlops: Double
    /// The sgemm peak of every core the run uses (the measured one-core peak x ranks x threads
    /// per rank): MFU's denominator. (It counted ranks only, so 1 rank x 2 threads read as MFU > 1.)
    var runPeakFlops: Double { peakFlops * Double(ctx.mesh.world * max(env.blasThreads, 1)) }

    /// Checks the job against the data and the world size without communicating, so every rank
    /// reaches the same verdict before the first collective. Returns the layout and placement.
    public static func validate(job: Job, data: TokenData, world: Int) throws -> (dp: Int, tp: Int, plan: PlacementPlan)
    {
        try job.validate()
        let layout = try job.resolveLayout(world: world)
        _ = try BatchSampler(job: job, data: data)
        return layout
    }

    /// The samples of each global batch that dp group `dpIndex` of `dp` takes: [d*B/dp, (d+1)*B/dp).
    public static func samples(dpIndex d: Int, dp: Int, batch b: Int) -> Range<Int> {
        (d * b / dp)..<((d + 1) * b / dp)
    }

    /// Micro-batch m of `micro` of a slice of `rows` samples: its samples, relative to the slice.
    public static func microBatch(_ m: Int, of micro: Int, rows: Int) -> Range<Int> {
        samples(dpIndex: m, dp: micro, batch: rows)
    }

    /// The largest micro-batch of any dp group: the model's batch buffers are sized for it.
    public static func largestMicroBatch(job: Job, dp: Int) -> Int {
        (0..<dp).map { d in
            let rows = samples(dpIndex: d, dp: dp, batch: job.train.batchSize).count
            return (0..<job.train.microBatches).map { microBatch($0, of: job.train.microBatches, rows: rows).count }
                .max()!
        }.max()!
    }

    /// Tokens of micro-batch m over the whole world (every dp group's m-th micro-batch).
    func microTokens(_ m: Int) -> Int {
        let dp = ctx.mesh.dp, micro = job.train.microBatches
        return (0..<dp).reduce(0) { total, d in
            let rows = Trainer.samples(dpIndex: d, dp: dp, batch: job.train.batchSize).count
            return total + Trainer.microBatch(m, of: micro, rows: rows).count * job.model.seqLen
        }
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
        let nodes = try nodeOf ?? NodeMap.byHost(comm, host: environment.host).nodeOf
        ctx = ParallelContext(
            comms: try MeshComms(world: comm, dp: dp, tp: tp), plan: plan, nodeOf: nodes,
            shardMoments: job.train.shardOptimizer)
        sampler = try BatchSampler(job: job, data: data)
        let mine = Trainer.samples(dpIndex: ctx.mesh.dpIndex, dp: dp, batch: job.train.batchSize)
        sampleStart = mine.lowerBound
        sampleEnd = mine.upperBound
        topKSchedule = job.topKSchedule
        let routerBias =
            job.train.routerBiasRate > 0
            ? RouterBias(layers: job.model.moeLayerCount, experts: job.model.nExpert) : nil
        model = Transformer(
            config: job.model, maxBatch: Trainer.largestMicroBatch(job: job, dp: dp), context: ctx,
            moe: MoEOptions(
                capacityFactor: job.train.capacityFactor,
                logitBias: job.train.routerSkewBias(experts: job.model.nExpert), selectionBias: routerBias),
            recompute: Recompute(rawValue: job.train.recompute) ?? .none, maxTopK: topKSchedule.maxK)
        model.store.initialize(seed: UInt64(job.seed))
        let t = job.train
        optimizer = ShardedAdamW(
            store: model.store, context: ctx, model: job.model,
            config: AdamWConfig(
                beta1: Float(t.beta1), beta2: Float(t.beta2), eps: Float(t.eps), weightDecay: Float(t.weightDecay)),
            maxGradNorm: t.gradClip, routerBias: routerBias, routerBiasRate: t.routerBiasRate)
        schedule = LRSchedule(maxLR: t.lr, minLR: t.minLr, warmup: t.warmupSteps, total: t.steps)
        peakFlops = t.peakGflops > 0 ? t.peakGflops * 1e9 : SgemmPeak.measure(seconds: 0.3)
        replanner = Replanner(
            job: job, log: log, say: say, peakFlops: peakFlops, threadsPerRank: environment.blasThreads)
        writer =
            job.checkpoint.every > 0
            ? CheckpointWriter(
                root: job.runDirectory + "/checkpoints", comm: comm, keep: job.checkpoint.keep,
                keepEvery: job.checkpoint.keepEvery)
            : nil
        reserveSnapshot(for: model.store)
    }

    /// Runs every step (or until `stopRequested` turns true on any rank, between steps).
    /// Rank 0 logs. Every rank of the world must call it.
    public func run(stopRequested: () -> Bool = { false }) throws -> TrainSummary {
        var progress = RunProgress(
            firstStep: startStep,
            stragglers: StragglerWatch(window: job.train.stragglerWindow, ratio: job.train.stragglerRatio))
        log?.write(startEvent())
        say(startLine)
        do {
            for step in startStep..<job.train.steps {
                ctx.comms.world.watchdog?.setStep(step, first: startStep)
                try pollSave(block: false)
                let r = try self.step(step, stopRequested: stopRequested)
                try record(r, into: &progress)
                let last = step == job.train.steps - 1
                let stopping = r.stop && !last
                if r.applied {
                    try evaluateIfDue(step, into: &progress)
                    try replanIfDue(step, last: last, into: &progress)
                    if stopping { announceStop(after: step) }
                    try checkpointIfDue(step, final: last || stopping)
                }
                if r.stop {
                    // After a skipped step nothing is saved: the state did not change since the
                    // last checkpoint, and none is ever written from non-finite state.
                    progress.summary.stoppedEarly = !r.applied || !last
                    break
                }
            }
            try pollSave(block: true)
        } catch is CheckpointSaveFailed {
            log?.write(.event(.end, [.time: .number(unixTime()), .reason: "checkpoint-error"]))
            throw TrainError(
                "a checkpoint could not be saved (see the warning above) and checkpoint.onError = stop; "
                    + "the last good checkpoint in \(checkpointRoot) is intact")
        }
        return try finish(progress)
    }

    /// Evaluates after `step` when train.evalEvery says so, and after the last step.
    func evaluateIfDue(_ step: Int, into progress: inout RunProgress) throws {
        let t = job.train
        guard t.evalEvery > 0 && ((step + 1) % t.evalEvery == 0 || step == t.steps - 1) else { return }
        let v = try evaluate()
        progress.summary.evals.append((step, v))
        log?.write(
            .event(
                .eval,
                [
                    .step: .number(Double(step)), .time: .number(unixTime()),
                    .valLoss: .number(v), .windows: .number(Double(t.evalWindows))
                ]))
        say(String(format: "eval  step %5d | val loss %.4f over %d windows", step, v, t.evalWindows))
    }

    /// Re-places experts after `step` when replan.every says so (never after the run's last step).
    /// Planning and migration are training time: the run's tokens/s pays for them.
    func replanIfDue(_ step: Int, last: Bool, into progress: inout RunProgress) throws {
        guard job.replan.every > 0 && (step + 1) % job.replan.every == 0 && !last else { return }
        try pollSave(block: true)
        progress.timedSeconds += try replanner.replan(step: step, ctx: ctx, parameters: model.store.count) {
            try adopt(placement: $0)
        }
    }

    /// Moves this rank's share to a new expert placement (experts and their moments migrate) and
    /// rebuilds the model, the optimizer's view and the snapshot buffer on the new store.
    func adopt(placement: PlacementPlan) throws {
        let (newCtx, fresh) = try Replanner.migrate(model.store, ctx, to: placement, model: job.model)
        model = Transformer(rebinding: model, context: newCtx, store: fresh)
        optimizer.rebind(store: fresh, context: newCtx)
        ctx = newCtx
        reserveSnapshot(for: fresh)
    }

    /// Saves after `step` when checkpoint.every says so, and always on the run's final step (the
    /// last one, or the one a stop request ends). At most one save in flight: the previous one is
    /// finished first; the write goes on in the background, except the final one, waited for.
    func checkpointIfDue(_ step: Int, final: Bool) throws {
        guard writer != nil && ((step + 1) % job.checkpoint.every == 0 || final) else { return }
        try pollSave(block: true)
        try startSave(steps: step + 1)
        if final { try pollSave(block: true) }
    }

    func announceStop(after step: Int) {
        say(
            "switchyard: stop requested; finished step \(step)"
                + (writer == nil ? ", stopping (checkpoint.every = 0: nothing saved)" : ", saving and stopping"))
    }

    /// The summary of a run that ended normally (completed or stopped by request), and its end event.
    /// Collective: every rank's peak resident memory goes into the end event.
    func finish(_ progress: RunProgress) throws -> TrainSummary {
        var summary = progress.summary
        summary.tokensPerSec = progress.timedSeconds > 0 ? Double(progress.timedTokens) / progress.timedSeconds : 0
        let peaks = try ctx.comms.world.allgather([ResidentMemory.peakMB])
        log?.write(
            .event(
                .end,
                [
                    .time: .number(unixTime()),
                    .step: .number(Double(summary.firstStep + summary.losses.count - 1)),
                    .reason: .string(summary.stoppedEarly ? "signal" : "completed"),
                    .tokensPerSec: .number(summary.tokensPerSec),
                    .rankPeakRssMB: .array(peaks.map { .number($0) })
                ]))
        return summary
    }

    /// Mean cross-entropy over the fixed held-out windows. dp group d evaluates windows
    /// [d*N/dp, (d+1)*N/dp); every rank makes the same number of forward calls (groups that run
    /// out of windows repeat one and drop its loss), since each call exchanges rows.
    public func evaluate() throws -> Double {
        let n = job.train.evalWindows, t = job.model.seqLen
        let dp = ctx.mesh.dp, d = ctx.mesh.dpIndex
        let w0 = d * n / dp, w1 = (d + 1) * n / dp
        // Every group evaluates in calls of the model's batch (the largest micro-batch).
        let b = model.maxBatch
        let calls = (0..<dp).map { g -> Int in ((g + 1) * n / dp - g * n / dp + b - 1) / b }.max()!
        var total = 0.0
        for call in 0..<calls {
            let first = w0 + call * b
            let count = max(0, min(b, w1 - first))
            let (x, y) = try sampler.evalBatch(first: count > 0 ? first : 0, count: max(count, 1), of: n)
            let out = try model.forward(
                MicroBatch(
                    tokens: x, targets: y, batch: max(count, 1), time: t, tokenOffset: first * t, globalTokens: n * t))
            if count > 0 { total += out.lossSum }
        }
        var v = [ctx.mesh.tpIndex == 0 ? total : 0]
        try ctx.allreduceWorld(&v)
        return v[0] / Double(n * t)
    }
}
