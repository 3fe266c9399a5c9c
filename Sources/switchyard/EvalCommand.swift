// `switchyard eval DIR --data FILE`: mean cross-entropy of a checkpoint's model over N fixed
// windows of a file; window i starts at token i * (len - T - 1) / N (integer division), so any
// other implementation can reproduce the number.
import Checkpoint
import Foundation
import JSON
import Model
import Training

enum EvalCommand {
    static let spec = CommandSpec(
        name: "eval",
        summary: "Mean cross-entropy of a checkpoint's model over fixed windows of a file.",
        positionals: [("DIR", "a checkpoint directory (.../checkpoints/step-N) or a run directory (uses LATEST)")],
        options: [
            OptionSpec(["--data"], value: "FILE", "text (bytes) or llm.c .bin file to evaluate on (required)"),
            OptionSpec(["--windows"], value: "N", "number of windows (default 64)"),
            OptionSpec(["--seq"], value: "T", "window length, at most the model's seqLen (default: seqLen)")
        ],
        details:
            "Window i of N starts at token i * (len - T - 1) / N (integer division); each predicts its T next tokens.\n"
    )

    static func run(_ args: ParsedArgs) -> Int32 {
        guard let dataPath = args.value("--data") else {
            return usage(UsageError(message: "eval needs --data FILE", command: "eval"))
        }
        let windows: Int
        do { windows = try args.positiveInt("--windows", command: "eval") ?? 64 } catch let e as UsageError {
            return usage(e)
        } catch { return 1 }
        do {
            var dir = args.positionals[0]
            if !FileManager.default.fileExists(atPath: dir + "/manifest.json") {
                let root = CkptCommand.root(dir)
                guard let latest = CheckpointStore.latest(root: root) else {
                    throw CheckpointError("\(dir): no checkpoint (no manifest.json, no LATEST)")
                }
                dir = root + "/" + latest
            }
            let problems = CheckpointStore.verify(dir: dir)
            guard problems.isEmpty else { throw CheckpointError("\(dir) does not verify: \(problems[0])") }
            let m = try CheckpointStore.readManifest(dir: dir)
            var job = Job()
            try job.apply(m.job, file: dir + "/manifest.json")
            let cfg = job.model
            var t = cfg.seqLen
            if let s = args.value("--seq") {
                guard let n = Int(s), n >= 1, n <= cfg.seqLen else {
                    return usage(
                        UsageError(
                            message: "--seq must be in 1...\(cfg.seqLen) (the model's seqLen), got '\(s)'",
                            command: "eval"))
                }
                t = n
            }
            let data = try TokenData.load(path: dataPath, format: "auto", vocabSize: cfg.vocabSize)
            guard data.tokens.count >= t + 1 else {
                throw DataError(
                    path: dataPath, message: "\(data.tokens.count) tokens is shorter than one window (T + 1 = \(t + 1))"
                )
            }
            let batch = 8
            let model = Transformer(config: cfg, maxBatch: batch)
            let views = model.store.infos.map { info in
                ShardView(
                    name: info.name, globalShape: info.globalShape, ranges: info.globalShape.map { [0, $0] },
                    data: model.store.params.base + info.offset, writes: false)
            }
            try CheckpointStore.load(dir: dir, manifest: m, views: views)
            let len = data.tokens.count
            var total = 0.0
            var first = 0
            while first < windows {
                let count = min(batch, windows - first)
                var x: [Int32] = [], y: [Int32] = []
                for i in first..<(first + count) {
                    let o = i * (len - t - 1) / windows
                    for k in 0..<t { x.append(Int32(data.tokens[o + k])); y.append(Int32(data.tokens[o + k + 1])) }
                }
                try model.forward(tokens: x, targets: y, batch: count, time: t)
                total += model.lastLossSum
                first += count
            }
            let loss = total / Double(windows * t)
            say(
                String(
                    format: "eval %@ on %@: mean cross-entropy %.6f over %d windows of %d tokens (step %d)",
                    dir as NSString, dataPath as NSString, loss, windows, t, m.step))
            return 0
        } catch {
            Runtime.printError("\(error)")
            return 1
        }
    }
}
