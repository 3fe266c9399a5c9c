import Comm
import Placement
import Tensor
import XCTest

@testable import Model

/// Expert-parallel dispatch and combine over real thread-ranks: tokens are conserved, every row
/// reaches the rank that holds its expert, and combine(dispatch(x)) == x with identity experts.
final class DispatchTests: XCTestCase {
    func check(world: Int, experts e: Int, plan: PlacementPlan, seed: UInt64, nodeOf: [Int]? = nil) throws {
        let c = 3, k = 2
        let nodes = nodeOf ?? [Int](repeating: 0, count: world)
        let results = try LocalCommunicator.run(size: world) { comm -> (sent: Int, received: Int, ok: Bool) in
            let ctx = ParallelContext(comms: try MeshComms(world: comm, dp: world, tp: 1), plan: plan, nodeOf: nodes)
            let layer = MoELayer(ctx: ctx, layer: 0, c: c, f: 4, e: e, k: k)
            let rows = 5 + comm.rank  // ranks hold different row counts
            let s = MoEState(n: rows, e: e, k: k)
            s.rowStart = 0; s.rows = rows
            // Rows encode (rank, row): x[r] = [rank, row, rank * 100 + row].
            let x = FloatBuffer(count: rows * c)
            for r in 0..<rows {
                x[r * c] = Float(comm.rank); x[r * c + 1] = Float(r); x[r * c + 2] = Float(comm.rank * 100 + r)
            }
            // Random top-2 routing with distinct experts; expert e-1 never chosen (no tokens).
            for r in 0..<rows {
                let h = CounterRNG.hash(seed, UInt64(comm.rank), UInt64(r))
                let first = CounterRNG.below(e - 1, h)
                let second = (first + 1 + CounterRNG.below(e - 2, CounterRNG.mix(h))) % (e - 1)
                s.topIndex[r * k] = Int32(first); s.topIndex[r * k + 1] = Int32(second)
                s.topWeight[r * k] = 0.5; s.topWeight[r * k + 1] = 0.5
            }
            let local = plan.localExperts(layer: 0, rank: comm.rank)
            try layer.dispatch(s: s, x: x.base, experts: local, tokenOffset: comm.rank * 1000)
            // Every received row belongs to an expert this rank holds, and is a row some rank sent to it.
            var ok = true
            for (li, ex) in local.enumerated() {
                for i in s.expertStart[li]..<(s.expertStart[li] + s.expertRows[li]) {
                    let src = Int(s.xe.base[i * c]), row = Int(s.xe.base[i * c + 1])
                    let h = CounterRNG.hash(seed, UInt64(src), UInt64(row))
                    let first = CounterRNG.below(e - 1, h)
                    let second = (first + 1 + CounterRNG.below(e - 2, CounterRNG.mix(h))) % (e - 1)
                    if ex != first && ex != second { ok = false }
                    // The row came to the replica its token index picks among those serving src's node.
                    let servers = plan.servers(layer: 0, expert: ex, node: nodes[src], nodeOf: nodes)
                    if servers[(src * 1000 + row) % servers.count] != comm.rank { ok = false }
                    if nodeOf == nil && plan.rank(layer: 0, expert: ex, token: src * 1000 + row) != comm.rank {
                        ok = false
                    }
                    if s.xe.base[i * c + 2] != Float(src * 100 + row) { ok = false }
                }
            }
            // Identity experts: o = xe. Combine must give x back exactly (0.5 x + 0.5 x).
            let received = s.recvRows.reduce(0, +)
            s.o.reserve(received * c)
            s.o.base.update(from: s.xe.base, count: received * c)
            let out = FloatBuffer(count: rows * c)
            let scratch = FloatBuffer(count: 2 * rows * c)
            try layer.combine(s: s, out: out.base, n: rows, gatherScratch: scratch.base)
            if out.toArray() != x.toArray() { ok = false }
            return (rows * k, received, ok)
        }
        XCTAssertEqual(
            results.map { $0.sent }.reduce(0, +), results.map { $0.received }.reduce(0, +),
            "tokens conserved, world \(world)")
        XCTAssertTrue(results.allSatisfy { $0.ok }, "world \(world): a row went astray or combine(dispatch(x)) != x")
    }

    func testDispatchCombineAtOneToFourRanks() throws {
        for world in 1...4 {
            try check(
                world: world, experts: 5, plan: .roundRobin(moeLayers: 1, experts: 5, world: world), seed: UInt64(world)
            )
        }
    }

    func testRankWithoutExpertsAndReplicatedExperts() throws {
        // World 3: rank 1 holds no expert; expert 0 is replicated on ranks 0 and 2.
        let plan = PlacementPlan(layers: [[[0, 2], [0], [2], [2], [0]]])
        try check(world: 3, experts: 5, plan: plan, seed: 11)
        // World 4: every expert replicated twice.
        let plan4 = PlacementPlan(layers: [[[0, 1], [2, 3], [0, 3], [1, 2], [0, 2]]])
        try check(world: 4, experts: 5, plan: plan4, seed: 12)
    }

    /// Two nodes of two ranks: a replicated expert serves each node's tokens from the replica on
    /// that node (none crosses), an expert with replicas on one node only serves everyone.
    func testReplicasServeTheirOwnNode() throws {
        let plan = PlacementPlan(layers: [[[0, 2], [1, 3], [0, 1], [3], [2]]])
        try check(world: 4, experts: 5, plan: plan, seed: 13, nodeOf: [0, 0, 1, 1])
        XCTAssertEqual(plan.servers(layer: 0, expert: 0, node: 1, nodeOf: [0, 0, 1, 1]), [2])
        XCTAssertEqual(
            plan.servers(layer: 0, expert: 2, node: 1, nodeOf: [0, 0, 1, 1]), [0, 1], "no replica on node 1: all")
        XCTAssertEqual(plan.servers(layer: 0, expert: 2, node: 0, nodeOf: [0, 0, 0, 0]), [0, 1])
    }
}
