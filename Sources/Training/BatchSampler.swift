// Batches as a pure function of (seed, step, sample index) over the whole token stream (every
// shard), so that a resume and any world size read the same tokens; eval windows at fixed
// places in the held-out tokens (data.valPath, or the stream's tail data.valFraction).
import Tensor

/// Draws training windows and eval windows; T = seqLen.
public struct BatchSampler: Sendable {
    public let data: TokenData
    public let seqLen: Int
    public let seed: UInt64
    /// Tokens [0, trainEnd) of `data` are for training.
    public let trainEnd: Int
    /// Eval windows lie in [evalStart, evalStart + evalCount) of `evalData`.
    let evalData: TokenData
    let evalStart: Int
    let evalCount: Int

    public init(data: TokenData, seqLen: Int, seed: Int, valFraction: Double, needsEval: Bool) throws {
        let n = data.count
        let held = data.validation == nil ? Int(Double(n) * valFraction) : 0
        self.data = data
        self.seqLen = seqLen
        self.seed = UInt64(seed)
        self.trainEnd = n - held
        evalData = data.validation ?? data
        evalStart = data.validation == nil ? trainEnd : 0
        evalCount = data.validation?.count ?? held
        if trainEnd < seqLen + 1 {
            throw DataError(
                path: data.path,
                message:
                    "\(n) tokens\(held > 0 ? " (\(trainEnd) after holding out data.valFraction)" : "") is shorter "
                    + "than one training sequence (model.seqLen + 1 = \(seqLen + 1)); use more data or a smaller "
                    + "model.seqLen")
        }
        if needsEval && evalCount < seqLen + 1 { throw shortEval(valFraction) }
    }

    func shortEval(_ valFraction: Double) -> DataError {
        if let v = data.validation {
            return DataError(
                path: v.path,
                message: "\(v.count) held-out tokens, fewer than model.seqLen + 1 = \(seqLen + 1); use a longer "
                    + "validation file or set train.evalEvery=0", key: "data.valPath")
        }
        return DataError(
            path: data.path,
            message:
                "the held-out tail (data.valFraction = \(valFraction)) has \(evalCount) tokens, fewer than "
                + "model.seqLen + 1 = \(seqLen + 1); raise data.valFraction, set data.valPath or set train.evalEvery=0"
        )
    }

    /// Start of sample `index` of global step `step`: uniform over the training tokens.
    public func offset(step: Int, index: Int) -> Int {
        CounterRNG.below(trainEnd - seqLen, CounterRNG.hash(seed, 0x4441_5441, UInt64(step), UInt64(index)))
    }

    /// Inputs and next-token targets [count, T] for samples first..<first+count of `step`.
    public func batch(step: Int, first: Int, count: Int) throws -> (inputs: [Int32], targets: [Int32]) {
        try windows(data, starts: (first..<(first + count)).map { offset(step: step, index: $0) })
    }

    /// Start of eval window i of n: evalStart + i * (heldOut - T - 1) / n (integer division).
    public func evalWindowStart(_ i: Int, of n: Int) -> Int {
        evalStart + i * (evalCount - seqLen - 1) / n
    }

    /// Inputs and targets of eval windows first..<first+count of n.
    public func evalBatch(first: Int, count: Int, of n: Int) throws -> (inputs: [Int32], targets: [Int32]) {
        try windows(evalData, starts: (first..<(first + count)).map { evalWindowStart($0, of: n) })
    }

    /// The windows of T + 1 tokens at `starts`, split into inputs and targets shifted by one.
    func windows(_ source: TokenData, starts: [Int]) throws -> (inputs: [Int32], targets: [Int32]) {
        var x = [Int32](), y = [Int32](), window = [Int32]()
        x.reserveCapacity(starts.count * seqLen); y.reserveCapacity(starts.count * seqLen)
        window.reserveCapacity(seqLen + 1)
        for o in starts {
            window.removeAll(keepingCapacity: true)
            try source.read(o, count: seqLen + 1, into: &window)
            x.append(contentsOf: window[0..<seqLen])
            y.append(contentsOf: window[1...seqLen])
        }
        return (x, y)
    }
}

extension BatchSampler {
    /// The sampler a job trains with: its sequence length, seed and held-out tokens.
    public init(job: Job, data: TokenData) throws {
        try self.init(
            data: data, seqLen: job.model.seqLen, seed: job.seed, valFraction: job.data.valFraction,
            needsEval: job.train.evalEvery > 0)
    }
}
