import Comm
import Placement
import Tensor
import XCTest

@testable import Model

/// Expert-parallel dispatch and combine over real thread-ranks: tokens are conserved, every row
/// reaches the rank that holds its expert, and combine(dispatch(x)) == x with identity experts.
final class DispatchTests: XCTestCase {
    /// What went wrong on one rank, by kind (counts of rows).
    struct Problems {
        var rows = (sent: 0, received: 0)
        var wrongExpert = 0  // a row for an expert its token did not choose
        var wrongReplica = 0  // a row at a replica other than the one its token index picks
        var wrongPayload = 0  // a row whose contents changed on the way
        var combineMismatch = 0  // rows where combine(dispatch(x)) != x with identity experts
    }

    /// Random top-2 routing with distinct experts; expert e-1 is never chosen (no tokens).
    static func route(seed: UInt64, rank: Int, row: Int, experts e: Int) -> (Int, Int) {
        let h = CounterRNG.hash(seed, UInt64(rank), UInt64(row))
        let first = CounterRNG.below(e - 1, h)
        return (first, (first + 1 + CounterRNG.below(e - 2, CounterRNG.mix(h))) % (e - 1))
    }

    /// A layer of E experts of width c (hidden 4) over `state`, for dispatch and combine alone:
    /// its weights are never read (router and expert views point at an unused buffer), nor is the
    /// tp all-gather's scratch.
    static func layer(
        ctx: ParallelContext, c: Int, e: Int, k: Int, state: MoEState, options: MoEOptions = MoEOptions()
    ) -> MoELayer {
        let cfg = ModelConfig(
            vocabSize: 2, seqLen: state.capacityRows, nLayer: 1, nEmbd: c, nHead: 1, nExpert: e, topK: k, ffHidden: 4,
            moeEvery: 1)
        let unused = MoEWeights(router: unusedWeights.base, experts: [], ffn: [])
        return MoELayer(
            ctx: ctx, layer: 0, config: cfg, k: k, options: options, weights: (unused, unused), state: state,
            scratch: MoEScratch(n: state.capacityRows, e: e, k: k),
            gatherScratch: unusedWeights.base)  // tp 1: the all-gather over tp does nothing
    }
    static let unusedWeights = FloatBuffer(count: 64)

    func check(world: Int, experts e: Int, plan: PlacementPlan, seed: UInt64, nodeOf: [Int]? = nil) throws {
        let c = 3, k = 2
        let nodes = nodeOf ?? [Int](repeating: 0, count: world)
        let results = try LocalCommunicator.run(size: world) { comm -> Problems in
            let ctx = ParallelContext(comms: try MeshComms(world: comm, dp: world, tp: 1), plan: plan, nodeOf: nodes)
            let rows = 5 + comm.rank  // ranks hold different row counts
            let s = MoEState(n: rows, e: e, k: k)
            let layer = Self.layer(ctx: ctx, c: c, e: e, k: k, state: s)
            s.rowStart = 0
            s.rows = rows
            // Rows encode (rank, row): x[r] = [rank, row, rank * 100 + row].
            let x = FloatBuffer(count: rows * c)
            for r in 0..<rows {
                let (first, second) = Self.route(seed: seed, rank: comm.rank, row: r, experts: e)
                (x[r * c], x[r * c + 1], x[r * c + 2]) = (Float(comm.rank), Float(r), Float(comm.rank * 100 + r))
                (s.topIndex[r * k], s.topIndex[r * k + 1]) = (Int32(first), Int32(second))
                (s.topWeight[r * k], s.topWeight[r * k + 1]) = (0.5, 0.5)
            }
            let local = plan.localExperts(layer: 0, rank: comm.rank)
            try layer.dispatcher.dispatch(s, x: x.base, plan: layer.sendPlan(s, tokenOffset: comm.rank * 1000))
            var p = Problems()
            p.rows = (rows * k, s.recvRows.reduce(0, +))
            for (li, ex) in local.enumerated() {
                for i in s.expertStart[li]..<(s.expertStart[li] + s.expertRows[li]) {
                    let src = Int(s.xe.base[i * c]), row = Int(s.xe.base[i * c + 1])
                    let (first, second) = Self.route(seed: seed, rank: src, row: row, experts: e)
                    if ex != first && ex != second { p.wrongExpert += 1 }
                    // src's own replica if it holds one, else the one its token index picks among
                    // those on src's node (all, on one node).
                    let replicas = plan.layers[0][ex]
                    let servers = replicas.filter { nodes[$0] == nodes[src] }
                    let picked =
                        replicas.contains(src)
                        ? src
                        : nodeOf == nil || servers.isEmpty
                            ? plan.rank(layer: 0, expert: ex, token: src * 1000 + row)
                            : servers[(src * 1000 + row) % servers.count]
                    if picked != comm.rank { p.wrongReplica += 1 }
                    if s.xe.base[i * c + 2] != Float(src * 100 + row) { p.wrongPayload += 1 }
                }
            }
            // Identity experts: o = xe. Combine must give x back exactly (0.5 x + 0.5 x).
            s.o.reserve(p.rows.received * c, atMost: p.rows.received * c)
            s.o.base.update(from: s.xe.base, count: p.rows.received * c)
            let out = FloatBuffer(count: rows * c)
            try layer.combine(out: out.base, n: rows)
            p.combineMismatch = (0..<rows).filter { r in (0..<c).contains { out[r * c + $0] != x[r * c + $0] } }.count
            return p
        }
        let label = "world \(world), plan \(plan.layers[0])" + (nodeOf.map { ", nodes \($0)" } ?? "")
        XCTAssertEqual(
            results.map(\.rows.sent).reduce(0, +), results.map(\.rows.received).reduce(0, +),
            "\(label): rows sent != rows received (tokens lost or duplicated)")
        XCTAssertEqual(
            results.map(\.wrongExpert), Array(repeating: 0, count: world), "\(label): rows at the wrong expert")
        XCTAssertEqual(
            results.map(\.wrongReplica), Array(repeating: 0, count: world), "\(label): rows at the wrong replica")
        XCTAssertEqual(
            results.map(\.wrongPayload), Array(repeating: 0, count: world), "\(label): rows corrupted in transit")
        XCTAssertEqual(
            results.map(\.combineMismatch), Array(repeating: 0, count: world), "\(label): combine(dispatch(x)) != x")
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
        // World 3, every expert on every rank: a local layer, its exchanges plain copies.
        let everywhere = PlacementPlan(layers: [[[Int]](repeating: [0, 1, 2], count: 5)])
        try check(world: 3, experts: 5, plan: everywhere, seed: 14)
    }

