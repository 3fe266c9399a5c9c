import Placement
import XCTest

/// Choosing rank labels so that little moves: ranks of one node are interchangeable.
final class PlannerMigrationTests: XCTestCase {
    func testRelabellingWithinANodeKeepsExpertsWhereTheyAre() throws {
        let shape = PlannerTests.shape
        let c = PlannerTests.cluster()  // 2 nodes x 2 slots
        let nodeOf = try c.nodeOfRank(world: 4)
        let load = [PlannerTests.zipf(1.2, experts: 16, total: 4096), PlannerTests.zipf(0.8, experts: 16, total: 4096)]
        let fresh = try Planner.plan(load: load, shape: shape, cluster: c, world: 4)
        // The same plan with ranks 0 and 1 (one node) swapped: relabelling finds it, nothing moves.
        let swapped = PlacementPlan(layers: fresh.layers.map { $0.map { $0.map { [1, 0, 2, 3][$0] }.sorted() } })
        XCTAssertNotEqual(swapped, fresh)
        let kept = try Planner.plan(load: load, shape: shape, cluster: c, world: 4, current: swapped)
        XCTAssertEqual(kept, swapped)
        XCTAssertEqual(Planner.migrationBytes(from: swapped, to: kept, shape: shape), 0)
        XCTAssertEqual(
            Planner.predict(plan: kept, load: load, tokens: 2048, shape: shape, cluster: c, nodeOf: nodeOf).stepSeconds,
            Planner.predict(plan: fresh, load: load, tokens: 2048, shape: shape, cluster: c, nodeOf: nodeOf)
                .stepSeconds,
            accuracy: 1e-12, "relabelling inside a node changes no prediction")
        // Ranks 0 and 2 are on different nodes: never exchanged, every expert keeps its nodes.
        let across = PlacementPlan(layers: fresh.layers.map { $0.map { $0.map { [2, 1, 0, 3][$0] }.sorted() } })
        let r = Planner.keepingRanks(fresh, current: across, nodeOf: nodeOf, slots: [100, 100, 100, 100])
        for (a, b) in zip(r.layers.joined(), fresh.layers.joined()) {
            XCTAssertEqual(a.map { nodeOf[$0] }.sorted(), b.map { nodeOf[$0] }.sorted())
        }
        XCTAssertLessThanOrEqual(
            Planner.migrationBytes(from: across, to: r, shape: shape),
            Planner.migrationBytes(from: across, to: fresh, shape: shape))
        // A relabelling that would overfill a rank's memory is not taken.
        let uneven = PlacementPlan(layers: [[[0], [0], [0], [1]], [[1], [1], [1], [0]]])
        let old = PlacementPlan(layers: [[[1], [1], [1], [0]], [[1], [1], [1], [0]]])
        XCTAssertEqual(
            Planner.keepingRanks(uneven, current: old, nodeOf: [0, 0], slots: [4, 4]), uneven, "rank 1 would hold 6 > 4"
        )
        XCTAssertEqual(Planner.keepingRanks(uneven, current: old, nodeOf: [0, 0], slots: [8, 8]), old)
    }
}
