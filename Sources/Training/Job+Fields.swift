// Every key a job file or `--set` may set, documented once: `train --help` and the parser both
// read this table (the defaults live in Job.swift's specs).
import Model

extension Job {
    /// Every key a job file or `--set` may set, in the order job.json lists them.
    public static let fields: [JobField] = [
        JobField(key: "name", ref: .string(\.name), doc: "run name: the run directory is <runsDir>/<name>"),
        JobField(key: "runsDir", ref: .string(\.runsDir), doc: "parent of run directories"),
        JobField(key: "seed", ref: .int(\.seed), doc: "keys every random draw (init, batches)"),
        JobField(
            key: "model.vocabSize", ref: .int(\.model.vocabSize),
            doc: "V: 256 for byte-level text; > every token id of a .bin"),
        JobField(
            key: "model.seqLen", ref: .int(\.model.seqLen), doc: "T: training sequence length (and learned positions)"),
        JobField(key: "model.nLayer", ref: .int(\.model.nLayer), doc: "L: transformer blocks"),
        JobField(key: "model.nEmbd", ref: .int(\.model.nEmbd), doc: "C: channels; divisible by nHead"),
        JobField(key: "model.nHead", ref: .int(\.model.nHead), doc: "H: attention heads"),
        JobField(key: "model.nExpert", ref: .int(\.model.nExpert), doc: "E: experts per MoE block"),
        JobField(key: "model.topK", ref: .int(\.model.topK), doc: "K: experts per token (1...nExpert)"),
        JobField(key: "model.ffHidden", ref: .int(\.model.ffHidden), doc: "F: hidden width of each expert / dense FFN"),
        JobField(key: "model.moeEvery", ref: .int(\.model.moeEvery), doc: "every n-th block is MoE (1: all; 0: none)"),
        JobField(
            key: "model.positions", ref: .string(\.model.positions),
            doc: "learned ([T, C] table; generation stops at seqLen) | rope (rotary, as Mixtral/Llama; exports to HF)"),
        JobField(
            key: "model.ffn", ref: .string(\.model.ffn),
            doc: "gelu: w2(gelu(w1 x)) | swiglu: w2(silu(w1 x) * w3 x), Mixtral's experts (3 matrices, not 2)"),
        JobField(key: "model.ropeTheta", ref: .double(\.model.ropeTheta), doc: "rope base frequency (Mixtral: 1e6)"),
        JobField(
            key: "model.nSharedExperts", ref: .int(\.model.nSharedExperts),
            doc: "always-active experts per MoE block beside the routed ones (DeepSeek-MoE), replicated"),
        JobField(
            key: "model.router", ref: .string(\.model.router),
            doc: "learned | random: a fixed random router, never trained (SMoE-Dropout; pair with train.topKSchedule)"),
        JobField(
            key: "model.attention", ref: .string(\.model.attention),
            doc: "mha | moh: Mixture-of-Head attention, a head router weights each token's heads before wo"),
        JobField(
            key: "model.mohSharedHeads", ref: .int(\.model.mohSharedHeads),
            doc: "MoH: heads always active (0..<nHead); they share a weight with the routed ones (two-stage)"),
        JobField(
            key: "model.mohActiveHeads", ref: .int(\.model.mohActiveHeads),
            doc: "MoH: routed heads each token takes by router score (1...nHead - mohSharedHeads; 0: half of them)"),
        JobField(
            key: "model.nKVHead", ref: .int(\.model.nKVHead),
            doc: "G: key/value heads, grouped-query attention (0: nHead); tp must divide it"),
        JobField(key: "model.headDim", ref: .int(\.model.headDim), doc: "D: head size (0: nEmbd / nHead)"),
        JobField(
            key: "model.qkNorm", ref: .string(\.model.qkNorm),
            doc: "none | head: RMSNorm of each head's q and k (Qwen3) | full: of the whole q and k (OLMoE)"),
        JobField(
            key: "model.normTopK", ref: .bool(\.model.normTopK),
            doc: "renormalise the top-k gate weights to sum to 1 (Mixtral) or keep the probabilities (Qwen3, OLMoE)"),
        JobField(key: "model.rmsNormEps", ref: .double(\.model.rmsNormEps), doc: "epsilon of every RMSNorm"),
        JobField(
            key: "model.family", ref: .string(\.model.family),
            doc: "Hugging Face family of the export: \"\" (mixtral) | mixtral | qwen3_moe | olmoe (ckpt import sets it)"
        ),
        JobField(
            key: "data.path", ref: .string(\.data.path),
            doc:
                "text file (bytes are tokens), llm.c .bin (uint16 or uint32), or a glob of shards (\"dir/train_*.bin\")"
        ),
        JobField(
            key: "data.format", ref: .string(\.data.format), doc: "auto (.bin suffix -> bin, else text) | text | bin"),
        JobField(
            key: "data.valFraction", ref: .double(\.data.valFraction),
            doc: "share of the tokens' tail held out for eval when data.valPath is empty (0 disables eval)"),
        JobField(
            key: "data.valPath", ref: .string(\.data.valPath),
            doc: "file or glob of held-out shards for eval (\"\": the tail data.valFraction of data.path)"),
        JobField(
            key: "data.tokenizer", ref: .string(\.data.tokenizer),
            doc: "tokenizer.json that made the .bin ids: sample and eval encode and decode text with it"),
        JobField(key: "train.steps", ref: .int(\.train.steps), doc: "optimizer steps"),
        JobField(key: "train.batchSize", ref: .int(\.train.batchSize), doc: "sequences per step (global batch)"),
        JobField(
            key: "train.microBatches", ref: .int(\.train.microBatches),
            doc: "each dp group's slice runs as M micro-batches, gradients summed, one update (memory of one)"),
        JobField(
            key: "train.shardOptimizer", ref: .bool(\.train.shardOptimizer),
            doc: "ZeRO-1: AdamW moments of dp-replicated tensors split over dp (reduce-scatter, update, allgather)"),
        JobField(
            key: "train.overlapReduce", ref: .bool(\.train.overlapReduce),
            doc: "start each half-block's gradient sum as its backward ends, not after (across nodes only; "
                + "holds a copy of the gradients in flight)"),
        JobField(
            key: "train.recompute", ref: .string(\.train.recompute),
            doc: "none | attention | block: activations backward recomputes instead of keeping (same gradients)"),
        JobField(key: "train.lr", ref: .double(\.train.lr), doc: "peak learning rate"),
        JobField(key: "train.minLr", ref: .double(\.train.minLr), doc: "learning rate at the end of the cosine decay"),
        JobField(key: "train.warmupSteps", ref: .int(\.train.warmupSteps), doc: "linear warmup steps"),
        JobField(
            key: "train.weightDecay", ref: .double(\.train.weightDecay),
            doc: "AdamW decoupled weight decay (not on norm weights)"),
        JobField(key: "train.beta1", ref: .double(\.train.beta1), doc: "AdamW first-moment decay"),
        JobField(key: "train.beta2", ref: .double(\.train.beta2), doc: "AdamW second-moment decay"),
        JobField(key: "train.eps", ref: .double(\.train.eps), doc: "AdamW epsilon"),
        JobField(key: "train.gradClip", ref: .double(\.train.gradClip), doc: "clip the global gradient norm (0: off)"),
        JobField(key: "train.auxLossCoef", ref: .double(\.train.auxLossCoef), doc: "weight of the load-balancing loss"),
        JobField(
            key: "train.routerBiasRate", ref: .double(\.train.routerBiasRate),
            doc: "aux-loss-free balancing (DeepSeek-V3): per-expert selection bias moved by this each step (0: off)"),
        JobField(
            key: "train.topKSchedule", ref: .string(\.train.topKSchedule),
            doc: "experts per token by step: \"\" (model.topK) | linear (1 to nExpert) | \"0:1,100:2,...\""),
        JobField(
            key: "train.zLossCoef", ref: .double(\.train.zLossCoef),
            doc: "weight of the router z-loss (ST-MoE): mean logsumexp(router logits)^2; keeps logits small"),
        JobField(
            key: "train.maxBadSteps", ref: .int(\.train.maxBadSteps),
            doc: "stop after this many consecutive non-finite steps"),
        JobField(key: "train.logEvery", ref: .int(\.train.logEvery), doc: "progress line every N steps"),
        JobField(
            key: "train.tensorboard", ref: .bool(\.train.tensorboard),
            doc: "rank 0 also writes RUN/tb/events.out.tfevents.* for TensorBoard (flushed every logEvery steps)"),
        JobField(
            key: "train.evalEvery", ref: .int(\.train.evalEvery), doc: "eval every N steps and at the end (0: never)"),
        JobField(key: "train.evalWindows", ref: .int(\.train.evalWindows), doc: "fixed windows per eval"),
        JobField(
            key: "train.peakGflops", ref: .double(\.train.peakGflops),
            doc: "per-rank sgemm peak for MFU (0: measure at start)"),
        JobField(
            key: "train.capacityFactor", ref: .double(\.train.capacityFactor),
            doc: "0: dropless; else expert capacity = ceil(f x tokens x K / E), overflow dropped"),
        JobField(
            key: "checkpoint.every", ref: .int(\.checkpoint.every),
            doc: "save every N steps, at the end and on SIGTERM (0: never)"),
        JobField(key: "checkpoint.keep", ref: .int(\.checkpoint.keep), doc: "keep the newest N checkpoints"),
        JobField(
            key: "checkpoint.keepEvery", ref: .int(\.checkpoint.keepEvery),
            doc: "also keep steps that are multiples of N (0: none)"),
        JobField(
            key: "checkpoint.onError", ref: .string(\.checkpoint.onError),
            doc: "a failed save (disk full...): stop | continue"),
        JobField(
            key: "train.testNaNStep", ref: .int(\.train.testNaNStep),
            doc: "test only: put a NaN into one gradient at this step (-1: never), to test the non-finite guard"),
        JobField(
            key: "train.testNaNRank", ref: .int(\.train.testNaNRank), doc: "test only: the rank of train.testNaNStep"),
        JobField(
            key: "train.stragglerRatio", ref: .double(\.train.stragglerRatio),
            doc: "warn when a rank computes this many times the other ranks' median over a window (0: off)"),
        JobField(
            key: "train.stragglerWindow", ref: .int(\.train.stragglerWindow),
            doc: "applied steps per straggler window"),
        JobField(
            key: "timeouts.collectiveSeconds", ref: .double(\.timeouts.collectiveSeconds),
            doc: "a collective that makes no progress for this long ends the job on every rank (0: wait forever)"),
        JobField(
            key: "timeouts.firstStepSeconds", ref: .double(\.timeouts.firstStepSeconds),
            doc: "the same deadline until the first step of a run is done (start-up, resume)"),
        JobField(
            key: "train.routerSkew", ref: .double(\.train.routerSkew),
            doc: "skew routing on purpose: logit of expert e gets -s x ln(p(e)+1) (0: none)"),
        JobField(
            key: "train.routerSkewStride", ref: .int(\.train.routerSkewStride),
            doc: "p orders experts 0, k, 2k, ..., 1, 1+k, ...: the hottest are multiples of k"),
        JobField(
            key: "replan.every", ref: .int(\.replan.every),
            doc: "re-place experts from measured load every N steps (0: never)"),
        JobField(
            key: "replan.horizon", ref: .int(\.replan.horizon),
            doc: "steps over which a plan's gain must beat its migration cost (at most the steps left)"),
        JobField(
            key: "replan.emaDecay", ref: .double(\.replan.emaDecay),
            doc: "weight of the past in the measured load (EMA)"),
        JobField(key: "layout.dp", ref: .int(\.layout.dp), doc: "data-parallel groups (0: world size / layout.tp)"),
        JobField(key: "layout.tp", ref: .int(\.layout.tp), doc: "tensor-parallel ranks per group; divides model.nHead"),
        JobField(
            key: "placement", ref: .placement,
            doc: "expert -> ranks, e.g. [[0],[1],[0,1]] (null: expert e on rank e % world)")
    ]
}
