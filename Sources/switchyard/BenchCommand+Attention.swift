// `switchyard bench JOB --attention T,...`: the attention core alone, forward and backward, at
// the job's heads and head size and each sequence length T, with the batch of `--attention-batch`.
import Clock
import Foundation
import Model
import Tensor
import Training

extension BenchCommand {
    struct AttentionRow {
        let t: Int, forwardMs: Double, backwardMs: Double, gflops: Double, savedMB: Double
    }

    /// Best of `repeats` forward and backward passes at each T; FLOPs count the causal half
    /// (forward 2 products, backward 4 plus the recomputed scores).
    static func attentionBench(job: Job, lengths: [Int], batch b: Int, repeats: Int) -> [AttentionRow] {
        let h = job.model.nHead, d = job.model.nEmbd / job.model.nHead, c = h * d
        return lengths.map { t in
            let n = b * t * c, scratch = WorkerScratch()
            let q = FloatBuffer(count: n), k = FloatBuffer(count: n), v = FloatBuffer(count: n)
            let y = FloatBuffer(count: n), dy = FloatBuffer(count: n), lse = FloatBuffer(count: b * h * t)
            let dq = FloatBuffer(count: n), dk = FloatBuffer(count: n), dv = FloatBuffer(count: n)
            for i in 0..<n {
                q[i] = CounterRNG.uniform(CounterRNG.hash(1, UInt64(i))) - 0.5
                k[i] = CounterRNG.uniform(CounterRNG.hash(2, UInt64(i))) - 0.5
                v[i] = CounterRNG.uniform(CounterRNG.hash(3, UInt64(i))) - 0.5
                dy[i] = CounterRNG.uniform(CounterRNG.hash(4, UInt64(i))) - 0.5
            }
            var fwd = Double.infinity, bwd = Double.infinity
            for _ in 0..<repeats {
                let t0 = monotonicSeconds()
                Attention.forward(
                    y: y.base, lse: lse.base, q: q.base, k: k.base, v: v.base, b: b, t: t, h: h, kvHeads: h, d: d,
                    ldq: c, ldkv: c, scratch: scratch)
                let t1 = monotonicSeconds()
                Attention.backward(
                    dq: dq.base, dk: dk.base, dv: dv.base, dy: dy.base, q: q.base, k: k.base, v: v.base, y: y.base,
                    lse: lse.base, b: b, t: t, h: h, kvHeads: h, d: d, ldq: c, ldkv: c, scratch: scratch)
                fwd = min(fwd, t1 - t0)
                bwd = min(bwd, monotonicSeconds() - t1)
            }
            let flops = 7 * 2 * Double(b * h) * Double(t) * Double(t + 1) / 2 * Double(d)
            return AttentionRow(
                t: t, forwardMs: fwd * 1000, backwardMs: bwd * 1000, gflops: flops / (fwd + bwd) / 1e9,
                savedMB: Double(b * h * t * 4) / 1e6)
        }
    }

    static func reportAttention(_ rows: [AttentionRow], job: Job, batch: Int) {
        let h = job.model.nHead, d = job.model.nEmbd / job.model.nHead
        say("attention core alone (B \(batch), H \(h), D \(d); best of the repeats; threads \(Parallel.threads)):")
        say("      T   forward ms  backward ms   GFLOP/s   saved for backward (lse) MB")
        for r in rows {
            say(
                String(
                    format: "  %5d   %10.2f  %11.2f   %7.1f   %8.3f", r.t, r.forwardMs, r.backwardMs, r.gflops,
                    r.savedMB))
        }
    }
}
