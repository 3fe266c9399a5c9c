// `switchyard supervise [--max-restarts N] [--backoff S] -- COMMAND...`: runs a training command
// (mpirun ... switchyard train JOB, or train alone) and restarts it when it ends non-zero; train
// resumes from the newest checkpoint that verifies. Progress is the newest complete checkpoint's
// step: N restarts in a row without progress end supervision with a summary. The first SIGTERM,
// SIGINT or SIGUSR1 reaches the command as SIGUSR1 (mpirun forwards it to every rank; train finishes
// its step and saves), a second one as itself, and supervision ends with the command.
// Each restart is a `restart` event in the run's log, which `tail` and `status` show.
import Dispatch
import Foundation
import JSON
import RunEvents
import Training

enum SuperviseCommand {
    static let spec = CommandSpec(
        name: "supervise",
        summary: "Run a training command and restart it when it fails; it resumes from the newest checkpoint.",
        positionals: [],
        options: [
            OptionSpec(.maxRestarts, value: "N", "restarts in a row without a newer checkpoint (default 3)"),
            OptionSpec(.backoff, value: "S", "seconds to wait before each restart (default 10)"),
            OptionSpec(
                .minRanks, value: "M",
                "elastic: relaunch on the hostfile's hosts that answer, at a smaller world, down to M ranks"),
            OptionSpec(.probeTimeout, value: "S", "--min-ranks: seconds a host has to answer (default 30)")
        ],
        details: """
            COMMAND is the usual launch, e.g. mpirun -np 4 switchyard train jobs/small.json --set k=v;
            supervise reads its JOB and --set to find the run directory. A command that ends 0 ends
            supervision with 0; one that ends non-zero is restarted after the backoff, unless it ended
            --max-restarts times in a row without a newer checkpoint (then exit 1 with a summary).
            The first SIGTERM/SIGINT/SIGUSR1 reaches the command as SIGUSR1 (mpirun forwards it to
            every rank; train finishes its step and saves, however long that takes), a second one as
            itself (mpirun then kills the ranks within about a second). Supervision ends with the
            command's status (0 when the run's log shows it saved its last step and ended by the signal).

            With --min-ranks M the command must be mpirun --hostfile FILE ... -np N ...: before each
            restart every host of FILE is probed (mpirun with the command's options, --host H -np 1 true);
            the hosts that answer go into <run>/supervise.hostfile, which replaces FILE, and -np becomes
            their slots (at most N). train resumes at that world size (the checkpoint reshards). Fewer than
            M ranks left ends supervision with exit 1. The job's layout must fit the smaller world
            (layout.dp = 0 does).

            """,
        takesCommand: true
    ) { try run($0) }

    /// --backoff: seconds >= 0 (default 10).
    static func backoffSeconds(_ args: ParsedArgs) throws -> Double {
        guard let v = args.value(.backoff) else { return 10 }
        guard let s = Double(v), s >= 0, s.isFinite else {
            throw UsageError(message: "--backoff takes seconds >= 0, got '\(v)'", command: "supervise")
        }
        return s
    }

    /// The error supervision ends with when restarts stop making progress.
    static func giveUp(status: Int32, times: Int, newest: Int, attempts: Int, runDir: String) {
        let newest = newest < 0 ? "none" : "step \(newest)"
        Runtime.printError(
            "supervise: giving up: the command ended non-zero (last status \(status)) \(times) "
                + "time(s) in a row without a newer checkpoint (newest: \(newest)); \(attempts) attempt(s) "
                + "in all; see \(runDir)/log.jsonl", rank: 0, world: 1)
    }

    static func run(_ args: ParsedArgs) throws -> Int32 {
        var command = args.rest
        guard !command.isEmpty else {
            throw UsageError(message: "supervise needs the command to run after --", command: "supervise")
        }
        let maxRestarts = try args.positiveInt(.maxRestarts) ?? 3
        let backoff = try backoffSeconds(args)
        let runDir = try runDirectory(of: command)
        let elastic = try args.positiveInt(.minRanks).map {
            ElasticLaunch(minRanks: $0, probeSeconds: try args.positiveDouble(.probeTimeout) ?? 30)
        }
        if elastic != nil { _ = try ElasticLaunch.positions(command) }
        let signals = ForwardedSignals()
        var attempt = 0, withoutProgress = 0
        while true {
            attempt += 1
            let before = newestCheckpointStep(runDir)
            let status = try signals.run(command)
            if signals.received { return stoppedBySignal(runDir, status: status) }
            if status == 0 {
                say("switchyard supervise: the command completed (attempt \(attempt))")
                return 0
            }
            let after = newestCheckpointStep(runDir)
            withoutProgress = after > before ? 0 : withoutProgress + 1
            if withoutProgress > maxRestarts {
                giveUp(status: status, times: withoutProgress, newest: after, attempts: attempt, runDir: runDir)
                return 1
            }
            let message =
                "the command ended with status \(status) (attempt \(attempt)); restarting in \(backoff) s from "
                + (after < 0 ? "step 0 (no checkpoint yet)" : "the checkpoint of step \(after)")
            say("switchyard supervise: " + message)
            if signals.sleep(backoff) { return status }
            var plan: ElasticLaunch.Plan? = nil
            if let elastic {
                plan = relaunchPlan(elastic, &command, runDir: runDir)
                if plan == nil { return 1 }
            }
            appendEvent(
                runDir, restartEvent(attempt: attempt, status: status, checkpoint: after, message: message, plan: plan))
        }
    }

