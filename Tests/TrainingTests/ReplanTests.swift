import Checkpoint
import Comm
import Foundation
import JSON
import Model
import Placement
import Training
import XCTest

/// Online re-placement: under skewed routing a plan is adopted, experts and their AdamW moments
/// migrate, and training continues exactly as a run that resumed from a checkpoint at that step
/// with the new placement.
final class ReplanTests: XCTestCase {
    static let env = RunEnvironment(blasCore: "test", blasThreads: 1, host: "test", cpu: "test")

    /// With whole moments, and with moments split over dp (the migration copies each rank's rows).
    func testReplacementMatchesAResumeWithTheNewPlacementBitwise() throws {
        for sharded in [false, true] { try replacementMatchesResume(shardOptimizer: sharded) }
    }

    /// layoutJob with skewed routing, re-planned at step 10 with a horizon that always pays.
    static func skewedReplanJob(steps: Int, dir: String, name: String) -> (Job, TokenData) {
        var (job, data) = layoutJob(steps: steps)
        job.runsDir = dir
        job.name = name
        job.train.routerSkew = 3
        job.train.evalEvery = 0
        job.replan.every = 10
        job.replan.horizon = 1_000_000
        return (job, data)
    }

    /// A plan whose store would not fit beside the current one is not migrated to: a warning
    /// names the shortfall, the placement stays, training goes on.
    func testNoMigrationWhenTheNewStoreDoesNotFit() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (j, data) = Self.skewedReplanJob(steps: 12, dir: dir, name: "tight")
        let plans = try LocalCommunicator.run(size: 2) { comm -> [[[Int]]] in
            let t = try Trainer(
                job: j, comm: comm, data: data, log: comm.rank == 0 ? try RunLog(job: j) : nil,
                environment: Self.env, say: { _ in })
            t.replanner.freeMemory = { comm.rank == 1 ? 1e3 : 1e12 }  // one node short is enough to keep the plan
            _ = try t.run()
            return t.ctx.plan.layers
        }
        XCTAssertEqual(plans[0], PlacementPlan.roundRobin(moeLayers: 3, experts: 4, world: 2).layers)
        let events = try String(contentsOfFile: "\(dir)/tight/log.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONValue.parse(String($0)) }
        let warning = events.first { $0["kind"] == "placement-memory" }
        XCTAssertNotNil(warning, "a warning names the memory shortfall")
        XCTAssertTrue(warning?["message"]?.stringValue?.contains("GB") ?? false)
        XCTAssertEqual(events.first { $0["event"] == "placement" }?["adopted"], false)
        XCTAssertEqual(events.filter { $0["event"] == "step" }.count, 12, "training went on")
    }

