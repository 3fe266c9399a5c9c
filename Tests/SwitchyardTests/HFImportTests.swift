import Checkpoint
import Foundation
import JSON
import Model
import Training
import XCTest

/// The Hugging Face families both ways through the binary: a Qwen3-MoE and an OLMoE-shaped
/// model trained with experts split over two ranks, exported as their family and checked by the
/// independent numpy forward (Tests/reference/moe_numpy.py); export -> import -> export is
/// bitwise; an import that would drop a tensor or leave a parameter unfilled fails naming it; a
/// bf16 or fused-expert checkpoint imports to the same values; bad config fields are one line.
final class HFImportTests: XCTestCase {
    static func family(_ name: String) -> [String] {
        let base = HFExportTests.mixtral + ["--set", "model.nKVHead=2", "--set", "model.family=\(name)"]
        switch name {
        case "qwen3_moe":
            return base + ["--set", "model.qkNorm=head", "--set", "model.normTopK=false", "--set", "model.headDim=24"]
        case "olmoe": return base + ["--set", "model.qkNorm=full", "--set", "model.normTopK=false"]
        default: return base
        }
    }

    /// Trains the tiny job as `family` at np 2 and exports it; the export directory.
    func trainedExport(_ ws: Workspace, _ family: String, steps: Int = 20) throws -> String {
        let r = try Harness.mpi(
            2, ws.tinyArgs(steps: steps, extra: Self.family(family) + ["--set", "name=\(family)"]), cwd: ws.dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = ws.dir + "/hf-\(family)"
        let e = try Harness.switchyard(["ckpt", "export", ws.dir + "/runs/\(family)", "--format", "hf", "--out", out])
        XCTAssertEqual(e.status, 0, e.stderr)
        return out
    }

    /// Every tensor of a safetensors file, as Float32 (any dtype the importer reads).
    func tensors(_ path: String) throws -> [String: [Float]] {
        let f = try TypedSafeTensorsFile(path: path)
        var out: [String: [Float]] = [:]
        for (name, e) in f.entries {
            var v = [Float](repeating: 0, count: e.count)
            try v.withUnsafeMutableBufferPointer { try f.read(name, count: e.count, into: $0.baseAddress!) }
            out[name] = v
        }
        return out
    }

    func testFamiliesMatchTheNumpyReferenceAndRoundTripBitwise() throws {
        let ws = Workspace()
        for family in ["qwen3_moe", "olmoe"] {
            let out = try trainedExport(ws, family)
            let config = try JSONValue.parse(String(contentsOfFile: out + "/config.json", encoding: .utf8))
            XCTAssertEqual(config["model_type"]?.stringValue, family)
            XCTAssertEqual(config["num_key_value_heads"]?.intValue, 2)
            try HFExportTests.checkAgainstNumpy(run: ws.dir + "/runs/\(family)", export: out, ws: ws, label: family)
            // export -> import -> export: every tensor bitwise.
            let run2 = ws.dir + "/imported-\(family)", back = ws.dir + "/back-\(family)"
            let i = try Harness.switchyard(["ckpt", "import", out, "--format", "hf", "--out", run2])
            XCTAssertEqual(i.status, 0, i.stderr)
            XCTAssertEqual(try Harness.switchyard(["ckpt", "verify", run2]).status, 0)
            let e = try Harness.switchyard(["ckpt", "export", run2, "--format", "hf", "--out", back])
            XCTAssertEqual(e.status, 0, e.stderr)
            let a = try tensors(out + "/model.safetensors"), b = try tensors(back + "/model.safetensors")
            XCTAssertEqual(a.count, b.count)
            for (name, v) in a {
                XCTAssertEqual(b[name]?.map(\.bitPattern), v.map(\.bitPattern), "\(family) \(name) changed")
            }
            let job = try JSONValue.parse(String(contentsOfFile: run2 + "/job.json", encoding: .utf8))
            XCTAssertEqual(job["model"]?["family"]?.stringValue, family)
        }
    }

    /// Rewrites `dir`'s model.safetensors with `edit` applied to its tensors (name -> values, shapes).
    func rewrite(_ dir: String, dtype: String = "F32", _ edit: (inout [String: ([Int], [Float])]) -> Void) throws {
        let f = try TypedSafeTensorsFile(path: dir + "/model.safetensors")
        var all: [String: ([Int], [Float])] = [:]
        for (name, v) in try tensors(dir + "/model.safetensors") { all[name] = (f.entries[name]!.shape, v) }
        edit(&all)
        try writeTyped(all, dtype: dtype, to: dir + "/model.safetensors")
    }

    /// A safetensors file of F32 or BF16 (the top half of each F32, truncated) tensors.
    func writeTyped(_ all: [String: ([Int], [Float])], dtype: String, to path: String) throws {
        var header: [(String, JSONValue)] = [], data: [UInt8] = [], offset = 0
        for name in all.keys.sorted() {
            let (shape, v) = all[name]!
            for x in v {
                let bits = x.bitPattern
                let bytes = dtype == "F32" ? [bits, bits >> 8, bits >> 16, bits >> 24] : [bits >> 16, bits >> 24]
                data += bytes.map { UInt8(truncatingIfNeeded: $0) }
            }
            let end = data.count
            header.append(
                (
                    name,
                    [
                        "dtype": .string(dtype), "shape": .array(shape.map { .integer($0) }),
                        "data_offsets": [.integer(offset), .integer(end)]
                    ]
                ))
            offset = end
        }
        var head = Array(JSONValue.object(header).compact.utf8)
        while head.count % 8 != 0 { head.append(0x20) }
        var bytes = withUnsafeBytes(of: UInt64(head.count).littleEndian) { Array($0) }
        bytes += head + data
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    func copy(_ from: String, _ to: String) throws {
        try? FileManager.default.removeItem(atPath: to)
        try FileManager.default.copyItem(atPath: from, toPath: to)
    }

    func importing(_ dir: String, _ out: String) throws -> RunResult {
        try Harness.switchyard(["ckpt", "import", dir, "--format", "hf", "--out", out])
    }

    /// Counted in a test that fails if any is dropped: a missing tensor and an extra tensor each
    /// stop the import naming it, and nothing is left behind.
    func testDroppedOrUnusedTensorsStopTheImportNamingThem() throws {
        let ws = Workspace()
        let out = try trainedExport(ws, "olmoe", steps: 2)
        let missing = ws.dir + "/missing", extra = ws.dir + "/extra"
        try copy(out, missing)
        try rewrite(missing) { $0["model.layers.1.mlp.experts.3.up_proj.weight"] = nil }
        let m = try importing(missing, ws.dir + "/r1")
        XCTAssertEqual(m.status, 1)
        XCTAssertTrue(m.stderr.contains("1 parameter(s) have no tensor"), m.stderr)
        XCTAssertTrue(m.stderr.contains("layers.1.moe.experts.3.w3.weight"), m.stderr)
        try copy(out, extra)
        try rewrite(extra) { $0["model.layers.0.mlp.shared_expert.gate_proj.weight"] = ([2, 2], [1, 2, 3, 4]) }
        let x = try importing(extra, ws.dir + "/r2")
        XCTAssertEqual(x.status, 1)
        XCTAssertTrue(x.stderr.contains("shared_expert.gate_proj.weight"), x.stderr)
        XCTAssertTrue(x.stderr.contains("refusing to drop them"), x.stderr)
        for r in ["/r1", "/r2", "/r1.partial", "/r2.partial"] {
            XCTAssertFalse(FileManager.default.fileExists(atPath: ws.dir + r), "a failed import leaves no \(r)")
        }
        // A wrong shape names the tensor and both shapes.
        let shaped = ws.dir + "/shaped"
        try copy(out, shaped)
        try rewrite(shaped) { $0["model.norm.weight"] = ([3], [1, 1, 1]) }
        let s = try importing(shaped, ws.dir + "/r3")
        XCTAssertTrue(s.stderr.contains("model.norm.weight: shape [3]"), s.stderr)
    }

    /// bf16 weights widen exactly; transformers 5's fused experts (gate_up_proj [E, 2F, C],
    /// down_proj [E, C, F]) import to the per-expert matrices.
    func testBF16AndFusedExpertsImportToTheSameValues() throws {
        let ws = Workspace()
        let out = try trainedExport(ws, "qwen3_moe", steps: 2)
        let plain = try tensors(out + "/model.safetensors")
        let bf16 = ws.dir + "/bf16"
        try copy(out, bf16)
        try rewrite(bf16, dtype: "BF16") { _ in }
        XCTAssertEqual(try importing(bf16, ws.dir + "/rb").status, 0)
        let fused = ws.dir + "/fused", e = 4, f = 128, c = 64
        try copy(out, fused)
        try rewrite(fused) { all in
            for l in 0..<2 {
                let p = "model.layers.\(l).mlp.experts."
                var gateUp: [Float] = [], down: [Float] = []
                for x in 0..<e {
                    gateUp += all[p + "\(x).gate_proj.weight"]!.1 + all[p + "\(x).up_proj.weight"]!.1
                    down += all[p + "\(x).down_proj.weight"]!.1
                    for m in ["gate_proj", "up_proj", "down_proj"] { all[p + "\(x).\(m).weight"] = nil }
                }
                all[p + "gate_up_proj"] = ([e, 2 * f, c], gateUp)
                all[p + "down_proj"] = ([e, c, f], down)
            }
        }
        let fi = try importing(fused, ws.dir + "/rf")
        XCTAssertEqual(fi.status, 0, fi.stderr)
        for (run, label) in [("rb", "bf16"), ("rf", "fused")] {
            let back = ws.dir + "/back-" + run
            XCTAssertEqual(
                try Harness.switchyard(["ckpt", "export", ws.dir + "/" + run, "--format", "hf", "--out", back]).status,
                0)
            let got = try tensors(back + "/model.safetensors")
            for (name, v) in plain {
                let want = label == "bf16" ? v.map { Float(bitPattern: $0.bitPattern & 0xffff_0000) } : v
                XCTAssertEqual(got[name]?.map(\.bitPattern), want.map(\.bitPattern), "\(label): \(name)")
            }
        }
    }

    func testConfigFieldsItCannotExpressAreOneLine() throws {
        let ws = Workspace()
        let out = try trainedExport(ws, "qwen3_moe", steps: 2)
        let cases: [(String, JSONValue, String)] = [
            ("model_type", "llama", "model_type: llama is not a family"),
            ("hidden_act", "gelu", "hidden_act: \"gelu\" is not supported"),
            ("decoder_sparse_step", 2, "decoder_sparse_step: 2 is not supported"),
            ("tie_word_embeddings", true, "tie_word_embeddings: true is not supported"),
            ("rope_scaling", ["type": "yarn"], "rope_scaling"), ("num_key_value_heads", 3, "model.nKVHead")
        ]
        let config = try JSONValue.parse(String(contentsOfFile: out + "/config.json", encoding: .utf8))
        for (i, (key, value, text)) in cases.enumerated() {
            let dir = ws.dir + "/bad\(i)"
            try copy(out, dir)
            guard case .object(var members) = config else { return XCTFail("config.json is not an object") }
            members.removeAll { $0.0 == key }
            members.append((key, value))
            try Data(JSONValue.object(members).compact.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
            let r = try importing(dir, ws.dir + "/run\(i)")
            XCTAssertEqual(r.status, 1, key)
            XCTAssertTrue(r.stderr.contains(text), "\(key): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        }
        let exists = try importing(out, ws.dir)
        XCTAssertTrue(exists.stderr.contains("exists"), exists.stderr)
    }
}
