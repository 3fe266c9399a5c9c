// The progress thread for non-blocking collectives (SWITCHYARD_MPI_PROGRESS=thread, which asks MPI
// for MPI_THREAD_MULTIPLE): it calls MPI_Test on every MPIPendingCollective in flight every 50 us,
// so Open MPI's TCP transport moves their bytes while the rank computes, instead of only when the
// main thread tests them between work items (the default, BetweenItems). Requests are shared under
// one lock: the thread tests them, the main thread reads `done` or takes a request back to wait.
import CMPI
import Foundation

final class MPIProgress: @unchecked Sendable {
    /// The thread, when the environment asked for it and MPI gave MPI_THREAD_MULTIPLE.
    nonisolated(unsafe) static var shared: MPIProgress?

    private let lock = NSLock()
    private var pending: [MPIPendingCollective] = []
    private var running = false

    /// Whether SWITCHYARD_MPI_PROGRESS asks for the thread.
    static var requested: Bool { ProcessInfo.processInfo.environment["SWITCHYARD_MPI_PROGRESS"] == "thread" }

    /// Hands `r` to the thread (started on the first request).
    func add(_ r: MPIPendingCollective) {
        lock.lock()
        pending.append(r)
        if !running {
            running = true
            let t = Thread { [self] in loop() }
            t.name = "switchyard-mpi-progress"
            t.start()
        }
        lock.unlock()
    }

    /// `body` under the lock (the request's state is shared with the thread).
    func locked<R>(_ body: () throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Takes `r` back from the thread (the main thread then waits on it itself).
    func take(_ r: MPIPendingCollective) { pending.removeAll { $0 === r } }

    private func loop() {
        while true {
            lock.lock()
            for r in pending where !r.done {
                var flag: Int32 = 0
                // A failed test leaves the request to the main thread, whose MPI_Wait reports it.
                if CMPI_Test(&r.request, &flag) != CMPI_SUCCESS() {
                    r.testFailed = true
                } else if flag != 0 {
                    r.done = true
                }
            }
            pending.removeAll { $0.done || $0.testFailed }
            lock.unlock()
            usleep(50)
        }
    }
}
