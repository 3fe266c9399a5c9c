// The few libm calls the kernels need, without importing Foundation into the hot files.
#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Double-precision natural log.
@inline(__always) public func logDouble(_ x: Double) -> Double { Glibc.log(x) }

/// Double-precision erf (reference for tests and for non-hot code).
public func erfDouble(_ x: Double) -> Double { Glibc.erf(x) }
/// Double-precision exp.
public func expDouble(_ x: Double) -> Double { Glibc.exp(x) }
/// Double-precision cos (the LR schedule).
public func cosDouble(_ x: Double) -> Double { Glibc.cos(x) }
/// Double-precision sin and pow (rope's table).
public func sinDouble(_ x: Double) -> Double { Glibc.sin(x) }
public func powDouble(_ x: Double, _ y: Double) -> Double { Glibc.pow(x, y) }
