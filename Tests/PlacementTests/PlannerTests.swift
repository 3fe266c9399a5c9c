import Foundation
import Placement
import XCTest

final class PlannerTests: XCTestCase {
    static let shape = MoEShape(
        nEmbd: 256, ffHidden: 512, nExpert: 16, moeLayers: 2, denseFlopsPerToken: 1e7, baseBytesPerRank: 50e6)
    static func cluster(nodes: Int = 2, slots: Int = 2, gb: Double = 16) -> Cluster {
        Cluster(
            nodes: (0..<nodes).map { ClusterNode(name: "n\($0)", slots: slots, memoryPerSlotGB: gb) },
            intraNodeGBps: 10,
            interNodeGBps: 1, intraNodeLatencyUs: 5, interNodeLatencyUs: 50, gflopsPerSlot: 100)
    }
    static func zipf(_ s: Double, experts: Int, total: Double) -> [Double] {
        let w = (0..<experts).map { 1 / pow(Double($0 + 1), s) }
        let z = w.reduce(0, +)
        return w.map { total * $0 / z }
    }

    func testPlansPlaceEveryExpertOnDistinctRanksWithinMemoryDeterministically() throws {
        let load = [Self.zipf(1.2, experts: 16, total: 4096), Self.zipf(0.5, experts: 16, total: 4096)]
        let c = Self.cluster()
        let p = try Planner.plan(load: load, shape: Self.shape, cluster: c, world: 4)
        XCTAssertNoThrow(
            try p.validate(moeLayers: 2, experts: 16, world: 4),
            "every expert on >= 1 rank, replicas distinct, ranks in range")
        XCTAssertEqual(try Planner.plan(load: load, shape: Self.shape, cluster: c, world: 4), p, "deterministic")
        XCTAssertGreaterThan(p.layers[0][0].count, 1, "the hottest expert of a Zipf(1.2) layer is replicated")
        let pred = Planner.predict(
            plan: p, load: load, tokens: 2048, shape: Self.shape, cluster: c, nodeOf: try c.nodeOfRank(world: 4))
        for b in pred.rankBytes { XCTAssertLessThanOrEqual(b, 16e9) }
        // Tight memory: each rank fits base + 9 experts; 32 experts need 4 ranks x 8 -> few replicas.
        let tight = Self.cluster(gb: (50e6 + 9 * Self.shape.bytesPerExpert) / 1e9)
        let q = try Planner.plan(load: load, shape: Self.shape, cluster: tight, world: 4)
        let perRank = (0..<4).map { r in q.layers.flatMap { $0 }.filter { $0.contains(r) }.count }
        XCTAssertTrue(perRank.allSatisfy { $0 <= 9 }, "memory limit respected: \(perRank)")
    }

    /// Routing that swings from step to step: each step one of two experts takes 90% of a layer's
    /// tokens. Balanced for the mean load, one expert per rank waits every step on the rank with
    /// that step's hot expert; compared over the single steps, every expert on every rank (no
    /// exchange, a small gradient allreduce) wins, where each rank has room for all of them.
    func testSwingingStepLoadsPutEveryExpertOnEveryRank() throws {
        let shape = MoEShape(
            nEmbd: 256, ffHidden: 512, nExpert: 2, moeLayers: 2, denseFlopsPerToken: 1e7, baseBytesPerRank: 50e6)
        func cluster(gb: Double) -> Cluster {
            Cluster(
                nodes: [ClusterNode(name: "n0", slots: 2, memoryPerSlotGB: gb)], intraNodeGBps: 10, interNodeGBps: 1,
                intraNodeLatencyUs: 5, interNodeLatencyUs: 50, gflopsPerSlot: 100)
        }
        let mean: [[Double]] = [[200, 200], [200, 200]]
        let steps: [[[Double]]] = [[[360, 40], [360, 40]], [[40, 360], [40, 360]]]
        let everywhere = PlacementPlan.everywhere(moeLayers: 2, experts: 2, world: 2)
        let split = try Planner.plan(load: mean, shape: shape, cluster: cluster(gb: 16), world: 2)
        XCTAssertTrue(
            split.layers.allSatisfy { $0.allSatisfy { $0.count == 1 } },
            "for the mean load the exchange costs less than the allreduce: \(split.layers)")
        let swung = try Planner.plan(load: mean, shape: shape, cluster: cluster(gb: 16), world: 2, stepLoads: steps)
        XCTAssertEqual(swung, everywhere)
        func seconds(_ p: PlacementPlan) -> Double {
            Planner.expectedStepSeconds(
                plan: p, load: mean, stepLoads: steps, tokens: 0, shape: shape, cluster: cluster(gb: 16),
                nodeOf: [0, 0])
        }
        XCTAssertLessThan(seconds(everywhere), 0.8 * seconds(split), "the MoE layers alone (tokens 0: no dense share)")
        // Room for three experts a rank (four are needed on each): the split placement.
        let tight = cluster(gb: (50e6 + 3.5 * shape.bytesPerExpert) / 1e9)
        let q = try Planner.plan(load: mean, shape: shape, cluster: tight, world: 2, stepLoads: steps)
        XCTAssertNotEqual(q, everywhere)
        // Nor with fewer replicas allowed than ranks.
        let capped = try Planner.plan(
            load: mean, shape: shape, cluster: cluster(gb: 16), world: 2, maxReplicas: 1, stepLoads: steps)
        XCTAssertNotEqual(capped, everywhere)
    }

