// Which scalars TensorBoard shows for each log event, and their tags:
//   step:       train/loss, train/aux_loss, train/z_loss, train/lr, train/grad_norm,
//               perf/tokens_per_sec, perf/mfu, perf/step_ms, moe/block{b}/max_over_mean_load,
//               moe/block{b}/dropped_tokens, ranks/rank{r}/step_ms
//   eval:       eval/val_loss
//   checkpoint: checkpoint/seconds, checkpoint/GBps
// (b counts MoE blocks in order, r world ranks). Other events have no scalars.
import JSON
import RunEvents

public enum LogScalars {
    /// The step, wall time and scalars of a log event; nil for an event without any.
    public static func of(_ e: JSONValue) -> (step: Int, time: Double, scalars: [Scalar])? {
        // A step written in memory is a number (.number(Double(step))); read back from text, an integer.
        guard let kind = e.eventKind, let v = e[.step]?.doubleValue, v == v.rounded(), abs(v) < 1e15 else {
            return nil
        }
        let step = Int(v)
        let time = e[.time]?.doubleValue ?? 0
        var s: [Scalar] = []
        func add(_ tag: String, _ key: EventKey) {
            if let v = e[key]?.doubleValue { s.append(Scalar(tag, Float(v))) }
        }
        switch kind {
        case .step:
            for (tag, key) in stepScalars { add(tag, key) }
            s += moeScalars(e) + rankScalars(e)
        case .eval: add("eval/val_loss", .valLoss)
        case .checkpoint:
            add("checkpoint/seconds", .seconds)
            add("checkpoint/GBps", .gbps)
        default: return nil
        }
        return s.isEmpty ? nil : (step, time, s)
    }

    static let stepScalars: [(String, EventKey)] = [
        ("train/loss", .loss), ("train/aux_loss", .auxLoss), ("train/z_loss", .zLoss), ("train/lr", .lr),
        ("train/grad_norm", .gradNorm), ("perf/tokens_per_sec", .tokensPerSec), ("perf/mfu", .mfu),
        ("perf/step_ms", .stepMs)
    ]

    /// Each MoE block's busiest expert over the mean (1: balanced) and its dropped assignments.
    static func moeScalars(_ e: JSONValue) -> [Scalar] {
        let load = (e[.expertLoad]?.arrayValue ?? []).map { ($0.arrayValue ?? []).compactMap(\.doubleValue) }
        let dropped = (e[.droppedTokens]?.arrayValue ?? []).compactMap(\.doubleValue)
        var s: [Scalar] = []
        for (b, row) in load.enumerated() where !row.isEmpty {
            let mean = row.reduce(0, +) / Double(row.count)
            s.append(Scalar("moe/block\(b)/max_over_mean_load", Float(mean > 0 ? row.max()! / mean : 0)))
        }
        for (b, d) in dropped.enumerated() { s.append(Scalar("moe/block\(b)/dropped_tokens", Float(d))) }
        return s
    }

    static func rankScalars(_ e: JSONValue) -> [Scalar] {
        let ms = (e[.rankStepMs]?.arrayValue ?? []).compactMap(\.doubleValue)
        return ms.enumerated().map { Scalar("ranks/rank\($0.offset)/step_ms", Float($0.element)) }
    }
}
