// Rotary position embeddings in the rotate-half layout of Hugging Face's Llama and Mixtral: in
// each head of size D, channel i < D/2 pairs with channel i + D/2 and the pair turns by the angle
// pos * theta^(-2i / D). Applied in place to q or k after their projections.
// Shape legend: N = B*T rows, Hl heads in a row of stride ldc, D head size, P positions.
// Backward turns the gradient back by the same angle (the rotation's transpose), in place.

/// cos and sin of every (position, frequency) pair, computed in Double and rounded once.
public final class RopeTable: @unchecked Sendable {
    public let positions: Int, half: Int
    let cos: FloatBuffer, sin: FloatBuffer  // [P, D/2]

    public init(positions: Int, headSize d: Int, theta: Double) {
        precondition(d % 2 == 0, "rope needs an even head size")
        self.positions = positions
        half = d / 2
        cos = FloatBuffer(count: positions * half)
        sin = FloatBuffer(count: positions * half)
        for p in 0..<positions {
            for i in 0..<half {
                let angle = Double(p) / powDouble(theta, Double(2 * i) / Double(d))
                cos[p * half + i] = Float(cosDouble(angle))
                sin[p * half + i] = Float(sinDouble(angle))
            }
        }
    }
}

public enum Rope {
    /// Rotates x[N, ldc] in place, heads 0..<h of size d; row r sits at position positionOf(r).
    /// `inverse` rotates by minus the angle: the backward of a rotation, applied to its gradient.
    public static func apply(
        _ x: UnsafeMutablePointer<Float>, rows n: Int, heads h: Int, d: Int, ldc: Int, table: RopeTable,
        inverse: Bool = false, positionOf: (Int) -> Int
    ) {
        let half = d / 2, sign: Float = inverse ? -1 : 1
        for r in 0..<n {
            let p = positionOf(r)
            precondition(p >= 0 && p < table.positions, "rope position \(p) outside the table")
            let cs = table.cos.base + p * half, sn = table.sin.base + p * half
            for hh in 0..<h {
                let a = x + r * ldc + hh * d, b = a + half
                for i in 0..<half {
                    let x1 = a[i], x2 = b[i], s = sign * sn[i]
                    a[i] = x1 * cs[i] - x2 * s
                    b[i] = x2 * cs[i] + x1 * s
                }
            }
        }
    }

}
