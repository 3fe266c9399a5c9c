// Runs the built `switchyard` binary (plain or under mpirun) with a timeout, for the CLI and
// multi-rank tests. The binary comes from $SWITCHYARD_BIN (ops/test sets it) or .build/debug.
import Foundation
import XCTest

struct RunResult {
    let status: Int32
    let stdout: String
    let stderr: String
    let seconds: Double
    var timedOut = false
    /// stdout as written (stdout above is empty when it is not UTF-8).
    var stdoutBytes = Data()
}

enum Harness {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    static var binary: String {
        if let b = ProcessInfo.processInfo.environment["SWITCHYARD_BIN"], !b.isEmpty { return b }
        return root + "/.build/debug/switchyard"
    }

    static var mpirun: String? {
        for p in ["/usr/bin/mpirun", "/usr/local/bin/mpirun"] where FileManager.default.isExecutableFile(atPath: p) {
            return p
        }
        return nil
    }

    /// `executable args` in `cwd`, not started, with the environment every test launch gets:
    /// Open MPI allowed as root, one BLAS thread unless the caller's environment sets it, `env` on top,
    /// the variables named in `unset` removed.
    static func process(
        _ executable: String, _ args: [String], cwd: String? = nil, env: [String: String] = [:], unset: [String] = []
    ) -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        var e = ProcessInfo.processInfo.environment
        e["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        e["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        e["OPENBLAS_NUM_THREADS"] = e["OPENBLAS_NUM_THREADS"] ?? "1"
        for (k, v) in env { e[k] = v }
        for k in unset { e[k] = nil }
        p.environment = e
        return p
    }

    /// Runs `executable args` in `cwd` with extra environment, killing it after `timeout` seconds.
    static func run(
        _ executable: String, _ args: [String], cwd: String? = nil, env: [String: String] = [:],
        unset: [String] = [], timeout: Double = 120
    ) throws -> RunResult {
        let p = process(executable, args, cwd: cwd, env: env, unset: unset)
        let outFile = NSTemporaryDirectory() + "sy-out-" + UUID().uuidString
        let errFile = NSTemporaryDirectory() + "sy-err-" + UUID().uuidString
        _ = FileManager.default.createFile(atPath: outFile, contents: nil)
        _ = FileManager.default.createFile(atPath: errFile, contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: outFile); try? FileManager.default.removeItem(atPath: errFile)
        }
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outFile))
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errFile))
        let t0 = Date()
        try p.run()
        var timedOut = false
        while p.isRunning {
            if Date().timeIntervalSince(t0) > timeout {
                timedOut = true
                p.terminate()
                Thread.sleep(forTimeInterval: 2)
                if p.isRunning { kill(p.processIdentifier, SIGKILL) }
                break
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        p.waitUntilExit()
        let out = (try? String(contentsOfFile: outFile, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: errFile, encoding: .utf8)) ?? ""
        return RunResult(
            status: p.terminationStatus, stdout: out, stderr: err, seconds: Date().timeIntervalSince(t0),
            timedOut: timedOut, stdoutBytes: (try? Data(contentsOf: URL(fileURLWithPath: outFile))) ?? Data())
    }

    /// Polls `condition` every 50 ms until it holds or `seconds` have passed; whether it held.
    @discardableResult
    static func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
        let t0 = Date()
        while Date().timeIntervalSince(t0) < seconds {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return condition()
    }

    /// Whether `path` exists and contains `text`.
    static func file(_ path: String, contains text: String) -> Bool {
        (try? String(contentsOfFile: path, encoding: .utf8))?.contains(text) ?? false
    }

    /// The direct children of process `pid` (pgrep -P).
    static func children(of pid: Int32) throws -> [Int32] {
        try run("/usr/bin/pgrep", ["-P", "\(pid)"]).stdout.split(separator: "\n").compactMap { Int32($0) }
    }

    /// The MPI rank of a rank process (OMPI_COMM_WORLD_RANK in its environment).
    static func mpiRank(of pid: Int32) throws -> Int {
        let environ = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ"))
        let rank = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            .first { $0.hasPrefix("OMPI_COMM_WORLD_RANK=") }?.dropFirst("OMPI_COMM_WORLD_RANK=".count)
        return try XCTUnwrap(rank.flatMap { Int($0) }, "no OMPI_COMM_WORLD_RANK in process \(pid)'s environment")
    }

    /// Runs the binary as a plain process.
    static func switchyard(_ args: [String], cwd: String? = nil, timeout: Double = 120) throws -> RunResult {
        try run(binary, args, cwd: cwd, timeout: timeout)
    }

    /// Runs the binary under `mpirun -np n` (oversubscribed, yielding when idle).
    static func mpi(_ n: Int, _ args: [String], cwd: String? = nil, timeout: Double = 120) throws -> RunResult {
        guard let mpirun else { throw XCTSkip("mpirun not installed (ops/test installs openmpi-bin)") }
        return try run(
            mpirun,
            [
                "--oversubscribe", "--mca", "mpi_yield_when_idle", "1", "--mca", "btl", "self,vader",
                "-np", "\(n)", binary
            ] + args, cwd: cwd, timeout: timeout)
    }
}

/// A temporary directory with a small English-like corpus, for tests that train.
final class Workspace {
    let dir: String
    var corpus: String { dir + "/corpus.txt" }

    init() {
        dir = NSTemporaryDirectory() + "switchyard-cli-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let lines = [
            "The quick brown fox jumps over the lazy dog.", "A journey of a thousand miles begins with one step.",
            "All that glitters is not gold.", "Fortune favors the bold, but not the reckless."
        ]
        var text = ""
        for i in 0..<600 { text += lines[(i * 7) % lines.count] + " " + (i % 3 == 0 ? "\n" : "") }
        try! Data(text.utf8).write(to: URL(fileURLWithPath: corpus))
    }

    func write(_ name: String, _ text: String) -> String {
        let p = dir + "/" + name
        try! Data(text.utf8).write(to: URL(fileURLWithPath: p))
        return p
    }

    /// `train` arguments for jobs/tiny.json on this workspace's corpus.
    func tinyArgs(steps: Int, extra: [String] = []) -> [String] {
        [
            "train", Harness.root + "/jobs/tiny.json", "--set", "data.path=\(corpus)", "--set", "runsDir=\(dir)/runs",
            "--set", "train.steps=\(steps)", "--set", "train.evalEvery=10", "--set", "train.logEvery=5"
        ] + extra
    }

    /// Losses of the step events in a run's log, as Float bit patterns.
    func lossBits(run: String = "tiny") throws -> [UInt32] {
        let text = try String(contentsOfFile: "\(dir)/runs/\(run)/log.jsonl", encoding: .utf8)
        return text.split(separator: "\n").compactMap { line -> UInt32? in
            guard line.contains("\"event\":\"step\""), let r = line.range(of: "\"loss\":") else { return nil }
            let rest = line[r.upperBound...]
            let num = rest.prefix { "0123456789.-e+".contains($0) }
            return Float(Double(num)!).bitPattern
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }
}
