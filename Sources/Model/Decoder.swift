// Generation with a key/value cache: a batch of sequences, each fed its prompt and then one token
// at a time. The ranks of a tp group feed the same rows (each dp group its own sequences); heads
// are split over tp as in training (each rank caches its own heads' keys and values), experts
// over the ranks of the placement (the MoE exchanges rows as in training, dropless). The block's
// weights, buffers and MoE layers are the model's own; only the cache and the row positions are
// the decoder's.
// Shape legend as in Transformer.swift; S sequences, P cache positions per sequence, N rows of
// one call (at most the model's maxBatch x seqLen).
import Tensor

public final class Decoder {
    public let model: Transformer
    /// Positions each sequence can hold (prompt and generated tokens).
    public let capacity: Int
    /// Tokens cached so far, per sequence.
    public private(set) var lengths: [Int]
    let keys, values: [FloatBuffer]  // per block [S, P, Gl*D]: only the key/value heads
    let rope: RopeTable?
    let attention = WorkerScratch()

    /// A cache for `sequences` sequences of up to `capacity` positions. With learned positions
    /// `capacity` is at most the model's seqLen (its position table ends there).
    public init(model: Transformer, sequences: Int, capacity: Int) {
        let m = model.config
        precondition(m.usesRope || capacity <= m.seqLen, "learned positions end at seqLen")
        self.model = model
        self.capacity = capacity
        lengths = Array(repeating: 0, count: sequences)
        let kvl = model.attentionShape.kvl
        keys = (0..<m.nLayer).map { _ in FloatBuffer(count: sequences * capacity * kvl) }
        values = (0..<m.nLayer).map { _ in FloatBuffer(count: sequences * capacity * kvl) }
        rope = m.usesRope ? RopeTable(positions: capacity, headSize: m.headSize, theta: m.ropeTheta) : nil
    }

    /// Forgets sequence `seq`'s tokens (its next token goes to position 0 again): a spare
    /// sequence's padding rows.
    public func rewind(_ seq: Int) { lengths[seq] = 0 }

    /// The most rows one call takes.
    public var maxRows: Int { model.maxBatch * model.config.seqLen }

    /// Appends token `tokens[i]` to sequence `seqs[i]` (a sequence's rows in order) and returns the
    /// logits [N, V] of every row. Collective: every rank calls it, the ranks of a tp group with
    /// the same rows.
    public func append(tokens: [Int32], seqs: [Int]) throws -> [Float] {
        let n = tokens.count, m = model.config, c = m.nEmbd
        precondition(n >= 1 && n <= maxRows && seqs.count == n, "1...maxRows rows per call")
        var pos = [Int](repeating: 0, count: n)
        for r in 0..<n {
            pos[r] = lengths[seqs[r]]
            lengths[seqs[r]] += 1
            precondition(pos[r] < capacity, "sequence \(seqs[r]) is full (\(capacity) positions)")
        }
        let x = model.resid[0].base, wte = model.store.pointer("embed.weight", in: model.store.params)
        let wpe = rope == nil ? model.store.pointer("pos.weight", in: model.store.params) : nil
        tokens.withUnsafeBufferPointer {
            Embedding.forward(out: x, tokens: $0.baseAddress!, wte: wte, wpe: wpe, rows: n, c: c) { pos[$0] }
        }
        let rows = PassRows(batch: n, time: 1, tokenOffset: 0, globalTokens: n * model.ctx.mesh.dp)
        for l in 0..<m.nLayer {
            try attend(layer: l, n: n, seqs: seqs, pos: pos)
            _ = try model.feedForward(layer: l, rows)
        }
        let lnf = model.lnf.base, logits = model.logits.base
        RMSNorm.forward(
            out: lnf, rstd: model.rstdf.base, x: model.resid[m.nLayer].base,
            weight: model.store.pointer("norm.weight", in: model.store.params), n: n, c: c, eps: model.normEps)
        Linear.forward(
            out: logits, inp: lnf, weight: model.store.pointer("head.weight", in: model.store.params), n: n,
            inFeatures: c, outFeatures: m.vocabSize)
        return Array(UnsafeBufferPointer(start: logits, count: n * m.vocabSize))
    }

    /// Block l's attention half for the new rows: q, k, v of this rank's heads, rope at each row's
    /// position, k and v into the cache, attention over the cache, wo, allreduce over tp.
    func attend(layer l: Int, n: Int, seqs: [Int], pos: [Int]) throws {
        let mdl = model, c = mdl.config.nEmbd, tp = mdl.ctx.mesh.tp, sh = mdl.attentionShape, kvl = sh.kvl
        let w = mdl.weights[l], a = mdl.blocks[l], x = mdl.resid[l].base
        try mdl.projectQKV(layer: l, n: n, rope: rope) { pos[$0] }
        for r in 0..<n {
            let slot = (seqs[r] * capacity + pos[r]) * kvl
            (keys[l].base + slot).update(from: a.k.base + r * kvl, count: kvl)
            (values[l].base + slot).update(from: a.v.base + r * kvl, count: kvl)
        }
        Attention.cached(
            y: a.y.base, q: a.q.base, keys: keys[l].base, values: values[l].base, seq: seqs, pos: pos,
            heads: sh.hl, kvHeads: sh.gl, d: sh.d, ldq: sh.ql, ldkv: kvl, capacity: capacity, scratch: attention)
        let y = mdl.gateHeads(layer: l, n: n)  // MoH: the head router's gates
        Linear.forward(out: a.attnOut.base, inp: y, weight: w.wo, n: n, inFeatures: sh.ql, outFeatures: c)
        if tp > 1 { try mdl.ctx.allreduce(a.attnOut.base, n * c, over: mdl.ctx.comms.tp) }
        for i in 0..<(n * c) { a.mid.base[i] = x[i] + a.attnOut.base[i] }
    }
}
