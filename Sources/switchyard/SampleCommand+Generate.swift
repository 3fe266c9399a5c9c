// sample's first phase: every check that needs no other rank, agreed on by all, then the model
// share, its weights and the decoder for this rank's dp group's prompts (the second phase,
// generation: SampleCommand+Groups.swift).
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
        let prompts: [[Int32]]  // every prompt's token ids
        let codec: TextCodec
        /// The prompts this rank's dp group feeds (global indices); its decoder holds them and a
        /// spare sequence (index `mine.count`) for the padding rows of a group with less to do.
        let mine: Range<Int>
    }

    /// What every rank works out alone from the checkpoint and the request.
    struct Checked {
        let job: Job, dir: String, manifest: Manifest, tokens: Int, note: String?, experts: Int
        let codec: TextCodec, prompts: [[Int32]]
    }

    /// The checks every rank makes alone, before any collective; throws the first problem.
    static func check(_ args: ParsedArgs, request: Request, world: MPICommunicator) throws -> Checked {
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
        let k = try CheckpointModel.expertsPerToken(request.experts, option: "--top-k-experts", job: job, step: m.step)
        return Checked(
            job: job, dir: dir, manifest: m, tokens: tokens, note: note, experts: k, codec: codec, prompts: prompts)
    }

    /// The checks every rank makes alone, agreed on; then the model share, its weights and the
    /// decoder. nil on every rank when a check failed (its message printed once).
    static func prepare(_ args: ParsedArgs, request: Request, world: MPICommunicator) throws -> Setup? {
        var local: Checked? = nil
        var failure: String? = nil
        do { local = try check(args, request: request, world: world) } catch { failure = "\(error)" }
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
            config: cfg, maxBatch: maxBatch, context: ctx,
            store: ParameterStore(config: cfg, layout: ctx.layout, training: false),
            moe: MoEOptions(selectionBias: bias), maxTopK: l.experts)
        model.activeTopK = l.experts
        try CheckpointModel.loadWeights(dir: l.dir, manifest: l.manifest, into: model.store)
        let mine = groupShare(ctx.mesh.dpIndex, of: dp, prompts: l.prompts.count)
        let decoder = Decoder(model: model, sequences: mine.count + 1, capacity: longest + l.tokens)
        let describe =
            "step \(l.manifest.step) of \(l.dir), world \(world.size) (dp \(dp) x tp \(tp)), "
            + (dp > 1 ? "prompts split over the dp groups, " : "")
            + "\(Parallel.threads) thread(s) per rank, \(l.experts) of \(cfg.nExpert) experts per token"
        return Setup(
            decoder: decoder, tokens: l.tokens, describe: describe, prompts: l.prompts, codec: l.codec, mine: mine)
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
