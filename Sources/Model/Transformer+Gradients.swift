// After backward: sum each parameter's gradient over the group its shard spec names, and the
// global gradient norm (each element counted once, on the rank its spec says).
import Comm
import Tensor

extension Transformer {
    /// Sums gradients over their reduce groups: contiguous runs of `.dp` tensors over the dp group,
    /// `.world` tensors (routers) over the world, replicated experts over their replica ranks.
    public func reduceGradients() throws {
        let g = store.grads
        // Coalesce adjacent tensors of the same group into one call each.
        var runStart = -1, runEnd = -1
        var runGroup: ReduceGroup? = nil
        func flush() throws {
            guard let grp = runGroup, runEnd > runStart else { return }
            switch grp {
            case .dp: try ctx.allreduce(g.base + runStart, runEnd - runStart, over: ctx.comms.dp)
            case .world: try ctx.allreduce(g.base + runStart, runEnd - runStart, over: ctx.comms.world)
            case .replicas: break
            }
            runGroup = nil
        }
        for info in store.infos {
            if case .replicas = info.shard.reduce { try flush(); continue }
            if info.shard.momentsOverDP {
                // ZeRO-1: only this rank's moment rows need the sum.
                try flush()
                try ctx.reduceScatter(
                    g.base + info.offset, counts: info.dpChunkCounts(dp: ctx.mesh.dp), over: ctx.comms.dp)
                continue
            }
            if runGroup == info.shard.reduce && runEnd == info.offset {
                runEnd = info.offset + info.count
            } else {
                try flush()
                runGroup = info.shard.reduce; runStart = info.offset; runEnd = info.offset + info.count
            }
        }
        try flush()
        try reduceReplicatedExperts()
    }

    /// Replicated experts: every rank takes part in one world allreduce over a buffer holding all
    /// replicated experts' gradients (zeros where this rank holds no replica). Replication is for
    /// a few hot experts, so the buffer is small; one collective keeps every rank in step.
    func reduceReplicatedExperts() throws {
        let plan = ctx.plan
        var segments: [(layer: Int, expert: Int, offset: Int)] = []
        var total = 0
        let matrix = config.nEmbd * config.ffHidden, perExpert = config.ffnMatrices.count * matrix
        for (l, layer) in plan.layers.enumerated() {
            for (e, ranks) in layer.enumerated() where ranks.count > 1 {
                segments.append((l, e, total)); total += perExpert
            }
        }
        guard total > 0 else { return }
        // Reused every step (a fresh buffer would be allocated and zeroed per step); ranks
        // without a replica must contribute zeros, so it is cleared each time.
        if replicaGradScratch?.count != total { replicaGradScratch = FloatBuffer(count: total) }
        let buf = replicaGradScratch!
        buf.zero()
        let moeBlocks = (0..<config.nLayer).filter(config.isMoE)
        for s in segments where plan.layers[s.layer][s.expert].contains(ctx.mesh.rank) {
            let name = "layers.\(moeBlocks[s.layer]).moe.experts.\(s.expert)."
            for (i, w) in config.ffnMatrices.enumerated() {
                (buf.base + s.offset + i * matrix).update(
                    from: store.pointer(name + w + ".weight", in: store.grads), count: matrix)
            }
        }
        try ctx.allreduce(buf.base, total, over: ctx.comms.world)
        for s in segments where plan.layers[s.layer][s.expert].contains(ctx.mesh.rank) {
            let name = "layers.\(moeBlocks[s.layer]).moe.experts.\(s.expert)."
            for (i, w) in config.ffnMatrices.enumerated() {
                store.pointer(name + w + ".weight", in: store.grads).update(
                    from: buf.base + s.offset + i * matrix, count: matrix)
            }
        }
    }

    /// After an update with moments split over dp: each dp rank's rows of those parameters to
    /// every rank of its dp group.
    public func gatherShardedParameters() throws {
        for info in store.infos where info.shard.momentsOverDP {
            try ctx.allgatherv(
                store.params.base + info.offset, counts: info.dpChunkCounts(dp: ctx.mesh.dp), over: ctx.comms.dp)
        }
    }

    /// The global L2 norm of the (reduced) gradients: each rank sums the squares of the pieces it
    /// counts, then one world allreduce. With moments split over dp a rank holds the reduced
    /// gradient of its moment rows only, and counts those.
    public func globalGradNorm() throws -> Double {
        // One work item per tensor; the squares are summed in tensor order.
        let tpIndex = ctx.mesh.tpIndex
        let counted = store.infos.filter { $0.ownsMoments(tpIndex: tpIndex) }
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
