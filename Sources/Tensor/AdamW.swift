// AdamW with decoupled weight decay (Loshchilov & Hutter), over a contiguous range of
// parameters with their gradients and moments.
// p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p), with bias-corrected moments.

/// AdamW's hyperparameters (the learning rate is passed per step: it follows the schedule).
public struct AdamWConfig: Sendable, Equatable {
    public var beta1: Float
    public var beta2: Float
    public var eps: Float
    public var weightDecay: Float
    public init(beta1: Float = 0.9, beta2: Float = 0.95, eps: Float = 1e-8, weightDecay: Float = 0.1) {
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }
}

public enum AdamW {
    /// One update of `count` parameters. `step` is 1-based (bias correction);
    /// `decay` says whether weight decay applies to this range (matrices: yes; norms: no).
    /// `gradScale` multiplies each gradient as it is read (the clip factor; 1 changes nothing).
    public static func update(
        params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>,
        m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
        count: Int, lr: Float, step: Int, config: AdamWConfig, decay: Bool, gradScale: Float = 1
    ) {
        update(
            params: params, grads: grads, m: m, v: v, count: count, lr: lr,
            correction: BiasCorrection(config: config, step: step), config: config, decay: decay,
            gradScale: gradScale)
    }

    /// The bias corrections 1 / (1 - beta^step) of both moments. beta^step is `step`
    /// multiplications, so a step computes them once, not once per chunk of the buffers.
    struct BiasCorrection: Sendable {
        let c1, c2: Float
        init(config: AdamWConfig, step: Int) {
            precondition(step >= 1, "AdamW step is 1-based")
            c1 = 1 / (1 - Float(AdamW.powDouble(Double(config.beta1), step)))
            c2 = 1 / (1 - Float(AdamW.powDouble(Double(config.beta2), step)))
        }
    }

    static func update(
        params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>,
        m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
        count: Int, lr: Float, correction: BiasCorrection, config: AdamWConfig, decay: Bool, gradScale: Float
    ) {
        let b1 = config.beta1, b2 = config.beta2
        let c1 = correction.c1, c2 = correction.c2
        let wd = decay ? config.weightDecay : 0
        let eps = config.eps
        // 8 lanes at a time (the compiler leaves the scalar loop scalar: four pointers that may
        // alias), then the tail; each lane does the scalar loop's operations in its order, and
        // IEEE sqrt and division are exact per lane, so the bits are the scalar loop's.
        var i = 0
        while i + 8 <= count {
            let p = load(params + i), g = load(grads + i) * gradScale
            let mi = b1 * load(m + i) + (1 - b1) * g
            let vi = b2 * load(v + i) + (1 - b2) * g * g
            store(mi, m + i)
            store(vi, v + i)
            let mhat = mi * c1, vhat = vi * c2
            store(p - lr * (mhat / (vhat.squareRoot() + eps) + wd * p), params + i)
            i += 8
        }
        while i < count {
            let g = grads[i] * gradScale
            let mi = b1 * m[i] + (1 - b1) * g
            let vi = b2 * v[i] + (1 - b2) * g * g
            m[i] = mi
            v[i] = vi
            let mhat = mi * c1, vhat = vi * c2
            params[i] -= lr * (mhat / (vhat.squareRoot() + eps) + wd * params[i])
            i += 1
        }
    }

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    @inline(__always) static func store(_ x: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: x, as: SIMD8<Float>.self)
    }

    /// Elements per work item of `updateAll`.
    public static let grain = 1 << 15

    /// One fused pass (clip factor, moments, update) over many ranges of the same contiguous
    /// buffers, ranges given as (offset into params and grads, offset into the moments, count,
    /// decay). Work items are blocks of `grain` elements inside each range, so the bits do not
    /// depend on the thread count.
    public static func updateAll(
        params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>,
        m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
        ranges: [(offset: Int, momentOffset: Int, count: Int, decay: Bool)], gradScale: Float, lr: Float, step: Int,
        config: AdamWConfig
    ) {
        var items: [(offset: Int, momentOffset: Int, count: Int, decay: Bool)] = []
        for r in ranges {
            for o in stride(from: 0, to: r.count, by: grain) {
                items.append((r.offset + o, r.momentOffset + o, min(grain, r.count - o), r.decay))
            }
        }
        let correction = BiasCorrection(config: config, step: step)
        Parallel.forEach(items.count) { i, _ in
            let it = items[i]
            update(
                params: params + it.offset, grads: grads + it.offset, m: m + it.momentOffset,
                v: v + it.momentOffset, count: it.count, lr: lr, correction: correction, config: config,
                decay: it.decay, gradScale: gradScale)
        }
    }

    static func powDouble(_ x: Double, _ n: Int) -> Double {
        var r = 1.0
        for _ in 0..<n { r *= x }
        return r
    }
}

