// `ckpt import --format hf DIR --out RUN`: a Hugging Face checkpoint (config.json, one or more
// *.safetensors with model.safetensors.index.json, optionally tokenizer.json) becomes a run
// directory: RUN/job.json (the model from config.json, training keys at their defaults,
// data.tokenizer pointing at DIR's tokenizer) and RUN/checkpoints/step-000000000, which `train`
// resumes from at any world size and `eval`, `sample` and `ckpt export` read as any checkpoint.
// Every source tensor must be consumed and every parameter filled (both listed when not): an
// import never drops a tensor or leaves one at its random initialisation. Tensors are converted
// (bf16/fp16 -> fp32) and written one at a time, so the model is never held whole in memory.
import Checkpoint
import Foundation
import JSON
import Model
import Training

enum HFImport {
    /// The tensors of a Hugging Face model directory: name -> the file that holds it.
    struct Sources {
        var files: [String: TypedSafeTensorsFile] = [:]
        var owner: [String: String] = [:]

        init(dir: String) throws {
            let fm = FileManager.default
            let index = dir + "/model.safetensors.index.json"
            var names: [String], indexed: [(String, String)] = []
            if let data = fm.contents(atPath: index) {
                guard case .object(let map)? = (try? JSONValue.parse(bytes: Array(data)))?["weight_map"] else {
                    throw CheckpointError("\(index): weight_map: missing or not an object of tensor: file")
                }
                names = Array(Set(map.compactMap(\.1.stringValue))).sorted()
                for n in names where n.contains("/") || n.hasPrefix(".") {
                    throw CheckpointError("\(index): weight_map names file \(n) outside the model directory")
                }
                indexed = map.map { ($0.0, $0.1.stringValue ?? "") }
            } else {
                names = ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".safetensors") }
                    .sorted()
            }
            guard !names.isEmpty else { throw CheckpointError("\(dir): no *.safetensors files (and no index)") }
            for n in names {
                let f = try TypedSafeTensorsFile(path: dir + "/" + n)
                files[n] = f
                for t in f.entries.keys {
                    if let other = owner[t] {
                        throw CheckpointError("\(dir): tensor \(t) is in both \(other) and \(n)")
                    }
                    owner[t] = n
                }
            }
            for (t, f) in indexed where owner[t] != f {
                throw CheckpointError("\(index): weight_map puts \(t) in \(f), but that file does not hold it")
            }
        }

        func entry(_ name: String) -> TypedTensorEntry? { owner[name].flatMap { files[$0]?.entries[name] } }
    }

    /// Where one of Switchyard's tensors comes from: a source tensor whole, or a range of one.
    struct Source {
        let name: String
        let first: Int
        let count: Int
    }

    /// The source of Switchyard tensor `info` in `src`, checked against its shape.
    static func source(_ info: ParameterInfo, family: HFFamily, model m: ModelConfig, in src: Sources) throws -> Source?
    {
        var names = [family.name(info.name)]
        if family == .mixtral { names.append(names[0].replacingOccurrences(of: ".block_sparse_moe.", with: ".mlp.")) }
        for n in names {
            guard let e = src.entry(n) else { continue }
            guard e.shape == info.globalShape else {
                throw CheckpointError("\(n): shape \(e.shape), the model from config.json needs \(info.globalShape)")
            }
            return Source(name: n, first: 0, count: e.count)
        }
        guard let fused = family.fusedSource(info.name, config: m), let e = src.entry(fused.name) else { return nil }
        let f = m.ffHidden, c = m.nEmbd
        let want = fused.name.hasSuffix("gate_up_proj") ? [m.nExpert, 2 * f, c] : [m.nExpert, c, f]
        guard e.shape == want else {
            throw CheckpointError("\(fused.name): shape \(e.shape), the model from config.json needs \(want)")
        }
        return Source(name: fused.name, first: fused.first, count: fused.count)
    }

    /// Derived buffers some checkpoints carry that are not parameters (rope's inverse frequencies).
    static func isDerived(_ name: String) -> Bool { name.hasSuffix("rotary_emb.inv_freq") }
}

