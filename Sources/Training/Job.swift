// The job spec: every setting of a training run and its default. Each key is documented once,
// in its `Job.fields` entry (Job+Fields.swift), which `train --help` and the parser both read.
// A job file (JSON) overrides the defaults, `--set key=value` overrides the file. Unknown keys,
// wrong types and invalid values are errors naming the key (Job+Parsing.swift).
import Model
import Placement
import Tensor

/// Where the tokens come from.
public struct DataSpec: Equatable, Sendable {
    public var path = ""
    public var format = "auto"
    public var valFraction = 0.05
    public var valPath = ""
    public var tokenizer = ""
}

/// The optimisation settings.
public struct TrainSpec: Equatable, Sendable {
    public var steps = 300
    public var batchSize = 8
    public var lr = 3e-3
    public var minLr = 3e-4
    public var warmupSteps = 20
    public var weightDecay = 0.1
    public var beta1 = 0.9
    public var beta2 = 0.95
    public var eps = 1e-8
    public var testNaNStep = -1  // test only: a NaN gradient at this step (-1: never)
    public var testNaNRank = 0  // test only: on this rank
    public var stragglerRatio = 1.5
    public var stragglerWindow = 20
    public var gradClip = 1.0
    public var auxLossCoef = 0.01
    public var zLossCoef = 0.0
    public var routerBiasRate = 0.0
    public var topKSchedule = ""
    public var maxBadSteps = 3
    public var logEvery = 10
    public var tensorboard = false
    public var evalEvery = 100
    public var evalWindows = 16
    public var peakGflops = 0.0
    public var capacityFactor = 0.0
    public var routerSkew = 0.0
    public var routerSkewStride = 1
    public var microBatches = 1
    public var recompute = "none"
    public var shardOptimizer = false
    public var overlapReduce = false
}

extension TrainSpec {
    /// The router logit bias that `routerSkew` asks for (nil when 0): expert j's logit gets
    /// -routerSkew * ln(p(j) + 1), where p orders the experts 0, s, 2s, ..., 1, 1+s, ... for stride
    /// s = routerSkewStride (s = 1: low-numbered experts get the most tokens; a stride that does not
    /// divide the experts counts as 1).
    public func routerSkewBias(experts e: Int) -> [Float]? {
        guard routerSkew != 0 else { return nil }
        let st = e % routerSkewStride == 0 ? routerSkewStride : 1
        return (0..<e).map { j in
            let position = (j % st) * (e / st) + j / st
            return Float(-routerSkew * logDouble(Double(position + 1)))
        }
    }
}

/// Online re-placement of experts from measured routing load.
public struct ReplanSpec: Equatable, Sendable {
    public var every = 0
    public var horizon = 100
    public var emaDecay = 0.9
}

/// When and how to save checkpoints.
public struct CheckpointSpec: Equatable, Sendable {
    public var every = 100
    public var keep = 3
    public var keepEvery = 0
    public var onError = "stop"
}

/// How long a rank waits in one collective before it ends the job (a stopped rank, a frozen
/// node or a cut link would otherwise hang it): the first step's allowance covers start-up.
public struct TimeoutSpec: Equatable, Sendable {
    public var collectiveSeconds = 120.0
    public var firstStepSeconds = 600.0
    public init() {}
}

/// How the world is laid out: world = dp x tp (see DESIGN.md, "Parallel layout").
public struct LayoutSpec: Equatable, Sendable {
    public var dp = 0
    public var tp = 1
}

/// A whole training job.
public struct Job: Equatable, Sendable {
    public var name = "job"
    public var runsDir = "runs"
    public var seed = 1337
    public var model = ModelConfig(
        vocabSize: 256, seqLen: 64, nLayer: 2, nEmbd: 64, nHead: 4,
        nExpert: 4, topK: 2, ffHidden: 128, moeEvery: 1)
    public var data = DataSpec()
    public var train = TrainSpec()
    public var layout = LayoutSpec()
    public var checkpoint = CheckpointSpec()
    public var replan = ReplanSpec()
    public var timeouts = TimeoutSpec()
    /// Expert -> ranks: one list per expert for every MoE layer ([[0], [1, 2], ...]), or one such
    /// list per MoE layer. nil: expert e on rank e % world.
    public var placement: [[[Int]]]? = nil