    /// Two nodes of two ranks: a replicated expert serves a rank's tokens from that rank's own
    /// replica, else from the replica on its node (none crosses); an expert with replicas on one
    /// node only serves everyone.
    func testReplicasServeTheirOwnRankThenTheirOwnNode() throws {
        let plan = PlacementPlan(layers: [[[0, 2], [1, 3], [0, 1], [3], [2]]])
        try check(world: 4, experts: 5, plan: plan, seed: 13, nodeOf: [0, 0, 1, 1])
        let nodes = [0, 0, 1, 1]
        XCTAssertEqual(plan.servers(layer: 0, expert: 0, rank: 3, nodeOf: nodes), [2], "rank 3: node 1's replica")
        XCTAssertEqual(plan.servers(layer: 0, expert: 0, rank: 2, nodeOf: nodes), [2], "rank 2: its own")
        XCTAssertEqual(plan.servers(layer: 0, expert: 0, rank: 0, nodeOf: nodes), [0], "rank 0: its own")
        XCTAssertEqual(plan.servers(layer: 0, expert: 2, rank: 2, nodeOf: nodes), [0, 1], "no replica on node 1: all")
        XCTAssertEqual(plan.servers(layer: 0, expert: 2, rank: 3, nodeOf: [0, 0, 0, 0]), [0, 1])
        XCTAssertEqual(plan.servers(layer: 0, expert: 3, rank: 0, nodeOf: nodes), [3], "a single replica")
    }

    /// The capacity rule drops the same assignments whatever the number of ranks the global batch is
    /// split over (ranks own consecutive token ranges): the masks of 1-4 ranks, laid end to end, equal
    /// a reference that walks the global (token, slot) order and drops what exceeds an expert's capacity.
    func testCapacityDropsTheSameAssignmentsAtOneToFourRanks() throws {
        let e = 4, k = 2, tokens = 30, factor = 0.75
        // Crowded routing: most tokens pick expert 0 first, so it overflows.
        @Sendable func route(_ t: Int) -> (Int32, Int32) {
            let h = CounterRNG.hash(7, UInt64(t), 0)
            let first = CounterRNG.below(4, h) == 0 ? 1 + CounterRNG.below(e - 1, CounterRNG.mix(h)) : 0
            return (Int32(first), Int32((first + 1 + CounterRNG.below(e - 1, h >> 7)) % e))
        }
        let capacity = Int((factor * Double(tokens * k) / Double(e)).rounded(.up))
        var seen = [Int](repeating: 0, count: e), reference: [Bool] = []
        for t in 0..<tokens {
            let (a, b) = route(t)
            for ex in [Int(a), Int(b)] {
                reference.append(seen[ex] >= capacity)
                seen[ex] += 1
            }
        }
        let expectedDrops = seen.map { max(0, $0 - capacity) }.reduce(0, +)
        XCTAssertGreaterThan(expectedDrops, 0, "the routing overflows an expert")
        for world in 1...4 {
            let plan = PlacementPlan.roundRobin(moeLayers: 1, experts: e, world: world)
            let per = try LocalCommunicator.run(size: world) { comm -> ([Bool], Int) in
                let ctx = ParallelContext(
                    comms: try MeshComms(world: comm, dp: world, tp: 1), plan: plan,
                    nodeOf: Array(repeating: 0, count: world))
                let first = comm.rank * tokens / world, end = (comm.rank + 1) * tokens / world
                let s = MoEState(n: end - first, e: e, k: k)
                let layer = Self.layer(
                    ctx: ctx, c: 1, e: e, k: k, state: s, options: MoEOptions(capacityFactor: factor))
                s.rows = end - first
                for t in first..<end { (s.topIndex[(t - first) * k], s.topIndex[(t - first) * k + 1]) = route(t) }
                try layer.applyCapacity(s: s, globalTokens: tokens)
                return (Array(UnsafeBufferPointer(start: s.dropped, count: s.rows * k)), s.droppedGlobal)
            }
            XCTAssertEqual(
                per.flatMap(\.0), reference, "world \(world): dropped assignments differ from the global order")
            XCTAssertEqual(per.map(\.1), Array(repeating: expectedDrops, count: world), "world \(world): dropped count")
        }
    }
}
