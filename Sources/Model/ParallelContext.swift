// What a rank needs to run its share of the model: the mesh communicators, the expert
// placement, and counters of time spent communicating (logged per step).
import Clock
import Comm
import Placement
import Tensor

/// Seconds in collectives and rows received by this rank's experts, since the last reset.
public struct CommStats: Sendable {
    public var alltoallvSeconds = 0.0
    public var allreduceSeconds = 0.0
    public var expertRowsReceived = 0
    public init() {}
}

/// The communicators, mesh and placement one rank trains with.
public final class ParallelContext: @unchecked Sendable {
    public let comms: MeshComms
    public let plan: PlacementPlan
    /// Node of every world rank (ranks on one host share a node); all 0 on one machine.
    public let nodeOf: [Int]
    /// servers[layer][expert]: the ranks that serve this rank's tokens for that expert (itself if
    /// it holds a replica, else the replicas on its node, else all; see PlacementPlan.servers).
    let servers: [[[Int]]]
    /// localLayers[layer]: every rank holds every expert of that MoE layer, so each serves its own
    /// rows (PlacementPlan.servers) and the layer's exchanges are the identity: no collective, no
    /// copy (MoELayer.isLocal).
    let localLayers: [Bool]
    public var stats = CommStats()
    /// AdamW moments of dp-replicated tensors split over the dp group (train.shardOptimizer).
    public let shardMoments: Bool

    public var mesh: Mesh { comms.mesh }
    public var layout: ShardLayout { ShardLayout(mesh: comms.mesh, plan: plan, shardMoments: shardMoments) }

    public init(comms: MeshComms, plan: PlacementPlan, nodeOf: [Int]? = nil, shardMoments: Bool = false) {
        self.comms = comms
        self.shardMoments = shardMoments
        self.plan = plan
        let nodes = nodeOf ?? [Int](repeating: 0, count: comms.world.size)
        precondition(nodes.count == comms.world.size, "nodeOf needs one entry per world rank")
        self.nodeOf = nodes
        let me = comms.world.rank
        servers = plan.layers.indices.map { l in
            plan.layers[l].indices.map { plan.servers(layer: l, expert: $0, rank: me, nodeOf: nodes) }
        }
        let world = comms.world.size
        localLayers = plan.layers.indices.map { plan.isLocal(layer: $0, world: world) }
    }

    /// World size 1 on the calling thread, experts all local.
    public static func single(_ config: ModelConfig) -> ParallelContext {
        let comms = try! MeshComms(world: LocalCommunicator.single(), dp: 1, tp: 1)
        return ParallelContext(
            comms: comms, plan: .roundRobin(moeLayers: config.moeLayerCount, experts: config.nExpert, world: 1))
    }

    /// Sums `count` floats over `group` in place (nothing to do for a group of one).
    func allreduce(_ p: UnsafeMutablePointer<Float>, _ count: Int, over group: any Communicator) throws {
        guard group.size > 1, count > 0 else { return }
        let t0 = monotonicSeconds()
        try group.allreduce(UnsafeMutableBufferPointer(start: p, count: count), op: .sum)
        stats.allreduceSeconds += monotonicSeconds() - t0
    }

    /// Starts the sum of `count` floats over `group` (nil when there is nothing to sum: one rank).
    /// The time to start is counted; the wait is the caller's to count.
    func startAllreduce(_ p: UnsafeMutablePointer<Float>, _ count: Int, over group: any Communicator) throws
        -> (any PendingCollective)?
    {
        guard group.size > 1, count > 0 else { return nil }
        let t0 = monotonicSeconds()
        defer { stats.allreduceSeconds += monotonicSeconds() - t0 }
        return try group.startAllreduce(UnsafeMutableBufferPointer(start: p, count: count))
    }

