// The Hugging Face MoE families Switchyard converts in both directions: Mixtral, Qwen3-MoE and
// OLMoE. Each is one decoder-only architecture with rope, RMSNorm, SwiGLU experts and a softmax
// top-k router; they differ in names, the q/k norm (none, per head, whole projection) and whether
// the top-k weights are renormalised. This file holds the names both ways; HFFamily+Config.swift
// the config.json mapping.
import Model

enum HFFamily: String, CaseIterable {
    case mixtral, qwen3Moe = "qwen3_moe", olmoe

    /// The family of a job (model.family; a job without one exports as Mixtral).
    init(model m: ModelConfig) { self = HFFamily(rawValue: m.family) ?? .mixtral }

    var architecture: String {
        switch self {
        case .mixtral: return "MixtralForCausalLM"
        case .qwen3Moe: return "Qwen3MoeForCausalLM"
        case .olmoe: return "OlmoeForCausalLM"
        }
    }

    /// The q/k norm the family has (model.qkNorm).
    var qkNorm: String {
        switch self {
        case .mixtral: return "none"
        case .qwen3Moe: return "head"
        case .olmoe: return "full"
        }
    }

    /// The block's MoE prefix and the expert matrices' names (w1 = gate, w3 = up, w2 = down).
    var moePrefix: String { self == .mixtral ? "block_sparse_moe." : "mlp." }
    func expertMatrix(_ w: String) -> String {
        guard self != .mixtral else { return w }
        return ["w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"][w]!
    }

    /// The family's name for one of Switchyard's tensors.
    func name(_ ours: String) -> String {
        let fixed = [
            "embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
            "head.weight": "lm_head.weight"
        ]
        if let n = fixed[ours] { return n }
        let parts = ours.split(separator: ".", maxSplits: 2).map(String.init)  // layers.{i}.<rest>
        let rest = parts[2]
        let map = [
            "norm1.weight": "input_layernorm.weight", "norm2.weight": "post_attention_layernorm.weight",
            "attn.wq.weight": "self_attn.q_proj.weight", "attn.wk.weight": "self_attn.k_proj.weight",
            "attn.wv.weight": "self_attn.v_proj.weight", "attn.wo.weight": "self_attn.o_proj.weight",
            "attn.qnorm.weight": "self_attn.q_norm.weight", "attn.knorm.weight": "self_attn.k_norm.weight",
            "moe.router.weight": moePrefix + "gate.weight"
        ]
        if let m = map[rest] { return "model.layers.\(parts[1])." + m }
        // moe.experts.{e}.{w}.weight
        let e = rest.split(separator: ".").map(String.init)
        return "model.layers.\(parts[1]).\(moePrefix)experts.\(e[2]).\(expertMatrix(e[3])).weight"
    }

    /// Where a routed expert's matrix lies in transformers 5's fused layout, if `ours` is one:
    /// the fused tensor's name and the element range of this expert's matrix in it
    /// (gate_up_proj [E, 2F, C]: w1 rows then w3 rows; down_proj [E, C, F]).
    func fusedSource(_ ours: String, config m: ModelConfig) -> (name: String, first: Int, count: Int)? {
        let parts = ours.split(separator: ".").map(String.init)
        guard parts.count == 7, parts[2] == "moe", parts[3] == "experts", let e = Int(parts[4]) else { return nil }
        let c = m.nEmbd, f = m.ffHidden, prefix = "model.layers.\(parts[1]).mlp.experts."
        switch parts[5] {
        case "w1": return (prefix + "gate_up_proj", e * 2 * f * c, f * c)
        case "w3": return (prefix + "gate_up_proj", e * 2 * f * c + f * c, f * c)
        default: return (prefix + "down_proj", e * c * f, c * f)
        }
    }
}
