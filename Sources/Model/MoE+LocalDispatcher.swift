// The dispatcher of a local MoE layer (world 1, or every expert on every rank:
// ParallelContext.localLayers). Every rank serves its own rows, so send order (destination =
// itself, expert, token) is expert-major order: the send plan's slots are the experts' rows.
// Nothing is exchanged or permuted; combine reads the outputs where the experts wrote them, and
// backward writes output gradients straight into the experts' gradient input (the same bits as
// sending to oneself; small.json 1x1 profiled: dispatch + combine 18-21 -> 10-11 ms/step).
// Shape legend as in MoE.swift.
import Tensor

struct LocalDispatcher: TokenDispatcher {
    let shape: DispatchShape
    var sources: Int { 1 }

    func dispatch(_ s: MoEState, x xs: UnsafePointer<Float>, plan: SendPlan) throws {
        let c = shape.c, sent = plan.total
        let experts = shape.experts  // all E
        s.recvRows = s.sendRows
        s.perm = []  // the identity
        shape.ctx.stats.expertRowsReceived += sent
        s.xe.reserve(sent * c, atMost: shape.mostReceivedRows(s, sources: 1, localExperts: experts.count) * c)
        plan.pack(s, x: xs, into: s.xe.base, c: c)
        shape.expertRanges(s, received: plan.bucket, experts: experts, sources: 1)
    }

    func combine(_ s: MoEState) throws -> UnsafePointer<Float> { returned(s) }

    func returned(_ s: MoEState) -> UnsafePointer<Float> { UnsafePointer(s.o.base) }

    func outputGradients(_ s: MoEState, _ sc: MoEScratch) -> UnsafeMutablePointer<Float> {
        let sent = s.sendRows.reduce(0, +)
        sc.dOe.reserve(sent * shape.c, atMost: expertSideBound(s))
        return sc.dOe.base
    }

    func gradientsToExperts(_ s: MoEState, _ sc: MoEScratch) throws {
        let rows = s.recvRows.reduce(0, +)
        sc.dXe.reserve(rows * shape.c, atMost: expertSideBound(s))
        sc.dXe.base.update(repeating: 0, count: rows * shape.c)
    }

    func gradientsHome(_ s: MoEState, _ sc: MoEScratch) throws -> UnsafePointer<Float> { UnsafePointer(sc.dXe.base) }

    /// Floats of the most rows this layer's experts can receive ([R, C] buffers).
    func expertSideBound(_ s: MoEState) -> Int {
        shape.mostReceivedRows(s, sources: 1, localExperts: s.expertRows.count) * shape.c
    }
}
