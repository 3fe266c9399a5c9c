import Foundation
import JSON
import XCTest

/// `switchyard supervise` against real train processes.
final class SuperviseTests: XCTestCase {
    /// Starts `supervise --backoff 0 ARGS` in the workspace, its stdout in a pipe.
    func supervise(_ args: [String], _ ws: Workspace) throws -> (Process, Pipe) {
        let p = Harness.process(Harness.binary, ["supervise", "--backoff", "0"] + args, cwd: ws.dir)
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        return (p, out)
    }

    /// Supervises `command` (a tiny run), sends supervise `sig` once the run logged `step`, and
    /// returns supervise's exit status, its output and the run's log.
    func stop(_ command: [String], _ ws: Workspace, atStep step: Int, with sig: Int32) throws
        -> (status: Int32, output: String, log: String)
    {
        let (p, out) = try supervise(["--"] + command, ws)
        let log = "\(ws.dir)/runs/tiny/log.jsonl"
        XCTAssertTrue(Harness.waitUntil(seconds: 120) { Harness.file(log, contains: "\"step\":\(step),") })
        kill(p.processIdentifier, sig)
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, output, try String(contentsOfFile: log, encoding: .utf8))
    }

    /// SIGUSR1 to supervise (a batch system's preemption warning, e.g. Slurm's --signal=USR1@60)
    /// stops the run as SIGTERM does: train saves its last step, and supervise ends 0.
    func testSigusr1StopsTheRunCleanly() throws {
        let ws = Workspace()
        let (status, output, text) = try stop(
            [Harness.binary] + ws.tinyArgs(steps: 100000, extra: ["--set", "checkpoint.every=100000"]), ws,
            atStep: 20, with: SIGUSR1)
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("ended cleanly"), output)
        XCTAssertTrue(text.contains("\"reason\":\"signal\""), "no end event by signal")
        XCTAssertFalse(text.contains("\"event\":\"restart\""), "a clean stop was restarted")
    }

    /// A train process killed (SIGKILL) after its first checkpoint is restarted, resumes from
    /// that checkpoint and completes; supervise exits 0 and the log holds one restart event.
    func testKilledTrainIsRestartedAndResumes() throws {
        let ws = Workspace()
        let (p, out) = try supervise(
            ["--", Harness.binary] + ws.tinyArgs(steps: 400, extra: ["--set", "checkpoint.every=20"]), ws)
        let checkpoints = "\(ws.dir)/runs/tiny/checkpoints/step-000000020"
        Harness.waitUntil(seconds: 120) { FileManager.default.fileExists(atPath: checkpoints) }
        let children = try Harness.children(of: p.processIdentifier)
        XCTAssertEqual(children.count, 1, "supervise's train process")
        for c in children { kill(c, SIGKILL) }
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, output)
        XCTAssertTrue(output.contains("restarting in 0.0 s from the checkpoint of step"), output)
        XCTAssertTrue(output.contains("the command completed (attempt 2)"), output)
        let log = try String(contentsOfFile: "\(ws.dir)/runs/tiny/log.jsonl", encoding: .utf8)
        let restarts = log.split(separator: "\n").filter { $0.contains("\"event\":\"restart\"") }
        XCTAssertEqual(restarts.count, 1, log)
        XCTAssertTrue(restarts.first?.contains("\"exitStatus\":137") == true, "\(restarts)")
        let starts = log.split(separator: "\n").filter { $0.contains("\"event\":\"start\"") }
        XCTAssertEqual(starts.count, 2)
        XCTAssertFalse(starts.last?.contains("\"resumedFrom\":null") ?? true, "the restart did not resume")
        XCTAssertTrue(log.contains("\"event\":\"end\""))
        let tail = try Harness.switchyard(["tail", "\(ws.dir)/runs/tiny"])
        XCTAssertTrue(tail.stdout.contains("!! restart: the command ended with status 137"), tail.stdout)
    }

    /// A command that fails at once every time: supervise gives up after --max-restarts restarts
    /// without a newer checkpoint, exit 1, with a summary.
    func testGivesUpAfterRestartsWithoutProgress() throws {
        let ws = Workspace()
        let r = try Harness.switchyard(
            ["supervise", "--max-restarts", "2", "--backoff", "0", "--", Harness.binary]
                + ws.tinyArgs(steps: 10, extra: ["--set", "data.path=\(ws.dir)/missing.txt"]),
            cwd: ws.dir)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("giving up"), r.stderr)
        XCTAssertTrue(r.stderr.contains("3 time(s) in a row without a newer checkpoint"), r.stderr)
        XCTAssertEqual(r.stdout.components(separatedBy: "restarting in").count - 1, 2, r.stdout)
    }

    func testUsageErrors() throws {
        let none = try Harness.switchyard(["supervise", "--backoff", "1"])
        XCTAssertEqual(none.status, 64)
        XCTAssertTrue(none.stderr.contains("needs the command to run after --"), none.stderr)
        let noTrain = try Harness.switchyard(["supervise", "--", "/bin/true"])
        XCTAssertEqual(noTrain.status, 64)
        XCTAssertTrue(noTrain.stderr.contains("must contain 'train JOB'"), noTrain.stderr)
    }

    /// SIGTERM to supervise under real mpirun: it reaches the ranks (as SIGUSR1, which mpirun
    /// forwards and waits for), they finish their step and save (no step of work lost), and
    /// supervise ends 0. The model is large enough (about 0.7 s a step and 1.2 s a save of 0.9 GB
    /// here) that mpirun's SIGTERM path, SIGKILL after 1 s, would leave a .partial checkpoint.
    func testSigtermUnderMpirunSavesTheLastStepAndEndsZero() throws {
        guard let mpirun = Harness.mpirun else { throw XCTSkip("mpirun not installed") }
        let ws = Workspace()
        let big = [
            "model.nLayer=8", "model.nEmbd=512", "model.nHead=8", "model.ffHidden=1024", "model.nExpert=8",
            "checkpoint.every=1000", "train.logEvery=1"
        ].flatMap { ["--set", $0] }
        let (status, output, text) = try stop(
            [mpirun, "-np", "2", "-x", "OPENBLAS_NUM_THREADS=1", Harness.binary]
                + ws.tinyArgs(steps: 100000, extra: big), ws, atStep: 2, with: SIGTERM)
        XCTAssertEqual(status, 0, output)
        let end = text.split(separator: "\n").last { $0.contains("\"event\":\"end\"") }
        XCTAssertTrue(end?.contains("\"reason\":\"signal\"") ?? false, "\(end ?? "no end event")")
        guard let last = text.split(separator: "\n").last(where: { $0.contains("\"event\":\"step\"") }),
            let step = (try? JSONValue.parse(String(last)))?["step"]?.intValue
        else { return XCTFail("no step event") }
        let saved = "\(ws.dir)/runs/tiny/checkpoints/step-" + String(format: "%09d", step + 1) + "/manifest.json"
        XCTAssertTrue(FileManager.default.fileExists(atPath: saved), "step \(step) saved: no work lost")
        XCTAssertTrue(output.contains("saved step \(step + 1) and ended cleanly"), output)
    }
}
