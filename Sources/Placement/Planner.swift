// The scheduler's planner and cost model: replicate hot experts (greedy by load per replica),
// assign expert replicas longest-processing-time first under per-rank memory limits, and
// predict the step time of a placement from load, cluster rates and link bandwidths.
// Pure and deterministic: the same inputs give the same plan.

/// What the planner needs to know about the model.
public struct MoEShape: Sendable, Equatable {
    public var nEmbd: Int
    public var ffHidden: Int
    public var nExpert: Int
    public var moeLayers: Int
    /// FLOPs per token of everything but the experts (attention, dense layers, head), training.
    public var denseFlopsPerToken: Double
    /// Bytes every rank holds besides its experts (replicated parameters and their moments).
    public var baseBytesPerRank: Double
    /// Matrices of C x F per expert: 2 (GELU) or 3 (SwiGLU).
    public var matrices: Int
    public init(
        nEmbd: Int, ffHidden: Int, nExpert: Int, moeLayers: Int, denseFlopsPerToken: Double, baseBytesPerRank: Double,
        matrices: Int = 2
    ) {
        self.nEmbd = nEmbd; self.ffHidden = ffHidden; self.nExpert = nExpert; self.moeLayers = moeLayers
        self.denseFlopsPerToken = denseFlopsPerToken; self.baseBytesPerRank = baseBytesPerRank
        self.matrices = matrices
    }
    /// Training FLOPs of one routed token in one expert: forward 2 x (matrices x CF), backward twice that.
    public var expertFlopsPerAssignment: Double { 6 * Double(matrices * nEmbd * ffHidden) }
    /// Bytes of one expert with its AdamW moments (Float32).
    public var bytesPerExpert: Double { 3 * Double(matrices * nEmbd * ffHidden) * 4 }
}

/// Predicted cost of a placement.
public struct Prediction: Sendable, Equatable {
    public var stepSeconds: Double  // dense share + the slowest rank of each MoE layer
    public var rankSeconds: [Double]  // each rank's own work (without waiting for others)
    public var rankLoad: [Double]  // routed assignments served per step, all layers
    public var layerRankLoad: [[Double]]  // the same per MoE layer: [layer][rank]
    public var rankBytes: [Double]  // memory per rank
}

