// `ckpt export DIR --format hf --out OUTDIR`: a directory that Hugging Face transformers loads as
// MixtralForCausalLM: config.json, model.safetensors with Mixtral's tensor names,
// generation_config.json, and the job's data.tokenizer, or for byte-level jobs a tokenizer under
// which token id = byte.
// Only Mixtral-shaped checkpoints are exported; anything else is refused naming the job key.
import Checkpoint
import Foundation
import JSON
import Training

enum HFExport {
    /// Why Mixtral cannot express `job`'s model (the job key, the value it needs), or nil. The
    /// router z-loss, micro-batches, recompute and the sharded optimizer change training only; a
    /// random router is a fixed gate Mixtral holds like a trained one, and a topKSchedule exports
    /// the k of the checkpoint's last step.
    static func refusal(_ job: Job) -> String? {
        let m = job.model
        if m.positions != "rope" {
            return
                "model.positions = \"\(m.positions)\": Mixtral uses rotary positions; train with model.positions=rope"
        }
        if m.ffn != "swiglu" {
            return "model.ffn = \"\(m.ffn)\": Mixtral's experts are SwiGLU; train with model.ffn=swiglu"
        }
        if m.moeEvery != 1 {
            return "model.moeEvery = \(m.moeEvery): every Mixtral block is MoE (no dense blocks); "
                + "train with model.moeEvery=1"
        }
        if m.usesMoH {
            return "model.attention = \"moh\": Mixtral's attention sums every head unweighted (no head router); "
                + "it needs mha"
        }
        if m.nSharedExperts != 0 {
            return "model.nSharedExperts = \(m.nSharedExperts): Mixtral has no shared experts; it needs 0"
        }
        if job.train.routerBiasRate != 0 {
            return "train.routerBiasRate = \(job.train.routerBiasRate): Mixtral's router has no selection bias; "
                + "it needs 0"
        }
        if job.train.routerSkew != 0 {
            return "train.routerSkew = \(job.train.routerSkew): Mixtral's router has no logit bias; it needs 0"
        }
        return nil
    }

    /// Mixtral's name for one of Switchyard's tensors.
    static func name(_ ours: String) -> String {
        let fixed = [
            "embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
            "head.weight": "lm_head.weight"
        ]
        if let n = fixed[ours] { return n }
        // layers.{i}.<rest>
        let parts = ours.split(separator: ".", maxSplits: 2).map(String.init)
        let rest = parts[2]
        let map = [
            "norm1.weight": "input_layernorm.weight", "norm2.weight": "post_attention_layernorm.weight",
            "attn.wq.weight": "self_attn.q_proj.weight", "attn.wk.weight": "self_attn.k_proj.weight",
            "attn.wv.weight": "self_attn.v_proj.weight", "attn.wo.weight": "self_attn.o_proj.weight",
            "moe.router.weight": "block_sparse_moe.gate.weight"
        ]
        let mapped = map[rest] ?? rest.replacingOccurrences(of: "moe.experts.", with: "block_sparse_moe.experts.")
        return "model.layers.\(parts[1])." + mapped
    }

    /// config.json for a checkpoint of `job` after `step` steps.
    static func config(_ job: Job, step: Int) -> JSONValue {
        let m = job.model, k = job.trainedTopK(afterSteps: step)
        func n(_ x: Int) -> JSONValue { .integer(x) }
        return [
            "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": n(m.vocabSize),
            "hidden_size": n(m.nEmbd), "intermediate_size": n(m.ffHidden), "num_hidden_layers": n(m.nLayer),
            "num_attention_heads": n(m.nHead), "num_key_value_heads": n(m.nHead), "head_dim": n(m.headSize),
            "num_local_experts": n(m.nExpert), "num_experts_per_tok": n(k),
            "max_position_embeddings": n(m.seqLen), "rms_norm_eps": .number(1e-5), "rope_theta": .number(m.ropeTheta),
            "hidden_act": "silu", "tie_word_embeddings": false, "router_aux_loss_coef": .number(job.train.auxLossCoef),
            "sliding_window": .null, "attention_dropout": .number(0), "router_jitter_noise": .number(0),
            "output_router_logits": false, "initializer_range": .number(0.02), "use_cache": true,
            "bos_token_id": .null, "eos_token_id": .null, "pad_token_id": .null, "torch_dtype": "float32"
        ]
    }

