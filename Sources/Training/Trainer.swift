// The step loop: batch -> forward -> backward -> clip -> AdamW, with logging, evaluation,
// non-finite-step protection and a clean stop on request (SIGTERM/SIGINT).
// This issue trains at world size 1; the Communicator is already threaded through so that
// data, tensor and expert parallelism plug in without changing the loop's shape.
import Comm
import JSON
import Model
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
    public var losses: [Float] = []          // per step (NaN for skipped steps)
    public var evals: [(step: Int, loss: Double)] = []
    public var stoppedEarly = false
    public var tokensPerSec = 0.0            // mean over the run, excluding the first step
}

public final class Trainer {
    public let job: Job
    public let comm: any Communicator
    public let model: Transformer
    public let sampler: BatchSampler
    let log: RunLog?
    let say: (String) -> Void
    let env: RunEnvironment
    let adam: AdamWConfig
    let schedule: LRSchedule
    /// Wall-clock seconds of each applied step, in order.
    public private(set) var stepSeconds: [Double] = []
    /// Per-rank sgemm peak (FLOP/s) used for MFU.
    public let peakFlops: Double

    /// Builds the model and checks the job against the data and the world. Throws before any training.
    public init(job: Job, comm: any Communicator, data: TokenData, log: RunLog?, environment: RunEnvironment,
                say: @escaping (String) -> Void = { print($0) }) throws {
        guard comm.size == 1 else {
            throw JobError(key: "layout", "this build trains at world size 1 (mpirun -np 1); got \(comm.size) ranks. Multi-rank layouts are not implemented yet")
        }
        self.job = job
        self.comm = comm
        self.log = log
        self.say = say
        self.env = environment
        sampler = try BatchSampler(data: data, seqLen: job.model.seqLen, seed: job.seed,
                                   valFraction: job.data.valFraction, needsEval: job.train.evalEvery > 0)
        model = Transformer(config: job.model, maxBatch: job.train.batchSize)
        model.store.initialize(seed: UInt64(job.seed))
        let t = job.train
        adam = AdamWConfig(beta1: Float(t.beta1), beta2: Float(t.beta2), eps: Float(t.eps), weightDecay: Float(t.weightDecay))
        schedule = LRSchedule(maxLR: t.lr, minLR: t.minLr, warmup: t.warmupSteps, total: t.steps)
        peakFlops = t.peakGflops > 0 ? t.peakGflops * 1e9 : SgemmPeak.measure(seconds: 0.3)
    }

    /// Runs every step (or until `stopRequested` turns true between steps). Rank 0 logs.
    public func run(stopRequested: () -> Bool = { false }) throws -> TrainSummary {
        let t = job.train, m = job.model
        let tokensPerStep = t.batchSize * m.seqLen
        let flopsPerToken = m.flopsPerToken(seqLen: m.seqLen)
        var summary = TrainSummary()
        log?.write(startEvent(flopsPerToken: flopsPerToken))
        say("switchyard: training \(job.name) for \(t.steps) steps, \(model.store.count) parameters, \(tokensPerStep) tokens/step, BLAS core \(env.blasCore) x\(env.blasThreads), log \(log?.path ?? "-")")
        var applied = 0, badInARow = 0
        var timedSeconds = 0.0, timedTokens = 0
        for step in 0..<t.steps {
            let t0 = monotonicSeconds()
            let lr = schedule.lr(at: step)
            let (x, y) = sampler.batch(step: step, first: 0, count: t.batchSize)
            let loss = model.forward(tokens: x, targets: y, batch: t.batchSize, time: m.seqLen)
            model.store.grads.zero()
            model.backward(lossScale: 1 / Float(tokensPerStep), auxCoef: Float(t.auxLossCoef))
            let tClip = monotonicSeconds()
            let norm = GradClip.clip(model.store.grads.base, count: model.store.count, maxNorm: t.gradClip)
            model.profile?.add(.optimizer, monotonicSeconds() - tClip)
            let aux = model.lastAux.isEmpty ? 0 : Double(model.lastAux.reduce(0, +)) / Double(model.lastAux.count)
            if !loss.isFinite || !norm.isFinite {
                badInARow += 1
                summary.losses.append(.nan)
                log?.write(["event": "warning", "step": .number(Double(step)), "time": .number(unixTime()),
                            "message": .string("non-finite loss (\(loss)) or gradient norm (\(norm)); step skipped, parameters unchanged")])
                say("warning: step \(step): non-finite loss or gradient; step skipped (\(badInARow)/\(t.maxBadSteps))")
                if badInARow >= t.maxBadSteps {
                    throw TrainError("\(badInARow) consecutive non-finite steps (train.maxBadSteps = \(t.maxBadSteps)) ending at step \(step); lower train.lr or check the data")
                }
                continue
            }
            badInARow = 0
            applied += 1
            let tAdam = monotonicSeconds()
            applyAdamW(lr: Float(lr), step: applied)
            model.profile?.add(.optimizer, monotonicSeconds() - tAdam)
            let seconds = monotonicSeconds() - t0
            stepSeconds.append(seconds)
            if step > 0 { timedSeconds += seconds; timedTokens += tokensPerStep }
            let tps = Double(tokensPerStep) / seconds
            let mflops = tps * flopsPerToken
            summary.losses.append(loss)
            log?.write(stepEvent(step: step, loss: loss, aux: aux, lr: lr, norm: norm, seconds: seconds, tps: tps, mflops: mflops))
            if step % t.logEvery == 0 || step == t.steps - 1 {
                say(String(format: "step %5d/%d | loss %.4f | aux %.3f | lr %.2e | gnorm %.3f | %6.0f ms | %7.0f tok/s | mfu %.2f",
                           step, t.steps, loss, aux, lr, norm, seconds * 1000, tps, mflops / peakFlops))
            }
            if t.evalEvery > 0 && ((step + 1) % t.evalEvery == 0 || step == t.steps - 1) {
                let v = evaluate()
                summary.evals.append((step, v))
                log?.write(["event": "eval", "step": .number(Double(step)), "time": .number(unixTime()),
                            "valLoss": .number(v), "windows": .number(Double(t.evalWindows))])
                say(String(format: "eval  step %5d | val loss %.4f over %d windows", step, v, t.evalWindows))
            }
            if stopRequested() && step < t.steps - 1 {
                summary.stoppedEarly = true
                say("switchyard: stop requested; finished step \(step), stopping")
                break
            }
        }
        summary.tokensPerSec = timedSeconds > 0 ? Double(timedTokens) / timedSeconds : 0
        log?.write(["event": "end", "time": .number(unixTime()), "step": .number(Double(summary.losses.count - 1)),
                    "reason": .string(summary.stoppedEarly ? "signal" : "completed"),
                    "tokensPerSec": .number(summary.tokensPerSec)])
        return summary
    }

