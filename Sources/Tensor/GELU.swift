// Exact GELU (erf form, PyTorch's default): gelu(x) = 0.5 x (1 + erf(x / sqrt 2)).
// erf is a rational approximation accurate to a few float ulps (Eigen's float erf),
// written so that the compiler vectorises it; a test compares it with Foundation's erf.
// Shape legend: n elements (rows x features, flattened).
// Backward *accumulates* into dInp.

public enum GELU {
    /// erf(x) for Float, max abs error < 5e-7 against the Double erf (tested).
    @inline(__always)
    public static func erf(_ v: Float) -> Float {
        let x = v < -4 ? -4 : (v > 4 ? 4 : v)
        let x2 = x * x
        // Horner steps as fused multiply-adds where the target has them (FastMath.mulAdd).
        var p: Float = -2.72614225801306e-10
        p = FastMath.mulAdd(p, x2, 2.77068142495902e-08)
        p = FastMath.mulAdd(p, x2, -2.10102402082508e-06)
        p = FastMath.mulAdd(p, x2, -5.69250639462346e-05)
        p = FastMath.mulAdd(p, x2, -7.34990630326855e-04)
        p = FastMath.mulAdd(p, x2, -2.95459980854025e-03)
        p = FastMath.mulAdd(p, x2, -1.60960333262415e-02)
        p = p * x
        var q: Float = -1.45660718464996e-05
        q = FastMath.mulAdd(q, x2, -2.13374055278905e-04)
        q = FastMath.mulAdd(q, x2, -1.68282697438203e-03)
        q = FastMath.mulAdd(q, x2, -7.37332916720468e-03)
        q = FastMath.mulAdd(q, x2, -1.42647390514189e-02)
        return p / q
    }

    static let invSqrt2: Float = 0.70710678118654752
    static let invSqrt2Pi: Float = 0.39894228040143268

    /// out[i] = gelu(inp[i]).
    public static func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        for i in 0..<count {
            let x = inp[i]
            out[i] = 0.5 * x * (1 + erf(x * invSqrt2))
        }
    }

    /// dInp[i] += dOut[i] * gelu'(inp[i]), gelu'(x) = Phi(x) + x * phi(x); with `overwrite`,
    /// dInp[i] = (scratch that would otherwise be zeroed first; the same bits).
    public static func backward(
        dInp: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
        inp: UnsafePointer<Float>, count: Int, overwrite: Bool = false
    ) {
        if overwrite {
            for i in 0..<count { dInp[i] = dOut[i] * derivative(inp[i]) }
        } else {
            for i in 0..<count { dInp[i] += dOut[i] * derivative(inp[i]) }
        }
    }

    @inline(__always)
    static func derivative(_ x: Float) -> Float {
        let cdf = 0.5 * (1 + erf(x * invSqrt2))
        let pdf = invSqrt2Pi * FastMath.exp(-0.5 * x * x)
        return cdf + x * pdf
    }
}
