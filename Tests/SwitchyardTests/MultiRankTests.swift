import Foundation
import Tensor
import XCTest

/// The built binary as a plain process and under real mpirun.
final class MultiRankTests: XCTestCase {
    func testCollectivesPassUnderMpirunAtOneToFourRanks() throws {
        for n in 1...4 {
            let r = try Harness.mpi(n, ["selftest"], timeout: 90)
            XCTAssertFalse(r.timedOut, "np \(n) timed out")
            XCTAssertEqual(r.status, 0, "np \(n): \(r.stdout)\n\(r.stderr)")
            XCTAssertTrue(r.stdout.contains("collectives ok on \(n) rank(s)"), r.stdout)
        }
    }

    func testTrainingIsDeterministicAndMatchesUnderMpirun() throws {
        let ws = Workspace()
        let a = try Harness.switchyard(ws.tinyArgs(steps: 20), cwd: ws.dir)
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertTrue(a.stdout.contains("step     0/20"), a.stdout)
        let first = try ws.lossBits()
        XCTAssertEqual(first.count, 20)
        XCTAssertEqual(Double(Float(bitPattern: first[0])), 5.545, accuracy: 0.15, "initial loss near ln 256")
        XCTAssertLessThan(Float(bitPattern: first[19]), Float(bitPattern: first[0]) - 1, "loss falls")
        // Same job again from step 0 (--no-resume; the log appends a second run): bitwise-identical losses.
        XCTAssertEqual(try Harness.switchyard(ws.tinyArgs(steps: 20, extra: ["--no-resume"]), cwd: ws.dir).status, 0)
        let both = try ws.lossBits()
        XCTAssertEqual(both.count, 40)
        XCTAssertEqual(Array(both.suffix(20)), first)
        // Under mpirun -np 1: the same losses again.
        let m = try Harness.mpi(1, ws.tinyArgs(steps: 20, extra: ["--no-resume"]), cwd: ws.dir)
        XCTAssertEqual(m.status, 0, m.stderr)
        let all = try ws.lossBits()
        XCTAssertEqual(all.count, 60)
        XCTAssertEqual(Array(all.suffix(20)), first)
        // The earlier checkpoints were moved aside, not deleted.
        let kept = try FileManager.default.contentsOfDirectory(atPath: "\(ws.dir)/runs/tiny").filter {
            $0.hasPrefix("checkpoints.replaced-")
        }
        XCTAssertFalse(kept.isEmpty)
    }

    /// The correctness contract under real mpirun: every layout's per-step losses and eval
    /// losses match the single-rank run within 1e-4 (relative); the same layout twice is bitwise
    /// identical. (Final parameters are compared with thread-ranks in ParallelLayoutTests.)
    func testLayoutsUnderMpirunMatchOneRank() throws {
        let ws = Workspace()
        func run(_ np: Int, _ name: String, _ extra: [String]) throws -> [UInt32] {
            let r = try Harness.mpi(
                np, ws.tinyArgs(steps: 20, extra: ["--set", "name=\(name)"] + extra), cwd: ws.dir, timeout: 240)
            XCTAssertFalse(r.timedOut, "\(name) timed out")
            XCTAssertEqual(r.status, 0, "\(name): \(r.stderr)")
            return try ws.lossBits(run: name)
        }
        let ref = try run(1, "w1", [])
        XCTAssertEqual(ref.count, 20)
        let layouts: [(Int, String, [String])] = [
            (2, "dp2", []), (2, "tp2", ["--set", "layout.tp=2"]), (4, "dp2xtp2", ["--set", "layout.tp=2"]),
            (3, "dp3", []), (4, "w4", []),
            (2, "replicas", ["--set", "placement=[[0,1],[1],[0],[0,1]]"]),
            (2, "dp2-shardOptimizer", ["--set", "train.shardOptimizer=true"]),
            (4, "dp2xtp2-shardOptimizer", ["--set", "layout.tp=2", "--set", "train.shardOptimizer=true"]),
            (4, "dp2xtp2-recompute-block", ["--set", "layout.tp=2", "--set", "train.recompute=block"])
        ]
        for (np, name, extra) in layouts {
            let got = try run(np, name, extra)
            XCTAssertEqual(got.count, 20, name)
            let worst =
                zip(got, ref).map {
                    abs(Double(Float(bitPattern: $0) - Float(bitPattern: $1))) / Double(Float(bitPattern: $1))
                }.max() ?? 1
            XCTAssertLessThan(worst, 1e-4, "\(name): max relative loss difference \(worst)")
            print("mpirun layout \(name) (np \(np)): max relative loss difference \(worst) vs np 1")
        }
        let again = try run(4, "dp2xtp2-again", ["--set", "layout.tp=2"])
        XCTAssertEqual(again, try ws.lossBits(run: "dp2xtp2"), "same layout twice: bitwise-identical losses")
    }

