import Checkpoint
import Foundation
import JSON
import XCTest

/// Checkpoints through the binary: the ckpt commands, export read by Python, eval, SIGKILL
/// during saves, a full disk.
final class CheckpointCLITests: XCTestCase {
    func testCkptCommandsExportAndEval() throws {
        let ws = Workspace()
        let r = try Harness.switchyard(ws.tinyArgs(steps: 20, extra: ["--set", "checkpoint.every=10"]), cwd: ws.dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        let run = "\(ws.dir)/runs/tiny", step20 = "\(run)/checkpoints/step-000000020"
        let list = try Harness.switchyard(["ckpt", "list", run])
        XCTAssertEqual(list.status, 0)
        XCTAssertTrue(list.stdout.contains("step-000000020") && list.stdout.contains("<- LATEST"), list.stdout)
        XCTAssertTrue(list.stdout.contains("step-000000010"), list.stdout)
        let verify = try Harness.switchyard(["ckpt", "verify", run])
        XCTAssertEqual(verify.status, 0, verify.stdout)
        XCTAssertEqual(verify.stdout.components(separatedBy: "ok      ").count - 1, 2, verify.stdout)
        let inspect = try Harness.switchyard(["ckpt", "inspect", step20, "--tensor", "layers.1.moe.experts.3.w2.weight"]
        )
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        XCTAssertTrue(inspect.stdout.contains("shape [64, 128]"), inspect.stdout)
        XCTAssertEqual(try Harness.switchyard(["ckpt", "inspect", step20, "--tensor", "nope"]).status, 1)

        // Export, then read it with Python's safetensors + numpy against values read here.
        let out = ws.dir + "/model.safetensors"
        let e = try Harness.switchyard(["ckpt", "export", step20, "--out", out])
        XCTAssertEqual(e.status, 0, e.stderr)
        let m = try CheckpointStore.readManifest(dir: step20)
        var expected: [(String, JSONValue)] = []
        for t in m.tensors where !t.name.hasPrefix("optim.") {
            var values = [Float](repeating: 0, count: t.shape.reduce(1, *))
            try values.withUnsafeMutableBufferPointer { b in
                try CheckpointStore.load(
                    dir: step20, manifest: m,
                    views: [
                        ShardView(
                            name: t.name, globalShape: t.shape,
                            ranges: t.shape.map { [0, $0] }, data: b.baseAddress!, writes: false)
                    ])
            }
            expected.append(
                (
                    t.name,
                    [
                        "shape": .array(t.shape.map { .number(Double($0)) }),
                        "sum": .number(values.reduce(0.0) { $0 + Double($1) }), "first": .number(Double(values[0]))
                    ]
                ))
        }
        XCTAssertEqual(expected.count, 34)
        let expPath = ws.write("expected.json", JSONValue.object(expected).compact)
        if let py = ProcessInfo.processInfo.environment["SWITCHYARD_PYTHON"] {
            let check = try Harness.run(py, [Harness.root + "/ops/check_export.py", out, expPath])
            XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
            XCTAssertTrue(check.stdout.hasPrefix("ok: 34 tensors"), check.stdout)
        } else {
            print(
                "export test: SWITCHYARD_PYTHON (a Python with safetensors + numpy, made by ops/test) is not set; "
                    + "Python read skipped"
            )
        }

        // eval: a number, reproducible.
        let ev1 = try Harness.switchyard(["eval", run, "--data", ws.corpus, "--windows", "8"])
        XCTAssertEqual(ev1.status, 0, ev1.stderr)
        XCTAssertTrue(
            ev1.stdout.contains("mean cross-entropy") && ev1.stdout.contains("(step 20, 2 of 4 experts)"), ev1.stdout)
        XCTAssertEqual(
            try Harness.switchyard(["eval", step20, "--data", ws.corpus, "--windows", "8"]).stdout.split(separator: ":")
                .last,
            ev1.stdout.split(separator: ":").last)
        XCTAssertEqual(try Harness.switchyard(["eval", run, "--data", ws.corpus, "--seq", "65"]).status, 64)

        // One flipped byte: verify fails naming the tensor; export refuses.
        let file = step20 + "/rank-00000.safetensors"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[bytes.count - 100] ^= 0x08
        try bytes.write(to: URL(fileURLWithPath: file))
        let bad = try Harness.switchyard(["ckpt", "verify", step20])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stdout.contains("head.weight: checksum mismatch"), bad.stdout)
        XCTAssertEqual(try Harness.switchyard(["ckpt", "export", step20, "--out", out]).status, 1)
        // Running a finished job again says so and does nothing.
        let again = try Harness.switchyard(ws.tinyArgs(steps: 10, extra: ["--set", "checkpoint.every=10"]), cwd: ws.dir)
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(again.stdout.contains("already complete (10 of train.steps = 10)"), again.stdout)
        // Training resumes from the previous one, with a warning.
        let resumed = try Harness.switchyard(
            ws.tinyArgs(steps: 22, extra: ["--set", "checkpoint.every=10"]), cwd: ws.dir)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(
            resumed.stdout.contains("failed verification") && resumed.stdout.contains("resumed from")
                && resumed.stdout.contains("step 10)"), resumed.stdout)
    }

