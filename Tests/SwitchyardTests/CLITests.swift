import Foundation
import JSON
import Training
import XCTest

/// The command line: help that tells the truth, usage errors (64), bad input (1, one line).
final class CLITests: XCTestCase {
    func testTopLevelHelpListsEveryCommand() throws {
        let r = try Harness.switchyard(["--help"])
        XCTAssertEqual(r.status, 0)
        for cmd in ["train", "selftest", "bench", "help"] {
            XCTAssertTrue(r.stdout.contains("  \(cmd) "), "help lacks \(cmd):\n\(r.stdout)")
        }
        // Every command the help lists has its own help.
        for line in r.stdout.split(separator: "\n") where line.hasPrefix("  ") && !line.hasPrefix("  -") {
            let cmd = String(line.split(separator: " ")[0])
            let h = try Harness.switchyard([cmd, "--help"])
            XCTAssertEqual(h.status, 0, "\(cmd) --help: \(h.stderr)")
        }
        XCTAssertEqual(try Harness.switchyard(["--version"]).status, 0)
    }

    /// A binary whose kernels were compiled for haswell refuses, with one line naming the missing
    /// features and the portable build, a CPU that lacks them (instead of dying of SIGILL).
    func testKernelsForAnotherCPURefuseToStart() throws {
        let version = try Harness.switchyard(["--version"]).stdout
        guard version.contains("haswell") else { throw XCTSkip("a portable build: \(version)") }
        let env = ["SWITCHYARD_PRETEND_CPU_FLAGS": "fpu sse sse2 avx popcnt"]
        let r = try Harness.run(Harness.binary, ["--version"], env: env)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("lacks avx2, fma, bmi1, bmi2, f16c, movbe, abm;"), r.stderr)
        XCTAssertTrue(r.stderr.contains("SWITCHYARD_PORTABLE=1"), r.stderr)
        let all = ["SWITCHYARD_PRETEND_CPU_FLAGS": "fpu avx avx2 fma bmi1 bmi2 f16c movbe abm popcnt"]
        let ok = try Harness.run(Harness.binary, ["--version"], env: all)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(ok.stdout, version)
    }

    /// bench says who chose the BLAS core: a caller's OPENBLAS_CORETYPE (kept, even where the CPU's
    /// own choice would be faster), else OpenBLAS's detection or switchyard's re-exec.
    func testBenchNamesWhoChoseTheBLASCore() throws {
        let ws = Workspace()
        let args = [
            "bench", Harness.root + "/jobs/tiny.json", "--set", "data.path=\(ws.corpus)", "--steps", "1",
            "--sgemm-n", "64", "--json", ws.dir + "/bench.json"
        ]
        let forced = try Harness.run(Harness.binary, args, env: ["OPENBLAS_CORETYPE": "Prescott"])
        XCTAssertEqual(forced.status, 0, forced.stderr)
        XCTAssertTrue(
            forced.stdout.contains(
                "OpenBLAS core: Prescott (chosen by OPENBLAS_CORETYPE=Prescott from the environment)"),
            forced.stdout)
        let record = try String(contentsOfFile: ws.dir + "/bench.json", encoding: .utf8)
        XCTAssertTrue(record.contains("OPENBLAS_CORETYPE=Prescott from the environment"), record)
        let own = try Harness.run(Harness.binary, args, unset: ["OPENBLAS_CORETYPE"])
        XCTAssertEqual(own.status, 0, own.stderr)
        XCTAssertTrue(
            own.stdout.contains("(chosen by OpenBLAS)") || own.stdout.contains("(chosen by switchyard: "), own.stdout)
    }

    /// bench --gemm times tiny's five products (three passes each) on both engines and names them;
    /// SWITCHYARD_GEMM=blas shows in the header and the run's start event.
    func testBenchGemmTableAndTheEngineSwitch() throws {
        let ws = Workspace()
        let args = [
            "bench", Harness.root + "/jobs/tiny.json", "--set", "data.path=\(ws.corpus)", "--gemm", "--sgemm-n", "64",
            "--json", ws.dir + "/bench.json"
        ]
        let r = try Harness.run(Harness.binary, args)
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = r.stdout.split(separator: "\n").filter { $0.contains(" x W^T") || $0.contains(" dY W") }
        XCTAssertEqual(rows.count, 10, r.stdout)
        let record = try JSONValue.parse(try String(contentsOfFile: ws.dir + "/bench.json", encoding: .utf8))
        XCTAssertEqual(record["gemmShapes"]?.arrayValue?.count, 15, "5 shapes x 3 passes in --json")
        XCTAssertNotNil(record["gemm"]?.stringValue, "the engine in --json")
        let blas = try Harness.run(Harness.binary, args, env: ["SWITCHYARD_GEMM": "blas"])
        XCTAssertTrue(blas.stdout.contains("matrix products: OpenBLAS"), blas.stdout)
        let train = try Harness.run(
            Harness.binary, ws.tinyArgs(steps: 1, extra: ["--set", "name=blas"]), cwd: ws.dir,
            env: ["SWITCHYARD_GEMM": "blas"])
        XCTAssertEqual(train.status, 0, train.stderr)
        let start = try String(contentsOfFile: "\(ws.dir)/runs/blas/log.jsonl", encoding: .utf8).split(separator: "\n")[
            0]
        XCTAssertTrue(start.contains("\"gemm\":\"openblas\""), String(start))
    }

    /// Every option a command's help shows is accepted by its parser, and the train help lists
    /// every job key.
    func testEachAdvertisedOptionIsAccepted() throws {
        for cmd in ["train", "selftest", "bench"] {
            let help = try Harness.switchyard([cmd, "--help"]).stdout
            let options = Set(
                help.split(whereSeparator: { " ,\n".contains($0) }).map(String.init).filter {
                    $0.hasPrefix("--") && $0.count > 2 && $0.dropFirst(2).allSatisfy { $0.isLetter || $0 == "-" }
                })
            for o in options where o != "--help" {
                let r = try Harness.switchyard([cmd, o, "1", "--help"])
                XCTAssertEqual(r.status, 0, "\(cmd) \(o) is in the help but rejected: \(r.stderr)")
            }
        }
        let trainHelp = try Harness.switchyard(["train", "--help"]).stdout
        XCTAssertTrue(trainHelp.contains("--set KEY=VALUE"))
        XCTAssertTrue(trainHelp.contains("--threads N"))
        for f in Job.fields {
            XCTAssertTrue(trainHelp.contains("  \(f.key) = "), "train --help lacks job key \(f.key)")
        }
    }

    func testUsageErrorsExit64WithUsage() throws {
        for args in [
            [], ["frobnicate"], ["train"], ["train", "a.json", "b.json"], ["train", "--bogus", "x", "a.json"],
            ["train", "a.json", "--threads", "abc"], ["train", "a.json", "--threads"], ["help", "nope"],
            ["plan", "a.json"], ["eval", "dir"], ["plot", "run"], ["calibrate"],
            ["status", "runs", "--stale-after", "0"],
            ["ckpt", "export", "dir"], ["ckpt", "frob", "dir"]
        ] {
            let r = try Harness.switchyard(args)
            XCTAssertEqual(r.status, 64, "args \(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("USAGE:") || r.stdout.contains("USAGE:"), "args \(args) shows no usage")
            XCTAssertFalse(r.stderr.contains("Fatal error") || r.stderr.contains("Backtrac"), "args \(args) crashed")
        }
        // A missing required option is named.
        let plan = try Harness.switchyard(["plan", "a.json"])
        XCTAssertTrue(plan.stderr.contains("plan needs --cluster FILE"), plan.stderr)
    }

    /// Each bad input: exit 1, one line naming the input, no crash trace.
    func testBadInputsGiveOneLineErrors() throws {
        let ws = Workspace()
        let tiny = Harness.root + "/jobs/tiny.json", fortunes = ws.corpus
        let empty = ws.write("empty.txt", "")
        let short = ws.write("short.txt", "too short for a sequence")
        var badBin = Data(count: 1024 + 20)
        badBin[0] = 7
        try badBin.write(to: URL(fileURLWithPath: ws.dir + "/bad.bin"))
        let cases: [(args: [String], expect: String)] = [
            (["train", ws.dir + "/missing.json"], "job file not found"),
            (
                ["train", ws.write("unknown.json", #"{"data": {"path": "x"}, "train": {"stepz": 3}}"#)],
                "train.stepz: unknown key"
            ),
            (
                ["train", ws.write("type.json", #"{"data": {"path": "x"}, "model": {"nHead": "four"}}"#)],
                "model.nHead: expected integer, got a string"
            ),
            (["train", tiny, "--set", "model.nHead=5"], "model.nEmbd: 64 is not divisible by model.nHead = 5"),
            (["train", tiny, "--set", "model.nExpert=1"], "model.topK: 2 exceeds model.nExpert = 1"),
            (["train", tiny, "--set", "data.path=\(ws.dir)/nothere.txt"], "file not found"),
            (["train", tiny, "--set", "data.path=\(empty)"], "the file is empty"),
            (["train", tiny, "--set", "data.path=\(short)"], "shorter than one training sequence"),
            (["train", tiny, "--set", "data.path=\(ws.dir)/bad.bin"], "bad .bin header"),
            (["train", ws.write("broken.json", "{\"name\": }")], "not valid JSON: line 1, column 10"),
            // Too big for memory: the pre-check refuses before anything is allocated.
            (
                [
                    "train", tiny, "--set", "model.nEmbd=2147483648", "--set", "model.nHead=1", "--set",
                    "data.path=\(fortunes)"
                ],
                "the job needs about"
            ),
            (
                ["train", tiny, "--set", "model.ffHidden=2000000000", "--set", "data.path=\(fortunes)"],
                "but the node offers"
            )
        ]
        for c in cases {
            let r = try Harness.switchyard(c.args + ["--set", "runsDir=\(ws.dir)/runs"], cwd: ws.dir)
            XCTAssertEqual(r.status, 1, "\(c.args): \(r.stderr)")
            let lines = r.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, "\(c.args): expected one line, got:\n\(r.stderr)")
            XCTAssertTrue(r.stderr.hasPrefix("switchyard: error: "), r.stderr)
            XCTAssertTrue(r.stderr.contains(c.expect), "\(c.args): '\(r.stderr)' lacks '\(c.expect)'")
            XCTAssertFalse(r.stderr.contains("Fatal error") || r.stderr.contains("Stack dump"), r.stderr)
        }
    }

    /// train --check: every start-up check, one line with the estimate, nothing written; a bad job
    /// is the usual one-line error; under mpirun the layout is checked at that world size.
    func testTrainCheckValidatesWithoutWriting() throws {
        let ws = Workspace()
        let args = ws.tinyArgs(steps: 5) + ["--check"]
        let ok = try Harness.switchyard(args, cwd: ws.dir)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(ok.stdout.contains("tiny is valid at world 1 (dp 1 x tp 1)"), ok.stdout)
        XCTAssertTrue(ok.stdout.contains("GB per rank"), ok.stdout)
        XCTAssertFalse(FileManager.default.fileExists(atPath: ws.dir + "/runs/tiny"), "--check writes nothing")
        let two = try Harness.mpi(2, args + ["--set", "layout.tp=2"], cwd: ws.dir)
        XCTAssertEqual(two.status, 0, two.stderr)
        XCTAssertTrue(two.stdout.contains("valid at world 2 (dp 1 x tp 2)"), two.stdout)
        XCTAssertEqual(two.stdout.split(separator: "\n").count, 1, "one line from rank 0: \(two.stdout)")
        let bad = try Harness.mpi(2, args + ["--set", "layout.tp=3"], cwd: ws.dir)
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("layout.tp"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: ws.dir + "/runs/tiny"))
    }
}
