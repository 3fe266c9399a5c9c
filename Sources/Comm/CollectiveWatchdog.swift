// The deadline of every blocking collective: the MPI communicator marks each call it makes, and a
// watchdog thread ends the process when one makes no progress for longer than the limit. mpirun
// then ends the other ranks, so a stopped rank, a frozen node or a cut link never hangs a job (a
// launcher still waiting for an unreachable node after a grace period is killed).
// The message names the rank, the call, the step and how long it waited, and, from the heartbeat,
// the rank(s) it waits for and what was last seen of them.
import Clock
import Foundation

public final class CollectiveWatchdog: @unchecked Sendable {
    /// A watchdog of its own for a communicator and the ones split from it (MPICommunicator makes
    /// one per world); its thread starts at the first `configure`.
    public init() {}

    private let lock = NSLock()
    private var call: String?
    private var since = 0.0
    private var step = -1
    private var firstStep = 0
    private var limit = 0.0, firstStepLimit = 0.0
    private var rank = 0
    private var patience = 0
    private var started = false
    private var heartbeat: Heartbeat?

    /// Arms the deadlines (seconds; 0: none) and starts the watchdog thread once.
    public func configure(rank: Int, collectiveSeconds: Double, firstStepSeconds: Double) {
        lock.lock()
        self.rank = rank
        limit = collectiveSeconds
        firstStepLimit = firstStepSeconds
        let start = !started
        started = true
        lock.unlock()
        if start { Thread.detachNewThread { [self] in watch() } }
    }

    /// Starts the heartbeat between the ranks of `comm` (collective; world size 1: none), so that
    /// a deadline names the ranks it waits for. Without a socket the deadline names none; only a
    /// failed collective throws.
    public func connect(_ comm: any Communicator, host: String) throws {
        let beat = try Heartbeat.connect(comm, host: host)
        lock.lock()
        heartbeat = beat
        lock.unlock()
    }

    /// The step the rank works on, and the first step of this run (its allowance is longer).
    public func setStep(_ s: Int, first: Int) {
        lock.lock()
        step = s
        firstStep = first
        lock.unlock()
    }

    /// Runs `body` with deadlines `patienceFactor` times longer: collectives in it wait for the
    /// slowest rank's disk (a blocking checkpoint save), not only for the others' compute.
    public func patient<R>(_ body: () throws -> R) rethrows -> R {
        lock.lock()
        patience += 1
        lock.unlock()
        defer {
            lock.lock()
            patience -= 1
            lock.unlock()
        }
        return try body()
    }

    /// How much longer deadlines are inside `patient`.
    public static let patienceFactor = 10.0

    /// Runs `body`, a blocking collective named `name`, under the deadline.
    @inline(__always)
    public func watched<R>(_ name: String, _ body: () throws -> R) rethrows -> R {
        lock.lock()
        call = name
        since = monotonicSeconds()
        lock.unlock()
        defer {
            lock.lock()
            call = nil
            lock.unlock()
        }
        return try body()
    }

    /// The heartbeat, then the message and exit when the current call passed its deadline; twice
    /// a second.
    private func watch() {
        var tick = 0
        while true {
            Thread.sleep(forTimeInterval: 0.5)
            tick += 1
            lock.lock()
            let (beat, current, at) = (heartbeat, call, step)
            let deadline =
                (step <= firstStep ? firstStepLimit : limit) * (patience > 0 ? CollectiveWatchdog.patienceFactor : 1)
            let waited = monotonicSeconds() - since
            let expired = call != nil && deadline > 0 && waited > deadline
            let which =
                (step <= firstStep ? "timeouts.firstStepSeconds" : "timeouts.collectiveSeconds")
                + (patience > 0 ? " x \(CollectiveWatchdog.patienceFactor) during a checkpoint save" : "")
            lock.unlock()
            if let beat, tick % beat.everyTicks == 0 { beat.send(step: at, call: current) }
            if expired {
                let message = expiry(
                    current ?? "", step: at, waited: waited, deadline: "\(which) = \(deadline) s", beat: beat)
                FileHandle.standardError.write(Data(message.utf8))
                CollectiveWatchdog.stopLauncherLater(seconds: CollectiveWatchdog.launcherGraceSeconds)
                _exit(1)
            }
        }
    }

    /// `rank R: no progress from rank(s) ... in CALL at step S for N s (deadline ...): what the
    /// heartbeat saw of them`; "the other rank(s)" when it names none.
    private func expiry(_ call: String, step: Int, waited: Double, deadline: String, beat: Heartbeat?) -> String {
        let blamed = beat?.blame(step: step) ?? []
        let whom =
            blamed.isEmpty ? "the other rank(s)" : "rank(s) " + blamed.map { "\($0.rank)" }.joined(separator: ", ")
        let seen =
            blamed.isEmpty
            ? "a rank stopped, its node froze or a link is cut"
            : blamed.prefix(8).map(\.seen).joined(separator: "; ") + (blamed.count > 8 ? "; ..." : "")
        return "switchyard: error: rank \(rank): no progress from \(whom) in \(call) at "
            + (step < 0 ? "start-up" : "step \(step)") + " for \(Int(waited)) s (deadline \(deadline)): \(seen); "
            + "ending the job\n"
    }

    /// How long the launcher has to end the job on its own after a rank gave up.
    public static let launcherGraceSeconds = 5

    /// mpirun ends the job when a rank exits, but waits forever for a node it cannot reach (a cut
    /// link): so a detached helper kills this rank's parent `seconds` later if it is still the
    /// same Open MPI launcher or daemon (mpirun, mpiexec, orterun, orted; start time checked, so a
    /// new process with the same pid is left alone). Nothing happens when the job ended by then.
    static func stopLauncherLater(seconds: Int) {
        let parent = getppid()
        guard let stat = try? String(contentsOfFile: "/proc/\(parent)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19 else { return }
        let started = fields[19]  // field 22 of /proc/PID/stat: start time
        let script =
            "sleep \(seconds); p=\(parent); s=$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | cut -d' ' -f20); "
            + "[ \"$s\" = \"\(started)\" ] || exit 0; case \"$(cat /proc/$p/comm)\" in "
            + "mpirun|mpiexec|orterun|orted|prterun|prted) kill -KILL $p ;; esac"
        var pid: pid_t = 0
        let argv = ["setsid", "-f", "/bin/sh", "-c", script]
        var cargs = argv.map { strdup($0) } + [nil]
        defer { for a in cargs { free(a) } }
        _ = posix_spawn(&pid, "/usr/bin/setsid", nil, nil, &cargs, environ)
    }
}