    func testZipfLoadOn4RanksIsWithinTenPercentOfTheIdealMean() throws {
        let load = [Self.zipf(1.2, experts: 16, total: 4096)]
        var shape = Self.shape
        shape.moeLayers = 1
        let c = Self.cluster()
        let p = try Planner.plan(load: load, shape: shape, cluster: c, world: 4)
        let pred = Planner.predict(
            plan: p, load: load, tokens: 2048, shape: shape, cluster: c, nodeOf: try c.nodeOfRank(world: 4))
        let mean = 4096.0 / 4, worst = pred.rankLoad.max()!
        let roundRobin = Planner.predict(
            plan: .roundRobin(moeLayers: 1, experts: 16, world: 4), load: load, tokens: 2048, shape: shape, cluster: c,
            nodeOf: try c.nodeOfRank(world: 4)
        ).rankLoad.max()!
        print(
            "Zipf(1.2), 16 experts, 4 ranks: max rank load \(worst) vs ideal mean \(mean) "
                + "(+\(String(format: "%.1f", 100 * (worst / mean - 1)))%); "
                + "round-robin: \(roundRobin)"
        )
        XCTAssertLessThanOrEqual(worst, 1.10 * mean)
        let rr = Planner.predict(
            plan: .roundRobin(moeLayers: 1, experts: 16, world: 4), load: load, tokens: 2048, shape: shape, cluster: c,
            nodeOf: try c.nodeOfRank(world: 4))
        XCTAssertLessThan(pred.stepSeconds, rr.stepSeconds, "the plan beats round-robin under skew")
    }

    /// Each MoE layer's alltoallv is a barrier: the step pays every layer's slowest rank, so two
    /// layers with opposite imbalances cost twice the heavy side, not heavy + light.
    func testStepTimeSumsTheSlowestRankOfEachLayer() throws {
        let shape = MoEShape(
            nEmbd: 256, ffHidden: 512, nExpert: 2, moeLayers: 2, denseFlopsPerToken: 1e6, baseBytesPerRank: 0)
        let c = Cluster(
            nodes: [ClusterNode(name: "n", slots: 2, memoryPerSlotGB: 16)], intraNodeGBps: 1e9, interNodeGBps: 1e9,
            intraNodeLatencyUs: 0, interNodeLatencyUs: 0, gflopsPerSlot: 100)
        let load: [[Double]] = [[3000, 1000], [1000, 3000]]
        let plan = PlacementPlan(layers: [[[0], [1]], [[0], [1]]])
        let p = Planner.predict(plan: plan, load: load, tokens: 1000, shape: shape, cluster: c, nodeOf: [0, 0])
        let dense = 1e6 * 1000 / 2 / 100e9, perRow = shape.expertFlopsPerAssignment / 100e9
        XCTAssertEqual(p.stepSeconds, dense + 3000 * perRow + 3000 * perRow, accuracy: 1e-9)
        XCTAssertEqual(p.rankSeconds[0], dense + 4000 * perRow, accuracy: 1e-9, "a rank's own work excludes waiting")
        XCTAssertEqual(p.rankLoad, [4000, 4000])
        // The planner balances each layer on its own: 3000 | 1000 cannot be split without replicas,
        // with one replica of the hot expert it can (2000 | 2000 in both layers).
        let q = try Planner.plan(load: load, shape: shape, cluster: c, world: 2)
        let pq = Planner.predict(plan: q, load: load, tokens: 1000, shape: shape, cluster: c, nodeOf: [0, 0])
        let sync = 2 * 0.5 * 2 * Planner.replicaGradientBytes(shape) / 1e18
        XCTAssertEqual(q.layers, [[[0, 1], [0, 1]], [[0, 1], [0, 1]]])
        XCTAssertEqual(
            pq.stepSeconds, dense + 2000 * perRow + 2000 * perRow + 4 * sync, accuracy: 1e-9,
            "4 replicated experts: one allreduce")
        // Where compute is cheap and experts are big, the replicas' gradient allreduce (2CF floats
        // each) costs more than the alltoallv and compute they save: no replicas.
        var fast = c, big = shape
        fast.intraNodeGBps = 1
        fast.gflopsPerSlot = 1e6
        big.ffHidden = 4096
        let r = try Planner.plan(load: load, shape: big, cluster: fast, world: 2)
        XCTAssertTrue(r.layers.allSatisfy { $0.allSatisfy { $0.count == 1 } }, "\(r.layers)")
    }

