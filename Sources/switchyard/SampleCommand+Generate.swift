// sample's two phases: prepare (every check that needs no other rank, agreed on by all, then the
// model share and its weights) and generate (prefill each prompt, then one token per prompt per
// step, rank 0's choice broadcast).
import Checkpoint
import Comm
import CommMPI
import Foundation
import JSON
import Model
import Tensor
import Training

extension SampleCommand {
    struct Setup {
        let decoder: Decoder
        let tokens: Int  // generated per prompt (cut at seqLen for learned positions)
        let describe: String
        let prompts: [[Int32]]  // the prompts' token ids
        let codec: TextCodec
    }

    /// The checks every rank makes alone; nil on every rank when one failed (its message printed once).
    static func prepare(_ args: ParsedArgs, request: Request, world: MPICommunicator) throws -> Setup? {
        var local:
            (
                job: Job, dir: String, manifest: Manifest, tokens: Int, note: String?, experts: Int, codec: TextCodec,
                prompts: [[Int32]]
            )? = nil
        var failure: String? = nil
        do {
            let dir = try EvalCommand.verifiedCheckpoint(args.positionals[0])
            let m = try CheckpointStore.readManifest(dir: dir)
            var job = try CheckpointModel.job(m, dir: dir)
            if world.size != m.world {
                job.layout.tp = 1
                job.placement = nil
            }
            job.layout.dp = 0
            for o in args.all(.set) { try job.applyOverride(o) }
            _ = try job.resolveLayout(world: world.size)
            let codec = try TextCodec(job: job)
            let prompts = try request.prompts.map { try codec.encode($0) }
            let (tokens, note) = try budget(job, request: request, longest: prompts.map(\.count).max()!)
            let k = try CheckpointModel.expertsPerToken(
                request.experts, option: "--top-k-experts", job: job, step: m.step)
            local = (job, dir, m, tokens, note, k, codec, prompts)
        } catch {
            failure = "\(error)"
        }
        guard try Runtime.everyRankSucceeded(failure, world: world), let l = local else { return nil }
        if world.rank == 0, let note = l.note { FileHandle.standardError.write(Data((note + "\n").utf8)) }
        let (dp, tp, plan) = try l.job.resolveLayout(world: world.size)
        let ctx = ParallelContext(
            comms: try MeshComms(world: world, dp: dp, tp: tp), plan: plan,
            nodeOf: try NodeMap.byHost(world, host: Runtime.hostName).nodeOf)
        let cfg = l.job.model, longest = l.prompts.map(\.count).max()!
        // Rows per call: a prompt chunk of seqLen, or one row per prompt.
        let maxBatch = max(1, (request.prompts.count + cfg.seqLen - 1) / cfg.seqLen)
        let bias = try CheckpointModel.routerBias(dir: l.dir, manifest: l.manifest)
        let model = Transformer(
            config: cfg, maxBatch: maxBatch, context: ctx, moe: MoEOptions(selectionBias: bias), maxTopK: l.experts)
        model.activeTopK = l.experts
        try CheckpointModel.loadWeights(dir: l.dir, manifest: l.manifest, into: model.store)
        let decoder = Decoder(model: model, sequences: request.prompts.count, capacity: longest + l.tokens)
        let describe =
            "step \(l.manifest.step) of \(l.dir), world \(world.size) (dp \(dp) x tp \(tp)), "
            + "\(Parallel.threads) thread(s) per rank, \(l.experts) of \(cfg.nExpert) experts per token"
        return Setup(decoder: decoder, tokens: l.tokens, describe: describe, prompts: l.prompts, codec: l.codec)
    }

    /// Tokens to generate per prompt, and a note when learned positions cut them.
    static func budget(_ job: Job, request: Request, longest: Int) throws -> (Int, String?) {
        let m = job.model
        guard !m.usesRope else { return (request.tokens, nil) }
        guard longest < m.seqLen else {
            throw CheckpointError(
                "the prompt is \(longest) tokens; with model.positions = learned a sequence holds at most "
                    + "model.seqLen = \(m.seqLen), and one must be left to generate: shorten the prompt")
        }
        let room = m.seqLen - longest
        guard request.tokens > room else { return (request.tokens, nil) }
        return (
            room,
            "sample: model.positions = learned: generation stops at model.seqLen = \(m.seqLen) (\(room) tokens after "
                + "the longest prompt, not --tokens \(request.tokens)); a rope model may run longer"
        )
    }

