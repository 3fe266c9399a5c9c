// ShardedAdamW's collectives: sum each parameter's gradient over the group its shard spec names,
// the global gradient norm (each element counted once, on the rank its spec says), and after the
// update the ZeRO-1 rows back to every dp rank.
import Comm
import Tensor

/// One collective of the gradient reduction, over a contiguous range of store.grads.
enum GradientReduction {
    case allreduce(ReduceGroup, Range<Int>)
    /// ZeRO-1: the dp ranks' chunks of one tensor.
    case reduceScatter(offset: Int, counts: [Int])
}

extension ShardedAdamW {
    /// Sums gradients over their reduce groups: contiguous runs of `.dp` tensors over the dp group,
    /// `.world` tensors (routers, experts on every rank) over the world, replicated experts over
    /// their replica ranks.
    func reduceGradients() throws {
        if let o = overlap { return try finishOverlappedReduction(o) }
        let g = store.grads
        for r in reductions {
            switch r {
            case .allreduce(.dp, let range):
                try ctx.allreduce(g.base + range.lowerBound, range.count, over: ctx.comms.dp)
            case .allreduce(let grp, let range):
                precondition(grp == .world, "replicated experts are reduced by reduceReplicatedExperts")
                try ctx.allreduce(g.base + range.lowerBound, range.count, over: ctx.comms.world)
            case .reduceScatter(let offset, let counts):
                try ctx.reduceScatter(g.base + offset, counts: counts, over: ctx.comms.dp)
            }
        }
        try reduceReplicatedExperts()
    }

    /// Adjacent tensors of one group coalesce into one call. Without tp the dp group is the world,
    /// so the two are one group (with every expert on every rank, the whole buffer is one call).
    /// A run continues only over tensors that are neighbours in the full tensor list (every expert
    /// held): an expert this rank lacks ends it here as on the ranks that hold it, so every rank of
    /// a group makes the same calls with the same counts.
    func planGradientReductions() -> [GradientReduction] {
        let mesh = ctx.mesh
        let full = ParameterStore.tensors(config: model, layout: .single(model))  // every tensor, by name
        var previousInFull: [String: String] = [:]
        for i in full.indices.dropFirst() { previousInFull[full[i].name] = full[i - 1].name }
        func group(_ info: ParameterInfo) -> ReduceGroup {
            info.shard.reduce == .world && mesh.tp == 1 ? .dp : info.shard.reduce
        }
        var out: [GradientReduction] = []
        var run: (group: ReduceGroup, start: Int, end: Int, last: String)? = nil
        func flush() {
            if let r = run { out.append(.allreduce(r.group, r.start..<r.end)) }
            run = nil
        }
        for info in store.infos {
            if case .replicas = info.shard.reduce { flush(); continue }
            if info.shard.momentsOverDP {  // ZeRO-1: only this rank's moment rows need the sum
                flush()
                out.append(.reduceScatter(offset: info.offset, counts: info.dpChunkCounts(dp: mesh.dp)))
                continue
            }
            if let r = run, r.group == group(info), r.end == info.offset, previousInFull[info.name] == r.last {
                run = (r.group, r.start, info.offset + info.count, info.name)
            } else {
                flush()
                run = (group(info), info.offset, info.offset + info.count, info.name)
            }
        }
        flush()
        return out
    }

    /// Experts on some ranks but not all: every rank takes part in one world allreduce over a
    /// buffer holding all such experts' gradients (zeros where this rank holds no replica).
    /// Replication is for a few hot experts, so the buffer is small; one collective keeps every
    /// rank in step. (An expert on every rank is reduced in place with the `.world` tensors.)
    func reduceReplicatedExperts() throws {
        let plan = ctx.plan, world = ctx.mesh.world
        var segments: [(layer: Int, expert: Int, offset: Int)] = []
        var total = 0
        let matrix = model.nEmbd * model.ffHidden, perExpert = model.ffnMatrices.count * matrix
        for (l, layer) in plan.layers.enumerated() {
            for (e, ranks) in layer.enumerated() where ranks.count > 1 && ranks.count < world {
                segments.append((l, e, total)); total += perExpert
            }
        }
        guard total > 0 else { return }
        // Reused every step (a fresh buffer would be allocated and zeroed per step); ranks
        // without a replica must contribute zeros, so it is cleared each time.
        if replicaGradScratch?.count != total { replicaGradScratch = FloatBuffer(count: total) }
        let buf = replicaGradScratch!
        buf.zero()
        let moeBlocks = model.moeBlocks
        func gradient(_ s: (layer: Int, expert: Int, offset: Int), _ w: String) -> UnsafeMutablePointer<Float> {
            let name = ModelConfig.expertWeight(block: moeBlocks[s.layer], expert: s.expert, matrix: w)
            return store.pointer(name, in: store.grads)
        }
        for s in segments where plan.layers[s.layer][s.expert].contains(ctx.mesh.rank) {
            for (i, w) in model.ffnMatrices.enumerated() {
                (buf.base + s.offset + i * matrix).update(from: gradient(s, w), count: matrix)
            }
        }
        try ctx.allreduce(buf.base, total, over: ctx.comms.world)
        for s in segments where plan.layers[s.layer][s.expert].contains(ctx.mesh.rank) {
            for (i, w) in model.ffnMatrices.enumerated() {
                gradient(s, w).update(from: buf.base + s.offset + i * matrix, count: matrix)
            }
        }
    }

    /// After an update with moments split over dp: each dp rank's rows of those parameters to
    /// every rank of its dp group.
    func gatherShardedParameters() throws {
        for info in store.infos where info.shard.momentsOverDP {
            try ctx.allgatherv(
                store.params.base + info.offset, counts: info.dpChunkCounts(dp: ctx.mesh.dp), over: ctx.comms.dp)
        }
    }

    /// The global L2 norm of the (reduced) gradients: each rank sums the squares of the pieces it
    /// counts, then one world allreduce. With moments split over dp a rank holds the reduced
    /// gradient of its moment rows only, and counts those.
    func globalGradNorm() throws -> Double {
        // One work item per tensor; the squares are summed in tensor order.
        let tpIndex = ctx.mesh.tpIndex
        let counted = store.infos.filter { $0.holdsPrimaryRows(tpIndex: tpIndex) }
        let norms = UnsafeMutableBufferPointer<Double>.allocate(capacity: max(counted.count, 1))
        defer { norms.deallocate() }
        Parallel.forEach(counted.count) { i, _ in
            let info = counted[i]
            norms[i] = GradClip.norm(
                store.grads.base + info.offset + info.momentRows.lowerBound * info.cols, count: info.momentCount)
        }
        var local = 0.0
        for i in counted.indices { local += norms[i] * norms[i] }
        var v = [local]
        try ctx.allreduceWorld(&v)
        return v[0].squareRoot()
    }
}
