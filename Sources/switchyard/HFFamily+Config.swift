// config.json of each family, both ways: what import reads into a ModelConfig (every field it
// cannot express refused in one line naming the field and its value), and what export writes.
import Checkpoint
import JSON
import Model
import Training

extension HFFamily {
    /// The family and model of a config.json.
    static func model(_ cfg: JSONValue, path: String) throws -> (HFFamily, ModelConfig) {
        func fail(_ field: String, _ m: String) -> CheckpointError { CheckpointError("\(path): \(field): \(m)") }
        let type = cfg["model_type"]?.stringValue ?? "missing"
        guard let family = HFFamily(rawValue: type) else {
            throw fail(
                "model_type",
                "\(type) is not a family Switchyard imports (mixtral, qwen3_moe, olmoe); "
                    + "architectures \(cfg["architectures"]?.compact ?? "missing")")
        }
        func int(_ k: String, _ fallback: Int? = nil) throws -> Int {
            if let v = cfg[k]?.intValue { return v }
            if let f = fallback, cfg[k] == nil || cfg[k] == .null { return f }
            throw fail(k, "needs an integer, got \(cfg[k]?.compact ?? "nothing")")
        }
        try family.refuseUnsupported(cfg, fail: fail)
        let c = try int("hidden_size"), h = try int("num_attention_heads")
        var m = ModelConfig(
            vocabSize: try int("vocab_size"), seqLen: min(try int("max_position_embeddings"), 4096),
            nLayer: try int("num_hidden_layers"), nEmbd: c, nHead: h,
            // transformers 5 writes num_local_experts for every family; the hub's files num_experts.
            nExpert: try int(cfg["num_experts"]?.intValue == nil ? "num_local_experts" : "num_experts"),
            topK: try int("num_experts_per_tok"),
            ffHidden: try int(family == .qwen3Moe ? "moe_intermediate_size" : "intermediate_size"), moeEvery: 1,
            positions: "rope", ffn: "swiglu", ropeTheta: try ropeTheta(cfg, fail: fail))
        m.nKVHead = try int("num_key_value_heads", h)
        let d = try int("head_dim", c / h)
        m.headDim = d * h == c ? 0 : d
        m.qkNorm = family.qkNorm
        m.normTopK = family == .mixtral ? true : (cfg["norm_topk_prob"]?.boolValue ?? false)
        m.rmsNormEps = cfg["rms_norm_eps"]?.doubleValue ?? 1e-5
        m.family = family.rawValue
        do { try m.validate() } catch { throw fail("config", "\(error)") }
        return (family, m)
    }

    /// rope_theta, or rope_parameters {rope_theta, rope_type: default}.
    static func ropeTheta(_ cfg: JSONValue, fail: (String, String) -> CheckpointError) throws -> Double {
        if let p = cfg["rope_parameters"], p != .null {
            let type = p["rope_type"]?.stringValue ?? "default"
            guard type == "default" else {
                throw fail("rope_parameters.rope_type", "\(type) is not supported (default is)")
            }
            guard let t = p["rope_theta"]?.doubleValue else { throw fail("rope_parameters.rope_theta", "missing") }
            return t
        }
        if let s = cfg["rope_scaling"], s != .null { throw fail("rope_scaling", "\(s.compact) is not supported") }
        return cfg["rope_theta"]?.doubleValue ?? 10000
    }

    /// Fields whose values Switchyard's model cannot express: one line naming the field.
    func refuseUnsupported(_ cfg: JSONValue, fail: (String, String) -> CheckpointError) throws {
        func must(_ k: String, _ ok: (JSONValue?) -> Bool, _ want: String) throws {
            let v = cfg[k]
            if !ok(v) { throw fail(k, "\(v?.compact ?? "missing") is not supported (Switchyard needs \(want))") }
        }
        let absentOr = { (want: JSONValue) in { (v: JSONValue?) in v == nil || v == .null || v == want } }
        try must("hidden_act", { $0 == nil || $0 == "silu" }, "silu")
        try must("tie_word_embeddings", absentOr(false), "false: an untied lm_head")
        try must("attention_bias", absentOr(false), "false")
        try must("sliding_window", { $0 == nil || $0 == .null || self == .qwen3Moe }, "null")
        try must("use_sliding_window", absentOr(false), "false")
        try must("clip_qkv", { $0 == nil || $0 == .null }, "null")
        if self == .qwen3Moe {
            try must("decoder_sparse_step", absentOr(1), "1: every block MoE")
            try must("mlp_only_layers", { $0 == nil || $0 == .null || $0 == .array([]) }, "[]: every block MoE")
        }
        for k in ["shared_expert_intermediate_size", "n_shared_experts", "num_shared_experts"] {
            try must(k, { $0 == nil || $0 == .null || $0 == 0 }, "no shared experts")
        }
    }

    /// config.json of a checkpoint of `job` after `step` steps, in this family's fields.
    func config(_ job: Job, step: Int) -> JSONValue {
        let m = job.model, k = job.trainedTopK(afterSteps: step)
        func n(_ x: Int) -> JSONValue { .integer(x) }
        var fields: [(String, JSONValue)] = [
            ("architectures", [.string(architecture)]), ("model_type", .string(rawValue)),
            ("vocab_size", n(m.vocabSize)), ("hidden_size", n(m.nEmbd)), ("num_hidden_layers", n(m.nLayer)),
            ("num_attention_heads", n(m.nHead)), ("num_key_value_heads", n(m.kvHeads)), ("head_dim", n(m.headSize)),
            ("num_experts_per_tok", n(k)), ("max_position_embeddings", n(m.seqLen)),
            ("rms_norm_eps", .number(m.rmsNormEps)), ("rope_theta", .number(m.ropeTheta)), ("hidden_act", "silu"),
            ("tie_word_embeddings", false), ("router_aux_loss_coef", .number(job.train.auxLossCoef)),
            ("attention_dropout", .number(0)), ("initializer_range", .number(0.02)), ("use_cache", true),
            ("bos_token_id", .null), ("eos_token_id", .null), ("pad_token_id", .null), ("torch_dtype", "float32")
        ]
        switch self {
        case .mixtral:
            fields += [
                ("intermediate_size", n(m.ffHidden)), ("num_local_experts", n(m.nExpert)), ("sliding_window", .null),
                ("router_jitter_noise", .number(0))
            ]
        case .qwen3Moe:
            fields += [
                ("intermediate_size", n(m.ffHidden)), ("moe_intermediate_size", n(m.ffHidden)),
                ("num_experts", n(m.nExpert)), ("norm_topk_prob", .bool(m.normTopK)), ("decoder_sparse_step", 1),
                ("mlp_only_layers", []), ("attention_bias", false), ("use_sliding_window", false)
            ]
        case .olmoe:
            fields += [
                ("intermediate_size", n(m.ffHidden)), ("num_experts", n(m.nExpert)),
                ("norm_topk_prob", .bool(m.normTopK)), ("attention_bias", false), ("clip_qkv", .null)
            ]
        }
        return .object(fields)
    }

    /// Why this family cannot express `m` (the key and what it needs), or nil.
    func refusal(_ m: ModelConfig) -> String? {
        if m.qkNorm != qkNorm {
            return "model.qkNorm = \"\(m.qkNorm)\": \(architecture) has \(qkNorm == "none" ? "no" : qkNorm) q/k norm; "
                + "set model.family to the family that has it"
        }
        if self == .mixtral && !m.normTopK {
            return "model.normTopK = false: Mixtral renormalises its top-k weights; it needs true"
        }
        return nil
    }
}