    /// Reduce-scatter of `count` floats over `group` in `counts` chunks (see Communicator).
    func reduceScatter(_ p: UnsafeMutablePointer<Float>, counts: [Int], over group: any Communicator) throws {
        guard group.size > 1 else { return }
        let t0 = monotonicSeconds()
        try group.reduceScatter(UnsafeMutableBufferPointer(start: p, count: counts.reduce(0, +)), counts: counts)
        stats.allreduceSeconds += monotonicSeconds() - t0
    }

    /// All-gather of each rank's chunk of `counts` floats over `group`, in place.
    func allgatherv(_ p: UnsafeMutablePointer<Float>, counts: [Int], over group: any Communicator) throws {
        guard group.size > 1 else { return }
        let t0 = monotonicSeconds()
        try group.allgatherv(UnsafeMutableBufferPointer(start: p, count: counts.reduce(0, +)), counts: counts)
        stats.allreduceSeconds += monotonicSeconds() - t0
    }

    /// Sums doubles over the world (routing statistics).
    public func allreduceWorld(_ values: inout [Double]) throws {
        guard comms.world.size > 1 else { return }
        let t0 = monotonicSeconds()
        try comms.world.allreduce(&values, op: .sum)
        stats.allreduceSeconds += monotonicSeconds() - t0
    }

    /// The rows [start, end) of `n` that tp rank `r` owns (contiguous, sizes differ by at most one).
    func tpRows(_ n: Int, rank r: Int) -> (start: Int, end: Int) {
        let tp = comms.tp.size
        return (r * n / tp, (r + 1) * n / tp)
    }

    /// Gathers each tp rank's owned rows of `full` [n, c] into `full` on every tp rank.
    /// `scratch` must hold 2 * tp * ceil(n / tp) * c floats.
    func allgatherRowsTP(_ full: UnsafeMutablePointer<Float>, n: Int, c: Int, scratch: UnsafeMutablePointer<Float>)
        throws
    {
        let tp = comms.tp.size
        guard tp > 1 else { return }
        let maxRows = (n + tp - 1) / tp
        let mine = tpRows(n, rank: comms.tp.rank)
        let send = scratch, recv = scratch + maxRows * c
        send.update(from: full + mine.start * c, count: (mine.end - mine.start) * c)
        let t0 = monotonicSeconds()
        try comms.tp.allgather(
            UnsafeBufferPointer(start: send, count: maxRows * c),
            into: UnsafeMutableBufferPointer(start: recv, count: tp * maxRows * c))
        stats.allreduceSeconds += monotonicSeconds() - t0
        for r in 0..<tp {
            let rows = tpRows(n, rank: r)
            (full + rows.start * c).update(from: recv + r * maxRows * c, count: (rows.end - rows.start) * c)
        }
    }

    /// alltoallv over the world, timed.
    func alltoallv<T: CommScalar>(
        send: UnsafePointer<T>, sendCounts: [Int], recv: UnsafeMutablePointer<T>, recvCounts: [Int]
    ) throws {
        if comms.world.size == 1 {
            precondition(sendCounts == recvCounts, "alltoallv to self with different counts")
            recv.update(from: send, count: sendCounts[0])
            return
        }
        let t0 = monotonicSeconds()
        try comms.world.alltoallv(
            send: UnsafeBufferPointer(start: send, count: sendCounts.reduce(0, +)), sendCounts: sendCounts,
            recv: UnsafeMutableBufferPointer(start: recv, count: recvCounts.reduce(0, +)), recvCounts: recvCounts)
        stats.alltoallvSeconds += monotonicSeconds() - t0
    }
}

/// A FloatBuffer that grows on demand (routing decides the sizes per step).
final class GrowBuffer {
    private(set) var buffer = FloatBuffer(count: 0)
    var base: UnsafeMutablePointer<Float> { buffer.base }
    /// Makes room for `count` floats, a quarter more when it grows but never more than `atMost`
    /// (the most it can ever be asked for, so that the memory estimate's bound holds); contents
    /// are not kept when it grows.
    func reserve(_ count: Int, atMost: Int) {
        if count > buffer.count { buffer = FloatBuffer(count: max(count, min(count + count / 4, atMost))) }
    }
}
