// swift-tools-version:6.0
// Switchyard: distributed MoE training on CPU nodes. No Swift package dependencies;
// Open MPI and OpenBLAS come from Debian (pkg-config names `ompi`, `openblas`).
import Foundation
import PackageDescription

// The x86-64 features of LLVM's "haswell" (AVX2, FMA, BMI, F16C, MOVBE, LZCNT), as /proc/cpuinfo names them.
let haswellFlags: Set<Substring> = ["avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "popcnt"]

/// Whether the kernels are compiled for haswell: on an x86-64 build host that has its features
/// (every machine this project runs on: AMD Zen 3, Intel Skylake-X), unless SWITCHYARD_PORTABLE=1
/// asks for a binary that runs on any x86-64. The 8-wide vectors change no result (Swift does not
/// fuse a * b + c on its own); the polynomials of exp and erf use fused multiply-adds where the
/// target has them (`FastMath.mulAdd`), so a portable build's exp and erf may differ from this
/// build's in the last bit. `switchyard` refuses to start on a CPU without these features.
let kernelsForHaswell: Bool = {
    #if arch(x86_64)
        guard ProcessInfo.processInfo.environment["SWITCHYARD_PORTABLE"] != "1",
            let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return false }
        return haswellFlags.isSubset(of: Set(line.split(separator: " ")))
    #else
        return false
    #endif
}()

// Hot loops are written over raw pointers; release builds drop bounds checks there. The CPU
// target applies to debug builds too, so that the tests run the code the release build runs.
// -fno-math-errno: on Linux, Float.squareRoot() is clang's __builtin_sqrtf, which with errno
// semantics becomes a compare, vsqrtss and a call to sqrtf for negative inputs, lane by lane,
// so SIMD8's squareRoot was never one vsqrtps (AdamW over 5.6e7 floats: 97 -> 51-56 ms, the same
// bits: IEEE sqrt is correctly rounded either way; only errno is no longer set).
// HARDWARE_FMA: the target has a fused multiply-add instruction (haswell, every arm64); without
// one, Float.addingProduct is a call to libm's fmaf per element, so FastMath.mulAdd is a * b + c.
#if arch(arm64)
    let hardwareFMA = true
#else
    let hardwareFMA = kernelsForHaswell
#endif
let kernelFlags: [SwiftSetting] =
    [
        .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
        .unsafeFlags(["-Xcc", "-fno-math-errno"]),
        .unsafeFlags(kernelsForHaswell ? ["-target-cpu", "haswell"] : [])
    ] + (hardwareFMA ? [.define("HARDWARE_FMA")] : [])

let package = Package(
    name: "Switchyard",
    products: [
        .executable(name: "switchyard", targets: ["switchyard"])
    ],
    targets: [
        .systemLibrary(
            name: "CMPIHeaders", path: "Sources/CMPIHeaders", pkgConfig: "ompi",
            providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "CMPI", dependencies: ["CMPIHeaders"]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .target(name: "Clock"),
        // Optimised in debug builds too: the FMA loop measures the hardware, not the compiler.
        .target(name: "CPeak", cSettings: [.unsafeFlags(["-O2"])]),
        // Optimised in debug builds too: the tests run the kernels the release build runs.
        .target(name: "CGemm", cSettings: [.unsafeFlags(["-O2"])]),
        .target(name: "Tensor", dependencies: ["COpenBLAS", "CPeak", "CGemm", "Clock"], swiftSettings: kernelFlags),
        .target(name: "JSON"),
        .target(name: "Comm", dependencies: ["Clock"]),
        .target(name: "Placement", dependencies: ["JSON"]),
        .target(name: "CommMPI", dependencies: ["Comm", "CMPI"]),
        .target(name: "Model", dependencies: ["Tensor", "Comm", "Placement", "Clock"], swiftSettings: kernelFlags),
        .target(name: "RunEvents", dependencies: ["JSON"]),
        .target(name: "Tokenizer", dependencies: ["JSON"], swiftSettings: kernelFlags),
        .target(name: "Monitor", dependencies: ["JSON", "RunEvents"]),
        .target(name: "TensorBoard", dependencies: ["JSON", "RunEvents", "Checkpoint"]),
        .target(name: "CChecksum"),
        .target(name: "Checkpoint", dependencies: ["CChecksum", "Tensor", "Comm", "JSON", "Placement", "Clock"]),
        .target(
            name: "Training",
            dependencies: [
                "Tensor", "Comm", "Placement", "Model", "Checkpoint", "JSON", "RunEvents", "TensorBoard", "Clock"
            ],
            swiftSettings: kernelFlags),
        .executableTarget(
            name: "switchyard",
            dependencies: [
                "Training", "Model", "Placement", "Checkpoint", "Monitor", "Tensor", "Comm", "CommMPI", "JSON",
                "RunEvents", "TensorBoard", "Clock", "Tokenizer"
            ],
            swiftSettings: kernelsForHaswell ? [.define("KERNELS_HASWELL")] : []),
        .testTarget(name: "TensorTests", dependencies: ["Tensor"]),
        .testTarget(name: "JSONTests", dependencies: ["JSON"]),
        .testTarget(name: "TokenizerTests", dependencies: ["Tokenizer", "JSON"]),
        .testTarget(name: "CommTests", dependencies: ["Comm"]),
        .testTarget(name: "PlacementTests", dependencies: ["Placement", "JSON"]),
        .testTarget(name: "ModelTests", dependencies: ["Model", "Tensor", "Comm", "Placement"]),
        .testTarget(name: "CheckpointTests", dependencies: ["Checkpoint", "Comm", "JSON", "Tensor"]),
        .testTarget(name: "MonitorTests", dependencies: ["Monitor", "JSON", "RunEvents", "TensorBoard"]),
        .testTarget(
            name: "TrainingTests",
            dependencies: ["Training", "Model", "Tensor", "Comm", "Placement", "Checkpoint", "JSON"]),
        .testTarget(
            name: "SwitchyardTests", dependencies: ["Training", "Model", "Tensor", "Checkpoint", "JSON", "TensorBoard"])
    ]
)
