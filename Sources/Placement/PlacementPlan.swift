// Which rank holds which expert: for every MoE layer, expert -> [ranks] (one or more replicas).
// Pure values, no MPI. The scheduler (Planner.swift) produces plans from measured load; this
// file holds the plan, its default (round-robin), its validation and the replica choice.

/// A placement problem a user (job file or placement file) can cause; names the input.
public struct PlacementError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "placement: \(message)" }
}

/// expert -> ranks for every MoE layer.
public struct PlacementPlan: Equatable, Sendable {
    /// layers[l][e] = ranks holding expert e of MoE layer l (sorted, distinct, non-empty).
    public var layers: [[[Int]]]

    public init(layers: [[[Int]]]) { self.layers = layers }

    /// Every expert of every layer on every rank (data-parallel experts: no exchange).
    public static func everywhere(moeLayers: Int, experts: Int, world: Int) -> PlacementPlan {
        PlacementPlan(layers: Array(repeating: Array(repeating: Array(0..<world), count: experts), count: moeLayers))
    }

    /// Expert e on rank e % world, for every layer.
    public static func roundRobin(moeLayers: Int, experts: Int, world: Int) -> PlacementPlan {
        PlacementPlan(layers: Array(repeating: (0..<experts).map { [$0 % world] }, count: moeLayers))
    }

    /// Checks the plan against the model and the world; the message says what to fix.
    public func validate(moeLayers: Int, experts: Int, world: Int) throws {
        guard layers.count == moeLayers else {
            throw PlacementError("has \(layers.count) MoE layers, the model has \(moeLayers)")
        }
        for (l, layer) in layers.enumerated() {
            guard layer.count == experts else {
                throw PlacementError(
                    "MoE layer \(l) lists \(layer.count) experts, the model has model.nExpert = \(experts)")
            }
            for (e, ranks) in layer.enumerated() {
                if ranks.isEmpty {
                    throw PlacementError("expert \(e) of MoE layer \(l) is on no rank; give it at least one")
                }
                if let bad = ranks.first(where: { $0 < 0 || $0 >= world }) {
                    throw PlacementError(
                        "expert \(e) of MoE layer \(l) names rank \(bad), but the world has ranks 0..<\(world)")
                }
                if Set(ranks).count != ranks.count {
                    throw PlacementError(
                        "expert \(e) of MoE layer \(l) is listed twice on one rank (\(ranks)); replicas must be on "
                            + "distinct ranks"
                    )
                }
            }
        }
    }

    /// The experts of MoE layer `layer` held by `rank`, ascending.
    public func localExperts(layer: Int, rank: Int) -> [Int] {
        layers[layer].indices.filter { layers[layer][$0].contains(rank) }
    }

    /// Whether every rank of `world` holds every expert of MoE layer `layer`: each rank then serves
    /// its own rows, and the layer exchanges nothing.
    public func isLocal(layer: Int, world: Int) -> Bool {
        layers[layer].allSatisfy { Set($0) == Set(0..<world) }
    }

    /// The rank that serves global token `token` for expert `expert` when every replica may serve it.
    @inline(__always)
    public func rank(layer: Int, expert: Int, token: Int) -> Int {
        PlacementPlan.replica(of: layers[layer][expert], token: token)
    }

    /// The one replica among `servers` (non-empty) that serves global token `token`: replicas split
    /// tokens by token index modulo their count (deterministic, layout-independent order).
    @inline(__always)
    public static func replica(of servers: [Int], token: Int) -> Int {
        servers.count == 1 ? servers[0] : servers[token % servers.count]
    }

    /// The replicas of `expert` that serve tokens sent from rank `rank` (`nodeOf[r]` is rank r's
    /// node): the rank itself when it holds one (its rows then never leave it: a fully replicated
    /// expert is data parallel), else the ones on its node, so the traffic stays inside it, else
    /// every replica. Among several, tokens split by index (`replica(of:token:)`).
    public func servers(layer: Int, expert: Int, rank: Int, nodeOf: [Int]) -> [Int] {
        let all = layers[layer][expert]
        if all.count > 1 && all.contains(rank) { return [rank] }
        let near = all.filter { nodeOf[$0] == nodeOf[rank] }
        return near.isEmpty ? all : near
    }
}