    /// Two nodes: a replica serves its own node's tokens, so an expert replicated on both nodes
    /// sends nothing across; the planner puts a hot expert's replicas on different nodes.
    func testReplicasKeepTrafficInsideTheirNode() throws {
        let shape = MoEShape(
            nEmbd: 256, ffHidden: 512, nExpert: 4, moeLayers: 1, denseFlopsPerToken: 0, baseBytesPerRank: 0)
        let c = Self.cluster()  // 2 nodes x 2 slots, 10 GB/s inside, 1 GB/s across
        let nodeOf = try c.nodeOfRank(world: 4)
        XCTAssertEqual(nodeOf, [0, 0, 1, 1])
        let load: [[Double]] = [[4000, 0, 0, 0]]
        let rowBytes = 16.0 * 256, perRow = shape.expertFlopsPerAssignment / 100e9
        let spread = PlacementPlan(layers: [[[0, 2], [1], [3], [3]]])
        let p = Planner.predict(plan: spread, load: load, tokens: 0, shape: shape, cluster: c, nodeOf: nodeOf)
        // Rank 0 serves node 0's 2000 tokens (1000 its own, 1000 from rank 1 inside the node).
        XCTAssertEqual(p.rankLoad, [2000, 0, 2000, 0])
        let sync = 2 * 0.75 * Planner.replicaGradientBytes(shape) / 1e9 + 2 * 50e-6
        XCTAssertEqual(p.stepSeconds, 4 * 50e-6 + 2000 * perRow + 1000 * rowBytes / 10e9 + sync, accuracy: 1e-9)
        let together = PlacementPlan(layers: [[[0, 1], [2], [3], [3]]])
        let q = Planner.predict(plan: together, load: load, tokens: 0, shape: shape, cluster: c, nodeOf: nodeOf)
        XCTAssertGreaterThan(q.stepSeconds, p.stepSeconds, "replicas on one node: node 1's tokens cross the slow link")
        // Expert 0 needs 2 replicas for a fair share (1000 each): one per node, not ranks 0 and 1.
        let plan = try Planner.plan(load: [[2000, 1000, 500, 500]], shape: shape, cluster: c, world: 4)
        XCTAssertEqual(plan.layers[0][0].count, 2, "\(plan.layers)")
        XCTAssertEqual(
            Set(plan.layers[0][0].map { nodeOf[$0] }), [0, 1],
            "the hot expert has a replica on each node: \(plan.layers)")
    }

    /// Four ranks on a node with two cores: busy ranks share the cores (processor sharing), so
    /// the dense part takes twice as long and a layer takes max(largest rank, all work / 2).
    func testRanksShareANodesCores() throws {
        let shape = MoEShape(
            nEmbd: 256, ffHidden: 512, nExpert: 4, moeLayers: 1, denseFlopsPerToken: 1e6, baseBytesPerRank: 0)
        var c = Cluster(
            nodes: [ClusterNode(name: "n", slots: 4, memoryPerSlotGB: 16, cores: 2)], intraNodeGBps: 1e9,
            interNodeGBps: 1e9,
            intraNodeLatencyUs: 0, interNodeLatencyUs: 0, gflopsPerSlot: 100)
        let dense = 1e6 * 4000 / 4 / 100e9, perRow = shape.expertFlopsPerAssignment / 100e9
        let spread = PlacementPlan(layers: [[[0], [1], [2], [3]]])
        let even = Planner.predict(
            plan: spread, load: [[1000, 1000, 1000, 1000]], tokens: 4000, shape: shape, cluster: c, nodeOf: [0, 0, 0, 0]
        )
        XCTAssertEqual(even.stepSeconds, 2 * dense + 2 * 1000 * perRow, accuracy: 1e-9)
        let one = Planner.predict(
            plan: spread, load: [[4000, 0, 0, 0]], tokens: 4000, shape: shape, cluster: c, nodeOf: [0, 0, 0, 0])
        XCTAssertEqual(one.stepSeconds, 2 * dense + 4000 * perRow, accuracy: 1e-9, "one busy rank has a core to itself")
        c.nodes[0].cores = nil
        let own = Planner.predict(
            plan: spread, load: [[1000, 1000, 1000, 1000]], tokens: 4000, shape: shape, cluster: c, nodeOf: [0, 0, 0, 0]
        )
        XCTAssertEqual(own.stepSeconds, dense + 1000 * perRow, accuracy: 1e-9, "a core per rank by default")
    }

