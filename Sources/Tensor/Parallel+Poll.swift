// Work between a rank's work items: a communication library that progresses only inside its own
// calls (Open MPI's non-blocking collectives over TCP) gets a call every `interval` seconds while
// the rank computes, from the thread that installed the poll (MPI_THREAD_FUNNELED: the main
// thread), never from a helper thread.
import Clock
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

public enum BetweenItems {
    /// The installed poll and the thread that may run it; nil: nothing to do.
    nonisolated(unsafe) static var installed: (body: () -> Void, thread: pthread_t)?
    nonisolated(unsafe) static var last = 0.0
    /// Seconds between two polls at most as often (an MPI_Test costs about a microsecond).
    public static let interval = 200e-6

    /// Runs `body` between items on the calling thread (only) until `remove`.
    public static func install(_ body: @escaping () -> Void) { installed = (body, pthread_self()) }

    public static func remove() { installed = nil }

    /// Called after each item the calling thread ran: the poll, if installed by this thread and due.
    @inline(__always) static func poll() {
        guard let (body, thread) = installed, pthread_equal(thread, pthread_self()) != 0 else { return }
        let now = monotonicSeconds()
        if now - last < interval { return }
        last = now
        body()
    }
}
