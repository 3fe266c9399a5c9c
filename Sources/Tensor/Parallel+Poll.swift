// Work between a rank's work items: a communication library that progresses only inside its own
// calls (Open MPI's non-blocking collectives over TCP) gets a call every `interval` seconds while
// the rank computes, from the thread that installed the poll (MPI_THREAD_FUNNELED: the main
// thread), never from a helper thread. One poll at a time per process (one rank per process);
// the owner is an atomic, so helper threads only ever read it, and the body is touched by the
// owner alone.
import Clock
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

public enum BetweenItems {
    /// The thread that installed the poll (pthread_t as an integer), 0 when none is installed.
    static let owner = Atomic<UInt>(0)
    nonisolated(unsafe) static var body: (() -> Void)?
    nonisolated(unsafe) static var last = 0.0
    /// Seconds between two polls at most as often (an MPI_Test costs about a microsecond).
    public static let interval = 200e-6

    /// Runs `poll` between items on the calling thread (only) until `remove`.
    public static func install(_ poll: @escaping () -> Void) {
        precondition(owner.load(ordering: .acquiring) == 0, "BetweenItems: a poll is already installed")
        body = poll
        owner.store(UInt(pthread_self()), ordering: .releasing)
    }

    /// Removes the poll (from the thread that installed it; nothing if none is installed).
    public static func remove() {
        guard owner.load(ordering: .acquiring) == UInt(pthread_self()) else { return }
        owner.store(0, ordering: .releasing)
        body = nil
    }

    /// Called after each item the calling thread ran: the poll, if this thread installed it and
    /// it is due.
    @inline(__always) static func poll() {
        guard owner.load(ordering: .relaxed) == UInt(pthread_self()), let body else { return }
        let now = monotonicSeconds()
        if now - last < interval { return }
        last = now
        body()
    }
}