    public init() {}

    /// Experts per token by step (train.topKSchedule; validate() has checked it).
    public var topKSchedule: TopKSchedule {
        (try? TopKSchedule(train.topKSchedule, topK: model.topK, experts: model.nExpert, steps: train.steps))
            ?? TopKSchedule(fixed: model.topK)
    }

    /// Experts per token of the last step a checkpoint written after `steps` steps trained with
    /// (model.topK, or train.topKSchedule's k there): inference's default and the HF export's.
    public func trainedTopK(afterSteps steps: Int) -> Int { topKSchedule.k(at: max(0, steps - 1)) }

    /// The run directory, `<runsDir>/<name>`.
    public var runDirectory: String { runsDir.hasSuffix("/") ? runsDir + name : runsDir + "/" + name }
}

/// A problem with a job spec: the key (or file) and what to do.
public struct JobError: Error, CustomStringConvertible, Sendable {
    public let key: String
    public let message: String
    public init(key: String, _ message: String) { self.key = key; self.message = message }
    public var description: String { "\(key): \(message)" }
}

/// One settable key of the job: its dotted name, its place in Job, and its comment.
public struct JobField: Sendable {
    public enum Ref: Sendable {
        case int(WritableKeyPath<Job, Int> & Sendable)
        case double(WritableKeyPath<Job, Double> & Sendable)
        case string(WritableKeyPath<Job, String> & Sendable)
        case bool(WritableKeyPath<Job, Bool> & Sendable)
        case placement
    }
    public let key: String
    public let ref: Ref
    public let doc: String

    public var typeName: String {
        switch ref {
        case .int: return "integer"
        case .double: return "number"
        case .string: return "string"
        case .bool: return "boolean"
        case .placement: return "list of rank lists"
        }
    }
}

extension Job {
    /// Throws the first invalid value, naming its key.
    public func validate() throws {
        try validateRunAndData()
        try validateTrain()
        try validateSavingRoutingAndLayout()
    }

