// train.topKSchedule: how many experts each token takes at each step (SMoE-Dropout, "Sparse MoE
// as the New Dropout", grows it from 1 to E over training). A function of the step alone, so a
// resumed run takes the same k at every step as an uninterrupted one.

/// The experts per token at each step: "" keeps model.topK; "linear" grows k from 1 to E in E
/// equal stages of train.steps; "S:K,S:K,..." uses K from step S on (the first S must be 0).
public struct TopKSchedule: Equatable, Sendable {
    /// (first step, k), steps ascending; empty: model.topK throughout.
    public let stages: [(step: Int, k: Int)]
    let fixed: Int

    public static func == (a: TopKSchedule, b: TopKSchedule) -> Bool {
        a.fixed == b.fixed && a.stages.map(\.step) == b.stages.map(\.step) && a.stages.map(\.k) == b.stages.map(\.k)
    }

    /// k throughout.
    public init(fixed k: Int) {
        fixed = k
        stages = []
    }

    /// Parses `text` for a model with `experts` experts, default k `topK`, over `steps` steps;
    /// errors name train.topKSchedule.
    public init(_ text: String, topK: Int, experts: Int, steps: Int) throws {
        fixed = topK
        func fail(_ m: String) -> JobError { JobError(key: "train.topKSchedule", m) }
        if text.isEmpty {
            stages = []
            return
        }
        if text == "linear" {
            stages = (1...experts).map { k in ((k - 1) * steps / experts, k) }
            return
        }
        var parsed: [(step: Int, k: Int)] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let f = part.split(separator: ":", omittingEmptySubsequences: false)
            guard f.count == 2, let s = Int(f[0].trimmingSpaces), let k = Int(f[1].trimmingSpaces) else {
                throw fail(
                    "\"\(part)\" is not STEP:K; write \"linear\" or e.g. \"0:1,100:2,300:4\" (k from that step on)")
            }
            if k < 1 || k > experts { throw fail("k \(k) at step \(s) must be in 1...model.nExpert (\(experts))") }
            if let last = parsed.last, s <= last.step {
                throw fail("steps must increase: \(s) follows \(last.step)")
            }
            if parsed.isEmpty && s != 0 { throw fail("the first stage must start at step 0, got \(s)") }
            parsed.append((s, k))
        }
        stages = parsed
    }

    /// Whether k changes with the step.
    public var isActive: Bool { !stages.isEmpty }

    /// Experts per token at `step`.
    public func k(at step: Int) -> Int { stages.last { $0.step <= step }?.k ?? fixed }

    /// The most experts per token at any step.
    public var maxK: Int { stages.map(\.k).max() ?? fixed }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return s
    }
}
