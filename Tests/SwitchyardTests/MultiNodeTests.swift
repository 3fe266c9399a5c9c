import Foundation
import JSON
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
        try checkOverlappedReduction(netns, args, ws: ws, reference: b)
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

    /// train.overlapReduce across the two nodes (MPI_Iallreduce on the dp pairs and the 4-rank world),
    /// its requests tested between work items and, with SWITCHYARD_MPI_PROGRESS=thread, by a progress
    /// thread: the same losses as the run without, bit for bit.
    func checkOverlappedReduction(_ netns: String, _ args: [String], ws: Workspace, reference: [UInt32]) throws {
        for (name, progress) in [("overlap", "poll"), ("overlap-thread", "thread")] {
            let run = args.map { $0 == "name=nodes" ? "name=\(name)" : $0 } + ["--set", "train.overlapReduce=true"]
            let withEnv =
                Array(run.prefix(while: { $0 != "-np" })) + ["-x", "SWITCHYARD_MPI_PROGRESS=\(progress)"]
                + Array(run.drop(while: { $0 != "-np" }))
            let r = try Harness.run(netns, withEnv, cwd: ws.dir, timeout: 240)
            XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
            XCTAssertEqual(try ws.lossBits(run: name), reference, "\(name): overlapped sums changed the losses")
        }
    }

    /// mpirun over the netns cluster with `hostfile`: its options up to the program.
    static func mpirunOver(_ hostfile: String, np: Int, _ mpirun: String) -> [String] {
        [
            mpirun, "--hostfile", hostfile, "--mca", "plm_rsh_agent", Harness.root + "/cluster/netns-agent",
            "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "10.77.0.0/24",
            "--mca", "oob_tcp_if_include", "10.77.0.0/24", "--mca", "mpi_yield_when_idle", "1",
            "-x", "OPENBLAS_NUM_THREADS=1", "-np", String(np), Harness.binary
        ]
    }

    /// Two netns nodes up (the caller takes them down): the netns script and mpirun; skips where
    /// namespaces or mpirun are missing.
    static func twoNodes(_ test: String) throws -> (netns: String, mpirun: String) {
        let netns = Harness.root + "/cluster/netns"
        guard try Harness.run(netns, ["check"], timeout: 30).status == 0 else {
            throw XCTSkip("network namespaces are unavailable here (needs root and iproute2); \(test) test skipped")
        }
        guard let mpirun = Harness.mpirun else { throw XCTSkip("mpirun not installed") }
        XCTAssertEqual(try Harness.run(netns, ["up", "2"], timeout: 60).status, 0)
        return (netns, mpirun)
    }

    /// Starts `command` on node 0 with stdout and stderr into a file; the process and the file.
    static func startOnNode0(_ netns: String, _ command: [String], cwd: String) throws -> (Process, String) {
        let p = Harness.process(netns, ["run", "--"] + command, cwd: cwd)
        let out = cwd + "/supervise.out"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        p.standardError = p.standardOutput
        try p.run()
        return (p, out)
    }

    /// Waits for supervise to end (stopping it after `within` seconds), expects exit 0, and
    /// returns what it printed.
    static func finished(_ p: Process, _ out: String, within seconds: Double) -> String {
        XCTAssertTrue(Harness.waitUntil(seconds: seconds) { !p.isRunning }, "supervise finishes")
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        let said = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        XCTAssertEqual(p.terminationStatus, 0, said)
        return said
    }

    /// Losses of the step events after the last start event of a run's log (the last launch).
    static func lastLaunch(_ log: String) throws -> (start: JSONValue, losses: [Int: UInt32], restarts: [JSONValue]) {
        let events = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").compactMap {
            try? JSONValue.parse(String($0))
        }
        let starts = events.indices.filter { events[$0]["event"]?.stringValue == "start" }
        var losses: [Int: UInt32] = [:]
        for e in events[(starts.last ?? 0)...] where e["event"]?.stringValue == "step" {
            losses[e["step"]!.intValue!] = Float(e["loss"]!.doubleValue!).bitPattern
        }
        return (events[starts.last ?? 0], losses, events.filter { $0["event"]?.stringValue == "restart" })
    }

    /// Elastic relaunch: 4 ranks on 2 netns nodes; node 1 dies for good (its processes killed, its
    /// namespace deleted). supervise --min-ranks 2 probes the hostfile's hosts, relaunches at
    /// world 2 on node 0 (the checkpoint reshards: dp 2 x tp 2 -> dp 1 x tp 2), and the run
    /// completes; its losses after the restart equal a world-2 resume from the same checkpoint bitwise.
    func testElasticRelaunchOnTheRemainingNode() throws {
        let (netns, mpirun) = try Self.twoNodes("elastic")
        defer { _ = try? Harness.run(netns, ["down"], timeout: 60) }
        let ws = Workspace()
        let options = [
            "--set", "layout.tp=2", "--set", "checkpoint.every=10", "--set", "checkpoint.keep=10",
            "--set", "timeouts.collectiveSeconds=10", "--set", "train.evalEvery=0"
        ]
        let train = ws.tinyArgs(steps: 60, extra: ["--set", "name=elastic"] + options)
        let command =
            [Harness.binary, "supervise", "--min-ranks", "2", "--backoff", "1", "--probe-timeout", "20", "--"]
            + Self.mpirunOver(Harness.root + "/cluster/netns.hostfile", np: 4, mpirun) + train
        let (p, out) = try Self.startOnNode0(netns, command, cwd: ws.dir)
        let log = ws.dir + "/runs/elastic/log.jsonl"
        XCTAssertTrue(Harness.waitUntil(seconds: 240) { Harness.file(log, contains: "\"step\":25,") }, "step 25")
        // Node 1 dies for good: everything in its namespace is killed, and the namespace is gone.
        let pids = try Harness.run("/usr/sbin/ip", ["netns", "pids", "sy-node1"]).stdout.split(separator: "\n")
        XCTAssertFalse(pids.isEmpty, "ranks run on node 1")
        for pid in pids.compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
        XCTAssertEqual(try Harness.run("/usr/sbin/ip", ["netns", "del", "sy-node1"]).status, 0)
        let said = Self.finished(p, out, within: 400)
        XCTAssertTrue(said.contains("relaunching at world 2 on sy-node0; not answering: sy-node1"), said)
        let elastic = try Self.lastLaunch(log)
        XCTAssertEqual(elastic.restarts.last?["world"]?.intValue, 2)
        XCTAssertEqual(elastic.restarts.last?["lostHosts"], ["sy-node1"])
        XCTAssertEqual(elastic.start["world"]?.intValue, 2, "the last launch runs at world 2")
        guard let from = elastic.start["resumedFrom"]?["path"]?.stringValue,
            let step = elastic.start["resumedFrom"]?["step"]?.intValue
        else { return XCTFail("the relaunch resumed from no checkpoint") }
        XCTAssertEqual(elastic.losses.keys.sorted(), Array(step..<60), "the relaunch ran the rest")
        // The same checkpoint resumed at world 2 on node 0 by hand: the same bits.
        let node0 = ws.write("node0.hostfile", "sy-node0 slots=2\n")
        let check = try Harness.run(
            netns,
            ["run", "--"] + Self.mpirunOver(node0, np: 2, mpirun)
                + ws.tinyArgs(steps: 60, extra: ["--set", "name=check", "--resume-from", from] + options),
            cwd: ws.dir, timeout: 300)
        XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        let byHand = try Self.lastLaunch(ws.dir + "/runs/check/log.jsonl")
        XCTAssertEqual(byHand.losses, elastic.losses, "elastic relaunch vs world-2 resume of \(from): bitwise")
        print("elastic relaunch: 4 ranks on 2 nodes -> 2 on sy-node0 from step \(step); losses bitwise as a resume")
    }

    /// A cut link (node 1's interface down mid-run): every rank gives up at the collective
    /// deadline and the launcher, which would wait forever for the unreachable node, is stopped
    /// after its grace, so the job ends within deadline + 10 s. With the link back, supervise's
    /// relaunch resumes from the newest checkpoint and the run completes.
    func testCutLinkEndsTheJobAtTheDeadlineAndSuperviseResumes() throws {
        let (netns, mpirun) = try Self.twoNodes("cut-link")
        defer { _ = try? Harness.run(netns, ["down"], timeout: 60) }
        let ws = Workspace()
        let train = ws.tinyArgs(
            steps: 50,
            extra: [
                "--set", "name=cut", "--set", "layout.tp=2", "--set", "checkpoint.every=10",
                "--set", "timeouts.collectiveSeconds=5", "--set", "train.evalEvery=0"
            ])
        let command =
            [Harness.binary, "supervise", "--backoff", "8", "--"]
            + Self.mpirunOver(Harness.root + "/cluster/netns.hostfile", np: 4, mpirun) + train
        let (p, out) = try Self.startOnNode0(netns, command, cwd: ws.dir)
        let log = ws.dir + "/runs/cut/log.jsonl"
        XCTAssertTrue(Harness.waitUntil(seconds: 240) { Harness.file(log, contains: "\"step\":25,") }, "step 25")
        let ip = "/usr/sbin/ip"
        XCTAssertEqual(try Harness.run(ip, ["-n", "sy-node1", "link", "set", "syv1", "down"]).status, 0)
        let cut = Date()
        let ended = Harness.waitUntil(seconds: 40) { Harness.file(out, contains: "restarting in") }
        let detect = Date().timeIntervalSince(cut)
        XCTAssertTrue(ended, "the job ended after the cut")
        XCTAssertLessThan(detect, 5 + 10, "ended \(detect) s after the cut (deadline 5 s)")
        XCTAssertEqual(try Harness.run(ip, ["-n", "sy-node1", "link", "set", "syv1", "up"]).status, 0)
        let said = Self.finished(p, out, within: 300)
        // Node 0's ranks name node 1's two ranks, silent behind the cut link.
        XCTAssertTrue(said.contains("no progress from rank(s) 2, 3 in MPI_"), said)
        XCTAssertTrue(said.contains("rank 3 on sy-node1: no heartbeat for"), said)
        let last = try Self.lastLaunch(log)
        XCTAssertEqual(last.restarts.count, 1)
        XCTAssertEqual(last.losses.keys.max(), 49, "the relaunch completed the run")
        let seconds = String(format: "%.1f", detect)
        print("cut link: job ended \(seconds) s after the cut (deadline 5 s); resumed and completed")
    }
}