    /// Supervision's end after a stop signal. The run's own end event says whether it stopped
    /// cleanly (exit 0): after a second signal, passed on as SIGTERM, mpirun reports the job as
    /// failed even when every rank finished its step and saved.
    static func stoppedBySignal(_ runDir: String, status: Int32) -> Int32 {
        if let saved = cleanStop(runDir) {
            say("switchyard supervise: stopped by signal; the run saved step \(saved) and ended cleanly")
            return 0
        }
        say("switchyard supervise: stopped by signal; the command ended with status \(status)")
        return status
    }

    /// The `restart` event (with an elastic relaunch's world and hosts).
    static func restartEvent(attempt: Int, status: Int32, checkpoint: Int, message: String, plan: ElasticLaunch.Plan?)
        -> JSONValue
    {
        var fields: [(EventKey, JSONValue)] = [
            (.time, .number(Date().timeIntervalSince1970)), (.attempt, .integer(attempt)),
            (.exitStatus, .integer(Int(status))), (.checkpointStep, checkpoint < 0 ? .null : .integer(checkpoint)),
            (.message, .string(message))
        ]
        if let plan {
            fields += [
                (.world, .integer(plan.world)), (.hosts, .array(plan.hosts.map { JSONValue.string($0) })),
                (.lostHosts, .array(plan.lost.map { JSONValue.string($0) }))
            ]
        }
        return .event(.restart, fields)
    }

    /// The elastic relaunch on the hosts that answer (the command rewritten), or nil after
    /// printing why supervision ends.
    static func relaunchPlan(_ elastic: ElasticLaunch, _ command: inout [String], runDir: String)
        -> ElasticLaunch.Plan?
    {
        do {
            let plan = try elastic.relaunch(command, runDir: runDir)
            command = plan.command
            say(
                "switchyard supervise: relaunching at world \(plan.world) on \(plan.hosts.joined(separator: ", "))"
                    + (plan.lost.isEmpty ? "" : "; not answering: \(plan.lost.joined(separator: ", "))"))
            return plan
        } catch {
            Runtime.printError("supervise: giving up: \(error)", rank: 0, world: 1)
            return nil
        }
    }

    /// The run directory of the `train JOB [--set k=v]...` inside `command`.
    static func runDirectory(of command: [String]) throws -> String {
        guard let t = command.firstIndex(of: "train"), t + 1 < command.count else {
            throw UsageError(
                message:
                    "supervise: the command must contain 'train JOB' (e.g. mpirun -np 2 switchyard train job.json)",
                command: "supervise")
        }
        var sets: [String] = []
        var i = t + 2
        while i < command.count {
            if command[i] == "--set", i + 1 < command.count { sets.append(command[i + 1]); i += 1 }
            i += 1
        }
        return try Job.load(path: command[t + 1], overrides: sets).runDirectory
    }

    /// The checkpoint step of a launch that ended by a signal after its final save: the log's
    /// last events are that save and an `end` event with reason "signal" (nil otherwise).
    static func cleanStop(_ runDir: String) -> Int? {
        guard let text = try? String(contentsOfFile: runDir + "/log.jsonl", encoding: .utf8) else { return nil }
        let events = text.split(separator: "\n").suffix(4).compactMap { try? JSONValue.parse(String($0)) }
        guard let end = events.last, end.eventKind == .end, end[.reason]?.stringValue == "signal",
            let last = end[.step]?.intValue,
            events.contains(where: { $0.eventKind == .checkpoint && $0[.step]?.intValue == last + 1 })
        else { return nil }
        return last + 1
    }

    /// The step of the newest complete checkpoint of the run (-1: none).
    static func newestCheckpointStep(_ runDir: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: runDir + "/checkpoints")) ?? []
        let complete = names.filter {
            $0.hasPrefix("step-") && FileManager.default.fileExists(atPath: "\(runDir)/checkpoints/\($0)/manifest.json")
        }
        return complete.compactMap { Int($0.dropFirst(5)) }.max() ?? -1
    }

    static func appendEvent(_ runDir: String, _ event: JSONValue) {
        let path = runDir + "/log.jsonl"
        guard let h = FileHandle(forWritingAtPath: path) else { return }
        defer { try? h.close() }
        _ = try? h.seekToEnd()
        h.write(Data((event.compact + "\n").utf8))
    }
}

/// Runs commands with SIGTERM, SIGINT and SIGUSR1 (a batch system's warning before preemption)
/// passed on to them; remembers that one came. The first is passed on as SIGUSR1, train's stop
/// request, which mpirun forwards to every rank and then waits for them (on SIGTERM it would
/// SIGKILL them after odls_base_sigkill_timeout, 1 s: a step and a save of a large model take
/// longer). A second one is passed on as it came.
final class ForwardedSignals: @unchecked Sendable {
    private let lock = NSLock()
    private var child: Int32 = 0
    private var got = false
    private var sources: [DispatchSourceSignal] = []

    init() {
        for sig in [SIGTERM, SIGINT, SIGUSR1] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { [self] in forward(sig) }
            s.resume()
            sources.append(s)
        }
    }

    var received: Bool { lock.withLock { got } }

    private func forward(_ sig: Int32) {
        let (pid, first) = lock.withLock { () -> (Int32, Bool) in
            defer { got = true }
            return (child, !got)
        }
        if pid > 0 { kill(pid, first ? SIGUSR1 : sig) }
    }

    /// Runs `command` (found on PATH if it has no slash) and returns its exit status (128 + signal).
    func run(_ command: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = command
        do { try p.run() } catch {
            throw UsageError(message: "supervise: cannot run \(command[0]): \(error)", command: "supervise")
        }
        lock.withLock { child = p.processIdentifier }
        p.waitUntilExit()
        lock.withLock { child = 0 }
        return p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus
    }

    /// Sleeps `seconds`; true if a signal came meanwhile.
    func sleep(_ seconds: Double) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if received { return true }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return received
    }
}
