// Turning events into text: one plain line per event (pipes, logs), or a compact dashboard
// redrawn in place on a terminal. Colour only on a terminal and never with NO_COLOR.
import Foundation
import RunEvents

public struct Style: Sendable {
    public var color: Bool
    public init(color: Bool) { self.color = color }
    func paint(_ s: String, _ code: String) -> String { color ? "\u{1B}[\(code)m\(s)\u{1B}[0m" : s }
    func dim(_ s: String) -> String { paint(s, "2") }
    func bold(_ s: String) -> String { paint(s, "1") }
    func red(_ s: String) -> String { paint(s, "31") }
    func yellow(_ s: String) -> String { paint(s, "33") }
    func green(_ s: String) -> String { paint(s, "32") }
}

public enum Render {
    public static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        if t >= 3600 { return "\(t / 3600)h\(String(format: "%02d", (t % 3600) / 60))m" }
        if t >= 60 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
        return "\(t)s"
    }

    public static func bar(_ fraction: Double, width: Int) -> String {
        let f = min(max(fraction, 0), 1)
        let full = Int((f * Double(width)).rounded(.down))
        return String(repeating: "=", count: full)
            + (full < width ? ">" + String(repeating: " ", count: width - full - 1) : "")
    }

    static let sparks = Array("▁▂▃▄▅▆▇█")
    public static func sparkline(_ values: [Double], width: Int) -> String {
        guard !values.isEmpty else { return "" }
        let v = values.count > width ? (0..<width).map { values[$0 * values.count / width] } : values
        let lo = v.min()!, hi = v.max()!
        return String(v.map { sparks[hi > lo ? Int(((($0 - lo) / (hi - lo)) * 7).rounded()) : 3] })
    }

    /// The plain line for an event, or nil for a step that `every` skips.
    public static func line(_ e: LogEvent, state: RunState, every: Int, style: Style) -> String? {
        switch e.kind {
        case .start: return style.bold(startLine(e, state: state))
        case .step:
            guard let st = e.step else { return nil }
            if every > 1 && st % every != 0 && st != state.totalSteps - 1 { return nil }
            return stepLine(state, style: style)
        case .eval:
            return "== eval at step \(e.step ?? -1): val loss " + String(format: "%.4f", e.number(.valLoss) ?? .nan)
        case .checkpoint:
            return String(
                format: "== checkpoint step %d saved: %.1f MB, %.2f GB/s, loop stalled %.1f ms",
                e.step ?? -1, (e.number(.bytes) ?? 0) / 1e6, e.number(.gbps) ?? 0, e.number(.stallMs) ?? 0)
        case .placement: return placementLine(e)
        case .warning: return style.yellow("!! warning: " + (e[.message]?.stringValue ?? "?"))
        case .restart:
            // An elastic relaunch also names the world and the hosts that did not answer.
            let world = e[.world]?.intValue.map { "; relaunched at world \($0)" } ?? ""
            let lost = (e[.lostHosts]?.arrayValue ?? []).compactMap(\.stringValue)
            return style.yellow(
                "!! restart: " + (e[.message]?.stringValue ?? "?") + world
                    + (lost.isEmpty ? "" : " (lost: \(lost.joined(separator: ", ")))"))
        case .error: return style.red("!! error: " + (e[.message]?.stringValue ?? "?"))
        case .end: return style.bold("== end: " + (e[.reason]?.stringValue ?? "completed"))
        }
    }

    /// A start event's line: the job, its steps and layout, where it resumed.
    static func startLine(_ e: LogEvent, state: RunState) -> String {
        var s =
            "== start: job \(e[.job]?.stringValue ?? "?"), \(state.totalSteps) steps, "
            + "world \(e[.world]?.intValue ?? 1)"
        if let dp = e[.dp]?.intValue, let tp = e[.tp]?.intValue { s += " (dp \(dp) x tp \(tp))" }
        if let r = e[.resumedFrom]?["step"]?.intValue { s += ", resumed from step \(r)" }
        return s
    }

    /// A placement event's line: a measured plan, a change, or a kept placement and why.
    static func placementLine(_ e: LogEvent) -> String {
        let at = e.step ?? -1
        if e[.phase]?.stringValue == "measured" {
            return String(
                format: "== placement adopted at step %d: predicted %.1f ms/step, measured %.1f",
                e[.adoptedAtStep]?.intValue ?? -1,
                e.number(.predictedStepMs) ?? .nan, e.number(.measuredStepMs) ?? .nan)
        }
        if e[.adopted]?.boolValue == true {
            return String(
                format: "== placement changed at step %d: predicted %.1f -> %.1f ms/step, moving %.1f MB", at,
                e.number(.predictedStepMsBefore) ?? .nan, e.number(.predictedStepMsAfter) ?? .nan,
                (e.number(.migrationBytes) ?? 0) / 1e6)
                + (e.number(.migrationMs).map { String(format: " (took %.0f ms)", $0) } ?? "")
        }
        if e.number(.migrationBytes) == 0 {
            return "== placement kept at step \(at): the plan for the measured load is the current one"
        }
        return String(
            format: "== placement kept at step %d: predicted gain %.0f ms does not pay for moving (%.0f ms)", at,
            e.number(.predictedGainMs) ?? .nan, e.number(.predictedMigrationMs) ?? .nan)
    }

    public static func stepLine(_ s: RunState, style: Style) -> String { stepItems(s).joined(separator: " | ") }

    /// The dashboard for a terminal of `width` columns and `height` rows: progress, the loss
    /// sparkline over the whole run, expert load per MoE block, per-rank step time, the newest
    /// checkpoint. No line is wider than `width`; MoE rows give way when rows run short.
    public static func dashboard(_ s: RunState, path: String, style: Style, width: Int = 80, height: Int = 24)
        -> [String]
    {
        let w = max(width, 20)
        var head = [fit(style.bold("switchyard tail \(path)") + style.dim("  (Ctrl-C to quit)"), width: w)]
        head += pack(stepItems(s), width: w)
        let val = s.valLoss.map { String(format: "  val %.4f", $0) } ?? ""
        head.append(fit("loss " + sparkline(s.lossHistory, width: max(8, w - 5 - val.count)) + val, width: w))
        var tail = rankLines(s, style: style, width: w)
        if let c = s.lastCheckpoint {
            tail.append(
                fit(
                    "checkpoint step \(c.step)" + (s.lastTime.map { " (" + duration($0 - c.time) + " ago)" } ?? ""),
                    width: w))
        }
        if s.restarts > 0 {
            tail.append(fit(style.yellow("restarted \(s.restarts) time(s) by switchyard supervise"), width: w))
        }
        if let e = s.ended { tail.append(style.bold("ended: \(e)")) }
        let moe = moeLines(s, style: style, width: w), room = max(0, height - 1 - head.count - tail.count)
        let shown =
            moe.count <= room
            ? moe : Array(moe.prefix(max(0, room - 1))) + ["... \(moe.count - max(0, room - 1)) more MoE blocks"]
        return head + (room > 0 ? shown : []) + tail
    }

    /// A line per MoE block: each expert's share of its tokens as a bar, and the busiest over the mean.
    static func moeLines(_ s: RunState, style: Style, width: Int) -> [String] {
        s.expertLoad.enumerated().map { l, load in
            let total = load.reduce(0, +), mean = total / Double(max(load.count, 1))
            let imb = mean > 0 ? (load.max() ?? 0) / mean : 0
            let bars = load.map { v -> String in
                let share = total > 0 ? v / total : 0
                return String(sparks[min(7, Int((share * Double(load.count) / 2 * 7).rounded()))])
            }.joined()
            let text = fit("moe \(l) experts " + bars + String(format: "  max/mean %.2f", imb), width: width)
            return imb > 1.5 ? style.yellow(text) : text
        }
    }

    /// Each rank's step time, stragglers (over 1.1x the median) marked, packed into lines.
    static func rankLines(_ s: RunState, style: Style, width: Int) -> [String] {
        guard !s.rankStepMs.isEmpty else { return [] }
        let sorted = s.rankStepMs.sorted(), median = sorted[sorted.count / 2]
        let cells = s.rankStepMs.enumerated().map { r, ms -> String in
            let t = String(format: "r%d %.0fms", r, ms)
            return ms > 1.1 * median && s.rankStepMs.count > 1 ? style.red(t + "*") : t
        }
        let marked = s.rankStepMs.count > 1 && s.rankStepMs.contains { $0 > 1.1 * median }
        return pack(
            ["ranks"] + cells + (marked ? [style.dim("(* straggler: >1.1x median)")] : []), width: width, separator: " "
        )
    }
}