public enum Planner {
    /// Predicted step time of `plan` for `load[layer][expert]` assignments per step and
    /// `tokens` tokens per step. Dispatch and combine (forward and backward: 4 exchanges of C
    /// floats per assignment) cost bytes / bandwidth, on the slower link when the token's source
    /// and the expert's rank are on different nodes; sources are spread evenly over the ranks, and
    /// a replicated expert serves each source from its own replica, else from those on its node.
    /// Every MoE layer's alltoallv is a barrier, so the step takes the dense share plus, per
    /// layer, the time of that layer's slowest rank (an imbalance in one layer is not made up by
    /// the opposite imbalance in another). Replicated experts add one world allreduce of their
    /// gradients (2CF floats each; a ring moves 2(w-1)/w of the bytes over the slowest link).
    /// Where a node has fewer cores than busy ranks, they share the cores.
    public static func predict(
        plan: PlacementPlan, load: [[Double]], tokens: Double, shape: MoEShape, cluster: Cluster,
        nodeOf: [Int]
    ) -> Prediction {
        let world = nodeOf.count
        let rate = cluster.gflopsPerSlot * 1e9
        let dense = shape.denseFlopsPerToken * tokens / Double(world) / rate
        // Busy ranks of a node share its cores: k jobs of work w_r on c < k cores take
        // max(max w_r, sum w_r / c) (processor sharing); with a core per rank, max w_r.
        let nodes = Set(nodeOf)
        func shared(_ work: [Double], plus extra: [Double]) -> Double {
            nodes.map { n -> Double in
                let ranks = (0..<world).filter { nodeOf[$0] == n }
                let cores = cluster.nodes[n].cores ?? ranks.count
                let alone = ranks.map { work[$0] + extra[$0] }.max() ?? 0
                guard cores < ranks.count else { return alone }
                return max(
                    alone, ranks.reduce(0) { $0 + work[$1] } / Double(cores) + (ranks.map { extra[$0] }.max() ?? 0))
            }.max() ?? 0
        }
        let zero = [Double](repeating: 0, count: world)
        var busy = [Double](repeating: dense, count: world)
        var step = shared([Double](repeating: dense, count: world), plus: zero)
        var served = [[Double]]()
        var bytes = [Double](repeating: shape.baseBytesPerRank, count: world)
        let latency =
            (nodeOf.contains { $0 != nodeOf[0] } ? cluster.interNodeLatencyUs : cluster.intraNodeLatencyUs) * 1e-6
        for l in plan.layers.indices {
            let (compute, comm, servedHere) = layerWork(
                plan: plan, layer: l, load: load, shape: shape, cluster: cluster, nodeOf: nodeOf, latency: latency)
            for r in plan.layers[l].flatMap({ $0 }) { bytes[r] += shape.bytesPerExpert }
            for r in 0..<world { busy[r] += compute[r] + comm[r] }
            step += shared(compute, plus: comm)
            served.append(servedHere)
        }
        let replicated = plan.layers.reduce(0) { $0 + $1.filter { $0.count > 1 }.count }
        if replicated > 0 && world > 1 {
            let sync = ringAllreduceSeconds(
                units: Double(replicated), bytesPerUnit: replicaGradientBytes(shape), ranks: world, cluster: cluster,
                spansNodes: nodeOf.contains { $0 != nodeOf[0] })
            step += sync
            for r in 0..<world { busy[r] += sync }
        }
        let total = (0..<world).map { r in served.reduce(0) { $0 + $1[r] } }
        return Prediction(
            stepSeconds: step, rankSeconds: busy, rankLoad: total, layerRankLoad: served, rankBytes: bytes)
    }

    /// A ring all-reduce of `units` x `bytesPerUnit` bytes over `ranks` ranks: 2 (ranks - 1) / ranks
    /// of the bytes over the slowest link the group spans, plus two latencies.
    public static func ringAllreduceSeconds(
        units: Double, bytesPerUnit: Double, ranks: Int, cluster: Cluster, spansNodes: Bool
    ) -> Double {
        let gb = spansNodes ? min(cluster.intraNodeGBps, cluster.interNodeGBps) : cluster.intraNodeGBps
        let latency = (spansNodes ? cluster.interNodeLatencyUs : cluster.intraNodeLatencyUs) * 1e-6
        return 2 * Double(ranks - 1) / Double(ranks) * units * bytesPerUnit / (gb * 1e9) + 2 * latency
    }

    /// The step time placements are compared by: `predict`'s at `load`, or with `stepLoads`
    /// (single steps' loads) the mean of its step times over them.
    public static func expectedStepSeconds(
        plan: PlacementPlan, load: [[Double]], stepLoads: [[[Double]]], tokens: Double, shape: MoEShape,
        cluster: Cluster, nodeOf: [Int]
    ) -> Double {
        let loads = stepLoads.isEmpty ? [load] : stepLoads
        let total = loads.reduce(0.0) {
            $0
                + predict(plan: plan, load: $1, tokens: tokens, shape: shape, cluster: cluster, nodeOf: nodeOf)
                .stepSeconds
        }
        return total / Double(loads.count)
    }

