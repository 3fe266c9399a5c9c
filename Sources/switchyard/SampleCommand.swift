// `switchyard sample RUN|CKPT_DIR --prompt TEXT`: text from a checkpoint's model, with a KV cache.
// At world 1 it reads any checkpoint; under mpirun -np N heads are split over tp and experts
// over the ranks (the checkpoint's layout when N is its world size, else dp N x tp 1, or what
// --set layout.* / placement say), and a batch's prompts are split over the dp groups
// (SampleCommand+Groups.swift). Each group's tp rank 0 chooses its tokens and broadcasts them,
// so the ranks never disagree; rank 0 gathers and prints every prompt's.
import Checkpoint
import Comm
import CommMPI
import Foundation
import Model
import Tensor
import Training

enum SampleCommand {
    static let spec = CommandSpec(
        name: "sample",
        summary: "Generate text from a checkpoint's model (KV cache; under mpirun -np N, sharded like training).",
        positionals: [("PATH", "a run directory (uses LATEST) or a checkpoint directory (.../checkpoints/step-N)")],
        options: [
            OptionSpec(
                .prompt, value: "TEXT",
                "the prompt (encoded by the job's data.tokenizer, else its UTF-8 bytes are the tokens)"),
            OptionSpec(.prompts, value: "FILE", "one prompt per line, sampled together as one batch"),
            OptionSpec(.tokens, value: "N", "tokens to generate per prompt (default 128)"),
            OptionSpec(.temperature, value: "T", "0: greedy; else softmax(logits / T) (default 1)"),
            OptionSpec(.topK, value: "K", "draw among the K most likely tokens only (default: all)"),
            OptionSpec(.topP, value: "P", "draw among the fewest tokens whose probability reaches P (default 1)"),
            OptionSpec(
                .topKExperts, value: "K",
                "experts per token (1...nExpert; default: what the last trained step used, e.g. SMoE-Dropout's)"),
            OptionSpec(.seed, value: "S", "keys every draw: the same seed gives the same text (default 0)"),
            OptionSpec(
                .set, value: "KEY=VALUE", repeatable: true,
                "layout.dp, layout.tp or placement to shard with under mpirun; data.tokenizer"),
            OptionSpec(.threads, value: "N", "threads per rank (default: as train)")
        ],
        details: """
            With --prompt the continuation (not the prompt) goes to stdout as raw bytes; with --prompts
            each prompt gives one JSON line {"prompt": ..., "continuation": ...}. Tokens/s go to
            stderr. With model.positions = learned a sequence ends at the model's seqLen (its position
            table ends there: say --tokens fewer, or train with rope); with rope it may run longer.
            Draw i of prompt p is keyed by (seed, p, i), so a prompt's text does not depend on the batch
            it is in, and np 1, 2 or 4 give the same tokens. Models trained on text read a byte per
            token; models trained on token files need the job's data.tokenizer (the tokenizer.json
            that made the data; --set data.tokenizer=FILE names it when the job did not).

            Exit codes: 0 success, 1 failure (bad checkpoint, prompt too long), 64 usage error.

            """
    ) { try run($0) }

    struct Request {
        var prompts: [[UInt8]]
        var tokens: Int
        var options: SamplingOptions
        var seed: UInt64
        var json: Bool
        var experts: Int?  // --top-k-experts
    }

    static func run(_ args: ParsedArgs) throws -> Int32 {
        let request = try parse(args)
        Runtime.useThreads(Runtime.threadsPerRank(option: try args.positiveInt(.threads)))
        return Runtime.withWorld { world in
            try Runtime.armDeadlines(world, heartbeat: true)
            guard let setup = try prepare(args, request: request, world: world) else { return 1 }
            try generate(setup, request, world: world)
            return 0
        }
    }

    static func parse(_ args: ParsedArgs) throws -> Request {
        var prompts: [[UInt8]] = []
        if let p = args.value(.prompt) { prompts.append(Array(p.utf8)) }
        if let file = args.value(.prompts) {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw args.usageError("--prompts \(file): cannot read it as UTF-8 text")
            }
            prompts += text.split(separator: "\n", omittingEmptySubsequences: true).map { Array($0.utf8) }
        }
        guard !prompts.isEmpty else { throw args.usageError("give --prompt TEXT or --prompts FILE") }
        for o in args.all(.set)
        where !["layout.dp=", "layout.tp=", "placement=", "data.tokenizer="].contains(where: o.hasPrefix) {
            throw args.usageError(
                "--set \(o): sample takes layout.dp, layout.tp, placement or data.tokenizer (the rest is the "
                    + "checkpoint's)")
        }
        guard prompts.allSatisfy({ !$0.isEmpty }) else { throw args.usageError("--prompt must not be empty") }
        var o = SamplingOptions()
        if let t = args.value(.temperature) {
            guard let v = Double(t), v.isFinite, v >= 0 else {
                throw args.usageError("--temperature needs a number >= 0 (0: greedy), got '\(t)'")
            }
            o.temperature = v
        }
        o.topK = try args.positiveInt(.topK) ?? 0
        if let p = try args.positiveDouble(.topP) {
            guard p <= 1 else { throw args.usageError("--top-p needs a number in (0, 1], got '\(p)'") }
            o.topP = p
        }
        var seed: UInt64 = 0
        if let s = args.value(.seed) {
            guard let v = UInt64(s) else { throw args.usageError("--seed needs a whole number >= 0, got '\(s)'") }
            seed = v
        }
        return Request(
            prompts: prompts, tokens: try args.positiveInt(.tokens) ?? 128, options: o, seed: seed,
            json: args.value(.prompts) != nil, experts: try args.positiveInt(.topKExperts))
    }
}
