// Process-level concerns: the BLAS core choice (re-exec before MPI_Init), threads per rank,
// signals, host facts, and how errors leave the process on one rank or many.
import Comm
import CommMPI
import Foundation
import Tensor
import Training

enum Runtime {
    /// If OpenBLAS fell back to a generic core on a CPU it could drive better, set
    /// OPENBLAS_CORETYPE and re-execute this program (OpenBLAS reads it only at load).
    /// Runs before MPI_Init; a failed exec just continues with the detected core.
    static func chooseBLASCore() {
        let env = ProcessInfo.processInfo.environment
        guard env["SWITCHYARD_BLAS_REEXEC"] == nil else { return }
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        // SWITCHYARD_PRETEND_BLAS_CORE lets a test exercise the re-exec on a CPU that OpenBLAS
        // recognises (it replaces only the detected core name in the decision).
        let detected = env["SWITCHYARD_PRETEND_BLAS_CORE"] ?? BLAS.coreName
        guard
            let core = BLASCore.decide(
                currentCore: detected, cpuFlags: BLASCore.flags(fromCPUInfo: cpuinfo),
                userCoreType: env["OPENBLAS_CORETYPE"])
        else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv("SWITCHYARD_BLAS_REEXEC", "\(detected)->\(core)", 1)
        let args = CommandLine.arguments
        var cargs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &cargs)
        // Only reached if exec failed.
        FileHandle.standardError.write(
            Data(
                ("switchyard: warning: could not re-execute with OPENBLAS_CORETYPE=\(core); continuing "
                    + "with \(BLAS.coreName)\n").utf8))
    }

    /// Threads per rank: --threads, else $OPENBLAS_NUM_THREADS, else cores / ranks on this node.
    /// Runs this rank's work items (Parallel.swift) on `n` threads, OpenBLAS single-threaded
    /// inside each: the results then do not depend on n.
    static func useThreads(_ n: Int) {
        BLAS.setThreads(1)
        Parallel.threads = n
    }

    /// Ranks of this job on this node (Open MPI's local size; 1 outside mpirun).
    static var ranksOnNode: Int {
        max(1, Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1)
    }

    static func threadsPerRank(option: Int?) -> Int {
        if let n = option { return n }
        let env = ProcessInfo.processInfo.environment
        if let s = env["OPENBLAS_NUM_THREADS"], let n = Int(s), n >= 1 { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount / ranksOnNode)
    }

    /// The CPU model name from /proc/cpuinfo.
    static var cpuModel: String {
        let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            if let c = line.firstIndex(of: ":") {
                return line[line.index(after: c)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return "unknown"
    }

    /// "Prescott->SkylakeX" when this process was re-executed with a better core, else nil.
    static var blasCoreOverride: String? { ProcessInfo.processInfo.environment["SWITCHYARD_BLAS_REEXEC"] }

    /// Who chose the BLAS core, for benchmark output: "switchyard: Prescott->SkylakeX" (the re-exec),
    /// "OPENBLAS_CORETYPE=Haswell from the environment" (a caller's choice, which always wins, even
    /// on a CPU whose own choice would be faster), or "OpenBLAS" (its detection at load).
    static var blasCoreChosenBy: String {
        if let r = blasCoreOverride { return "switchyard: \(r)" }
        if let u = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"], !u.isEmpty {
            return "OPENBLAS_CORETYPE=\(u) from the environment"
        }
        return "OpenBLAS"
    }

    static var hostName: String { ProcessInfo.processInfo.hostName }

    /// This process's rank before MPI_Init (from the launcher's environment), for messages.
    static var launchRank: Int { Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_RANK"] ?? "") ?? 0 }

    /// Whether every rank succeeded with its local checks (no collective before this one): when
    /// some failed, the lowest failing rank prints its `failure` and every rank returns false.
    static func everyRankSucceeded(_ failure: String?, world: MPICommunicator) throws -> Bool {
        let failedRanks = try world.allgather([failure == nil ? 0 : 1] as [Int64])
        guard let firstBad = failedRanks.firstIndex(of: 1) else { return true }
        if world.rank == firstBad, let failure { printError(failure, rank: world.rank, world: world.size) }
        return false
    }

    /// Arms the world's collective deadline (seconds; 0: none) and, with `heartbeat`, starts the
    /// ranks' heartbeat so that a deadline names the rank(s) it waits for (collective).
    static func armDeadlines(_ world: MPICommunicator, _ t: TimeoutSpec = TimeoutSpec(), heartbeat: Bool) throws {
        world.watch.configure(
            rank: world.rank, collectiveSeconds: t.collectiveSeconds, firstStepSeconds: t.firstStepSeconds)
        if heartbeat { try world.watch.connect(world, host: hostName) }
    }

    /// The one way a command that uses MPI ends. MPI is initialised, `body` runs; the code it
    /// returns (every rank agreed on it) ends the run with MPI_Finalize. An error it throws is
    /// this rank's alone: printed with the rank, then MPI_Abort ends every rank with exit 1 (a
    /// world of one finalizes and returns 1: there is no rank to stop).
    static func withWorld(_ body: (MPICommunicator) throws -> Int32) -> Int32 {
        let world: MPICommunicator
        do { world = try MPICommunicator.initWorld() } catch {
            printError("\(error)")
            return 1
        }
        do {
            let code = try body(world)
            MPICommunicator.finalize()
            return code
        } catch {
            printError("\(error)", rank: world.rank, world: world.size)
            if world.size > 1 { MPICommunicator.abortWorld(code: 1) }
            MPICommunicator.finalize()
            return 1
        }
    }

    static func printError(_ message: String, rank: Int? = nil, world: Int = 1) {
        let prefix = world > 1 ? "rank \(rank ?? launchRank): " : ""
        FileHandle.standardError.write(Data("switchyard: error: \(prefix)\(message)\n".utf8))
    }
}

/// Set by SIGINT/SIGTERM/SIGUSR1; the step loop checks it between steps.
nonisolated(unsafe) var stopSignalCount: Int32 = 0

/// SIGUSR1 is the stop request that reaches every rank under mpirun: Open MPI forwards SIGUSR1 to
/// all ranks and leaves them be, while on SIGTERM it gives them odls_base_sigkill_timeout (1 s)
/// before SIGKILL, too little for a step and a save of a large model.
func installStopSignals() {
    let handler: @convention(c) (Int32) -> Void = { _ in stopSignalCount += 1 }
    signal(SIGINT, handler)
    signal(SIGTERM, handler)
    signal(SIGUSR1, handler)
}