    func testUniformLoadMovesNothing() throws {
        let load = [[Double]](repeating: [Double](repeating: 256, count: 16), count: 2)
        let c = Self.cluster()
        let current = PlacementPlan.roundRobin(moeLayers: 2, experts: 16, world: 4)
        let proposed = try Planner.plan(load: load, shape: Self.shape, cluster: c, world: 4)
        let d = Planner.shouldAdopt(
            current: current, proposed: proposed, load: load, tokens: 2048, shape: Self.shape, cluster: c,
            nodeOf: try c.nodeOfRank(world: 4), horizon: 100)
        XCTAssertFalse(d.adopt, "gain \(d.gainSeconds) s vs migration \(d.migrationSeconds) s")
        // Under skew, a long enough horizon pays for the move.
        let skew = [Self.zipf(1.2, experts: 16, total: 4096), Self.zipf(1.2, experts: 16, total: 4096)]
        let better = try Planner.plan(load: skew, shape: Self.shape, cluster: c, world: 4)
        let yes = Planner.shouldAdopt(
            current: current, proposed: better, load: skew, tokens: 2048, shape: Self.shape, cluster: c,
            nodeOf: try c.nodeOfRank(world: 4), horizon: 10_000)
        XCTAssertTrue(yes.adopt)
        XCTAssertEqual(
            yes.migrationSeconds, Planner.migrationBytes(from: current, to: better, shape: Self.shape) / 1e9,
            accuracy: 1e-12,
            "moved bytes over the slower link (1 GB/s)")
        // Rebuilding every rank's store is part of a migration's cost: a large one does not pay.
        let costly = Planner.shouldAdopt(
            current: current, proposed: better, load: skew, tokens: 2048, shape: Self.shape, cluster: c,
            nodeOf: try c.nodeOfRank(world: 4), horizon: 10_000, rebuildBytes: 1e15)
        XCTAssertFalse(costly.adopt)
        XCTAssertEqual(costly.migrationSeconds, yes.migrationSeconds + 1e6, accuracy: 1e-3)
    }

    func testImpossibleClustersAreClearErrors() {
        XCTAssertThrowsError(
            try Planner.plan(load: [], shape: Self.shape, cluster: Self.cluster(nodes: 1, slots: 2), world: 4)
        ) {
            XCTAssertTrue("\($0)".contains("the cluster has 2 slots but the job needs 4 ranks"), "\($0)")
        }
        XCTAssertThrowsError(try Planner.plan(load: [], shape: Self.shape, cluster: Self.cluster(gb: 0.06), world: 4)) {
            XCTAssertTrue("\($0)".contains("room for") && "\($0)".contains("experts"), "\($0)")
        }
    }
}

/// The measured load: an exponential moving average per expert per layer.
final class LoadStatsTests: XCTestCase {
    func testMovingAverageTakesTheFirstSampleAndWeighsLaterOnes() {
        var s = LoadStats(decay: 0.75)
        XCTAssertEqual(s.mean, [])
        s.add([[100, 0], [40, 60]])
        XCTAssertEqual(s.mean, [[100, 0], [40, 60]], "the first sample as is, not pulled toward 0")
        s.add([[0, 100], [40, 60]])
        XCTAssertEqual(s.mean, [[75, 25], [40, 60]])
        s.add([[0, 100], [40, 60]])
        XCTAssertEqual(s.mean[0][0], 56.25, accuracy: 1e-12)
        XCTAssertEqual(s.samples, 3)
        s.add([[1, 2, 3]])
        XCTAssertEqual(s.mean, [[1, 2, 3]], "another shape restarts")
        var last = LoadStats(decay: 0)
        last.add([[5, 5]]); last.add([[9, 1]])
        XCTAssertEqual(last.mean, [[9, 1]], "decay 0 keeps only the last step")
        var window = LoadStats(decay: 0.5, keep: 2)
        for c in [[[1, 0]], [[2, 0]], [[3, 0]]] { window.add(c) }
        XCTAssertEqual(window.recent, [[[2, 0]], [[3, 0]]], "the last `keep` steps as they were, oldest first")
        window.add([[1], [2]])
        XCTAssertEqual(window.recent, [[[1], [2]]], "another shape restarts the window too")
    }
}
