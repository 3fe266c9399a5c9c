// `switchyard status`: one line per run from its log and checkpoints.
import Foundation

public enum RunStatus {
    /// A run directory's one-line status. `staleAfter`: seconds without growth or `end` after
    /// which a run counts as stale rather than running.
    public static func line(runDir: String, now: Double = Date().timeIntervalSince1970, staleAfter: Double = 300)
        -> String?
    {
        let log = runDir + "/log.jsonl"
        guard FileManager.default.fileExists(atPath: log) else { return nil }
        let reader = LogReader(path: log)
        var state = RunState()
        for e in reader.poll().events { state.apply(e) }
        let mtime =
            ((try? FileManager.default.attributesOfItem(atPath: log)[.modificationDate]) as? Date)?
            .timeIntervalSince1970 ?? now
        let phase: String
        if state.failed {
            phase = "failed"
        } else if let e = state.ended {
            phase = e == "completed" ? "finished" : "stopped (\(e))"
        } else if now - mtime > staleAfter {
            phase = "stale"
        } else {
            phase = "running"
        }
        let name = (runDir as NSString).lastPathComponent
        var s =
            name.padding(toLength: max(name.count, 16), withPad: " ", startingAt: 0) + "  "
            + phase.padding(toLength: 18, withPad: " ", startingAt: 0)
        s += "step \((state.step ?? -1) + 1)/\(state.totalSteps)"
        if let l = state.loss { s += String(format: "  loss %.4f", l) }
        if let v = state.valLoss { s += String(format: "  val %.4f", v) }
        if let t = state.tokensPerSec { s += String(format: "  %.0f tok/s", t) }
        if phase == "running", let eta = state.eta { s += "  eta " + Render.duration(eta) }
        let ck = runDir + "/checkpoints/LATEST"
        if let latest = try? String(contentsOfFile: ck, encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines),
            let attributes = try? FileManager.default.attributesOfItem(atPath: runDir + "/checkpoints/" + latest),
            let d = attributes[.modificationDate] as? Date
        {
            s += "  checkpoint \(latest) (" + Render.duration(now - d.timeIntervalSince1970) + " ago)"
        } else {
            s += "  no checkpoint"
        }
        return s
    }
}
