// The gradient reduction started during backward (train.overlapReduce): the `.allreduce`
// reductions are cut into buckets at the backward stages that finish their tensors (the head and
// final norm, then from the last block each block's FFN half and its attention half, the
// embeddings), and a bucket's sum starts as soon as its stage is done on the last micro-batch,
// while earlier blocks still compute. Buckets start in one fixed order (stage, then offset) on
// every rank; the ones in flight are tested at each stage boundary and between work items (MPI
// progresses non-blocking operations only inside MPI calls), and `step` waits for them all
// before the norm. ZeRO-1's reduce-scatters and the replicated experts' sum stay after backward.
// Only a world on several nodes overlaps (on one node every sum is blocking). Sums are those of
// `reduceGradients`: at two ranks the same bits (MPICommunicator.startAllreduce).
import Clock
import Comm
import Tensor

/// A piece of an `.allreduce` reduction whose tensors all become final at one backward stage.
struct GradientBucket: Equatable {
    let group: ReduceGroup
    let range: Range<Int>
    /// The stage after which its gradients are final: 2 nLayer for the head and final norm, 2l + 1
    /// for block l's FFN half (norm2, its FFN or MoE), 2l for its attention half (norm1, attn.*),
    /// -1 for the embeddings; backward finishes them in descending order.
    let stage: Int
}

/// The buckets of one step's overlapped reduction: the next to start and those in flight.
final class OverlapState {
    var next = 0
    var inFlight: [any PendingCollective] = []
}

extension ShardedAdamW {
    /// The backward stage that finishes the gradient of tensor `name` (see GradientBucket.stage).
    static func stage(of name: String, layers: Int) -> Int {
        let parts = name.split(separator: ".")
        if parts.count > 2, parts[0] == "layers", let l = Int(parts[1]) {
            return parts[2] == "attn" || parts[2] == "norm1" ? 2 * l : 2 * l + 1
        }
        return name.hasPrefix("embed.") || name.hasPrefix("pos.") ? -1 : 2 * layers
    }

    /// The `.allreduce` reductions cut where their tensors' stage changes, in the order backward
    /// finishes them: stage descending, then offset.
    func planBuckets() -> [GradientBucket] {
        var out: [GradientBucket] = []
        for r in reductions {
            guard case .allreduce(let group, let range) = r else { continue }
            var start = range.lowerBound, current: Int? = nil
            for info in store.infos where range.contains(info.offset) {
                let s = Self.stage(of: info.name, layers: model.nLayer)
                if let c = current, c != s {
                    out.append(GradientBucket(group: group, range: start..<info.offset, stage: c))
                    start = info.offset
                }
                current = s
            }
            if let c = current { out.append(GradientBucket(group: group, range: start..<range.upperBound, stage: c)) }
        }
        return out.sorted { ($0.stage, -$0.range.lowerBound) > ($1.stage, -$1.range.lowerBound) }
    }

    /// Call before the backward whose gradients are the step's last (the last micro-batch);
    /// returns whether it overlaps. A world on one node does not: its sums are blocking (the
    /// shared-memory window), so starting them during backward only made the ranks meet at
    /// every half-block (medium.json on loopback: 0.93x), and the reduction stays after backward.
    public func beginOverlappedReduction() -> Bool {
        guard Set(ctx.nodeOf).count > 1 else { return false }
        overlap = OverlapState()
        return true
    }

    /// Backward finished `stage`: starts every bucket that is final now, in order, and lets the
    /// ones in flight progress. Does nothing outside an overlapped backward.
    public func gradientsFinal(stage: Int) throws {
        guard let o = overlap else { return }
        while o.next < buckets.count && buckets[o.next].stage >= stage {
            let b = buckets[o.next]
            o.next += 1
            let group = b.group == .dp ? ctx.comms.dp : ctx.comms.world
            if let p = try ctx.startAllreduce(store.grads.base + b.range.lowerBound, b.range.count, over: group) {
                o.inFlight.append(p)
            }
        }
        // Done ones need no wait (ranks that are threads finish every sum as it starts).
        o.inFlight = try o.inFlight.filter { try !$0.test() }
        // Between stages too: the rank's main thread tests the sums in flight between work items.
        BetweenItems.remove()
        if !o.inFlight.isEmpty {
            BetweenItems.install { for p in o.inFlight { _ = try? p.test() } }
        }
    }

    /// The rest of an overlapped reduction: any bucket not started, the wait for all, then the
    /// reductions that are not buckets, in plan order, and the replicated experts.
    func finishOverlappedReduction(_ o: OverlapState) throws {
        defer {
            overlap = nil
            BetweenItems.remove()
        }
        try gradientsFinal(stage: Int.min)  // none left after the embeddings' stage; counts its own time
        let t0 = monotonicSeconds()
        for p in o.inFlight { try p.wait() }
        ctx.stats.allreduceSeconds += monotonicSeconds() - t0
        for case .reduceScatter(let offset, let counts) in reductions {
            try ctx.reduceScatter(store.grads.base + offset, counts: counts, over: ctx.comms.dp)
        }
        try reduceReplicatedExperts()
    }
}
