// What a log says about a run so far: progress, recent losses, throughput, the last events.

public struct RunState: Sendable {
    public var job = "?"
    public var totalSteps = 0
    public var step: Int?  // the newest step logged
    public var firstStepOfRun = 0
    public var loss: Double?
    public var lossAverage: Double?  // exponential moving average (0.9)
    /// The whole run's losses for the sparkline, downsampled: each entry is the mean of
    /// `lossStride` consecutive steps (at 512 entries pairs are merged and the stride doubles).
    public private(set) var lossHistory: [Double] = []
    public private(set) var lossStride = 1
    var lossBucket: (sum: Double, count: Int) = (0, 0)
    public var lr: Double?
    public var tokensPerSec: Double?
    public var mfu: Double?
    public var gradNorm: Double?
    public var expertLoad: [[Double]] = []
    public var rankStepMs: [Double] = []
    public var startTime: Double?
    public var lastTime: Double?
    public var stepTimes: [(step: Int, time: Double)] = []  // for the ETA
    public var ended: String?  // reason of the `end` event
    public var failed = false
    public var lastCheckpoint: (step: Int, time: Double)?
    public var valLoss: Double?
    public var restarts = 0  // `restart` events written by `switchyard supervise`

    public init() {}

    /// Folds one event in.
    public mutating func apply(_ e: LogEvent) {
        if let t = e.number(.time) { lastTime = t }
        switch e.kind {
        case .start:
            job = e[.job]?.stringValue ?? job
            totalSteps = e[.totalSteps]?.intValue ?? totalSteps
            startTime = e.number(.time)
            firstStepOfRun = e[.resumedFrom]?["step"]?.intValue ?? 0
            ended = nil; failed = false; stepTimes = []
        case .step:
            guard let s = e.step, let l = e.number(.loss) else { return }
            step = s
            loss = l
            lossAverage = lossAverage.map { 0.9 * $0 + 0.1 * l } ?? l
            addToHistory(l)
            lr = e.number(.lr) ?? lr
            tokensPerSec = e.number(.tokensPerSec) ?? tokensPerSec
            mfu = e.number(.mfu) ?? mfu
            gradNorm = e.number(.gradNorm) ?? gradNorm
            if let load = e[.expertLoad]?.arrayValue {
                expertLoad = load.map { ($0.arrayValue ?? []).compactMap(\.doubleValue) }
            }
            if let r = e[.rankStepMs]?.arrayValue { rankStepMs = r.compactMap(\.doubleValue) }
            if let t = e.number(.time) {
                stepTimes.append((s, t))
                if stepTimes.count > 50 { stepTimes.removeFirst() }
            }
        case .eval: valLoss = e.number(.valLoss)
        case .checkpoint: if let s = e.step { lastCheckpoint = (s, e.number(.time) ?? 0) }
        case .error: failed = true
        case .restart: restarts += 1
        case .end:
            ended = e[.reason]?.stringValue ?? "completed"
            if ended == "checkpoint-error" { failed = true }
        default: break
        }
    }

    /// Folds a step's loss into the downsampled history.
    mutating func addToHistory(_ l: Double) {
        lossBucket = (lossBucket.sum + l, lossBucket.count + 1)
        guard lossBucket.count == lossStride else { return }
        lossHistory.append(lossBucket.sum / Double(lossBucket.count))
        lossBucket = (0, 0)
        if lossHistory.count == 512 {
            lossHistory = stride(from: 0, to: lossHistory.count, by: 2).map {
                (lossHistory[$0] + lossHistory[$0 + 1]) / 2
            }
            lossStride *= 2
        }
    }

    /// Seconds left, from the rate over the recent steps.
    public var eta: Double? {
        guard let first = stepTimes.first, let last = stepTimes.last, last.step > first.step, let s = step,
            totalSteps > 0
        else { return nil }
        let rate = (last.time - first.time) / Double(last.step - first.step)
        return max(0, Double(totalSteps - 1 - s)) * rate
    }
}
