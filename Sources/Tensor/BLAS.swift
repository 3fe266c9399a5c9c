// OpenBLAS runtime controls and the core choice.
//
// Debian's OpenBLAS 0.3.21 does not know the newest CPUs and falls back to generic
// Prescott kernels there (sgemm ~3x slower). OPENBLAS_CORETYPE is read when the library
// loads, so fixing it means setting the variable and re-executing the program; the
// executable does that before MPI_Init, using `BLASCore.decide`.
import COpenBLAS

public enum BLAS {
    /// The kernel set OpenBLAS chose at load, e.g. "Haswell", "SkylakeX", "Prescott".
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// The library's build configuration string.
    public static var config: String {
        guard let p = openblas_get_config() else { return "unknown" }
        return String(cString: p)
    }

    /// Sets the number of BLAS threads for this process.
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
}

/// The decision whether to override OpenBLAS's core choice.
public enum BLASCore {
    /// Cores OpenBLAS reports when it did not recognise the CPU (its generic fallbacks).
    static let genericCores: Set<String> = [
        "prescott", "core2", "katmai", "coppermine", "northwood",
        "banias", "atom", "generic", "unknown"
    ]

    /// The best core this CPU supports, from its feature flags (as in /proc/cpuinfo), or nil.
    public static func bestCore(cpuFlags: Set<String>) -> String? {
        if ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(cpuFlags.contains) { return "SkylakeX" }
        if cpuFlags.contains("avx2") && cpuFlags.contains("fma") { return "Haswell" }
        return nil
    }

    /// The OPENBLAS_CORETYPE to set and re-execute with, or nil to keep the current choice.
    /// Only overrides a generic fallback, and never a user's own OPENBLAS_CORETYPE.
    public static func decide(currentCore: String, cpuFlags: Set<String>, userCoreType: String?) -> String? {
        if let u = userCoreType, !u.isEmpty { return nil }
        guard genericCores.contains(currentCore.lowercased()) else { return nil }
        return bestCore(cpuFlags: cpuFlags)
    }

    /// Feature flags of the first CPU in a /proc/cpuinfo text.
    public static func flags(fromCPUInfo text: String) -> Set<String> {
        for line in text.split(separator: "\n") where line.hasPrefix("flags") {
            if let colon = line.firstIndex(of: ":") {
                return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
            }
        }
        return []
    }
}