    func replacementMatchesResume(shardOptimizer: Bool) throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var (job, tokens) = layoutJob(steps: 20)
        job.train.shardOptimizer = shardOptimizer
        let data = tokens
        job.runsDir = dir
        job.train.routerSkew = 3
        job.train.evalEvery = 0
        job.replan.every = 10
        job.replan.horizon = 1_000_000
        // A: re-placement at step 10, on 2 ranks.
        var a = job
        a.name = "replan"
        let ja = a
        let runA = try LocalCommunicator.run(size: 2) { comm -> (TrainSummary, [[[Int]]], [UInt32]) in
            let t = try Trainer(
                job: ja, comm: comm, data: data, log: comm.rank == 0 ? try RunLog(job: ja) : nil,
                environment: Self.env, say: { _ in })
            return (try t.run(), t.ctx.plan.layers, Self.state(t))
        }
        let newPlan = runA[0].1
        XCTAssertNotEqual(
            newPlan, PlacementPlan.roundRobin(moeLayers: 3, experts: 4, world: 2).layers,
            "a plan was adopted under skew")
        let log = try String(contentsOfFile: "\(dir)/replan/log.jsonl", encoding: .utf8)
        let decision = try log.split(separator: "\n").map { try JSONValue.parse(String($0)) }.first {
            $0["event"] == "placement"
        }
        XCTAssertEqual(decision?["adopted"], true)
        XCTAssertNotNil(decision?["predictedStepMsBefore"]?.doubleValue)
        XCTAssertNotNil(decision?["predictedMigrationMs"]?.doubleValue)
        // B: the same job without re-placement, checkpoint at step 10, resume with A's new plan.
        var b = job
        b.name = "resumed"
        b.replan.every = 0
        b.checkpoint.every = 10
        let jb = b
        _ = try LocalCommunicator.run(size: 2) { comm -> Int in
            let t = try Trainer(job: jb, comm: comm, data: data, log: nil, environment: Self.env, say: { _ in })
            let calls = Counter()
            _ = try t.run(stopRequested: { calls.next() >= 10 })
            return 0
        }
        var b2 = jb
        b2.placement = newPlan
        let jb2 = b2
        let runB = try LocalCommunicator.run(size: 2) { comm -> (TrainSummary, [UInt32]) in
            let t = try Trainer(job: jb2, comm: comm, data: data, log: nil, environment: Self.env, say: { _ in })
            XCTAssertEqual(try t.resume(.latest)?.step, 10)
            return (try t.run(), Self.state(t))
        }
        XCTAssertEqual(runB[0].0.firstStep, 10)
        XCTAssertEqual(
            runB[0].0.losses.map(\.bitPattern), Array(runA[0].0.losses[10..<20]).map(\.bitPattern),
            "steps 10-19 after migration equal a resume with the new placement, bitwise")
        for r in 0..<2 {
            XCTAssertEqual(runA[r].2.count, runB[r].1.count)
            XCTAssertTrue(
                runA[r].2 == runB[r].1, "rank \(r): every parameter and both moments at step 20 equal, bitwise")
        }
    }

    /// Every float this rank holds (parameters, then both AdamW moments) as bit patterns.
    static func state(_ t: Trainer) -> [UInt32] {
        let s = t.model.store
        return [s.params, s.adamM, s.adamV].flatMap { b in (0..<b.count).map { b.base[$0].bitPattern } }
    }

    /// Checkpoints saved after a re-placement carry the new placement and resume anywhere: a
    /// 2-rank run that migrates at step 10 and saves every 5 steps, resumed at world 1 from its
    /// step-15 checkpoint, continues with the same losses.
    func testCheckpointAfterReplacementResumesAtAnotherWorldSize() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var (job, tokens) = Self.skewedReplanJob(steps: 20, dir: dir, name: "moved")
        let data = tokens
        job.checkpoint.every = 5
        let ja = job
        let runA = try LocalCommunicator.run(size: 2) { comm -> (TrainSummary, [[[Int]]]) in
            let t = try Trainer(job: ja, comm: comm, data: data, log: nil, environment: Self.env, say: { _ in })
            return (try t.run(), t.ctx.plan.layers)
        }
        XCTAssertNotEqual(
            runA[0].1, PlacementPlan.roundRobin(moeLayers: 3, experts: 4, world: 2).layers, "a plan was adopted")
        let manifest = try String(
            contentsOfFile: "\(dir)/moved/checkpoints/step-000000015/manifest.json", encoding: .utf8)
        let placement = try JSONValue.parse(manifest)["placement"]
        XCTAssertEqual(
            placement, PlacementPlan.json(runA[0].1),
            "the checkpoint records the placement in force")
        var b = job
        b.name = "resumed"
        b.replan.every = 0
        b.checkpoint.every = 0
        let jb = b
        let runB = try LocalCommunicator.run(size: 1) { comm -> TrainSummary in
            let t = try Trainer(job: jb, comm: comm, data: data, log: nil, environment: Self.env, say: { _ in })
            XCTAssertEqual(try t.resume(.from("\(dir)/moved/checkpoints/step-000000015"))?.step, 15)
            return try t.run()
        }
        XCTAssertEqual(runB[0].firstStep, 15)
        let worst = zip(runB[0].losses, runA[0].0.losses[15..<20]).map { abs(Double($0 - $1)) / Double($1) }.max() ?? 1
        XCTAssertEqual(runB[0].losses.count, 5)
        XCTAssertLessThan(worst, 1e-5, "steps 15-19 at world 1 after a resume from the migrated run")
    }
}
