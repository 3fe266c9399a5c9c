// A Float32 buffer that owns 64-byte aligned, zero-initialised memory.
// Kernels in this target take raw pointers; FloatBuffer is how callers own the memory.

/// Owned, aligned, zero-initialised Float32 storage of a fixed element count.
///
/// A class so that views (named parameter slices) can point into it without copies.
/// Not thread-safe: one owner (one rank) writes it at a time.
public final class FloatBuffer: @unchecked Sendable {
    public let count: Int
    public let base: UnsafeMutablePointer<Float>

    public init(count: Int) {
        precondition(count >= 0, "FloatBuffer count must be >= 0")
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        base.initialize(repeating: 0, count: max(count, 1))
    }

    /// Allocated but not written: every element must be written before it is read.
    public init(uninitializedCount count: Int) {
        precondition(count >= 0, "FloatBuffer count must be >= 0")
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        for i in 0..<values.count { base[i] = values[i] }
    }

    deinit { base.deallocate() }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: base, count: count) }

    public subscript(i: Int) -> Float {
        get { precondition(i >= 0 && i < count); return base[i] }
        set { precondition(i >= 0 && i < count); base[i] = newValue }
    }

    /// Sets every element to zero.
    public func zero() { base.update(repeating: 0, count: count) }

    /// Copies the contents out (tests and logging; not for hot paths).
    public func toArray() -> [Float] { Array(buffer) }

    /// Copies `other` (same count) into this buffer.
    public func copy(from other: FloatBuffer) {
        precondition(other.count == count, "copy between buffers of different size")
        base.update(from: other.base, count: count)
    }
}
