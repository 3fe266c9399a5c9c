import Foundation
import JSON
import XCTest

/// `switchyard plan` and cluster files through the binary.
final class PlanCLITests: XCTestCase {
    func testPlanWritesAPlacementTheJobAccepts() throws {
        let ws = Workspace()
        let out = ws.dir + "/placement.json"
        let r = try Harness.switchyard([
            "plan", Harness.root + "/jobs/small.json", "--cluster", Harness.root + "/cluster/netns.json",
            "--skew", "zipf:1.2", "--out", out
        ])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(
            r.stdout.contains("dp4 x tp1") && r.stdout.contains("dp2 x tp2") && r.stdout.contains("best: "), r.stdout)
        XCTAssertTrue(r.stdout.contains("tp group larger than a node"), "tp 4 does not fit a 2-slot node: \(r.stdout)")
        let placement = try JSONValue.parse(String(contentsOfFile: out, encoding: .utf8))
        XCTAssertEqual(placement.arrayValue?.count, 4, "one list per MoE layer")
        XCTAssertGreaterThan(
            placement.arrayValue?[0].arrayValue?[0].arrayValue?.count ?? 0, 1, "the hottest expert is replicated")
        // The job accepts it (validation only: --set train.steps=0 is rejected before training, so
        // check the placement through a bad-world run that fails on the layout, not the placement).
        let bad = try Harness.switchyard(
            [
                "train", Harness.root + "/jobs/small.json", "--set", "placement=\(placement.compact)", "--set",
                "data.path=\(ws.corpus)",
                "--set", "layout.dp=4"
            ], cwd: ws.dir)
        XCTAssertTrue(bad.stderr.contains("layout: dp 4 x tp 1 = 4 ranks, but the world has 1"), bad.stderr)
    }

    /// jobs/wide-batch.json fits a 12.6 GB slot with its memory options and prints the headroom;
    /// without them and at 1.5x its batch plan rejects every layout, naming the options. (Without
    /// them at its own batch, dp 2 with every expert on both ranks fits since local layers keep
    /// only their own rows: 11.08 GB predicted.)
    func testPlanRejectsLayoutsThatDoNotFitAndPrintsHeadroom() throws {
        let base = ["plan", Harness.root + "/jobs/wide-batch.json", "--cluster", Harness.root + "/cluster/local.json"]
        let fits = try Harness.switchyard(base)
        XCTAssertEqual(fits.status, 0, fits.stderr)
        XCTAssertTrue(fits.stdout.contains("of 12.60 GB per rank (headroom"), fits.stdout)
        let none = try Harness.switchyard(
            base + ["--set", "train.recompute=none", "--set", "train.microBatches=1", "--set", "train.batchSize=960"])
        XCTAssertEqual(none.status, 1, none.stdout)
        XCTAssertTrue(none.stdout.contains("a slot has 12.60 GB (train.recompute, train.microBatches"), none.stdout)
        XCTAssertTrue(none.stderr.contains("no layout fits this cluster"), none.stderr)
    }

    /// calibrate under mpirun writes a cluster file that plan reads.
    func testCalibrateWritesAClusterFilePlanAccepts() throws {
        let ws = Workspace()
        let out = ws.dir + "/measured.json"
        let r = try Harness.mpi(2, ["calibrate", "--out", out], timeout: 120)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("2 rank(s) on 1 node(s)"), r.stdout)
        let j = try JSONValue.parse(String(contentsOfFile: out, encoding: .utf8))
        XCTAssertEqual(j["nodes"]?.arrayValue?.first?["slots"]?.intValue, 2)
        XCTAssertGreaterThan(j["gflopsPerSlot"]?.doubleValue ?? 0, 1)
        XCTAssertGreaterThan(j["intraNodeGBps"]?.doubleValue ?? 0, 0)
        XCTAssertEqual(j["nodes"]?.arrayValue?.first?["cores"]?.intValue, ProcessInfo.processInfo.activeProcessorCount)
        XCTAssertTrue(r.stdout.contains("across (not measured)"), "one node: no inter-node link to measure")
        let plan = try Harness.switchyard(["plan", Harness.root + "/jobs/small.json", "--cluster", out])
        XCTAssertEqual(plan.status, 0, plan.stderr)
        XCTAssertTrue(plan.stdout.contains("best: dp"), plan.stdout)
        // One rank has no link to measure at all: the file still is one plan accepts, and says so.
        let one = try Harness.mpi(1, ["calibrate", "--out", ws.dir + "/one.json"], timeout: 120)
        XCTAssertEqual(one.status, 0, one.stderr)
        XCTAssertTrue(one.stdout.contains("not measured: no two ranks share a node"), one.stdout)
        XCTAssertEqual(
            try Harness.switchyard([
                "plan", Harness.root + "/jobs/small.json", "--cluster", ws.dir + "/one.json", "--world", "1"
            ]).status, 0)
    }

    func testBadClustersAndLoadsAreClearErrors() throws {
        let ws = Workspace()
        let job = Harness.root + "/jobs/small.json"
        let base =
            #""intraNodeGBps": 8, "interNodeGBps": 1, "intraNodeLatencyUs": 2, "interNodeLatencyUs": 30, "#
            + #""gflopsPerSlot": 90"#
        let cases: [([String], String)] = [
            (
                ["--cluster", Harness.root + "/cluster/local.json", "--world", "8"],
                "the cluster has 2 slots but the job needs 8 ranks"
            ),
            (
                [
                    "--cluster",
                    ws.write(
                        "tiny-mem.json",
                        #"{"nodes": [{"name": "a", "slots": 2, "memoryPerSlotGB": 0.01}], "# + base + "}")
                ], "no layout fits"
            ),
            (
                ["--cluster", ws.write("unknown.json", #"{"nodes": [], "speed": 3, "# + base + "}")],
                "speed: unknown field"
            ),
            (
                [
                    "--cluster",
                    ws.write(
                        "node.json",
                        #"{"nodes": [{"name": "a", "slots": 2, "memoryPerSlotGB": 4, "gpus": 8}], "# + base + "}")
                ], "nodes[0].gpus: unknown field"
            ),
            (
                ["--cluster", Harness.root + "/cluster/local.json", "--load", ws.write("load.json", "[[1, 2, 3]]")],
                "the model has 4 MoE layers x 8 experts"
            ),
            (
                [
                    "--cluster",
                    ws.write(
                        "cores.json",
                        #"{"nodes": [{"name": "a", "slots": 2, "memoryPerSlotGB": 4, "cores": 0}], "# + base + "}")
                ], "node a: cores must be >= 1"
            ),
            (
                [
                    "--cluster",
                    ws.write(
                        "cores2.json",
                        #"{"nodes": [{"name": "a", "slots": 2, "memoryPerSlotGB": 4, "cores": "two"}], "# + base + "}")
                ], "nodes[0].cores: not an integer"
            )
        ]
        for (extra, text) in cases {
            let r = try Harness.switchyard(["plan", job] + extra)
            XCTAssertEqual(r.status, 1, "\(extra): \(r.stdout) \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(text), "\(extra): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        }
        XCTAssertEqual(
            try Harness.switchyard(["plan", job, "--cluster", Harness.root + "/cluster/local.json", "--skew", "pareto"])
                .status, 64)
    }
}
