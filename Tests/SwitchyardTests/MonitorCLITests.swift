import Foundation
import TensorBoard
import XCTest

/// tail, status and plot through the binary, against real training runs.
final class MonitorCLITests: XCTestCase {
    /// `tail --follow` piped: waits for a log that does not exist yet, prints plain lines as a
    /// live mpirun training writes them, and exits 0 at the run's end.
    func testTailFollowPipedAgainstLiveTraining() throws {
        let ws = Workspace()
        let log = "\(ws.dir)/runs/tiny"
        let tail = Process()
        tail.executableURL = URL(fileURLWithPath: Harness.binary)
        tail.arguments = ["tail", log, "--follow", "--every", "5"]
        let out = Pipe(), err = Pipe()
        tail.standardOutput = out
        tail.standardError = err
        try tail.run()  // before the run exists
        Thread.sleep(forTimeInterval: 0.5)
        let train = try Harness.mpi(2, ws.tinyArgs(steps: 30), cwd: ws.dir, timeout: 120)
        XCTAssertEqual(train.status, 0, train.stderr)
        let deadline = Date().addingTimeInterval(20)
        while tail.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        if tail.isRunning { tail.terminate(); XCTFail("tail --follow did not exit at the run's end") }
        XCTAssertEqual(tail.terminationStatus, 0)
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(errText.contains("waiting for"), errText)
        XCTAssertTrue(text.contains("== start: job tiny, 30 steps, world 2 (dp 2 x tp 1)"), text)
        XCTAssertTrue(
            text.contains("step 1/30 [") && text.contains("step 6/30 [")
                && text.contains("step 30/30 [===================="), text)
        XCTAssertFalse(text.contains("step 2/30"), "--every 5 skips steps")
        XCTAssertTrue(text.contains("== checkpoint step 30 saved") && text.hasSuffix("== end: completed\n"), text)
        XCTAssertFalse(text.contains("\u{1B}["), "no colour or cursor codes when piped")

        let status = try Harness.switchyard(["status", ws.dir + "/runs"])
        XCTAssertEqual(status.status, 0)
        XCTAssertTrue(
            status.stdout.hasPrefix("tiny") && status.stdout.contains("finished")
                && status.stdout.contains("step 30/30")
                && status.stdout.contains("checkpoint step-000000030"), status.stdout)
        let svg = ws.dir + "/rank.svg"
        let plot = try Harness.switchyard(["plot", log, "--out", svg, "--metric", "rankStepMs"])
        XCTAssertEqual(plot.status, 0, plot.stderr)
        XCTAssertTrue(try String(contentsOfFile: svg, encoding: .utf8).contains("data-name=\"rank 1\""))
        XCTAssertEqual(try Harness.switchyard(["plot", log, "--out", svg, "--metric", "nope"]).status, 64)
        XCTAssertEqual(try Harness.switchyard(["tail", ws.dir + "/runs/nothere"]).status, 1)

        // tb: the log's 30 steps, the evals and the checkpoint as TensorBoard events, read back.
        let tb = try Harness.switchyard(["tb", log])
        XCTAssertEqual(tb.status, 0, tb.stderr)
        let files = EventFile.files(in: log + "/tb")
        XCTAssertEqual(files.count, 1)
        let events = try EventFile.read(files[0])
        let losses = events.compactMap { e in e.scalars.first { $0.tag == "train/loss" }.map { (e.step, $0.value) } }
        XCTAssertEqual(losses.map(\.0), Array(0..<30), "one loss per step, in order")
        XCTAssertTrue(events.contains { $0.scalars.contains { $0.tag == "ranks/rank1/step_ms" } })
        XCTAssertTrue(events.contains { $0.step == 30 && $0.scalars.contains { $0.tag == "checkpoint/GBps" } })
        XCTAssertEqual(try Harness.switchyard(["tb", ws.dir + "/runs/nothere"]).status, 1)
    }

    /// On a terminal (tmux), `tail --follow` draws the dashboard against a live mpirun training:
    /// progress bar, ETA and expert-load bars are on screen and change.
    func testDashboardUnderTmux() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux") else {
            throw XCTSkip("tmux not installed (ops/test installs it)")
        }
        let ws = Workspace()
        let session = "sy-\(getpid())"
        let train = Process()
        train.executableURL = URL(fileURLWithPath: Harness.mpirun ?? "/usr/bin/mpirun")
        train.arguments =
            ["--oversubscribe", "--mca", "mpi_yield_when_idle", "1", "-np", "2", Harness.binary]
            + ws.tinyArgs(steps: 400, extra: ["--set", "checkpoint.every=100"])
        train.currentDirectoryURL = URL(fileURLWithPath: ws.dir)
        train.standardOutput = FileHandle.nullDevice
        train.standardError = FileHandle.nullDevice
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        env["OPENBLAS_NUM_THREADS"] = "1"
        train.environment = env
        try train.run()
        defer {
            if train.isRunning { train.terminate() };
            _ = try? Harness.run("/usr/bin/tmux", ["kill-session", "-t", session])
        }
        // Through system(3): a tmux server started by a Foundation Process dies with that process here.
        let started = system(
            "/usr/bin/tmux new-session -d -s \(session) -x 120 -y 30 '\(Harness.binary) tail \(ws.dir)/runs/tiny "
                + "--follow'"
        )
        XCTAssertEqual(started, 0)
        func capture() throws -> String {
            try Harness.run("/usr/bin/tmux", ["capture-pane", "-p", "-t", session]).stdout
        }
        var first = ""
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            first = try capture()
            if first.contains("moe 1 experts") && first.contains("ETA") { break }
            Thread.sleep(forTimeInterval: 0.3)
        }
        Thread.sleep(forTimeInterval: 2)
        let second = try capture()
        print("tmux pane:\n" + second)
        XCTAssertTrue(second.contains("switchyard tail"), second)
        XCTAssertTrue(second.contains("/400 [") && second.contains("ETA"), "progress bar and ETA: \(second)")
        XCTAssertTrue(second.contains("moe 0 experts") && second.contains("max/mean"), "expert-load bars: \(second)")
        XCTAssertTrue(second.contains("ranks r0 ") && second.contains("r1 "), "per-rank step time: \(second)")
        XCTAssertNotEqual(first, second, "the dashboard changes as training goes on")
    }
}
