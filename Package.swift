// swift-tools-version:6.0
// Switchyard: distributed MoE training on CPU nodes. No Swift package dependencies;
// Open MPI and OpenBLAS come from Debian (pkg-config names `ompi`, `openblas`).
import PackageDescription

// Hot loops are written over raw pointers; release builds drop bounds checks there.
let kernelFlags: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]

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
        .target(name: "Tensor", dependencies: ["COpenBLAS", "Clock"], swiftSettings: kernelFlags),
        .target(name: "JSON"),
        .target(name: "Comm", dependencies: ["Clock"]),
        .target(name: "Placement", dependencies: ["JSON"]),
        .target(name: "CommMPI", dependencies: ["Comm", "CMPI"]),
        .target(name: "Model", dependencies: ["Tensor", "Comm", "Placement", "Clock"], swiftSettings: kernelFlags),
        .target(name: "Monitor", dependencies: ["JSON"]),
        .target(name: "CChecksum"),
        .target(name: "Checkpoint", dependencies: ["CChecksum", "Tensor", "Comm", "JSON", "Placement", "Clock"]),
        .target(
            name: "Training", dependencies: ["Tensor", "Comm", "Placement", "Model", "Checkpoint", "JSON", "Clock"],
            swiftSettings: kernelFlags),
        .executableTarget(
            name: "switchyard",
            dependencies: [
                "Training", "Model", "Placement", "Checkpoint", "Monitor", "Tensor", "Comm", "CommMPI", "JSON", "Clock"
            ]),
        .testTarget(name: "TensorTests", dependencies: ["Tensor"]),
        .testTarget(name: "JSONTests", dependencies: ["JSON"]),
        .testTarget(name: "CommTests", dependencies: ["Comm"]),
        .testTarget(name: "PlacementTests", dependencies: ["Placement", "JSON"]),
        .testTarget(name: "ModelTests", dependencies: ["Model", "Tensor", "Comm", "Placement"]),
        .testTarget(name: "CheckpointTests", dependencies: ["Checkpoint", "Comm", "JSON", "Tensor"]),
        .testTarget(name: "MonitorTests", dependencies: ["Monitor", "JSON"]),
        .testTarget(
            name: "TrainingTests",
            dependencies: ["Training", "Model", "Tensor", "Comm", "Placement", "Checkpoint", "JSON"]),
        .testTarget(name: "SwitchyardTests", dependencies: ["Training", "Model", "Tensor", "Checkpoint", "JSON"])
    ]
)
