import Foundation
import JSON
import XCTest

/// Mixture-of-Head attention and SMoE-Dropout through the binary: under real mpirun (tp 2 splits
/// the heads the head router gates, dp 2 x tp 2 also splits the experts) the losses match np 1;
/// the topK schedule shows in the step events; eval --top-k and sample --top-k-experts choose the
/// experts per token at inference, and a bad K is one clear line.
final class SparseDesignCLITests: XCTestCase {
    static let options = [
        "--set", "model.attention=moh", "--set", "model.mohSharedHeads=1", "--set", "model.mohActiveHeads=2",
        "--set", "model.router=random", "--set", "model.topK=1", "--set", "train.topKSchedule=0:1,10:2,20:4",
        "--set", "train.auxLossCoef=0"
    ]

    /// Trains `options` for 30 steps at np 1, tp 2 (np 2) and dp 2 x tp 2 (np 4): the losses agree
    /// within 1e-4 (relative) of np 1. Returns the workspace (runs "w1", "tp2", "dp2xtp2").
    func assertLayoutsMatchUnderMpirun(_ options: [String]) throws -> Workspace {
        let ws = Workspace()
        func train(_ np: Int, _ name: String, _ extra: [String] = []) throws -> [UInt32] {
            let args = ws.tinyArgs(steps: 30, extra: options + ["--set", "name=\(name)"] + extra)
            let r = try Harness.mpi(np, args, cwd: ws.dir, timeout: 240)
            XCTAssertEqual(r.status, 0, "\(name): \(r.stderr)")
            return try ws.lossBits(run: name)
        }
        let ref = try train(1, "w1")
        for (np, name, extra) in [(2, "tp2", ["--set", "layout.tp=2"]), (4, "dp2xtp2", ["--set", "layout.tp=2"])] {
            let got = try train(np, name, extra)
            XCTAssertEqual(got.count, 30, name)
            let worst = zip(got, ref).map {
                abs(Double(Float(bitPattern: $0) - Float(bitPattern: $1))) / Double(Float(bitPattern: $1))
            }.max()!
            XCTAssertLessThan(worst, 1e-4, "\(options) \(name): max relative loss difference \(worst) vs np 1")
        }
        return ws
    }

    /// Shared experts, aux-loss-free balancing and the router z-loss together under real mpirun.
    func testSharedExpertsBiasAndZLossUnderMpirun() throws {
        _ = try assertLayoutsMatchUnderMpirun([
            "--set", "model.nSharedExperts=1", "--set", "train.routerBiasRate=0.001", "--set", "train.auxLossCoef=0",
            "--set", "train.zLossCoef=0.01"
        ])
    }

    func testMixtureOfHeadsAndSMoEDropoutUnderMpirunAndAtInference() throws {
        let ws = try assertLayoutsMatchUnderMpirun(Self.options)
        let log = try String(contentsOfFile: ws.dir + "/runs/w1/log.jsonl", encoding: .utf8)
        let ks = log.split(separator: "\n").compactMap { try? JSONValue.parse(String($0)) }
            .filter { $0["event"]?.stringValue == "step" }.compactMap { $0["topK"]?.intValue }
        XCTAssertEqual(ks.count, 30)
        XCTAssertEqual([ks[0], ks[9], ks[10], ks[19], ks[20], ks[29]], [1, 1, 2, 2, 4, 4], "the schedule's k per step")

        // eval: by default the last step's k (4 of 4); --top-k 1 is another model.
        let run = ws.dir + "/runs/w1"
        func eval(_ extra: [String]) throws -> (Int32, String, String) {
            let r = try Harness.switchyard(["eval", run, "--data", ws.corpus, "--windows", "8"] + extra)
            return (r.status, r.stdout, r.stderr)
        }
        let all = try eval([]), one = try eval(["--top-k", "1"])
        XCTAssertEqual(all.0, 0, all.2)
        XCTAssertTrue(all.1.contains("4 of 4 experts"), all.1)
        XCTAssertTrue(one.1.contains("1 of 4 experts"), one.1)
        XCTAssertNotEqual(
            all.1.components(separatedBy: "cross-entropy ").last?.prefix(8),
            one.1.components(separatedBy: "cross-entropy ").last?.prefix(8), "1 expert per token is another loss")
        let tooMany = try eval(["--top-k", "5"])
        XCTAssertEqual(tooMany.0, 1)
        XCTAssertTrue(tooMany.2.contains("--top-k 5") && tooMany.2.contains("model.nExpert = 4"), tooMany.2)
        XCTAssertEqual(try eval(["--top-k", "0"]).0, 64, "not a positive integer: usage")

        // sample: greedy with 2 experts per token, the same at np 1 and np 2 (experts over ranks).
        let args = ["sample", run, "--prompt", "The", "--tokens", "24", "--temperature", "0", "--top-k-experts", "2"]
        let s1 = try Harness.switchyard(args), s2 = try Harness.mpi(2, args)
        XCTAssertEqual(s1.status, 0, s1.stderr)
        XCTAssertTrue(s1.stderr.contains("2 of 4 experts per token"), s1.stderr)
        XCTAssertEqual(s1.stdoutBytes, s2.stdoutBytes, "np 2 vs np 1")
        let bad = try Harness.switchyard(["sample", run, "--prompt", "The", "--top-k-experts", "9"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("--top-k-experts 9"), bad.stderr)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, "one line: \(bad.stderr)")
    }
}