    /// AdamW over every named tensor (decay only where the tensor asks for it).
    func applyAdamW(lr: Float, step: Int) {
        let s = model.store
        for info in s.infos {
            AdamW.update(params: s.params.base + info.offset, grads: s.grads.base + info.offset,
                         m: s.adamM.base + info.offset, v: s.adamV.base + info.offset, count: info.count,
                         lr: lr, step: step, config: adam, decay: info.decay)
        }
    }

    /// Mean cross-entropy over the fixed held-out windows.
    public func evaluate() -> Double {
        let n = job.train.evalWindows, b = job.train.batchSize, t = job.model.seqLen
        var total = 0.0
        var first = 0
        while first < n {
            let count = min(b, n - first)
            let (x, y) = sampler.evalBatch(first: first, count: count, of: n)
            total += Double(model.forward(tokens: x, targets: y, batch: count, time: t)) * Double(count)
            first += count
        }
        return total / Double(n)
    }

    func startEvent(flopsPerToken: Double) -> JSONValue {
        let m = job.model
        return ["event": "start", "time": .number(unixTime()), "job": .string(job.name),
                "world": .number(Double(comm.size)), "totalSteps": .number(Double(job.train.steps)),
                "parameters": .number(Double(model.store.count)),
                "activeNonEmbeddingParameters": .number(Double(m.activeNonEmbeddingParams)),
                "flopsPerToken": .number(flopsPerToken), "tokensPerStep": .number(Double(job.train.batchSize * m.seqLen)),
                "blasCore": .string(env.blasCore), "blasCoreOverride": env.blasCoreOverride.map { .string($0) } ?? .null, "blasThreads": .number(Double(env.blasThreads)),
                "peakFlops": .number(peakFlops), "host": .string(env.host), "cpu": .string(env.cpu),
                "data": .string(sampler.data.path), "dataTokens": .number(Double(sampler.data.tokens.count)),
                "resumedFrom": .null]
    }

    func stepEvent(step: Int, loss: Float, aux: Double, lr: Double, norm: Double, seconds: Double,
                   tps: Double, mflops: Double) -> JSONValue {
        let load: [JSONValue] = model.expertTokenCounts.map { .array($0.map { .number(Double($0)) }) }
        return ["event": "step", "step": .number(Double(step)), "time": .number(unixTime()),
                "loss": .number(Double(loss)), "auxLoss": .number(aux), "lr": .number(lr), "gradNorm": .number(norm),
                "stepMs": .number(seconds * 1000), "tokensPerSec": .number(tps), "modelFlopsPerSec": .number(mflops),
                "mfu": .number(mflops / peakFlops), "expertLoad": .array(load),
                "rankStepMs": [.number(seconds * 1000)]]
    }
}