    /// Prefill each prompt, then `tokens` steps of one token per prompt; rank 0 prints.
    static func generate(_ s: Setup, _ r: Request, world: MPICommunicator) throws {
        let dec = s.decoder, v = dec.model.config.vocabSize, count = r.prompts.count
        var out = [[Int32]](repeating: [], count: count)
        var next = [Int64](repeating: 0, count: count)  // Int64: a CommScalar
        let t0 = Date()
        for (p, prompt) in s.prompts.enumerated() {
            var logits: [Float] = []
            for chunk in stride(from: 0, to: prompt.count, by: dec.maxRows) {
                let part = Array(prompt[chunk..<min(prompt.count, chunk + dec.maxRows)])
                logits = try dec.append(tokens: part, seqs: Array(repeating: p, count: part.count))
            }
            next[p] = choose(Array(logits[(logits.count - v)...]), r, prompt: p, index: 0)
        }
        try world.broadcast(&next, root: 0)
        let prefill = Date().timeIntervalSince(t0)
        for i in 0..<s.tokens {
            for p in 0..<count { out[p].append(Int32(truncatingIfNeeded: next[p])) }
            if i == s.tokens - 1 { break }
            var logits: [Float] = []
            for chunk in stride(from: 0, to: count, by: dec.maxRows) {
                let rows = Array(chunk..<min(count, chunk + dec.maxRows))
                logits += try dec.append(tokens: rows.map { Int32(next[$0]) }, seqs: rows)
            }
            for p in 0..<count { next[p] = choose(Array(logits[(p * v)..<((p + 1) * v)]), r, prompt: p, index: i + 1) }
            try world.broadcast(&next, root: 0)
        }
        let total = Date().timeIntervalSince(t0)
        guard world.rank == 0 else { return }
        writeContinuations(out.map(s.codec.decode), r)
        let promptTokens = s.prompts.reduce(0) { $0 + $1.count }, generated = count * s.tokens
        let mode = r.options.temperature == 0 ? "greedy" : "temperature \(r.options.temperature), seed \(r.seed)"
        FileHandle.standardError.write(
            Data(
                String(
                    format: "sample: %d prompt(s) x %d tokens (%@): %.1f tokens/s generating, prefill %d tokens in "
                        + "%.2f s; %@\n", count, s.tokens, mode,
                    Double(max(generated - count, 0))
                        / max(total - prefill, 1e-9), promptTokens, prefill, s.describe
                ).utf8))
    }

    /// The next token from one row of logits; the draw is keyed by (seed, prompt, index).
    static func choose(_ logits: [Float], _ r: Request, prompt: Int, index: Int) -> Int64 {
        let u = Double(
            CounterRNG.uniform(CounterRNG.hash(r.seed, 0x53414D50 /* "SAMP" */, UInt64(prompt), UInt64(index))))
        return logits.withUnsafeBufferPointer {
            Int64(TokenSampler.choose($0.baseAddress!, v: logits.count, options: r.options, uniform: u))
        }
    }

    /// stdout: the one continuation's bytes, or a JSON line per prompt of a --prompts batch.
    static func writeContinuations(_ out: [[UInt8]], _ r: Request) {
        if !r.json {
            FileHandle.standardOutput.write(Data(out[0] + [10]))
            return
        }
        for (p, text) in out.enumerated() {
            let line: JSONValue = [
                "prompt": .string(String(decoding: r.prompts[p], as: UTF8.self)),
                "continuation": .string(String(decoding: text, as: UTF8.self))
            ]
            FileHandle.standardOutput.write(Data((line.compact + "\n").utf8))
        }
    }
}
