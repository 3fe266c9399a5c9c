import Checkpoint
import Foundation
import JSON
import Model
import Training
import XCTest

/// `ckpt export --format hf`: a Mixtral-shaped checkpoint trained with experts split over two
/// ranks, exported, and its logits recomputed by an independent numpy Mixtral
/// (Tests/reference/moe_numpy.py); refusals name the job key.
final class HFExportTests: XCTestCase {
    static let mixtral = ["--set", "model.positions=rope", "--set", "model.ffn=swiglu", "--set", "model.ropeTheta=500"]

    func testMixtralExportMatchesAnIndependentNumpyForward() throws {
        let ws = Workspace()
        let r = try Harness.mpi(2, ws.tinyArgs(steps: 30, extra: Self.mixtral), cwd: ws.dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        let run = ws.dir + "/runs/tiny", out = ws.dir + "/hf"
        let e = try Harness.switchyard(["ckpt", "export", run, "--format", "hf", "--out", out])
        XCTAssertEqual(e.status, 0, e.stderr)
        for f in ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/" + f), f)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".partial"))
        let config = try JSONValue.parse(String(contentsOfFile: out + "/config.json", encoding: .utf8))
        XCTAssertEqual(config["num_local_experts"]?.doubleValue, 4)
        XCTAssertEqual(config["rope_theta"]?.doubleValue, 500)
        // Tokenizer: id = byte, for all 256 bytes, through GPT-2's byte-to-character table.
        let tok = try JSONValue.parse(String(contentsOfFile: out + "/tokenizer.json", encoding: .utf8))
        XCTAssertEqual(tok["model"]?["vocab"]?["A"]?.doubleValue, 65)
        XCTAssertEqual(tok["model"]?["vocab"]?["\u{120}"]?.doubleValue, 32, "space is GPT-2's U+0120")
        if case .object(let vocab)? = tok["model"]?["vocab"] {
            XCTAssertEqual(Set(vocab.compactMap { $0.1.doubleValue }), Set((0..<256).map(Double.init)))
        } else {
            XCTFail("tokenizer.json has no vocab")
        }

        try Self.checkAgainstNumpy(run: run, export: out, ws: ws, label: "Mixtral")
    }

    /// Switchyard's logits for 4 fixed windows of the corpus at world 1 from `run`'s newest
    /// checkpoint, against the numpy forward of its export `export`; perturbed logits must fail.
    static func checkAgainstNumpy(run: String, export out: String, ws: Workspace, label: String) throws {
        let dir = try XCTUnwrap(CheckpointStore.latest(root: run + "/checkpoints")).map { run + "/checkpoints/" + $0 }!
        let m = try CheckpointStore.readManifest(dir: dir)
        let job = try CheckpointModel.job(m, dir: dir)
        let model = Transformer(config: job.model, maxBatch: 4)
        try CheckpointModel.loadWeights(dir: dir, manifest: m, into: model.store)
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: ws.corpus)))
        let t = job.model.seqLen
        let windows = (0..<4).map { i in (0..<t).map { Int32(bytes[i * 997 + $0]) } }
        let rows = windows.flatMap { $0 }
        let logits = try model.forward(MicroBatch(tokens: rows, targets: rows, batch: 4, time: t), keepLogits: true)
            .logits!
        let logitsPath = ws.dir + "/logits.f32"
        try logits.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: logitsPath)) }
        let windowsPath = ws.write(
            "windows.json", JSONValue.array(windows.map { .array($0.map { .number(Double($0)) }) }).compact)
        // ops/test makes the venv and sets this; without it (no network for pip) the check is skipped, loudly.
        guard let py = ProcessInfo.processInfo.environment["SWITCHYARD_PYTHON"] else {
            throw XCTSkip("SWITCHYARD_PYTHON (a Python with numpy, made by ops/test) is not set: numpy check skipped")
        }
        let check = try Harness.run(
            py, [Harness.root + "/Tests/reference/moe_numpy.py", out, windowsPath, logitsPath, "1e-4"])
        XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        XCTAssertTrue(check.stdout.hasPrefix("ok: max |logit difference|"), check.stdout)
        print("numpy \(label): " + check.stdout)
        // The reference is not trivially satisfied: perturbed logits fail it.
        var bent = logits
        bent[17] += 1e-3
        try bent.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: logitsPath)) }
        let off = try Harness.run(
            py, [Harness.root + "/Tests/reference/moe_numpy.py", out, windowsPath, logitsPath, "1e-4"])
        XCTAssertEqual(off.status, 1, off.stdout)
    }

    func testExportRefusesWhatMixtralCannotExpressNamingTheKey() throws {
        let ws = Workspace()
        let cases: [([String], String)] = [
            ([], "model.positions = \"learned\""),
            (["--set", "model.positions=rope"], "model.ffn = \"gelu\""),
            (Self.mixtral + ["--set", "model.moeEvery=2"], "model.moeEvery = 2"),
            (Self.mixtral + ["--set", "model.nSharedExperts=1"], "model.nSharedExperts = 1"),
            (
                Self.mixtral + ["--set", "model.attention=moh", "--set", "model.mohActiveHeads=2"],
                "model.attention = \"moh\""
            ),
            (Self.mixtral + ["--set", "train.routerBiasRate=0.01"], "train.routerBiasRate = 0.01")
        ]
        for (i, (extra, key)) in cases.enumerated() {
            let args = ws.tinyArgs(steps: 2, extra: extra + ["--set", "name=r\(i)"])
            XCTAssertEqual(try Harness.switchyard(args, cwd: ws.dir).status, 0)
            let e = try Harness.switchyard(
                ["ckpt", "export", ws.dir + "/runs/r\(i)", "--format", "hf", "--out", ws.dir + "/hf\(i)"])
            XCTAssertEqual(e.status, 1, e.stdout)
            XCTAssertTrue(e.stderr.contains(key), e.stderr)
            XCTAssertEqual(e.stderr.split(separator: "\n").count, 1, "one line: \(e.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: ws.dir + "/hf\(i)"))
        }
        // An existing directory is never replaced; a bad --format is a usage error.
        let ok = ws.tinyArgs(steps: 2, extra: Self.mixtral + ["--set", "name=ok"])
        XCTAssertEqual(try Harness.switchyard(ok, cwd: ws.dir).status, 0)
        try FileManager.default.createDirectory(atPath: ws.dir + "/taken", withIntermediateDirectories: true)
        let taken = try Harness.switchyard(
            ["ckpt", "export", ws.dir + "/runs/ok", "--format", "hf", "--out", ws.dir + "/taken"])
        XCTAssertEqual(taken.status, 1)
        XCTAssertTrue(taken.stderr.contains("exists"), taken.stderr)
        let bad = try Harness.switchyard(["ckpt", "export", ws.dir + "/runs/ok", "--format", "gguf", "--out", "x"])
        XCTAssertEqual(bad.status, 64, bad.stderr)
    }
}