extension HFImport {
    /// Imports `dir` into the run directory `out` (created through `out.partial`, never replacing).
    static func run(dir: String, out given: String) throws -> Int32 {
        let out = URL(fileURLWithPath: given).standardizedFileURL.path
        guard !FileManager.default.fileExists(atPath: out) else {
            throw CheckpointError("\(out) exists; choose another --out (an import never overwrites)")
        }
        let cfgPath = dir + "/config.json"
        guard let cfgData = FileManager.default.contents(atPath: cfgPath) else {
            throw CheckpointError("\(cfgPath): cannot read it (is \(dir) a Hugging Face model directory?)")
        }
        let cfg: JSONValue
        do { cfg = try JSONValue.parse(bytes: Array(cfgData)) } catch {
            throw CheckpointError("\(cfgPath): not JSON: \(error)")
        }
        let (family, model) = try HFFamily.model(cfg, path: cfgPath)
        let src = try Sources(dir: dir)
        let infos = ParameterStore.worldOneTensors(config: model)
        let plan = try checkCoverage(infos, family: family, model: model, src: src, dir: dir)
        let job = importedJob(model, dir: dir, out: out)
        let tmp = out + ".partial"
        try? FileManager.default.removeItem(atPath: tmp)
        let t0 = Date()
        let bytes: Int
        do {
            bytes = try writeRun(infos, plan: plan, src: src, job: job, tmp: tmp)
            guard rename(tmp, out) == 0 else {
                throw CheckpointError("\(out): cannot rename \(tmp) into place: \(String(cString: strerror(errno)))")
            }
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)  // a failed import leaves nothing behind
            throw error
        }
        say(
            String(
                format: "imported %@ (%@, %d parameters, %d tensors from %d file(s)) into %@: %.2f GB in %.1f s%@",
                dir as NSString, family.architecture as NSString, model.totalParams, src.owner.count, src.files.count,
                out as NSString, Double(bytes) / 1e9, Date().timeIntervalSince(t0),
                job.data.tokenizer.isEmpty ? "; no tokenizer.json" : "; data.tokenizer \(job.data.tokenizer)"))
        say("fine-tune: mpirun -np N switchyard train \(out)/job.json --set data.path=FILE")
        return 0
    }

    /// Every parameter's source, after checking that every parameter has one and every source
    /// tensor is used (each list of failures names the tensors).
    static func checkCoverage(
        _ infos: [ParameterInfo], family: HFFamily, model: ModelConfig, src: Sources, dir: String
    ) throws -> [Source] {
        var plan: [Source] = [], unfilled: [String] = [], used = Set<String>()
        for info in infos {
            guard let s = try source(info, family: family, model: model, in: src) else {
                unfilled.append("\(info.name) (\(family.name(info.name)))")
                continue
            }
            plan.append(s); used.insert(s.name)
        }
        if !unfilled.isEmpty {
            throw CheckpointError(
                "\(dir): \(unfilled.count) parameter(s) have no tensor in the checkpoint: "
                    + unfilled.prefix(6).joined(separator: ", ") + (unfilled.count > 6 ? ", ..." : ""))
        }
        let unused = src.owner.keys.filter { !used.contains($0) && !isDerived($0) }.sorted()
        if !unused.isEmpty {
            throw CheckpointError(
                "\(dir): \(unused.count) tensor(s) of the checkpoint have no place in the \(family.architecture) model "
                    + "config.json describes: " + unused.prefix(6).joined(separator: ", ")
                    + (unused.count > 6 ? ", ..." : "") + "; refusing to drop them")
        }
        return plan
    }

    /// The run directory's contents under `tmp`: the step-0 checkpoint, job.json and LATEST; the
    /// checkpoint's bytes.
    static func writeRun(_ infos: [ParameterInfo], plan: [Source], src: Sources, job: Job, tmp: String) throws -> Int {
        let ckptDir = tmp + "/checkpoints/" + CheckpointStore.stepName(0)
        try FileManager.default.createDirectory(atPath: ckptDir, withIntermediateDirectories: true)
        let bytes = try writeCheckpoint(infos, plan: plan, src: src, job: job, dir: ckptDir)
        try Data(job.resolvedJSON.prettyText(keepFractions: true).utf8).write(
            to: URL(fileURLWithPath: tmp + "/job.json"))
        try Data((CheckpointStore.stepName(0) + "\n").utf8).write(to: URL(fileURLWithPath: tmp + "/checkpoints/LATEST"))
        return bytes
    }

    /// The job of an imported model: training keys at their defaults, the run at `out`.
    static func importedJob(_ model: ModelConfig, dir: String, out: String) -> Job {
        var job = Job()
        job.model = model
        job.name = (out as NSString).lastPathComponent
        job.runsDir = (out as NSString).deletingLastPathComponent
        let tok = URL(fileURLWithPath: dir + "/tokenizer.json").standardizedFileURL.path
        if FileManager.default.fileExists(atPath: tok) { job.data.tokenizer = tok }
        return job
    }

    /// rank-00000.safetensors (every parameter whole, in buffer order) and manifest.json of step 0;
    /// the bytes written.
    static func writeCheckpoint(_ infos: [ParameterInfo], plan: [Source], src: Sources, job: Job, dir: String)
        throws -> Int
    {
        let file = "rank-00000.safetensors"
        let w = try SafeTensorStreamWriter(path: dir + "/" + file, tensors: infos.map { ($0.name, $0.globalShape) })
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: max(1, infos.map(\.count).max() ?? 1))
        defer { buf.deallocate() }
        for s in plan {
            try src.files[src.owner[s.name]!]!.read(s.name, first: s.first, count: s.count, into: buf)
            try w.append(buf)
        }
        try w.finish()
        let records = zip(infos, w.crcs).map { info, crc in
            TensorRecord(
                name: info.name, shape: info.globalShape,
                slices: [SliceRecord(file: file, key: info.name, ranges: info.globalShape.map { [0, $0] }, crc32c: crc)]
            )
        }
        let m = job.model
        let placement = [[[Int]]](repeating: [[Int]](repeating: [0], count: m.nExpert), count: m.moeLayerCount)
        let manifest = Manifest(
            step: 0, adamStep: 0, job: job.resolvedJSON, world: 1, dp: 1, tp: 1, placement: placement,
            createdAt: Date().timeIntervalSince1970, tensors: records)
        try Data(manifest.bytes).write(to: URL(fileURLWithPath: dir + "/manifest.json"))
        return w.entries.last.map(\.end) ?? 0
    }
}