public enum GradClip {
    /// Floats per partial sum of `norm`.
    static let normBlock = 4096

    /// The global L2 norm of `count` gradients, accumulated in Double.
    public static func norm(_ grads: UnsafePointer<Float>, count: Int) -> Double {
        var s: Double = 0
        var i = 0
        // Blocks of Float partial sums keep it fast; Double across blocks keeps it accurate.
        // Eight whole blocks at a time, one per lane: each lane adds its block's squares in the
        // order the scalar loop below does (eight independent chains instead of one), and the
        // partials go into s in block order, so the bits are the one-block-at-a-time loop's.
        let b = normBlock
        while i + 8 * b <= count {
            var part = SIMD8<Float>(repeating: 0)
            let g = grads + i
            for j in 0..<b {
                let x = SIMD8<Float>(
                    g[j], g[b + j], g[2 * b + j], g[3 * b + j], g[4 * b + j], g[5 * b + j], g[6 * b + j],
                    g[7 * b + j])
                part += x * x
            }
            for l in 0..<8 { s += Double(part[l]) }
            i += 8 * b
        }
        while i < count {
            let end = min(i + b, count)
            var part: Float = 0
            for j in i..<end { part += grads[j] * grads[j] }
            s += Double(part)
            i = end
        }
        return s.squareRoot()
    }

    /// Scales the gradients so their global norm is at most `maxNorm` (no-op if maxNorm <= 0).
    /// Returns the norm before clipping.
    @discardableResult
    public static func clip(_ grads: UnsafeMutablePointer<Float>, count: Int, maxNorm: Double) -> Double {
        let n = norm(grads, count: count)
        scale(grads, count: count, norm: n, maxNorm: maxNorm)
        return n
    }

    /// Scales gradients whose (already known, e.g. global) norm is `norm` down to `maxNorm`.
    /// No-op when maxNorm <= 0, when the norm is within it, or when it is not finite (the
    /// caller skips such a step).
    public static func scale(_ grads: UnsafeMutablePointer<Float>, count: Int, norm n: Double, maxNorm: Double) {
        let s = factor(norm: n, maxNorm: maxNorm)
        if s != 1 { for i in 0..<count { grads[i] *= s } }
    }

    /// The factor `scale` multiplies gradients by: maxNorm / norm when clipping applies, else 1.
    public static func factor(norm n: Double, maxNorm: Double) -> Float {
        guard maxNorm > 0 && n > maxNorm && n.isFinite else { return 1 }
        return Float(maxNorm / (n + 1e-6))
    }
}

/// Linear warmup from lr/warmup to lr over `warmup` steps, then cosine decay to minLr at `total`.
public struct LRSchedule: Sendable, Equatable {
    public var maxLR: Double
    public var minLR: Double
    public var warmup: Int
    public var total: Int
    public init(maxLR: Double, minLR: Double, warmup: Int, total: Int) {
        self.maxLR = maxLR; self.minLR = minLR; self.warmup = warmup; self.total = total
    }

    /// Learning rate for 0-based `step`.
    public func lr(at step: Int) -> Double {
        if step < warmup { return maxLR * Double(step + 1) / Double(warmup) }
        if step >= total { return minLR }
        let span = max(total - warmup, 1)
        let progress = Double(step - warmup) / Double(span)
        return minLR + 0.5 * (maxLR - minLR) * (1 + cosDouble(Double.pi * progress))
    }
}
