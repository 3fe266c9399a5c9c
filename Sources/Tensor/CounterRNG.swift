// Counter-based random numbers: every draw is a pure function of its keys
// (seed, purpose, step, index, ...), never of call order, so results do not depend on
// the parallel layout or on where a run was interrupted.

public enum CounterRNG {
    /// SplitMix64's finaliser: a bijective 64-bit mixer.
    @inline(__always)
    public static func mix(_ z0: UInt64) -> UInt64 {
        var z = z0 &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A 64-bit hash of the keys, in order.
    @inline(__always)
    public static func hash(_ keys: UInt64...) -> UInt64 {
        var h: UInt64 = 0x5157_4954_4348_5944  // "SWITCHYD"
        for k in keys { h = mix(h ^ mix(k)) }
        return h
    }

    /// Uniform in [0, 1) with 24 random bits, from a hash.
    @inline(__always)
    public static func uniform(_ h: UInt64) -> Float { Float(h >> 40) * (1.0 / 16_777_216.0) }

    /// Uniform integer in 0..<bound (bound > 0), unbiased enough for bounds far below 2^64.
    @inline(__always)
    public static func below(_ bound: Int, _ h: UInt64) -> Int {
        Int(UInt64(truncatingIfNeeded: (h.multipliedFullWidth(by: UInt64(bound))).high))
    }

    /// Standard normal from a key via Box-Muller on two derived uniforms.
    public static func normal(_ key: UInt64) -> Float {
        let u1 = Double(mix(key) >> 11) * (1.0 / 9_007_199_254_740_992.0)
        let u2 = Double(mix(key ^ 0xA5A5_A5A5_A5A5_A5A5) >> 11) * (1.0 / 9_007_199_254_740_992.0)
        let r = (-2 * logDouble(max(u1, 1e-300))).squareRoot()
        return Float(r * cosDouble(2 * Double.pi * u2))
    }

    /// FNV-1a of a string: stable keys from parameter names.
    public static func fnv1a(_ s: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }
}
