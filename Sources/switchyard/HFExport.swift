// `ckpt export DIR --format hf --out OUTDIR`: a directory that Hugging Face transformers loads as
// the job's model.family (MixtralForCausalLM by default, Qwen3MoeForCausalLM, OlmoeForCausalLM):
// config.json, model.safetensors with the family's tensor names, generation_config.json, and the
// job's data.tokenizer, or for byte-level jobs a tokenizer under which token id = byte.
// Only models the family can express are exported; anything else is refused naming the job key.
import Checkpoint
import Foundation
import JSON
import Tokenizer
import Training

enum HFExport {
    /// Why the family cannot express `job`'s model (the job key, the value it needs), or nil. The
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
        return HFFamily(model: m).refusal(m)
    }

    static let generationConfig: JSONValue = [
        "bos_token_id": .null, "eos_token_id": .null, "pad_token_id": .null, "do_sample": false
    ]

    /// A byte-level BPE of the 256 byte symbols with no merges: token id = byte.
    static var tokenizer: JSONValue {
        let byteLevel: JSONValue = [
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
            "use_regex": false
        ]
        let vocab = JSONValue.object(ByteLevel.symbols.enumerated().map { (String($0.element), .integer($0.offset)) })
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
        let family = HFFamily(model: job.model)
        if let why = refusal(job) {
            throw CheckpointError("\(dir) cannot be exported as \(family.architecture): \(why)")
        }
        guard !FileManager.default.fileExists(atPath: out) else {
            throw CheckpointError("\(out) exists; remove it or choose another --out (an export never overwrites)")
        }
        let tmp = out.hasSuffix("/") ? String(out.dropLast()) + ".partial" : out + ".partial"
        try? FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        let written = try CkptCommand.writeWeights(
            dir: dir, manifest: m, to: tmp + "/model.safetensors", name: family.name,
            metadata: ["format": "pt", "source": "switchyard step \(m.step)"])
        var files: [(String, JSONValue)] = [
            ("config.json", family.config(job, step: m.step)), ("generation_config.json", generationConfig)
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
