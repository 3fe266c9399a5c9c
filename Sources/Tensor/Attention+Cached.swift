// Attention of new rows against a key/value cache, for generation: row r of sequence s at
// position p attends to the cached keys 0...p of s (its own key included, written before).
// Shape legend: N new rows, H query heads of size D in rows of stride ldq, G key/value heads
// (query head h reads h / (H / G)), S sequences, P cache positions per sequence; keys and
// values [S, P, ldkv]. Forward only.

extension Attention {
    /// y[r] = softmax(q[r] K[s, 0...p]^T * scale) V[s, 0...p] for every row r (s = seq[r],
    /// p = pos[r]) and head; one work item per (row, head), each writing its own y slice.
    public static func cached(
        y: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, keys: UnsafePointer<Float>,
        values: UnsafePointer<Float>, seq: [Int], pos: [Int], heads h: Int, kvHeads g: Int, d: Int, ldq: Int,
        ldkv: Int, capacity: Int, scratch: WorkerScratch
    ) {
        let scale = 1 / Float(d).squareRoot()
        let scores = scratch.reserve(capacity)
        Parallel.forEach(seq.count * h) { item, worker in
            let r = item / h, head = item % h, p = pos[r]
            let qr = q + r * ldq + head * d, yr = y + r * ldq + head * d, kvOff = (head / (h / g)) * d
            let kBase = keys + seq[r] * capacity * ldkv + kvOff, vBase = values + seq[r] * capacity * ldkv + kvOff
            let s = scores[worker]
            for j in 0...p {
                let kj = kBase + j * ldkv
                var dot: Float = 0
                for i in 0..<d { dot += qr[i] * kj[i] }
                s[j] = dot * scale
            }
            let mx = RowMath.max(s, p + 1)
            let sum = RowMath.expShiftedSum(s, p + 1, shift: mx)
            let inv = 1 / sum
            for i in 0..<d { yr[i] = 0 }
            for j in 0...p {
                let w = s[j] * inv, vj = vBase + j * ldkv
                for i in 0..<d { yr[i] += w * vj[i] }
            }
        }
    }
}
