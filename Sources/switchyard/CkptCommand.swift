// `switchyard ckpt list|verify|inspect|export|import`: look into checkpoints without training,
// and convert them to and from Hugging Face's format.
import Checkpoint
import Foundation
import JSON
import Tensor
import Training

enum CkptCommand {
    static let spec = CommandSpec(
        name: "ckpt",
        summary: "List, verify, inspect, export and import checkpoints.",
        positionals: [
            ("ACTION", "list | verify | inspect | export | import"),
            (
                "PATH",
                "a run directory (runs/<name>) or a checkpoint directory (.../checkpoints/step-N); import: a Hugging "
                    + "Face model directory"
            )
        ],
        options: [
            OptionSpec(.tensor, value: "NAME", "inspect: show one tensor's slices and statistics"),
            OptionSpec(
                .out, value: "PATH",
                "export: the safetensors file (flat) or the directory (hf) to write, never overwritten (hf); "
                    + "import: the run directory to make"),
            OptionSpec(
                .format, value: "F",
                "export: flat (default: Switchyard's names) | hf (model.family's names, for transformers); import: hf")
        ],
        details: """
            ACTIONS:
              list RUN              checkpoints of a run, newest first (LATEST marked, .partial shown as incomplete)
              verify DIR|RUN        every checksum and coverage (each element in exactly one slice); exit 1 on a problem
              inspect DIR           step, job, layout and tensors; with --tensor NAME, that tensor's slices and values
              export DIR --out F    one safetensors file of whole weights with PyTorch-style names (no optimizer state)
              export DIR --format hf --out D
                                    a directory transformers.AutoModelForCausalLM.from_pretrained(D) loads as
                                    model.family's architecture (Mixtral by default, Qwen3-MoE, OLMoE): config,
                                    weights, generation config, the job's tokenizer (or a byte tokenizer for text
                                    jobs); needs model.positions=rope, model.ffn=swiglu, model.moeEvery=1
              import HFDIR --format hf --out RUN
                                    a run directory from a Mixtral, Qwen3-MoE or OLMoE checkpoint (config.json,
                                    *.safetensors, the index, tokenizer.json): RUN/job.json and a step-0 checkpoint;
                                    then: switchyard train RUN/job.json --set data.path=FILE (any world size)

            """
    ) { try run($0) }

    static func run(_ args: ParsedArgs) throws -> Int32 {
        let action = args.positionals[0], path = args.positionals[1]
        switch action {
        case "list": return try list(path)
        case "verify": return try verify(path)
        case "inspect": return try inspect(path, tensor: args.value(.tensor))
        case "import":
            guard args.value(.format) == "hf" else { throw args.usageError("import needs --format hf") }
            guard let out = args.value(.out) else {
                throw args.usageError("import needs --out RUN (the run directory to make)")
            }
            return try HFImport.run(dir: path, out: out)
        case "export":
            guard let out = args.value(.out) else { throw args.usageError("export needs --out PATH") }
            switch args.value(.format) ?? "flat" {
            case "flat": return try export(path, out: out)
            case "hf": return try exportHF(path, out: out)
            case let f: throw args.usageError("--format must be flat or hf, got '\(f)'")
            }
        default:
            throw args.usageError("unknown action '\(action)' (list, verify, inspect, export, import)")
        }
    }

    /// The checkpoints directory of a run directory, or the path itself.
    static func root(_ path: String) -> String {
        FileManager.default.fileExists(atPath: path + "/checkpoints") ? path + "/checkpoints" : path
    }

