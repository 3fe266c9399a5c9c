// What moving from one placement to another costs, whether it pays, and how to choose rank
// labels so that as little as possible moves.

extension Planner {
    /// Bytes of one expert's gradient (every matrix, Float32), summed over its replicas every step.
    public static func replicaGradientBytes(_ shape: MoEShape) -> Double {
        Double(shape.matrices * shape.nEmbd * shape.ffHidden) * 4
    }

    /// Bytes of weights and moments that moving from `old` to `new` transfers (each expert replica
    /// that appears on a rank that did not hold it).
    public static func migrationBytes(from old: PlacementPlan, to new: PlacementPlan, shape: MoEShape) -> Double {
        var n = 0
        for (l, layer) in new.layers.enumerated() {
            for (e, ranks) in layer.enumerated() {
                let before = l < old.layers.count && e < old.layers[l].count ? Set(old.layers[l][e]) : []
                n += ranks.filter { !before.contains($0) }.count
            }
        }
        return Double(n) * shape.bytesPerExpert
    }

    /// Whether to adopt `proposed`: its predicted gain over `horizon` steps must beat the time
    /// to move the weights and moments (over the slower link).
    /// `rebuildBytes`: bytes every migration handles whatever moves (a rank rebuilding its
    /// parameter store copies all of it), charged at the same rate. With `stepLoads`, the step
    /// times are the means over those single steps' loads (see `plan`).
    public static func shouldAdopt(
        current: PlacementPlan, proposed: PlacementPlan, load: [[Double]], tokens: Double, shape: MoEShape,
        cluster: Cluster, nodeOf: [Int], horizon: Int,
        rebuildBytes: Double = 0, stepLoads: [[[Double]]] = []
    ) -> (adopt: Bool, gainSeconds: Double, migrationSeconds: Double) {
        func seconds(_ p: PlacementPlan) -> Double {
            expectedStepSeconds(
                plan: p, load: load, stepLoads: stepLoads, tokens: tokens, shape: shape, cluster: cluster,
                nodeOf: nodeOf)
        }
        let now = seconds(current), then = seconds(proposed)
        let gain = (now - then) * Double(horizon)
        let moved = migrationBytes(from: current, to: proposed, shape: shape)
        let move = moved > 0 ? (moved + rebuildBytes) / (min(cluster.intraNodeGBps, cluster.interNodeGBps) * 1e9) : 0
        return (proposed != current && gain > move, gain, move)
    }

    /// `plan` with each layer's rank labels permuted within each node so that as many experts as
    /// possible stay on the rank that holds them in `current` (greedy: the pair of new rank and
    /// old rank sharing the most experts first, lowest ranks on ties). Ranks of one node are
    /// interchangeable (same link, same memory), so loads and the predicted step time are
    /// unchanged. If the relabelled plan would put more experts on a rank than `slots` allows,
    /// `plan` is returned as is.
    public static func keepingRanks(_ plan: PlacementPlan, current: PlacementPlan, nodeOf: [Int], slots: [Int])
        -> PlacementPlan
    {
        let world = nodeOf.count
        guard current.layers.count == plan.layers.count else { return plan }
        var layers: [[[Int]]] = []
        for (l, layer) in plan.layers.enumerated() {
            let old = current.layers[l]
            guard old.count == layer.count else { return plan }
            let bins = (0..<world).map { r in Set(layer.indices.filter { layer[$0].contains(r) }) }
            let had = (0..<world).map { r in Set(old.indices.filter { old[$0].contains(r) }) }
            var pairs: [(overlap: Int, bin: Int, rank: Int)] = []
            for b in 0..<world {
                for r in 0..<world where nodeOf[b] == nodeOf[r] {
                    pairs.append((bins[b].intersection(had[r]).count, b, r))
                }
            }
            pairs.sort { ($0.overlap, -$0.bin, -$0.rank) > ($1.overlap, -$1.bin, -$1.rank) }
            var to = [Int](repeating: -1, count: world), taken = [Bool](repeating: false, count: world)
            for p in pairs where to[p.bin] < 0 && !taken[p.rank] { to[p.bin] = p.rank; taken[p.rank] = true }
            layers.append(layer.map { ranks in ranks.map { to[$0] }.sorted() })
        }
        let relabelled = PlacementPlan(layers: layers)
        let perRank = (0..<world).map { r in layers.reduce(0) { $0 + $1.filter { $0.contains(r) }.count } }
        return zip(perRank, slots).allSatisfy { $0 <= $1 } ? relabelled : plan
    }
}