    /// One MoE layer's work per rank: expert compute seconds, alltoallv seconds (latency
    /// included) and the assignments each rank serves. Tokens come from every rank in equal
    /// parts; each source sends to the replicas that serve it (itself if it holds one, else those
    /// on its node, else all: PlacementPlan.servers).
    static func layerWork(
        plan: PlacementPlan, layer l: Int, load: [[Double]], shape: MoEShape, cluster: Cluster, nodeOf: [Int],
        latency: Double
    ) -> (compute: [Double], comm: [Double], served: [Double]) {
        let world = nodeOf.count, rate = cluster.gflopsPerSlot * 1e9
        let rowBytes = 4.0 * 4 * Double(shape.nEmbd)
        var compute = [Double](repeating: 0, count: world), served = compute
        // A layer with every expert on every rank serves each rank's rows there: no exchange at all.
        let local = plan.layers[l].allSatisfy { $0.count == world }
        var comm = [Double](repeating: local ? 0 : 4 * latency, count: world)
        for (e, ranks) in plan.layers[l].enumerated() {
            let le = l < load.count && e < load[l].count ? load[l][e] : 0
            for s in 0..<world {
                let to = ranks.count == 1 ? ranks : plan.servers(layer: l, expert: e, rank: s, nodeOf: nodeOf)
                let part = le / Double(world) / Double(to.count)
                for r in to {
                    served[r] += part
                    compute[r] += part * shape.expertFlopsPerAssignment / rate
                    if s != r {
                        let gbps = nodeOf[s] == nodeOf[r] ? cluster.intraNodeGBps : cluster.interNodeGBps
                        comm[r] += part * rowBytes / (gbps * 1e9)
                    }
                }
            }
        }
        return (compute, comm, served)
    }

    /// A placement for `load`: replicas for experts hotter than a rank's fair share (while memory
    /// allows), longest-processing-time-first assignment of replica shares to the least loaded
    /// rank that has memory and does not hold that expert yet (lowest rank on ties), then more
    /// replicas while one lowers the busiest rank's load by at least 1%. The result is the
    /// better, by `predict`, of that plan and the same assignment without replicas.
    /// `nodeOf` gives each rank's node when ranks do not fill the cluster's nodes in order.
    /// With `current`, each layer's ranks are relabelled within their nodes so that as many
    /// experts as possible stay where they are (`keepingRanks`): the same loads, less to move.
    /// With `stepLoads` (single steps' loads), candidates are compared by their mean predicted step
    /// time over those steps: the routing swings from step to step, and a placement balanced for
    /// the mean load still waits on the busier rank of each step.
    public static func plan(
        load: [[Double]], shape: MoEShape, cluster: Cluster, world: Int, maxReplicas: Int? = nil,
        nodeOf given: [Int]? = nil, current: PlacementPlan? = nil, stepLoads: [[[Double]]] = []
    ) throws -> PlacementPlan {
        let chosen = try balancedPlan(
            load: load, shape: shape, cluster: cluster, world: world, maxReplicas: maxReplicas, nodeOf: given,
            stepLoads: stepLoads)
        guard let current else { return chosen }
        let nodeOf = try given ?? cluster.nodeOfRank(world: world)
        return keepingRanks(
            chosen, current: current, nodeOf: nodeOf, slots: expertSlots(cluster, nodeOf: nodeOf, shape: shape))
    }

