import Foundation
// Central finite differences against analytic gradients.
// A kernel's scalar test objective is sum_i r_i * out_i with fixed random r (in Double);
// its analytic gradient comes from the kernel's backward with dOut = r.
import Tensor
import XCTest

/// Deterministic test values in [-scale, scale).
func randomValues(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    (0..<n).map { scale * (2 * CounterRNG.uniform(CounterRNG.hash(seed, UInt64($0))) - 1) }
}

/// Checks `analytic` against central differences of `objective` around `x` on up to `samples`
/// coordinates: |analytic - fd| <= atol + rtol * |fd|. Reports the max difference seen.
func assertGradient(
    _ label: String, x: [Float], analytic: [Float], h: Float = 1e-2,
    atol: Double = 2e-3, rtol: Double = 1e-2, samples: Int = 60,
    objective: ([Float]) -> Double, file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertEqual(x.count, analytic.count, "\(label): gradient size", file: file, line: line)
    let stride = max(1, x.count / samples)
    var maxDiff = 0.0
    var i = 0
    var checked = 0
    while i < x.count {
        var xp = x, xm = x
        xp[i] += h; xm[i] -= h
        let fd = (objective(xp) - objective(xm)) / Double(2 * h)
        let diff = abs(Double(analytic[i]) - fd)
        maxDiff = max(maxDiff, diff)
        if diff > atol + rtol * abs(fd) {
            XCTFail("\(label)[\(i)]: analytic \(analytic[i]) vs finite difference \(fd)", file: file, line: line)
            return
        }
        checked += 1
        i += stride
    }
    XCTAssertGreaterThan(checked, 0, file: file, line: line)
    // A gradient that is identically zero would pass trivially; the kernels' tests use
    // objectives whose gradients are not all zero.
    XCTAssertGreaterThan(
        analytic.map { abs($0) }.max() ?? 0, 1e-4, "\(label): gradient is all zeros", file: file, line: line)
}

/// sum_i r_i * out_i in Double.
func dot(_ out: FloatBuffer, _ r: [Float]) -> Double {
    var s = 0.0
    for i in 0..<r.count { s += Double(out[i]) * Double(r[i]) }
    return s
}

/// Test inputs outlive the kernel calls that read them: `FloatBuffer(x).base` alone would let
/// the buffer be freed right after the pointer is taken. Tests leak these few small buffers.
final class KeepAlive: @unchecked Sendable {
    static let shared = KeepAlive()
    private var buffers: [FloatBuffer] = []
    private let lock = NSLock()
    func hold(_ b: FloatBuffer) -> UnsafeMutablePointer<Float> {
        lock.lock(); buffers.append(b); lock.unlock(); return b.base
    }
}

/// A pointer to a copy of `values` that stays valid for the rest of the test process.
func keep(_ values: [Float]) -> UnsafeMutablePointer<Float> { KeepAlive.shared.hold(FloatBuffer(values)) }
