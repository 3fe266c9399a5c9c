// `switchyard bench JOB --gemm`: the job's matrix products one shape at a time (projections,
// experts at their mean rows, the head), forward x W^T, dY W and dY^T x, through `Linear` on each
// engine in turn (CGemm, OpenBLAS), alternated, best of the repeats; GFLOP/s and the fraction of
// the FMA peak.
import Clock
import Foundation
import JSON
import Tensor
import Training

extension BenchCommand {
    /// One product of the job: `rows` x `inputs` -> `outputs`.
    struct GemmShape { let name: String, rows: Int, inputs: Int, outputs: Int }

    /// The job's shapes at world 1: N = batch x T rows; experts get N x K / E rows (the mean).
    static func gemmShapes(_ job: Job) -> [GemmShape] {
        let m = job.model, n = job.train.batchSize * m.seqLen, c = m.nEmbd
        let expertRows = max(1, n * m.topK / max(m.nExpert, 1))
        var shapes = [
            GemmShape(name: "q (x Wq^T)", rows: n, inputs: c, outputs: m.qWidth),
            GemmShape(name: "o (y Wo^T)", rows: n, inputs: m.qWidth, outputs: c),
            GemmShape(name: "expert w1", rows: expertRows, inputs: c, outputs: m.ffHidden),
            GemmShape(name: "expert w2", rows: expertRows, inputs: m.ffHidden, outputs: c),
            GemmShape(name: "head", rows: n, inputs: c, outputs: m.vocabSize)
        ]
        if m.kvWidth != m.qWidth {
            shapes.insert(GemmShape(name: "k, v (x Wk^T)", rows: n, inputs: c, outputs: m.kvWidth), at: 1)
        }
        return shapes
    }

    /// Seconds of forward, input gradient and weight gradient of `s` on the current engine, best of `repeats`.
    static func timeLinear(_ s: GemmShape, repeats: Int) -> [Double] {
        let x = FloatBuffer(count: s.rows * s.inputs), w = FloatBuffer(count: s.outputs * s.inputs)
        let y = FloatBuffer(count: s.rows * s.outputs), dx = FloatBuffer(count: s.rows * s.inputs)
        let dw = FloatBuffer(count: s.outputs * s.inputs)
        for (i, buffer) in [x, w, y].enumerated() {
            for j in 0..<buffer.count { buffer[j] = CounterRNG.uniform(CounterRNG.hash(UInt64(i), UInt64(j))) - 0.5 }
        }
        var best = [Double](repeating: .infinity, count: 3)
        for _ in 0..<repeats {
            let t0 = monotonicSeconds()
            Linear.forward(
                out: y.base, inp: x.base, weight: w.base, n: s.rows, inFeatures: s.inputs, outFeatures: s.outputs)
            let t1 = monotonicSeconds()
            Linear.backward(
                dInp: dx.base, dWeight: nil, dOut: y.base, inp: x.base, weight: w.base, n: s.rows,
                inFeatures: s.inputs, outFeatures: s.outputs)
            let t2 = monotonicSeconds()
            Linear.backward(
                dInp: nil, dWeight: dw.base, dOut: y.base, inp: x.base, weight: w.base, n: s.rows,
                inFeatures: s.inputs, outFeatures: s.outputs)
            let t3 = monotonicSeconds()
            best = zip(best, [t1 - t0, t2 - t1, t3 - t2]).map { min($0, $1) }
        }
        return best
    }

    /// --gemm: the shape table, each shape timed on CGemm and on OpenBLAS in alternation.
    static func gemmRows(job: Job, fmaPeak: Double, repeats: Int) {
        let saved = Gemm.engine
        defer { Gemm.engine = saved }
        let engines: [GemmEngine] = Gemm.kernelBits > 0 ? [.own, .blas] : [.blas]
        say(
            "matrix products of \(job.name) (N = batch x T = \(job.train.batchSize * job.model.seqLen) rows; "
                + "experts at the mean N x K / E; \(Parallel.threads) thread(s), best of \(repeats), GFLOP/s "
                + "and fraction of the FMA peak; CGemm \(Gemm.kernelBits)-bit vs OpenBLAS \(BLAS.coreName)):")
        say("  shape            rows x in -> out        pass      CGemm          OpenBLAS       ratio")
        var recorded: [JSONValue] = []
        for s in gemmShapes(job) {
            var seconds: [GemmEngine: [Double]] = [:]
            for round in 0..<2 {  // alternated: own, blas, own, blas
                for e in engines {
                    Gemm.engine = e
                    let t = timeLinear(s, repeats: repeats)
                    seconds[e] = round == 0 ? t : zip(seconds[e]!, t).map { min($0, $1) }
                }
            }
            let flops = 2 * Double(s.rows) * Double(s.inputs) * Double(s.outputs)
            for (p, pass) in ["x W^T", "dY W", "dY^T x"].enumerated() {
                let own = seconds[.own].map { flops / $0[p] / 1e9 } ?? .nan, blas = flops / seconds[.blas]![p] / 1e9
                let label = "  " + s.name.padding(toLength: 15, withPad: " ", startingAt: 0)
                say(
                    label
                        + String(
                            format: "  %5d x %4d -> %5d  ", s.rows, s.inputs, s.outputs)
                        + pass.padding(toLength: 7, withPad: " ", startingAt: 0)
                        + String(
                            format: "  %6.1f (%.2f)  %6.1f (%.2f)  %5.2f", own, own * 1e9 / fmaPeak, blas,
                            blas * 1e9 / fmaPeak, own / blas))
                recorded.append(
                    .object([
                        ("shape", .string(s.name)), ("rows", .integer(s.rows)), ("inputs", .integer(s.inputs)),
                        ("outputs", .integer(s.outputs)), ("pass", .string(pass)), ("cgemmGflops", .number(own)),
                        ("openblasGflops", .number(blas))
                    ]))
            }
        }
        record.append(("gemmShapes", .array(recorded)))
    }
}