    static func isCheckpoint(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path + "/manifest.json") }

    static func list(_ path: String) throws -> Int32 {
        let r = root(path)
        guard FileManager.default.fileExists(atPath: r) else {
            throw CheckpointError("\(path): no checkpoints directory (is it a run directory?)")
        }
        let latest = CheckpointStore.latest(root: r)
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: r)) ?? []).filter { $0.hasPrefix("step-") }
            .sorted(by: >)
        if names.isEmpty { say("\(r): no checkpoints"); return 0 }
        say(pad("checkpoint", 26) + pad("step", 10) + pad("size", 12) + "age")
        for n in names {
            let dir = r + "/" + n
            let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            let bytes = files.reduce(0) {
                $0 + ((try? FileManager.default.attributesOfItem(atPath: dir + "/" + $1)[.size] as? Int) ?? 0)
            }
            let mtime = (try? FileManager.default.attributesOfItem(atPath: dir)[.modificationDate] as? Date) ?? Date()
            let step = n.hasSuffix(".partial") ? "-" : String(Int(n.dropFirst(5).prefix(9)) ?? 0)
            let state =
                n.hasSuffix(".partial")
                ? "  (incomplete: never loaded)"
                : (isCheckpoint(dir) ? (n == latest ? "  <- LATEST" : "") : "  (no manifest: not a checkpoint)")
            say(
                pad(n, 26) + pad(step, 10) + pad(String(format: "%.1f MB", Double(bytes) / 1e6), 12)
                    + age(Date().timeIntervalSince(mtime)) + state)
        }
        return 0
    }

    static func age(_ s: Double) -> String {
        s < 120
            ? "\(Int(s)) s"
            : s < 7200 ? "\(Int(s / 60)) min" : s < 172_800 ? "\(Int(s / 3600)) h" : "\(Int(s / 86400)) d"
    }

    static func verify(_ path: String) throws -> Int32 {
        let dirs =
            isCheckpoint(path) ? [path] : CheckpointStore.list(root: root(path)).map { root(path) + "/" + $0.name }
        guard !dirs.isEmpty else {
            throw CheckpointError("\(path): no checkpoint to verify (give a step directory or a run directory)")
        }
        var bad = 0
        for d in dirs {
            let problems = CheckpointStore.verify(dir: d)
            if problems.isEmpty {
                let m = try CheckpointStore.readManifest(dir: d)
                let slices = m.tensors.reduce(0) { $0 + $1.slices.count }
                say(
                    "ok      \(d): step \(m.step), \(m.tensors.count) tensors, \(slices) slices, every checksum and "
                        + "element checked"
                )
            } else {
                bad += 1
                say("FAILED  \(d):")
                for p in problems { say("  " + p) }
            }
        }
        return bad == 0 ? 0 : 1
    }

    static func inspect(_ dir: String, tensor: String?) throws -> Int32 {
        guard isCheckpoint(dir) else { throw CheckpointError("\(dir): not a checkpoint directory (no manifest.json)") }
        let m = try CheckpointStore.readManifest(dir: dir)
        if let name = tensor {
            guard let t = m.tensors.first(where: { $0.name == name }) else {
                throw CheckpointError("\(dir): no tensor \(name); 'switchyard ckpt inspect \(dir)' lists them")
            }
            let values = try whole(t, dir: dir, manifest: m).toArray()
            say("\(t.name): shape \(t.shape), \(t.slices.count) slice(s)")
            for s in t.slices {
                say("  \(s.file) key \(s.key) ranges \(s.ranges) crc32c \(String(format: "%08x", s.crc32c))")
            }
            let mean = values.reduce(0.0) { $0 + Double($1) } / Double(max(values.count, 1))
            let sd =
                (values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(max(values.count, 1)))
                .squareRoot()
            say(
                String(
                    format: "  min %.6g  max %.6g  mean %.6g  std %.6g", Double(values.min() ?? 0),
                    Double(values.max() ?? 0), mean, sd))
            say("  first values: " + values.prefix(8).map { String(format: "%.6g", Double($0)) }.joined(separator: " "))
            return 0
        }
        let weights = m.tensors.filter { !$0.name.hasPrefix("optim.") }
        say("checkpoint \(dir)")
        say(
            "  step \(m.step) (AdamW updates \(m.adamStep)), job \(m.job["name"]?.stringValue ?? "?"), layout "
                + "world \(m.world) = dp \(m.dp) x tp \(m.tp)"
        )
        say("  model \(m.job["model"]?.compact ?? "?")")
        say(
            "  \(weights.count) weight tensors, \(weights.reduce(0) { $0 + $1.shape.reduce(1, *) }) "
                + "parameters; \(m.tensors.count - weights.count) optimizer tensors"
        )
        for t in weights { say("  " + pad(t.name, 40) + pad("\(t.shape)", 14) + "\(t.slices.count) slice(s)") }
        return 0
    }

    /// A whole tensor read from its slices.
    static func whole(_ t: TensorRecord, dir: String, manifest: Manifest) throws -> FloatBuffer {
        let values = FloatBuffer(count: t.shape.reduce(1, *))
        try CheckpointModel.loadWhole(t, dir: dir, manifest: manifest, into: values.base)
        return values
    }

    /// Every weight tensor of the checkpoint (no optimizer state), whole, into one safetensors file
    /// at `path`, each under `name(its name)`. Returns the tensors and parameters written.
    static func writeWeights(
        dir: String, manifest m: Manifest, to path: String, name: (String) -> String, metadata: [String: String]
    ) throws -> (tensors: Int, parameters: Int) {
        let weights = m.tensors.filter { !$0.name.hasPrefix("optim.") }
        let buffers = try weights.map { try whole($0, dir: dir, manifest: m) }
        // The sources hold raw pointers: the buffers must outlive the write.
        _ = try withExtendedLifetime(buffers) {
            try SafeTensors.write(
                zip(weights, buffers).map {
                    SafeTensorSource(name: name($0.0.name), shape: $0.0.shape, data: $0.1.base)
                },
                to: path, metadata: metadata)
        }
        return (weights.count, buffers.reduce(0) { $0 + $1.count })
    }

    /// The Mixtral export of a checkpoint (or a run's LATEST), verified first.
    static func exportHF(_ path: String, out: String) throws -> Int32 {
        let dir = try EvalCommand.verifiedCheckpoint(path)
        let m = try CheckpointStore.readManifest(dir: dir)
        let count = try HFExport.write(dir: dir, manifest: m, job: try CheckpointModel.job(m, dir: dir), out: out)
        say("exported step \(m.step) of \(dir) as MixtralForCausalLM (\(count) parameters) to \(out)")
        return 0
    }

    static func export(_ dir: String, out: String) throws -> Int32 {
        guard isCheckpoint(dir) else { throw CheckpointError("\(dir): not a checkpoint directory (no manifest.json)") }
        let problems = CheckpointStore.verify(dir: dir)
        guard problems.isEmpty else { throw CheckpointError("\(dir) does not verify: \(problems[0])") }
        let m = try CheckpointStore.readManifest(dir: dir)
        let tmp = out + ".tmp"
        let written = try writeWeights(
            dir: dir, manifest: m, to: tmp, name: { $0 },
            metadata: ["format": "switchyard", "step": String(m.step), "model": m.job["model"]?.compact ?? ""])
        guard rename(tmp, out) == 0 else {
            throw CheckpointError("\(out): cannot write: \(String(cString: strerror(errno)))")
        }
        say("exported \(written.tensors) tensors (\(written.parameters) parameters) of step \(m.step) to \(out)")
        return 0
    }
}
