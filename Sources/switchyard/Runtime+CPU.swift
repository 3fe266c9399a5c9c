// The kernel modules (Tensor, Model, Training) are compiled for LLVM's "haswell" when the build
// host has its features (Package.swift); on a CPU without them they would die of SIGILL at the
// first vector instruction. This target is compiled for any x86-64, so main checks here first.
import Foundation
import Tensor

extension Runtime {
    /// The CPU features the kernels were compiled for, by /proc/cpuinfo name (none: portable build).
    static let kernelFeatures: [String] = {
        #if KERNELS_HASWELL
            return ["avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "popcnt"]
        #else
            return []
        #endif
    }()

    /// Which engine runs Linear's products (Tensor/Gemm.swift), for bench headers.
    static var gemmDescription: String {
        Gemm.engineName
            + (Gemm.engine == .own
                ? " (SWITCHYARD_GEMM=blas for OpenBLAS)" : " (SWITCHYARD_GEMM=blas or no CGemm kernel for this CPU)")
    }

    /// What `--version` and `bench` say the kernels were compiled for.
    static var kernelTarget: String { kernelFeatures.isEmpty ? "the default target (portable)" : "haswell (AVX2)" }

    /// The kernel features this CPU lacks. `SWITCHYARD_PRETEND_CPU_FLAGS` (a test's) replaces the
    /// flags /proc/cpuinfo lists; with no flags line at all nothing is reported missing.
    static func missingKernelFeatures(environment env: [String: String]) -> [String] {
        guard !kernelFeatures.isEmpty else { return [] }
        let text =
            env["SWITCHYARD_PRETEND_CPU_FLAGS"].map { "flags\t: " + $0 }
            ?? (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
        let have = Set(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init))
        return kernelFeatures.filter { !have.contains($0) }
    }

    /// Ends the process (exit 1, one message) when the kernels cannot run on this CPU.
    static func checkKernelCPU() {
        let missing = missingKernelFeatures(environment: ProcessInfo.processInfo.environment)
        guard !missing.isEmpty else { return }
        FileHandle.standardError.write(
            Data(
                ("switchyard: this binary's kernels were compiled for \(kernelTarget) on its build host, and this "
                    + "CPU (\(cpuModel)) lacks \(missing.joined(separator: ", ")); rebuild on this machine, or "
                    + "for any x86-64 with `rm -rf .build && SWITCHYARD_PORTABLE=1 swift build -c release`\n").utf8))
        exit(1)
    }
}