    /// Name, run directory, seed, model and data keys.
    func validateRunAndData() throws {
        let nameOK =
            !name.isEmpty
            && name.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
                    || "._-".unicodeScalars.contains($0)
            } && name != "." && name != ".."
        if !nameOK {
            throw JobError(key: "name", "'\(name)' must be letters, digits, '.', '_' or '-' (it names a folder)")
        }
        if runsDir.isEmpty { throw JobError(key: "runsDir", "must not be empty") }
        if seed < 0 { throw JobError(key: "seed", "must be >= 0, got \(seed)") }
        do { try model.validate() } catch let e as ModelConfigError {
            throw JobError(key: "model." + e.field, e.message)
        }
        if data.path.isEmpty {
            throw JobError(key: "data.path", "is required: the text or llm.c .bin file (or glob of shards) to train on")
        }
        if !["auto", "text", "bin"].contains(data.format) {
            throw JobError(key: "data.format", "must be auto, text or bin, got '\(data.format)'")
        }
        if !(data.valFraction >= 0 && data.valFraction <= 0.5) {
            throw JobError(key: "data.valFraction", "must be in 0...0.5, got \(data.valFraction)")
        }
    }

    /// The optimisation keys (train.*) but the routing skew.
    func validateTrain() throws {
        let t = train
        if t.steps < 1 || t.steps > 1 << 40 {
            throw JobError(key: "train.steps", "must be in 1...\(1 << 40), got \(t.steps)")
        }
        if t.batchSize < 1 || t.batchSize > 1 << 24 {
            throw JobError(key: "train.batchSize", "must be in 1...\(1 << 24), got \(t.batchSize)")
        }
        if t.microBatches < 1 { throw JobError(key: "train.microBatches", "must be >= 1, got \(t.microBatches)") }
        if Recompute(rawValue: t.recompute) == nil {
            throw JobError(key: "train.recompute", "must be none, attention or block, got \"\(t.recompute)\"")
        }
        if !(t.lr > 0 && t.lr.isFinite) { throw JobError(key: "train.lr", "must be > 0, got \(t.lr)") }
        if !(t.minLr >= 0 && t.minLr <= t.lr) {
            throw JobError(key: "train.minLr", "must be in 0...train.lr (\(t.lr)), got \(t.minLr)")
        }
        if t.warmupSteps < 0 { throw JobError(key: "train.warmupSteps", "must be >= 0, got \(t.warmupSteps)") }
        if !(t.weightDecay >= 0) { throw JobError(key: "train.weightDecay", "must be >= 0, got \(t.weightDecay)") }
        if !(t.beta1 >= 0 && t.beta1 < 1) { throw JobError(key: "train.beta1", "must be in [0, 1), got \(t.beta1)") }
        if !(t.beta2 >= 0 && t.beta2 < 1) { throw JobError(key: "train.beta2", "must be in [0, 1), got \(t.beta2)") }
        if !(t.eps > 0) { throw JobError(key: "train.eps", "must be > 0, got \(t.eps)") }
        if !(t.gradClip >= 0) {
            throw JobError(key: "train.gradClip", "must be >= 0 (0 disables clipping), got \(t.gradClip)")
        }
        if !(t.auxLossCoef >= 0) { throw JobError(key: "train.auxLossCoef", "must be >= 0, got \(t.auxLossCoef)") }
        if !(t.zLossCoef >= 0) { throw JobError(key: "train.zLossCoef", "must be >= 0, got \(t.zLossCoef)") }
        if !(t.routerBiasRate >= 0) {
            throw JobError(key: "train.routerBiasRate", "must be >= 0 (0: off), got \(t.routerBiasRate)")
        }
        _ = try TopKSchedule(t.topKSchedule, topK: model.topK, experts: model.nExpert, steps: t.steps)
        if t.maxBadSteps < 1 { throw JobError(key: "train.maxBadSteps", "must be >= 1, got \(t.maxBadSteps)") }
        if t.logEvery < 1 { throw JobError(key: "train.logEvery", "must be >= 1, got \(t.logEvery)") }
        if t.evalEvery < 0 {
            throw JobError(key: "train.evalEvery", "must be >= 0 (0 disables eval), got \(t.evalEvery)")
        }
        if t.evalWindows < 1 || t.evalWindows > 1 << 24 {
            throw JobError(key: "train.evalWindows", "must be in 1...\(1 << 24), got \(t.evalWindows)")
        }
        if !(t.peakGflops >= 0) {
            throw JobError(key: "train.peakGflops", "must be >= 0 (0 measures at start), got \(t.peakGflops)")
        }
        if !(t.capacityFactor >= 0 && t.capacityFactor.isFinite) {
            throw JobError(key: "train.capacityFactor", "must be >= 0 (0: dropless), got \(t.capacityFactor)")
        }
    }

    /// Checkpoint, watchdog, routing skew, re-placement and layout keys.
    func validateSavingRoutingAndLayout() throws {
        try validateSavingAndWatching()
        try validateRoutingAndLayout()
    }

    /// Checkpoint, straggler and deadline keys.
    func validateSavingAndWatching() throws {
        if checkpoint.every < 0 {
            throw JobError(key: "checkpoint.every", "must be >= 0 (0: never), got \(checkpoint.every)")
        }
        if train.testNaNRank < 0 { throw JobError(key: "train.testNaNRank", "must be >= 0, got \(train.testNaNRank)") }
        if !(train.stragglerRatio >= 0 && train.stragglerRatio.isFinite) {
            throw JobError(key: "train.stragglerRatio", "must be >= 0 (0: off), got \(train.stragglerRatio)")
        }
        if train.stragglerWindow < 1 || train.stragglerWindow > 1 << 20 {
            throw JobError(
                key: "train.stragglerWindow", "must be in 1...\(1 << 20) steps, got \(train.stragglerWindow)")
        }
        for (key, v) in [
            ("timeouts.collectiveSeconds", timeouts.collectiveSeconds),
            ("timeouts.firstStepSeconds", timeouts.firstStepSeconds)
        ] where !(v >= 0 && v.isFinite) {
            throw JobError(key: key, "must be >= 0 seconds (0: no deadline), got \(v)")
        }
        if checkpoint.keep < 1 { throw JobError(key: "checkpoint.keep", "must be >= 1, got \(checkpoint.keep)") }
        if checkpoint.keepEvery < 0 {
            throw JobError(key: "checkpoint.keepEvery", "must be >= 0, got \(checkpoint.keepEvery)")
        }
        if !["stop", "continue"].contains(checkpoint.onError) {
            throw JobError(key: "checkpoint.onError", "must be stop or continue, got '\(checkpoint.onError)'")
        }
    }

    /// Routing skew, re-placement and layout keys.
    func validateRoutingAndLayout() throws {
        let t = train
        if t.routerSkewStride < 1 || model.nExpert % t.routerSkewStride != 0 {
            throw JobError(
                key:
                    "train.routerSkewStride",
                "must be >= 1 and divide model.nExpert = \(model.nExpert), got \(t.routerSkewStride)")
        }
        if !t.routerSkew.isFinite {
            throw JobError(key: "train.routerSkew", "must be a finite number, got \(t.routerSkew)")
        }
        if replan.every < 0 { throw JobError(key: "replan.every", "must be >= 0 (0: never), got \(replan.every)") }
        if replan.horizon < 1 { throw JobError(key: "replan.horizon", "must be >= 1, got \(replan.horizon)") }
        if !(replan.emaDecay >= 0 && replan.emaDecay < 1) {
            throw JobError(key: "replan.emaDecay", "must be in [0, 1), got \(replan.emaDecay)")
        }
        if layout.dp < 0 {
            throw JobError(key: "layout.dp", "must be >= 0 (0: world size / layout.tp), got \(layout.dp)")
        }
        if layout.tp < 1 { throw JobError(key: "layout.tp", "must be >= 1, got \(layout.tp)") }
        if model.nHead % layout.tp != 0 {
            throw JobError(
                key:
                    "layout.tp",
                "\(layout.tp) does not divide model.nHead = \(model.nHead); attention heads are split over the tp ranks"
            )
        }
        if model.kvHeads % layout.tp != 0 {
            throw JobError(
                key: "layout.tp",
                "\(layout.tp) does not divide model.nKVHead = \(model.kvHeads); key/value heads are split over the tp "
                    + "ranks with their query heads")
        }
    }

    /// The (dp, tp) layout for `world` ranks and the expert placement, checked against the model
    /// and the world. Pure: every rank computes the same answer (or error) before any collective.
    public func resolveLayout(world: Int) throws -> (dp: Int, tp: Int, plan: PlacementPlan) {
        let tp = layout.tp
        if world % tp != 0 {
            throw JobError(
                key: "layout.tp",
                "\(tp) does not divide the world size \(world) (mpirun -np); use a world size that is a multiple of "
                    + "layout.tp"
            )
        }
        let dp = layout.dp == 0 ? world / tp : layout.dp
        if dp * tp != world {
            throw JobError(
                key: "layout",
                "dp \(dp) x tp \(tp) = \(dp * tp) ranks, but the world has \(world) (mpirun -np); make layout.dp x "
                    + "layout.tp equal the world size, or set layout.dp = 0"
            )
        }
        if train.batchSize < dp {
            throw JobError(
                key: "train.batchSize",
                "\(train.batchSize) sequences cannot be split over \(dp) data-parallel groups; use train.batchSize "
                    + ">= layout.dp"
            )
        }
        if train.batchSize / dp < train.microBatches {
            throw JobError(
                key: "train.microBatches",
                "\(train.microBatches) micro-batches need as many sequences in every dp group, but "
                    + "train.batchSize \(train.batchSize) over \(dp) groups gives \(train.batchSize / dp); "
                    + "raise train.batchSize or lower train.microBatches"
            )
        }
        let moe = model.moeLayerCount
        var plan = PlacementPlan.roundRobin(moeLayers: moe, experts: model.nExpert, world: world)
        if let p = placement {
            plan = PlacementPlan(layers: p.count == 1 ? Array(repeating: p[0], count: moe) : p)
        }
        do { try plan.validate(moeLayers: moe, experts: model.nExpert, world: world) } catch let e as PlacementError {
            throw JobError(key: "placement", e.message)
        }
        return (dp, tp, plan)
    }
}
