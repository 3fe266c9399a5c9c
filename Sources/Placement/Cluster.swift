// A cluster description: nodes with slots (ranks) and memory per slot, the links between and
// within nodes, and the compute rate of a slot. Read from cluster/*.json; unknown fields are errors.

public struct ClusterNode: Equatable, Sendable {
    public var name: String
    public var slots: Int
    public var memoryPerSlotGB: Double
    /// Cores the node's ranks share (each rank computing on one); nil: one per slot. With more
    /// busy ranks than cores, the cost model shares the cores among them.
    public var cores: Int?
    public init(name: String, slots: Int, memoryPerSlotGB: Double, cores: Int? = nil) {
        self.name = name; self.slots = slots; self.memoryPerSlotGB = memoryPerSlotGB; self.cores = cores
    }
}

public struct Cluster: Equatable, Sendable {
    public var nodes: [ClusterNode]
    public var intraNodeGBps: Double
    public var interNodeGBps: Double
    public var intraNodeLatencyUs: Double
    public var interNodeLatencyUs: Double
    public var gflopsPerSlot: Double

    public init(
        nodes: [ClusterNode], intraNodeGBps: Double, interNodeGBps: Double, intraNodeLatencyUs: Double,
        interNodeLatencyUs: Double, gflopsPerSlot: Double
    ) {
        self.nodes = nodes; self.intraNodeGBps = intraNodeGBps; self.interNodeGBps = interNodeGBps
        self.intraNodeLatencyUs = intraNodeLatencyUs; self.interNodeLatencyUs = interNodeLatencyUs;
        self.gflopsPerSlot = gflopsPerSlot
    }

    public var slots: Int { nodes.reduce(0) { $0 + $1.slots } }

    /// Rank -> node index for `world` ranks filled node by node (mpirun's default by-slot mapping).
    public func nodeOfRank(world: Int) throws -> [Int] {
        guard world <= slots else {
            throw PlacementError(
                "the cluster has \(slots) slots but the job needs \(world) ranks; add nodes or slots, or use fewer "
                    + "ranks"
            )
        }
        var out: [Int] = []
        for (i, n) in nodes.enumerated() { out += Array(repeating: i, count: n.slots) }
        return Array(out.prefix(world))
    }

    public func validate() throws {
        guard !nodes.isEmpty else { throw PlacementError("cluster: no nodes") }
        for n in nodes {
            if n.slots < 1 { throw PlacementError("cluster: node \(n.name): slots must be >= 1") }
            if !(n.memoryPerSlotGB > 0) { throw PlacementError("cluster: node \(n.name): memoryPerSlotGB must be > 0") }
            if let c = n.cores, c < 1 { throw PlacementError("cluster: node \(n.name): cores must be >= 1") }
        }
        for (k, v) in [
            ("intraNodeGBps", intraNodeGBps), ("interNodeGBps", interNodeGBps), ("gflopsPerSlot", gflopsPerSlot)
        ] where !(v > 0) {
            throw PlacementError("cluster: \(k) must be > 0, got \(v)")
        }
        for (k, v) in [("intraNodeLatencyUs", intraNodeLatencyUs), ("interNodeLatencyUs", interNodeLatencyUs)]
        where !(v >= 0) {
            throw PlacementError("cluster: \(k) must be >= 0, got \(v)")
        }
    }
}