    static let generationConfig: JSONValue = [
        "bos_token_id": .null, "eos_token_id": .null, "pad_token_id": .null, "do_sample": false
    ]

    /// GPT-2's byte-to-character table: printable bytes stand for themselves, the rest move to 256+.
    static var byteSymbols: [String] {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var chars = printable
        var extra = 0
        for b in 0..<256 where !printable.contains(b) {
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
        }
        var symbol = [String](repeating: "", count: 256)
        for (b, c) in zip(printable, chars) { symbol[b] = String(Character(Unicode.Scalar(UInt32(c))!)) }
        return symbol
    }

    /// A byte-level BPE of the 256 byte symbols with no merges: token id = byte.
    static var tokenizer: JSONValue {
        let byteLevel: JSONValue = [
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
            "use_regex": false
        ]
        let vocab = JSONValue.object(byteSymbols.enumerated().map { ($0.element, .integer($0.offset)) })
        return [
            "version": "1.0", "truncation": .null, "padding": .null, "added_tokens": [], "normalizer": .null,
            "pre_tokenizer": byteLevel, "post_processor": .null, "decoder": byteLevel,
            "model": [
                "type": "BPE", "dropout": .null, "unk_token": .null, "continuing_subword_prefix": .null,
                "end_of_word_suffix": .null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": []
            ]
        ]
    }

    /// tokenizer.json and tokenizer_config.json: the job's data.tokenizer copied (its end-of-text
    /// token named as eos), or for byte-level text jobs the token id = byte tokenizer; nil for a
    /// token model without a tokenizer.
    static func tokenizerFiles(_ job: Job) throws -> (Data, JSONValue)? {
        var config: JSONValue = [
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": .integer(job.model.seqLen),
            "clean_up_tokenization_spaces": false
        ]
        if !job.data.tokenizer.isEmpty {
            let codec = try TextCodec(job: job)
            guard let t = codec.tokenizer, let data = FileManager.default.contents(atPath: t.path) else { return nil }
            if let eot = t.addedTokens.first(where: { $0.special }), case .object(var members) = config {
                members.append(("eos_token", .string(eot.content)))
                config = .object(members)
            }
            return (data, config)
        }
        guard TokenData.resolvedFormat(path: job.data.path, format: job.data.format) == "text" else { return nil }
        return (Data(tokenizer.prettyText(keepFractions: true).utf8), config)
    }

    /// Writes the export of checkpoint `dir` (verified) into `out`, through a temporary sibling
    /// directory renamed at the end; an existing `out` is never replaced.
    static func write(dir: String, manifest m: Manifest, job: Job, out: String) throws -> Int {
        if let why = refusal(job) { throw CheckpointError("\(dir) cannot be exported as Mixtral: \(why)") }
        guard !FileManager.default.fileExists(atPath: out) else {
            throw CheckpointError("\(out) exists; remove it or choose another --out (an export never overwrites)")
        }
        let tmp = out.hasSuffix("/") ? String(out.dropLast()) + ".partial" : out + ".partial"
        try? FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        let written = try CkptCommand.writeWeights(
            dir: dir, manifest: m, to: tmp + "/model.safetensors", name: name,
            metadata: ["format": "pt", "source": "switchyard step \(m.step)"])
        var files: [(String, JSONValue)] = [
            ("config.json", config(job, step: m.step)), ("generation_config.json", generationConfig)
        ]
        if let (tokenizerFile, config) = try tokenizerFiles(job) {
            try tokenizerFile.write(to: URL(fileURLWithPath: tmp + "/tokenizer.json"))
            files.append(("tokenizer_config.json", config))
        }
        for (file, value) in files {
            // Floats as floats (10000.0): transformers checks the types of config fields.
            try Data(value.prettyText(keepFractions: true).utf8).write(to: URL(fileURLWithPath: tmp + "/" + file))
        }
        guard rename(tmp, out) == 0 else {
            throw CheckpointError("\(out): cannot rename \(tmp) into place: \(String(cString: strerror(errno)))")
        }
        return written.parameters
    }
}
