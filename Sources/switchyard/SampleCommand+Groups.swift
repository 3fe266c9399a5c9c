// sample's generation under mpirun: the prompts are split over the dp groups (group g feeds
// prompts [g*P/dp, (g+1)*P/dp)); the experts still serve every group, since the MoE exchanges
// rows across the world. Every rank must make the same number of model calls (each one is
// collective), so a group with fewer prompt chunks to prefill, or with no prompt at all, feeds
// one padding row into a spare sequence that it rewinds. Within a group, tp rank 0 chooses each
// token and broadcasts it; draw i of prompt p is keyed by (seed, p, i) with p the global index,
// so the tokens are those of world 1 (greedy: up to reassociation in near-ties). World rank 0
// gathers every group's tokens and prints them in prompt order.
import CommMPI
import Foundation
import Model

extension SampleCommand {
    /// The prompts dp group `g` of `dp` feeds.
    static func groupShare(_ g: Int, of dp: Int, prompts p: Int) -> Range<Int> { (g * p / dp)..<((g + 1) * p / dp) }

    /// Prefill this group's prompts, then `tokens` steps of one token per prompt; rank 0 prints.
    static func generate(_ s: Setup, _ r: Request, world: MPICommunicator) throws {
        let dec = s.decoder, ctx = dec.model.ctx, count = s.mine.count
        var out = [[Int32]](repeating: [], count: count)
        var next = [Int64](repeating: 0, count: count)  // Int64: a CommScalar
        let t0 = Date()
        try prefill(s, r, next: &next)
        if count > 0 { try ctx.comms.tp.broadcast(&next, root: 0) }
        let prefill = Date().timeIntervalSince(t0)
        for i in 0..<s.tokens {
            for p in 0..<count { out[p].append(Int32(truncatingIfNeeded: next[p])) }
            if i == s.tokens - 1 { break }
            try step(s, r, next: &next, index: i + 1)
        }
        let total = Date().timeIntervalSince(t0)
        let all = try gather(out, s, world: world)
        guard world.rank == 0 else { return }
        writeContinuations(all.map(s.codec.decode), r)
        report(s, r, prefill: prefill, total: total)
    }

    /// Every prompt chunk of this group, then padding calls up to the busiest group's count;
    /// next[p] = the first token after prompt p (chosen on every rank; tp rank 0's counts).
    static func prefill(_ s: Setup, _ r: Request, next: inout [Int64]) throws {
        let dec = s.decoder, ctx = dec.model.ctx, v = dec.model.config.vocabSize, rows = dec.maxRows
        let chunks = { (g: Int) in
            groupShare(g, of: ctx.mesh.dp, prompts: s.prompts.count).reduce(0) {
                $0 + (s.prompts[$1].count + rows - 1) / rows
            }
        }
        let busiest = (0..<ctx.mesh.dp).map(chunks).max()!
        var calls = 0
        for (p, global) in s.mine.enumerated() {
            let prompt = s.prompts[global]
            var logits: [Float] = []
            for chunk in stride(from: 0, to: prompt.count, by: rows) {
                let part = Array(prompt[chunk..<min(prompt.count, chunk + rows)])
                logits = try dec.append(tokens: part, seqs: Array(repeating: p, count: part.count))
                calls += 1
            }
            next[p] = choose(Array(logits[(logits.count - v)...]), r, prompt: global, index: 0)
        }
        for _ in calls..<busiest { try pad(dec, spare: s.mine.count) }
    }

    /// One generation step: a row per prompt of this group (or one padding row), then the next tokens.
    static func step(_ s: Setup, _ r: Request, next: inout [Int64], index: Int) throws {
        let dec = s.decoder, v = dec.model.config.vocabSize, count = s.mine.count
        guard count > 0 else { return try pad(dec, spare: 0) }
        let logits = try dec.append(tokens: next.map { Int32(truncatingIfNeeded: $0) }, seqs: Array(0..<count))
        for p in 0..<count {
            next[p] = choose(Array(logits[(p * v)..<((p + 1) * v)]), r, prompt: s.mine.lowerBound + p, index: index)
        }
        try dec.model.ctx.comms.tp.broadcast(&next, root: 0)
    }

    /// A collective model call with one row of the spare sequence, which is then rewound.
    static func pad(_ dec: Decoder, spare: Int) throws {
        _ = try dec.append(tokens: [0], seqs: [spare])
        dec.rewind(spare)
    }

    /// Every prompt's tokens, in prompt order, on every rank (each group's tp rank 0 counts).
    static func gather(_ out: [[Int32]], _ s: Setup, world: MPICommunicator) throws -> [[Int32]] {
        let mesh = s.decoder.model.ctx.mesh, n = s.tokens, p = s.prompts.count
        let widest = (0..<mesh.dp).map { groupShare($0, of: mesh.dp, prompts: p).count }.max()!
        var mine = [Int64](repeating: -1, count: widest * n)
        for (i, row) in out.enumerated() { for (j, t) in row.enumerated() { mine[i * n + j] = Int64(t) } }
        let all = try world.allgather(mine)
        return (0..<mesh.dp).flatMap { g -> [[Int32]] in
            let base = g * mesh.tp * widest * n  // world rank g * tp: the group's tp rank 0
            return (0..<groupShare(g, of: mesh.dp, prompts: p).count).map { i in
                (0..<n).map { Int32(truncatingIfNeeded: all[base + i * n + $0]) }
            }
        }
    }

    /// stderr: prompts, tokens, the generation rate over the world, prefill, the layout.
    static func report(_ s: Setup, _ r: Request, prefill: Double, total: Double) {
        let count = s.prompts.count, promptTokens = s.prompts.reduce(0) { $0 + $1.count }
        let generated = count * s.tokens
        let mode = r.options.temperature == 0 ? "greedy" : "temperature \(r.options.temperature), seed \(r.seed)"
        FileHandle.standardError.write(
            Data(
                String(
                    format: "sample: %d prompt(s) x %d tokens (%@): %.1f tokens/s generating, prefill %d tokens in "
                        + "%.2f s; %@\n", count, s.tokens, mode,
                    Double(max(generated - count, 0)) / max(total - prefill, 1e-9), promptTokens, prefill,
                    s.describe
                ).utf8))
    }
}
