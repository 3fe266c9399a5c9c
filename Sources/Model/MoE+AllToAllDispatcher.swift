// The dispatcher of an expert-parallel MoE layer: rows travel to the ranks serving their experts
// and back, in three phases each way. Forward: pack into send order (destination, expert, token),
// exchange the per-(rank, expert) counts, alltoallv the rows (they arrive source-major), permute
// them expert-major (expert, source, token) for the experts. Combine: the outputs back to
// arrival order, alltoallv home (send order). Backward: the same for the gradients.
// Buffers are named for their side of the exchange and their order, and each serves that side in
// both directions of a pass (the wire buffers are the memory estimate's exchange rows):
//   ownerSend_SC   the owner's rows going out, send order
//   ownerReturn_SC the experts' outputs come home into it, send order; kept for backward
//   expertWire_RC  the expert side in arrival order: rows arrive, outputs leave
//   dOwnerWire_SC  backward's owner side: output gradients leave, input gradients arrive
//   dExpertWire_RC backward's expert side: output gradients arrive, input gradients leave
// Shape legend as in MoE.swift.
import Tensor

/// The all-to-all exchange's buffers of one MoE state (forward; kept for backward).
final class ExchangeBuffers {
    let ownerSend_SC = GrowBuffer(), ownerReturn_SC = GrowBuffer(), expertWire_RC = GrowBuffer()
}

/// The all-to-all exchange's backward buffers (shared by the MoE blocks).
final class GradientExchangeBuffers {
    let dOwnerWire_SC = GrowBuffer(), dExpertWire_RC = GrowBuffer()
}

struct AllToAllDispatcher: TokenDispatcher {
    let shape: DispatchShape
    var sources: Int { shape.ctx.comms.world.size }

    func dispatch(_ s: MoEState, x xs: UnsafePointer<Float>, plan: SendPlan) throws {
        let c = shape.c, sent = plan.total, wire = s.exchange
        wire.ownerSend_SC.reserve(sent * c, atMost: shape.mostSentRows(s) * c)
        wire.ownerReturn_SC.reserve(sent * c, atMost: shape.mostSentRows(s) * c)
        plan.pack(s, x: xs, into: wire.ownerSend_SC.base, c: c)
        let received = try exchangeCounts(s, plan: plan)
        let arrived = s.recvRows.reduce(0, +)
        shape.ctx.stats.expertRowsReceived += arrived
        let experts = shape.experts
        let most = shape.mostReceivedRows(s, sources: sources, localExperts: experts.count) * c
        wire.expertWire_RC.reserve(arrived * c, atMost: most)
        try toExperts(s, send: wire.ownerSend_SC.base, recv: wire.expertWire_RC.base)
        permutation(s, received: received, experts: experts)
        shape.expertRanges(s, received: received, experts: experts, sources: sources)
        s.xe.reserve(arrived * c, atMost: most)
        shape.expertMajor(s, from: wire.expertWire_RC.base, into: s.xe.base)
    }

    func combine(_ s: MoEState) throws -> UnsafePointer<Float> {
        let wire = s.exchange
        shape.receivedOrder(s, from: s.o.base, into: wire.expertWire_RC.base)
        try toOwners(s, send: wire.expertWire_RC.base, recv: wire.ownerReturn_SC.base)
        return returned(s)
    }

    func returned(_ s: MoEState) -> UnsafePointer<Float> { UnsafePointer(s.exchange.ownerReturn_SC.base) }

    func outputGradients(_ s: MoEState, _ sc: MoEScratch) -> UnsafeMutablePointer<Float> {
        let sent = s.sendRows.reduce(0, +)
        sc.exchange.dOwnerWire_SC.reserve(sent * shape.c, atMost: shape.mostSentRows(s) * shape.c)
        return sc.exchange.dOwnerWire_SC.base
    }

    func gradientsToExperts(_ s: MoEState, _ sc: MoEScratch) throws {
        let rows = s.recvRows.reduce(0, +), c = shape.c, wire = sc.exchange
        let most = shape.mostReceivedRows(s, sources: sources, localExperts: s.expertRows.count) * c
        sc.dXe.reserve(rows * c, atMost: most)
        sc.dXe.base.update(repeating: 0, count: rows * c)
        wire.dExpertWire_RC.reserve(rows * c, atMost: most)
        try toExperts(s, send: wire.dOwnerWire_SC.base, recv: wire.dExpertWire_RC.base)
        sc.dOe.reserve(rows * c, atMost: most)
        shape.expertMajor(s, from: wire.dExpertWire_RC.base, into: sc.dOe.base)
    }

    func gradientsHome(_ s: MoEState, _ sc: MoEScratch) throws -> UnsafePointer<Float> {
        let wire = sc.exchange
        shape.receivedOrder(s, from: sc.dXe.base, into: wire.dExpertWire_RC.base)
        try toOwners(s, send: wire.dExpertWire_RC.base, recv: wire.dOwnerWire_SC.base)
        return UnsafePointer(wire.dOwnerWire_SC.base)
    }

    /// Every rank learns how many rows of each expert it receives from each source (alltoallv of
    /// the send plan's counts). Sets s.recvRows; returns the counts, [world * E] source-major.
    func exchangeCounts(_ s: MoEState, plan: SendPlan) throws -> [Int] {
        let world = shape.ctx.comms.world.size, e = shape.e
        let counts64 = plan.bucket.map { Int64($0) }
        var received64 = [Int64](repeating: 0, count: world * e)
        try counts64.withUnsafeBufferPointer { sp in
            try received64.withUnsafeMutableBufferPointer { rp in
                try shape.ctx.alltoallv(
                    send: sp.baseAddress!, sendCounts: Array(repeating: e, count: world),
                    recv: rp.baseAddress!, recvCounts: Array(repeating: e, count: world))
            }
        }
        let received = received64.map { Int($0) }
        s.recvRows = (0..<world).map { src in received[(src * e)..<((src + 1) * e)].reduce(0, +) }
        return received
    }

    /// s.perm: for each local expert, the rows from source 0, 1, ... in token order (expert-major
    /// row i <- arrived row perm[i]).
    func permutation(_ s: MoEState, received: [Int], experts: [Int]) {
        let world = shape.ctx.comms.world.size, e = shape.e
        var srcStart = [Int](repeating: 0, count: world)
        var acc = 0
        for src in 0..<world {
            srcStart[src] = acc
            acc += s.recvRows[src]
        }
        s.perm = []
        s.perm.reserveCapacity(acc)
        for ex in experts {
            for src in 0..<world {
                let first = srcStart[src] + received[(src * e)..<(src * e + ex)].reduce(0, +)
                for i in 0..<received[src * e + ex] { s.perm.append(Int32(first + i)) }
            }
        }
    }

    /// Rows in send order [S, C] to the ranks serving their experts, arriving source-major [R, C].
    func toExperts(_ s: MoEState, send: UnsafePointer<Float>, recv: UnsafeMutablePointer<Float>) throws {
        let c = shape.c
        try shape.ctx.alltoallv(
            send: send, sendCounts: s.sendRows.map { $0 * c }, recv: recv, recvCounts: s.recvRows.map { $0 * c })
    }

    /// Rows in arrival order [R, C] back to the ranks that sent them, arriving in send order [S, C].
    func toOwners(_ s: MoEState, send: UnsafePointer<Float>, recv: UnsafeMutablePointer<Float>) throws {
        let c = shape.c
        try shape.ctx.alltoallv(
            send: send, sendCounts: s.recvRows.map { $0 * c }, recv: recv, recvCounts: s.sendRows.map { $0 * c })
    }
}