    /// SIGKILL at random moments while saving every step, 20 times: each time the kept checkpoints
    /// verify and training resumes from the newest.
    func testSigkillDuringSavesNeverLeavesABadCheckpoint() throws {
        let ws = Workspace()
        let args = ws.tinyArgs(steps: 100000, extra: ["--set", "checkpoint.every=1", "--set", "train.peakGflops=50"])
        var lastStep = -1
        for round in 0..<20 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Harness.binary)
            p.arguments = args
            p.currentDirectoryURL = URL(fileURLWithPath: ws.dir)
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            Thread.sleep(forTimeInterval: 0.4 + Double((round * 7919) % 1000) / 1000)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let root = "\(ws.dir)/runs/tiny/checkpoints"
            let kept = CheckpointStore.list(root: root)
            for c in kept {
                XCTAssertEqual(CheckpointStore.verify(dir: root + "/" + c.name), [], "round \(round): \(c.name)")
            }
            if let newest = kept.first {
                // LATEST names the newest complete checkpoint, or the one before it when the kill
                // fell between the directory rename and LATEST's replacement.
                let latest = CheckpointStore.latest(root: root)
                XCTAssertTrue(
                    latest == newest.name || (kept.count > 1 && latest == kept[1].name),
                    "round \(round): LATEST \(latest ?? "none")")
                XCTAssertGreaterThanOrEqual(newest.step, lastStep, "round \(round): progress is never lost")
                lastStep = newest.step
            }
        }
        XCTAssertGreaterThan(lastStep, 0, "some checkpoints were completed between kills")
        let resume = try Harness.switchyard(
            ws.tinyArgs(steps: lastStep + 1, extra: ["--set", "checkpoint.every=1"]), cwd: ws.dir)
        XCTAssertEqual(resume.status, 0, resume.stderr)
        XCTAssertTrue(resume.stdout.contains("resumed from"), resume.stdout)
    }

    /// A run directory on a tiny tmpfs: a clear message, the previous checkpoint stays valid,
    /// and training stops (onError = stop) or goes on (continue).
    func testDiskFullKeepsThePreviousCheckpoint() throws {
        let ws = Workspace()
        let mnt = ws.dir + "/small-disk"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        guard try Harness.run("/bin/mount", ["-t", "tmpfs", "-o", "size=6m", "tmpfs", mnt]).status == 0 else {
            throw XCTSkip("cannot mount a tmpfs here (needs root); disk-full test skipped")
        }
        defer { _ = try? Harness.run("/bin/umount", [mnt]) }
        for (policy, wantStatus) in [("stop", Int32(1)), ("continue", Int32(0))] {
            _ = try? Harness.run("/bin/rm", ["-rf", mnt + "/runs"])
            let r = try Harness.switchyard(
                ws.tinyArgs(
                    steps: 12,
                    extra: [
                        "--set", "runsDir=\(mnt)/runs", "--set", "checkpoint.every=2",
                        "--set", "checkpoint.keep=5", "--set", "checkpoint.onError=\(policy)"
                    ]), cwd: ws.dir)
            XCTAssertEqual(r.status, wantStatus, "\(policy): \(r.stdout)\n\(r.stderr)")
            XCTAssertTrue(
                r.stdout.contains("disk is full") || r.stdout.contains("No space left"), "\(policy): \(r.stdout)")
            XCTAssertFalse(r.stderr.contains("Fatal error"), r.stderr)
            let root = mnt + "/runs/tiny/checkpoints"
            let kept = CheckpointStore.list(root: root)
            XCTAssertFalse(kept.isEmpty, "\(policy): an earlier checkpoint survives")
            for c in kept {
                XCTAssertEqual(CheckpointStore.verify(dir: root + "/" + c.name), [], "\(policy): \(c.name)")
            }
            XCTAssertEqual(CheckpointStore.latest(root: root), kept.first?.name)
            if policy == "stop" { XCTAssertTrue(r.stderr.contains("checkpoint.onError = stop"), r.stderr) }
        }
    }
}
