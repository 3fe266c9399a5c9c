// Optional wall-clock accounting per region of the step, for `switchyard bench`'s
// "where the time goes" table. Off (nil) in normal training: no clock calls then.
import Clock
import Tensor

/// The regions a step's time is split into.
public enum ProfileRegion: Int, CaseIterable, Sendable {
    case embedding, norms, attnProjections, attnCore, router, dispatchCombine, experts, denseFFN, headLoss
    case optimizer, other

    public var label: String {
        switch self {
        case .embedding: return "embedding"
        case .norms: return "rmsnorm"
        case .attnProjections: return "attention q/k/v/o projections (sgemm)"
        case .attnCore: return "attention core (sgemm + softmax)"
        case .router: return "router (linear, softmax, top-k, balance)"
        case .dispatchCombine: return "moe dispatch + combine (copies)"
        case .experts: return "experts (sgemm + gelu)"
        case .denseFFN: return "dense ffn (sgemm + gelu)"
        case .headLoss: return "output head + cross-entropy"
        case .optimizer: return "grad clip + AdamW"
        case .other: return "other (data, zeroing, logging)"
        }
    }
}

/// Seconds accumulated per region.
public final class KernelProfile: @unchecked Sendable {
    public private(set) var seconds = [Double](repeating: 0, count: ProfileRegion.allCases.count)
    public init() {}

    public func add(_ r: ProfileRegion, _ s: Double) { seconds[r.rawValue] += s }
    public func reset() { seconds = [Double](repeating: 0, count: ProfileRegion.allCases.count) }

}

extension Transformer {
    /// Runs `body`, charging its time to `region` when profiling is on.
    @inline(__always)
    func timed<T>(_ region: ProfileRegion, _ body: () -> T) -> T {
        guard let p = profile else { return body() }
        let t0 = monotonicSeconds()
        let r = body()
        p.add(region, monotonicSeconds() - t0)
        return r
    }
}
