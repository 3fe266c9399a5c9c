// SwiGLU's gate (Mixtral's experts): a = silu(g) * u with silu(x) = x * sigmoid(x), where
// g = x w1^T and u = x w3^T are one FFN's two pre-activations.
// Shape legend: n elements (rows x F hidden, flattened).
// Backward *accumulates* into dG and dU.

public enum SwiGLU {
    @inline(__always) static func sigmoid(_ x: Float) -> Float { 1 / (1 + FastMath.exp(-x)) }

    /// out[i] = silu(g[i]) * u[i].
    public static func forward(
        out: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>, u: UnsafePointer<Float>, count: Int
    ) {
        for i in 0..<count { out[i] = g[i] * sigmoid(g[i]) * u[i] }
    }

    /// dG[i] += dOut * u * silu'(g), silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g); dU[i] += dOut * silu(g).
    public static func backward(
        dG: UnsafeMutablePointer<Float>, dU: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
        g: UnsafePointer<Float>, u: UnsafePointer<Float>, count: Int
    ) {
        for i in 0..<count {
            let s = sigmoid(g[i])
            dG[i] += dOut[i] * u[i] * s * (1 + g[i] * (1 - s))
            dU[i] += dOut[i] * g[i] * s
        }
    }
}
