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
            OptionSpec(
                .data, value: "FILE", required: true,
                "llm.c .bin, or text (encoded by the job's data.tokenizer, else a byte per token) to evaluate on"),
            OptionSpec(.windows, value: "N", "number of windows (default 64)"),
            OptionSpec(.seq, value: "T", "window length, at most the model's seqLen (default: seqLen)"),
            OptionSpec(
                .topK, value: "K",
                "experts per token (1...nExpert; default: what the last trained step used, e.g. SMoE-Dropout's)"),
            OptionSpec(.json, "print one JSON object (meanLoss, windows, seqLen, step, checkpoint) instead of the line")
        ],
        details:
            "Window i of N starts at token i * (len - T - 1) / N (integer division); each predicts its T next tokens.\n"
    ) { try run($0) }

    static func run(_ args: ParsedArgs) throws -> Int32 {
        let dataPath = args.required(.data)
        let windows = try args.positiveInt(.windows) ?? 64
        let dir = try verifiedCheckpoint(args.positionals[0])
        let m = try CheckpointStore.readManifest(dir: dir)
        let job = try CheckpointModel.job(m, dir: dir), cfg = job.model
        let k = try CheckpointModel.expertsPerToken(
            try args.positiveInt(.topK), option: "--top-k", job: job, step: m.step)
        var t = cfg.seqLen
        if let s = args.value(.seq) {
            guard let n = Int(s), n >= 1, n <= cfg.seqLen else {
                throw args.usageError("--seq must be in 1...\(cfg.seqLen) (the model's seqLen), got '\(s)'")
            }
            t = n
        }
        let data = try evalData(dataPath, job: job)
        guard data.count >= t + 1 else {
            throw DataError(
                path: dataPath, message: "\(data.count) tokens is shorter than one window (T + 1 = \(t + 1))",
                key: "--data")
        }
        let batch = 8
        let bias = try CheckpointModel.routerBias(dir: dir, manifest: m)
        let model = Transformer(
            config: cfg, maxBatch: batch, store: ParameterStore(config: cfg, training: false),
            moe: MoEOptions(selectionBias: bias), maxTopK: k)
        model.activeTopK = k
        try CheckpointModel.loadWeights(dir: dir, manifest: m, into: model.store)
        let loss = try meanLoss(model, data, windows: windows, seq: t, batch: batch)
        if args.flag(.json) {
            let record: JSONValue = [
                "meanLoss": .number(loss), "windows": .integer(windows), "seqLen": .integer(t),
                "step": .integer(m.step),
                "expertsPerToken": .integer(k), "checkpoint": .string(dir), "data": .string(dataPath)
            ]
            say(record.compact)
            return 0
        }
        say(
            String(
                format:
                    "eval %@ on %@: mean cross-entropy %.6f over %d windows of %d tokens (step %d, %d of %d experts)",
                dir as NSString, dataPath as NSString, loss, windows, t, m.step, k, cfg.nExpert))
        return 0
    }

    /// The tokens of `path`: a .bin as it is; text through the job's tokenizer when it has one.
    static func evalData(_ path: String, job: Job) throws -> TokenData {
        let vocab = job.model.vocabSize
        guard !job.data.tokenizer.isEmpty, TokenData.resolvedFormat(path: path, format: "auto") == "text" else {
            return try TokenData.open(path: path, format: "auto", vocabSize: vocab, key: "--data")
        }
        let codec = try TextCodec(job: job)
        guard let text = FileManager.default.contents(atPath: path) else {
            throw DataError(path: path, message: "cannot read the file (missing or not readable)", key: "--data")
        }
        return TokenData(path: path, ids: try codec.encode(Array(text)).map(Int.init), vocabSize: vocab)
    }

    /// `path` if it is a checkpoint directory, else the LATEST checkpoint of a run directory;
    /// every checksum verified.
    static func verifiedCheckpoint(_ path: String) throws -> String {
        var dir = path
        if !FileManager.default.fileExists(atPath: dir + "/manifest.json") {
            let root = CkptCommand.root(dir)
            guard let latest = CheckpointStore.latest(root: root) else {
                throw CheckpointError("\(dir): no checkpoint (no manifest.json, no LATEST)")
            }
            dir = root + "/" + latest
        }
        let problems = CheckpointStore.verify(dir: dir)
        guard problems.isEmpty else { throw CheckpointError("\(dir) does not verify: \(problems[0])") }
        return dir
    }

    /// Mean cross-entropy over `windows` windows of `seq` tokens: window i starts at i * (len - T - 1) / N.
    static func meanLoss(_ model: Transformer, _ data: TokenData, windows: Int, seq t: Int, batch: Int) throws
        -> Double
    {
        let len = data.count
        var total = 0.0
        var first = 0
        while first < windows {
            let count = min(batch, windows - first)
            var x: [Int32] = [], y: [Int32] = [], window: [Int32] = []
            for i in first..<(first + count) {
                window.removeAll(keepingCapacity: true)
                try data.read(i * (len - t - 1) / windows, count: t + 1, into: &window)
                x.append(contentsOf: window[0..<t]); y.append(contentsOf: window[1...t])
            }
            total += try model.forward(MicroBatch(tokens: x, targets: y, batch: count, time: t)).lossSum
            first += count
        }
        return total / Double(windows * t)
    }
}
