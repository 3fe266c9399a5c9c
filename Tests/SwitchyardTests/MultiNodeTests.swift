import Foundation
import XCTest

/// Two "nodes" (network namespaces with their own hostnames, cluster/netns) x two ranks each,
/// over TCP on a private subnet: training matches the single-node run. Skips where namespaces
/// cannot be created (not root, no iproute2).
final class MultiNodeTests: XCTestCase {
    func testTwoNodesByTwoRanksMatchesSingleNode() throws {
        let netns = Harness.root + "/cluster/netns"
        guard try Harness.run(netns, ["check"], timeout: 30).status == 0 else {
            throw XCTSkip("network namespaces are unavailable here (needs root and iproute2); multi-node test skipped")
        }
        guard let mpirun = Harness.mpirun else { throw XCTSkip("mpirun not installed") }
        let up = try Harness.run(netns, ["up", "2"], timeout: 60)
        XCTAssertEqual(up.status, 0, up.stderr)
        defer { _ = try? Harness.run(netns, ["down"], timeout: 60) }
        let ws = Workspace()
        let local = try Harness.mpi(1, ws.tinyArgs(steps: 20, extra: ["--set", "name=single"]), cwd: ws.dir)
        XCTAssertEqual(local.status, 0, local.stderr)
        let args =
            [
                "run", "--", mpirun, "--hostfile", Harness.root + "/cluster/netns.hostfile",
                "--mca", "plm_rsh_agent", Harness.root + "/cluster/netns-agent",
                "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "10.77.0.0/24",
                "--mca", "oob_tcp_if_include", "10.77.0.0/24", "--mca", "mpi_yield_when_idle", "1",
                "-x", "OPENBLAS_NUM_THREADS=1", "-np", "4", Harness.binary
            ]
            + ws.tinyArgs(steps: 20, extra: ["--set", "name=nodes", "--set", "layout.tp=2"])
        let r = try Harness.run(netns, args, cwd: ws.dir, timeout: 240)
        XCTAssertFalse(r.timedOut, "multi-node run timed out")
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("on 4 rank(s) (dp 2 x tp 2)"), r.stdout)
        let start = try String(contentsOfFile: "\(ws.dir)/runs/nodes/log.jsonl", encoding: .utf8).split(
            separator: "\n")[0]
        XCTAssertTrue(start.contains("\"world\":4"), String(start))
        let a = try ws.lossBits(run: "single"), b = try ws.lossBits(run: "nodes")
        XCTAssertEqual(a.count, 20)
        XCTAssertEqual(b.count, 20)
        let worst = zip(a, b).map {
            abs(Double(Float(bitPattern: $0) - Float(bitPattern: $1))) / Double(Float(bitPattern: $0))
        }.max()!
        XCTAssertLessThan(worst, 1e-4, "2 nodes x 2 ranks vs single node: max relative loss difference \(worst)")
        print("multi-node (2 netns nodes x 2 ranks, dp2 x tp2): max relative loss difference \(worst) vs 1 rank")
        // dp 4 with experts replicated on both nodes: each replica serves its own node's tokens
        // (the ranks found their nodes by host name), and the losses still match.
        let rep = try Harness.run(
            netns,
            Array(args.dropLast(ws.tinyArgs(steps: 20, extra: ["--set", "name=nodes", "--set", "layout.tp=2"]).count))
                + ws.tinyArgs(
                    steps: 20, extra: ["--set", "name=replicas", "--set", "placement=[[0,2],[1,3],[0,3],[1]]"]),
            cwd: ws.dir, timeout: 240)
        XCTAssertEqual(rep.status, 0, rep.stdout + rep.stderr)
        let repStart = try String(contentsOfFile: "\(ws.dir)/runs/replicas/log.jsonl", encoding: .utf8).split(
            separator: "\n")[0]
        XCTAssertTrue(repStart.contains("\"nodeOfRank\":[0,0,1,1]"), String(repStart))
        let c = try ws.lossBits(run: "replicas")
        XCTAssertEqual(c.count, 20)
        let worstRep = zip(a, c).map {
            abs(Double(Float(bitPattern: $0) - Float(bitPattern: $1))) / Double(Float(bitPattern: $0))
        }.max()!
        XCTAssertLessThan(
            worstRep, 1e-4, "2 nodes, node-local replicas vs single node: max relative loss difference \(worstRep)")
        print("multi-node, dp4 with node-local replicas: max relative loss difference \(worstRep) vs 1 rank")
        // calibrate sees two nodes (by hostname) and measures the link between them.
        let cal = try Harness.run(
            netns,
            Array(args.prefix(while: { $0 != Harness.binary })) + [
                Harness.binary, "calibrate", "--out", ws.dir + "/cal.json"
            ],
            cwd: ws.dir, timeout: 120)
        XCTAssertEqual(cal.status, 0, cal.stdout + cal.stderr)
        XCTAssertTrue(cal.stdout.contains("4 rank(s) on 2 node(s)"), cal.stdout)
    }
}