    static func balancedPlan(
        load: [[Double]], shape: MoEShape, cluster: Cluster, world: Int, maxReplicas: Int?,
        nodeOf given: [Int]?, stepLoads: [[[Double]]]
    ) throws -> PlacementPlan {
        let nodeOf = try given ?? cluster.nodeOfRank(world: world)
        func score(_ p: PlacementPlan) -> Double {
            expectedStepSeconds(
                plan: p, load: load, stepLoads: stepLoads, tokens: 0, shape: shape, cluster: cluster, nodeOf: nodeOf)
        }
        precondition(
            nodeOf.count == world && nodeOf.allSatisfy { $0 >= 0 && $0 < cluster.nodes.count },
            "nodeOf: one node of the cluster per rank")
        let perRankSlots = expertSlots(cluster, nodeOf: nodeOf, shape: shape)
        // One layer's load, missing entries 0 and negatives clamped.
        func layerLoad(_ l: Int) -> [Double] {
            (0..<shape.nExpert).map { l < load.count && $0 < load[l].count ? max(0, load[l][$0]) : 0 }
        }
        let totalSlots = perRankSlots.reduce(0, +)
        let needed = shape.moeLayers * shape.nExpert
        try checkRoom(slots: totalSlots, needed: needed)
        var free = perRankSlots
        var layers: [[[Int]]] = []
        var extraBudget = totalSlots - needed
        let cap = min(world, maxReplicas ?? world)
        for l in 0..<shape.moeLayers {
            let budgetHere = extraBudget / max(1, shape.moeLayers - l)
            let (best, used) = try placeLayer(
                layerLoad(l), layer: l, replicaBudget: budgetHere, cap: cap, free: free, world: world, nodeOf: nodeOf)
            extraBudget -= used
            free = best.free
            layers.append(best.holders.map { $0.sorted() })
        }
        // Replicas cost a gradient allreduce every step: keep them only if the cost model says
        // they pay for it against the best plan without any, or against every expert on every
        // rank (no exchange, all expert gradients summed) where each rank has room for them all.
        var candidates = [PlacementPlan(layers: layers)]
        if layers.contains(where: { $0.contains { $0.count > 1 } }),
            let single = withoutReplicas(
                shape: shape, free: perRankSlots, world: world, nodeOf: nodeOf, load: layerLoad)
        {
            candidates.insert(single, at: 0)
        }
        if world > 1 && cap == world && perRankSlots.allSatisfy({ $0 >= needed }) {
            candidates.append(.everywhere(moeLayers: shape.moeLayers, experts: shape.nExpert, world: world))
        }
        // The first of the cheapest (fewer replicas first on ties).
        let costs = candidates.map(score)
        return candidates[costs.indices.min { costs[$0] < costs[$1] }!]
    }

    /// Throws unless the ranks' expert slots hold every expert of the model once.
    static func checkRoom(slots: Int, needed: Int) throws {
        guard slots >= needed else {
            throw PlacementError(
                "memory: the ranks have room for \(slots) experts (with AdamW moments) but the model "
                    + "has \(needed); use more ranks or ranks with more memory"
            )
        }
    }

    /// LPT of every layer with one copy of each expert (nil when the slots do not hold them).
    static func withoutReplicas(
        shape: MoEShape, free: [Int], world: Int, nodeOf: [Int], load layerLoad: (Int) -> [Double]
    ) -> PlacementPlan? {
        var single: [[[Int]]] = []
        var freeSingle = free
        for l in 0..<shape.moeLayers {
            guard
                let a = lpt(
                    layerLoad(l), replicas: [Int](repeating: 1, count: shape.nExpert), free: freeSingle,
                    world: world, nodeOf: nodeOf)
            else { return nil }
            freeSingle = a.free
            single.append(a.holders.map { $0.sorted() })
        }
        return PlacementPlan(layers: single)
    }

