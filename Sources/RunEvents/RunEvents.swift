// The run log's events, typed: one definition of every event kind and key that the trainer and
// `supervise` write and that `Monitor` (tail, status, plot) and the bench read, so a key is
// spelt once. `log.jsonl` holds one JSON object per line: `{"event": KIND, ...keys}`; keys keep
// the order a writer gives them (the bytes of the log are what they were before this type).
import JSON

/// What an event reports.
public enum EventKind: String, CaseIterable, Sendable {
    case start  // the run's facts: layout, model, machine, data, resume
    case step  // one applied optimizer step: losses, rates, routing, per-rank timings
    case eval  // validation loss
    case checkpoint  // a committed save: path, size, time
    case placement  // a re-placement decision or the measurement of an adopted one
    case warning  // something to look at (a skipped step, a straggler, a failed save kept going)
    case error  // a failure that stopped the run
    case end  // the run's end: reason, throughput, peak memory
    case restart  // supervise relaunched the job
}

/// Every key an event may carry, besides `event` itself.
public enum EventKey: String, CaseIterable, Sendable {
    case step
    case time
    case kind
    case message
    case phase
    case adoptedAtStep
    case predictedStepMs
    case measuredStepMs
    case adopted
    case oldPlan
    case newPlan
    case predictedStepMsBefore
    case predictedStepMsAfter
    case measuredStepMsBefore
    case predictedGainMs
    case migrationBytes
    case predictedMigrationMs
    case horizonSteps
    case migrationMs
    case replanMs
    case alltoallvGBps
    case alltoallvInterNodeGBps
    case alltoallvLatencyUs
    case coresPerNode
    case computeGflopsPerRank
    case load
    case path
    case bytes
    case seconds
    case gbps = "GBps"
    case stallMs
    case removed
    case error
    case rank
    case ratio
    case job
    case world
    case dp
    case tp
    case nodeOfRank
    case placement
    case totalSteps
    case parameters
    case parametersRank0
    case activeNonEmbeddingParameters
    case flopsPerToken
    case tokensPerStep
    case positions
    case ffn
    case flopsPerTokenParts
    case blasCore
    case blasCoreOverride
    case blasThreads
    case gemm
    case memoryEstimateBytesPerRank
    case peakFlops
    case host
    case cpu
    case data
    case dataTokens
    case resumedFrom
    case checkpointSkipped
    case loss
    case auxLoss
    case zLoss
    case lr
    case gradNorm
    case stepMs
    case tokensPerSec
    case modelFlopsPerSec
    case mfu
    case expertLoad
    case droppedTokens
    case rankStepMs
    case rankAlltoallvMs
    case rankAllreduceMs
    case rankExpertRows
    case topK
    case reason
    case valLoss
    case windows
    case rankPeakRssMB
    case attempt
    case exitStatus
    case checkpointStep
    case hosts
    case lostHosts
}

extension JSONValue {
    /// An event of `kind` with `fields` in the order given.
    public static func event(_ kind: EventKind, _ fields: KeyValuePairs<EventKey, JSONValue>) -> JSONValue {
        event(kind, fields.map { ($0.key, $0.value) })
    }

    /// An event of `kind` with `fields` in the order given (for events built up piece by piece).
    public static func event(_ kind: EventKind, _ fields: [(EventKey, JSONValue)]) -> JSONValue {
        .object([("event", .string(kind.rawValue))] + fields.map { ($0.0.rawValue, $0.1) })
    }

    /// The event's kind (nil: not an event of a known kind).
    public var eventKind: EventKind? { self["event"]?.stringValue.flatMap(EventKind.init(rawValue:)) }

    /// The value of an event key.
    public subscript(_ key: EventKey) -> JSONValue? { self[key.rawValue] }
}
