// Vectorisable exp for the softmax and GELU loops. glibc's expf is a scalar call that
// stops the compiler from vectorising a loop; this one is plain arithmetic.

public enum FastMath {
    /// Whether `mulAdd` is fused on this build's target.
    #if HARDWARE_FMA
        public static let fusedMultiplyAdd = true
    #else
        public static let fusedMultiplyAdd = false
    #endif

    /// a * b + c: one fused multiply-add (a single rounding) where the target has the instruction
    /// (HARDWARE_FMA, set by Package.swift for haswell and arm64), else a multiply and an add.
    @inline(__always)
    public static func mulAdd(_ a: Float, _ b: Float, _ c: Float) -> Float {
        #if HARDWARE_FMA
            return c.addingProduct(a, b)
        #else
            return a * b + c
        #endif
    }

    /// e^x for Float, relative error < 3e-7 on [-87, 88] (tested against Foundation's exp);
    /// returns 0 below -87 (the softmax's masked entries), clamps above 88, keeps NaN.
    @inline(__always)
    public static func exp(_ v: Float) -> Float {
        // e^x = 2^n * e^r, n = round(x / ln2), r = x - n ln2 in [-ln2/2, ln2/2].
        // NaN fails both comparisons and takes the -87.3 branch; it is restored at the end.
        let x = v > -87.3 ? (v < 88.3 ? v : 88.3) : -87.3
        // Round to nearest even by adding and removing 1.5 * 2^23 (|x / ln2| < 128 here): the
        // same n as rounded(.toNearestOrEven), which is a libm call that blocks vectorising.
        let n = (x * 1.44269504088896341 + 12_582_912) - 12_582_912
        // The reduction and the Horner steps as fused multiply-adds where the target has them.
        let r = mulAdd(-n, 1.42860682030941723212e-6, mulAdd(-n, 0.693145751953125, x))
        // Minimax polynomial for e^r on [-ln2/2, ln2/2] (degree 6).
        var p: Float = 1.0 / 720
        p = mulAdd(p, r, 1.0 / 120)
        p = mulAdd(p, r, 1.0 / 24)
        p = mulAdd(p, r, 1.0 / 6)
        p = mulAdd(p, r, 0.5)
        p = mulAdd(p, r, 1)
        p = mulAdd(p, r, 1)
        let bits = UInt32(bitPattern: Int32(n) &+ 127) << 23
        let result = p * Float(bitPattern: bits)
        return v > -87.3 ? result : (v.isNaN ? v : 0)
    }
}

/// Row reductions in 8 lanes (a fixed order: lane sums, then the lanes, then the tail).
public enum RowMath {
    /// max of p[0 ..< n] (n >= 1).
    @inline(__always)
    public static func max(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>(repeating: -.infinity)
        var j = 0
        while j + 8 <= n {
            let x = UnsafeRawPointer(p + j).loadUnaligned(as: SIMD8<Float>.self)
            acc.replace(with: x, where: x .> acc)
            j += 8
        }
        var m = acc[0]
        for l in 1..<8 where acc[l] > m { m = acc[l] }
        while j < n {
            if p[j] > m { m = p[j] }
            j += 1
        }
        return m
    }

    /// sum of a[j] * b[j] for j < n.
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        laneSum(n, { load(a + $0) * load(b + $0) }, { a[$0] * b[$0] })
    }

    /// sum of (a[j] * b[j]) * c[j] for j < n, in dot's order.
    @inline(__always)
    public static func dot(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>, _ n: Int
    ) -> Float {
        laneSum(n, { load(a + $0) * load(b + $0) * load(c + $0) }, { a[$0] * b[$0] * c[$0] })
    }

    /// The fixed order of every sum here: `block(j)` (terms j ..< j + 8) added lane-wise over the
    /// whole blocks, the eight lanes in order, then `term(j)` of the tail one by one.
    @inline(__always)
    static func laneSum(_ n: Int, _ block: (Int) -> SIMD8<Float>, _ term: (Int) -> Float) -> Float {
        var acc = SIMD8<Float>(repeating: 0)
        var j = 0
        while j + 8 <= n {
            acc += block(j)
            j += 8
        }
        var s: Float = 0
        for l in 0..<8 { s += acc[l] }
        while j < n {
            s += term(j)
            j += 1
        }
        return s
    }

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    /// p[j] = e^(p[j] - shift) for j < n; returns their sum.
    @inline(__always)
    public static func expShiftedSum(_ p: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
        for j in 0..<n { p[j] = FastMath.exp(p[j] - shift) }
        return laneSum(n, { load(p + $0) }, { p[$0] })
    }
}
