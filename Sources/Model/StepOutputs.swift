// What the model takes and gives for one micro-batch: `MicroBatch` in, `StepOutputs` out
// (Transformer.forward and forwardBackward). Nothing a pass computed is read back from the model
// afterwards: the values a caller needs are in the returned StepOutputs.
// Shape legend: B rows of this rank's micro-batch, T time, N = B*T, V vocab, E experts.

/// One micro-batch at this rank: tokens and targets [B, T] and where they sit in the global batch.
public struct MicroBatch: Sendable {
    public var tokens: [Int32]  // [B, T]
    public var targets: [Int32]  // [B, T]
    public var batch: Int  // B
    public var time: Int  // T
    /// The global index of this rank's first token (replica choice: a token's replica is a pure
    /// function of its global index).
    public var tokenOffset: Int
    /// Tokens of the whole world's micro-batch (the balance and z losses are means over them).
    public var globalTokens: Int

    /// `globalTokens` defaults to B*T: world size 1.
    public init(
        tokens: [Int32], targets: [Int32], batch: Int, time: Int, tokenOffset: Int = 0, globalTokens: Int? = nil
    ) {
        self.tokens = tokens
        self.targets = targets
        self.batch = batch
        self.time = time
        self.tokenOffset = tokenOffset
        self.globalTokens = globalTokens ?? batch * time
    }

    var rows: PassRows { PassRows(batch: batch, time: time, tokenOffset: tokenOffset, globalTokens: globalTokens) }
}

/// The rows one pass runs on: what forward and backward (and the decoder) agree on.
struct PassRows {
    let batch: Int, time: Int
    let tokenOffset: Int
    let globalTokens: Int
    var n: Int { batch * time }
}

/// The objective backward differentiates:
/// `lossScale * sum(token losses) + auxCoef * sum(block aux) + zCoef * sum(block router z-loss)`.
/// For the mean loss over the global batch, lossScale = 1 / (global B*T).
public struct Objective: Sendable {
    public var lossScale: Float
    public var auxCoef: Float
    public var zCoef: Float
    public init(lossScale: Float, auxCoef: Float, zCoef: Float = 0) {
        self.lossScale = lossScale
        self.auxCoef = auxCoef
        self.zCoef = zCoef
    }
}

/// What one forward (and backward) of a micro-batch computed at this rank.
public struct StepOutputs: Sendable {
    /// Sum of this rank's token losses.
    public var lossSum: Double = 0
    /// Tokens the loss sum is over (this rank's B*T).
    public var tokens = 0
    /// Balance loss of each MoE block (global, in block order).
    public var aux: [Float] = []
    /// Router z-loss of each MoE block (global, in block order).
    public var z: [Float] = []
    /// Tokens routed to each expert over the global batch: [MoE block][E].
    public var expertCounts: [[Int]] = []
    /// Assignments dropped by the capacity limit, per MoE block (global).
    public var dropped: [Int] = []
    /// The logits [N, V], when the caller asked for them (forward's `keepLogits`).
    public var logits: [Float]? = nil

    public init() {}

    /// The mean loss of this rank's tokens.
    public var meanLoss: Float { Float(lossSum / Double(max(tokens, 1))) }
    /// The mean balance loss over the MoE blocks (0 without any).
    public var meanAux: Double { aux.isEmpty ? 0 : Double(aux.reduce(0, +)) / Double(aux.count) }
    /// The mean router z-loss over the MoE blocks (0 without any).
    public var meanZ: Double { z.isEmpty ? 0 : Double(z.reduce(0, +)) / Double(z.count) }
}