    /// One layer's assignment: replicate the expert with the largest load per replica while it
    /// exceeds a fair share; LPT; then, while the budget allows, add the replica that lowers the
    /// busiest rank's load most (by at least 1%): a few hot experts often cannot be balanced by
    /// placement alone. Returns the assignment and the replicas it added.
    static func placeLayer(
        _ ld: [Double], layer l: Int, replicaBudget: Int, cap: Int, free: [Int], world: Int, nodeOf: [Int]
    ) throws -> (Assignment, Int) {
        let experts = ld.count
        let fair = ld.reduce(0, +) / Double(world)
        var replicas = [Int](repeating: 1, count: experts)
        var heap = MaxHeap<(Double, Int)>(by: { a, b in a.0 != b.0 ? a.0 < b.0 : a.1 > b.1 })
        for e in 0..<experts { heap.push((ld[e], e)) }
        var used = 0
        while let (perReplica, e) = heap.pop(), perReplica > fair * 1.0001, replicas[e] < cap, used < replicaBudget {
            replicas[e] += 1
            used += 1
            heap.push((ld[e] / Double(replicas[e]), e))
        }
        guard var best = lpt(ld, replicas: replicas, free: free, world: world, nodeOf: nodeOf) else {
            throw PlacementError("memory: no rank has room for the experts of MoE layer \(l)")
        }
        // A trial's max load is at least its largest share and (up to rounding) the mean load, so
        // a trial whose bound cannot beat the threshold is not run: the same plan, without
        // O(E^2 x world) work per replica at a thousand ranks and experts (82 s -> under 1 s).
        let mean = ld.reduce(0, +) / Double(world) * (1 - 1e-9)
        while used < replicaBudget {
            var improved: (Int, Assignment)? = nil
            for e in 0..<experts where replicas[e] < cap {
                var trial = replicas
                trial[e] += 1
                let bound = max(mean, (0..<experts).reduce(0.0) { max($0, ld[$1] / Double(trial[$1])) })
                if bound >= improved?.1.maxLoad ?? best.maxLoad * 0.99 { continue }
                if let a = lpt(ld, replicas: trial, free: free, world: world, nodeOf: nodeOf),
                    a.maxLoad < (improved?.1.maxLoad ?? best.maxLoad * 0.99)
                {
                    improved = (e, a)
                }
            }
            guard let (e, a) = improved else { break }
            replicas[e] += 1
            used += 1
            best = a
        }
        return (best, used)
    }

    /// Experts (with their AdamW moments) each rank's memory holds besides its base bytes.
    static func expertSlots(_ cluster: Cluster, nodeOf: [Int], shape: MoEShape) -> [Int] {
        nodeOf.map {
            Int(max(0, (cluster.nodes[$0].memoryPerSlotGB * 1e9 - shape.baseBytesPerRank) / shape.bytesPerExpert))
        }
    }

    /// Replica shares of one layer assigned longest-processing-time first to the least loaded rank
    /// with room that does not hold that expert yet (lowest rank on ties), preferring a node that
    /// holds no replica of it yet; nil if room runs out.
    struct Assignment { var holders: [[Int]]; var maxLoad: Double; var free: [Int] }

    static func lpt(_ ld: [Double], replicas: [Int], free start: [Int], world: Int, nodeOf: [Int]) -> Assignment? {
        var items: [(share: Double, expert: Int)] = []
        for e in 0..<ld.count { for _ in 0..<replicas[e] { items.append((ld[e] / Double(replicas[e]), e)) } }
        items.sort { $0.share != $1.share ? $0.share > $1.share : $0.expert < $1.expert }
        var rankLoad = [Double](repeating: 0, count: world)
        var holders = [[Int]](repeating: [], count: ld.count)
        var free = start
        for item in items {
            // A replica goes to a node without one first (replicas serve their own node's tokens).
            let held = Set(holders[item.expert].map { nodeOf[$0] })
            var best = -1, bestNew = false
            for r in 0..<world where free[r] > 0 && !holders[item.expert].contains(r) {
                let new = !held.contains(nodeOf[r])
                if best < 0 || (new && !bestNew) || (new == bestNew && rankLoad[r] < rankLoad[best] - 1e-12) {
                    best = r; bestNew = new
                }
            }
            guard best >= 0 else { return nil }
            holders[item.expert].append(best)
            rankLoad[best] += item.share
            free[best] -= 1
        }
        return Assignment(holders: holders, maxLoad: rankLoad.max() ?? 0, free: free)
    }
}

/// A binary max-heap ordered by `less`.
struct MaxHeap<T> {
    var items: [T] = []
    let less: (T, T) -> Bool
    init(by less: @escaping (T, T) -> Bool) { self.less = less }
    mutating func push(_ x: T) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if less(items[p], items[i]) { items.swapAt(p, i); i = p } else { break }
        }
    }
    mutating func pop() -> T? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let a = 2 * i + 1, b = a + 1
            var m = i
            if a < items.count && less(items[m], items[a]) { m = a }
            if b < items.count && less(items[m], items[b]) { m = b }
            if m == i { break }
            items.swapAt(i, m); i = m
        }
        return top
    }
}