    /// Online re-placement under real mpirun: a plan is adopted, experts and moments move
    /// point-to-point (MPI_Isend/Irecv), and the losses still match the one-rank run.
    func testReplacementUnderMpirunMatchesOneRank() throws {
        let ws = Workspace()
        let skew = ["--set", "train.routerSkew=3", "--set", "train.routerSkewStride=2"]
        let one = try Harness.mpi(
            1, ws.tinyArgs(steps: 20, extra: ["--set", "name=w1"] + skew), cwd: ws.dir, timeout: 120)
        XCTAssertEqual(one.status, 0, one.stderr)
        let r = try Harness.mpi(
            2,
            ws.tinyArgs(
                steps: 20,
                extra: [
                    "--set", "name=replan", "--set", "replan.every=5",
                    "--set", "replan.horizon=1000000"
                ] + skew), cwd: ws.dir, timeout: 120)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("placement: step 4: predicted"), r.stdout)
        let log = try String(contentsOfFile: "\(ws.dir)/runs/replan/log.jsonl", encoding: .utf8)
        XCTAssertTrue(log.contains("\"adopted\":true"), "a plan was adopted")
        let got = try ws.lossBits(run: "replan"), ref = try ws.lossBits(run: "w1")
        XCTAssertEqual(got.count, 20)
        let worst =
            zip(got, ref).map {
                abs(Double(Float(bitPattern: $0) - Float(bitPattern: $1))) / Double(Float(bitPattern: $1))
            }.max() ?? 1
        XCTAssertLessThan(worst, 1e-4, "max relative loss difference \(worst)")
        print("mpirun -np 2 with re-placement: max relative loss difference \(worst) vs np 1")
    }

    /// A layout that does not fit the world fails fast on every rank with one message.
    func testLayoutNotMatchingWorldFailsFastOnEveryRank() throws {
        let ws = Workspace()
        let r = try Harness.mpi(2, ws.tinyArgs(steps: 5, extra: ["--set", "layout.dp=3"]), cwd: ws.dir, timeout: 60)
        XCTAssertFalse(r.timedOut)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertLessThan(r.seconds, 30)
        XCTAssertEqual(r.stderr.components(separatedBy: "switchyard: error:").count - 1, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("layout: dp 3 x tp 1 = 3 ranks, but the world has 2"), r.stderr)
    }

    /// Each bad layout or placement under mpirun: one clear error, non-zero exit, within seconds.
    func testBadPlacementsUnderMpirun() throws {
        let ws = Workspace()
        let cases: [(Int, [String], String)] = [
            (2, ["--set", "layout.tp=3"], "layout.tp: 3 does not divide model.nHead = 4"),
            (2, ["--set", "placement=[[0],[2],[1],[0]]"], "names rank 2"),
            (2, ["--set", "placement=[[0],[1,1],[1],[0]]"], "listed twice on one rank"),
            (2, ["--set", "placement=[[0],[],[1],[0]]"], "is on no rank")
        ]
        for (np, extra, text) in cases {
            let r = try Harness.mpi(np, ws.tinyArgs(steps: 5, extra: extra), cwd: ws.dir, timeout: 60)
            XCTAssertFalse(r.timedOut)
            XCTAssertNotEqual(r.status, 0, "\(extra)")
            XCTAssertLessThan(r.seconds, 30)
            XCTAssertEqual(r.stderr.components(separatedBy: "switchyard: error:").count - 1, 1, "\(extra): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(text), "\(extra): \(r.stderr)")
        }
    }

    /// A bad job under mpirun: every rank exits non-zero, one message, no hang.
    func testBadJobUnderMpirunFailsOnEveryRank() throws {
        let ws = Workspace()
        let r = try Harness.mpi(3, ws.tinyArgs(steps: 5, extra: ["--set", "model.nHead=3"]), cwd: ws.dir, timeout: 60)
        XCTAssertFalse(r.timedOut)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertEqual(r.stderr.components(separatedBy: "switchyard: error:").count - 1, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("model.nEmbd"), r.stderr)
    }

    /// When OpenBLAS reports a generic core, switchyard sets OPENBLAS_CORETYPE to the best core
    /// the CPU supports and re-executes itself before MPI_Init; the start event shows the result.
    /// (The generic detection is simulated with SWITCHYARD_PRETEND_BLAS_CORE on CPUs OpenBLAS knows;
    /// a caller's own OPENBLAS_CORETYPE, which always wins, is removed for the launch.)
    func testGenericBLASCoreIsReplacedByReexecUnderMpirun() throws {
        let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        guard let best = BLASCore.bestCore(cpuFlags: BLASCore.flags(fromCPUInfo: cpuinfo)) else {
            throw XCTSkip("this CPU has neither AVX-512 nor AVX2+FMA: nothing better than the generic core")
        }
        let ws = Workspace()
        let r = try Harness.run(
            Harness.mpirun ?? "/usr/bin/mpirun",
            [
                "--oversubscribe", "-np", "1", "-x", "SWITCHYARD_PRETEND_BLAS_CORE=Prescott",
                Harness.binary
            ] + ws.tinyArgs(steps: 2), cwd: ws.dir, unset: ["OPENBLAS_CORETYPE"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let start = try String(contentsOfFile: "\(ws.dir)/runs/tiny/log.jsonl", encoding: .utf8).split(separator: "\n")[
            0]
        XCTAssertTrue(start.contains("\"blasCore\":\"\(best)\""), String(start))
        XCTAssertTrue(start.contains("\"blasCoreOverride\":\"Prescott->\(best)\""), String(start))
    }

    /// SIGTERM, and SIGUSR1 (the stop request mpirun forwards), finish the step, write the end
    /// event and exit 0.
    func testSigtermStopsCleanly() throws {
        for sig in [SIGTERM, SIGUSR1] {
            let ws = Workspace()
            let p = Harness.process(Harness.binary, ws.tinyArgs(steps: 100000), cwd: ws.dir)
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            let log = "\(ws.dir)/runs/tiny/log.jsonl"
            Harness.waitUntil(seconds: 60) { Harness.file(log, contains: "\"step\":3,") }
            kill(p.processIdentifier, sig)
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0, "signal \(sig)")
            let last = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").last ?? ""
            XCTAssertTrue(
                last.contains("\"event\":\"end\"") && last.contains("\"reason\":\"signal\""), "\(sig): \(last)")
        }
    }

    /// A rank that stops (SIGSTOP: a frozen node looks the same to the others) does not hang the
    /// job: the other rank's collective passes its deadline, it names the stopped rank (silent on
    /// the heartbeat), the call and the step and exits 1, and mpirun ends the job, the stopped rank
    /// included, within seconds.
    func testStoppedRankEndsTheJobAtTheCollectiveDeadline() throws {
        guard let mpirun = Harness.mpirun else { throw XCTSkip("mpirun not installed") }
        let ws = Workspace()
        let p = Harness.process(
            mpirun,
            ["--oversubscribe", "--mca", "mpi_yield_when_idle", "1", "-np", "2", Harness.binary]
                + ws.tinyArgs(
                    steps: 100000, extra: ["--set", "timeouts.collectiveSeconds=3", "--set", "checkpoint.every=0"]),
            cwd: ws.dir, env: ["OPENBLAS_NUM_THREADS": "1"])
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let log = "\(ws.dir)/runs/tiny/log.jsonl"
        Harness.waitUntil(seconds: 90) { Harness.file(log, contains: "\"step\":3,") }
        let ranks = try Harness.children(of: p.processIdentifier)
        XCTAssertEqual(ranks.count, 2, "mpirun's rank processes")
        guard let victim = ranks.max() else { p.terminate(); return }
        let rank = try Harness.mpiRank(of: victim)
        kill(victim, SIGSTOP)
        let stopped = Date()
        while p.isRunning && Date().timeIntervalSince(stopped) < 60 { Thread.sleep(forTimeInterval: 0.1) }
        if p.isRunning {
            kill(victim, SIGCONT)
            p.terminate()
            XCTFail("the job still ran 60 s after a rank stopped")
            return
        }
        let waited = Date().timeIntervalSince(stopped)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertNotEqual(p.terminationStatus, 0)
        XCTAssertLessThan(waited, 30, "ended \(waited) s after the stop")
        XCTAssertTrue(stderr.contains("rank \(1 - rank): no progress from rank(s) \(rank) in MPI_"), stderr)
        XCTAssertTrue(stderr.contains("rank \(rank) on \(ProcessInfo.processInfo.hostName): no heartbeat for "), stderr)
        XCTAssertTrue(stderr.contains("timeouts.collectiveSeconds = 3.0 s"), stderr)
        XCTAssertFalse(stderr.contains("Fatal error"), stderr)
        // Gone, or a zombie waiting to be reaped: /proc/PID/stat's state field is then Z.
        func ended() -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(victim)/stat", encoding: .utf8) else { return true }
            return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
        }
        let check = Date()
        while !ended() && Date().timeIntervalSince(check) < 10 { Thread.sleep(forTimeInterval: 0.1) }
        XCTAssertTrue(ended(), "the stopped rank \(victim) was not ended")
        if !ended() { kill(victim, SIGKILL) }
    }

    /// The non-finite guard under mpirun: a NaN gradient injected on rank 1 at step 3 makes every
    /// rank skip that step (one warning), the run goes on and its checkpoints are written.
    func testInjectedNaNIsSkippedOnEveryRankUnderMpirun() throws {
        let ws = Workspace()
        let r = try Harness.mpi(
            2,
            ws.tinyArgs(
                steps: 8,
                extra: ["--set", "train.testNaNStep=3", "--set", "train.testNaNRank=1", "--set", "checkpoint.every=3"]),
            cwd: ws.dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        let log = try String(contentsOfFile: "\(ws.dir)/runs/tiny/log.jsonl", encoding: .utf8)
        let warnings = log.split(separator: "\n").filter { $0.contains("\"event\":\"warning\"") }
        XCTAssertEqual(warnings.count, 1, "\(warnings)")
        XCTAssertTrue(warnings.first?.contains("\"step\":3,") == true && warnings.first?.contains("non-finite") == true)
        XCTAssertEqual(
            log.components(separatedBy: "\"event\":\"checkpoint\"").count - 1, 3, "saves after steps 2, 5, 7")
        XCTAssertEqual(try ws.lossBits().count, 7, "the 7 applied steps are logged")
    }
}
