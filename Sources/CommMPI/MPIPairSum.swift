// A two-rank sum started without blocking, from point-to-point messages: each rank sends its
// buffer to the other and receives the other's into scratch; when both are done it adds the
// scratch in: a + b on one rank, b + a on the other, the same bits (IEEE addition commutes) and
// those of MPI_Allreduce at two ranks. Tested as MPIPendingCollective is (between work items).
import CMPI
import Comm

final class MPIPairSum: PendingCollective {
    var receive: MPI_Request? = nil
    var send: MPI_Request? = nil
    let buffer: UnsafeMutableBufferPointer<Float>
    let scratch: UnsafeMutablePointer<Float>
    let watch: CollectiveWatchdog
    var received = false, sent = false, done = false

    /// Posts the receive from and the send to `peer` (tag 11: the pair sums' own order).
    init(_ buffer: UnsafeMutableBufferPointer<Float>, peer: Int, comm: MPI_Comm, watch: CollectiveWatchdog) throws {
        self.buffer = buffer
        self.watch = watch
        scratch = .allocate(capacity: buffer.count)
        let n = try count32(buffer.count, "MPI_Isend (pair sum)")
        try check(MPI_Irecv(scratch, n, CMPI_FLOAT(), Int32(peer), 11, comm, &receive), "MPI_Irecv (pair sum)")
        try check(MPI_Isend(buffer.baseAddress, n, CMPI_FLOAT(), Int32(peer), 11, comm, &send), "MPI_Isend (pair sum)")
    }

    func test() throws -> Bool {
        if done { return true }
        var flag: Int32 = 0
        if !received {
            try check(CMPI_Test(&receive, &flag), "MPI_Test (pair sum)")
            received = flag != 0
        }
        if !sent {
            try check(CMPI_Test(&send, &flag), "MPI_Test (pair sum)")
            sent = flag != 0
        }
        if received && sent { finish() }
        return done
    }

    func wait() throws {
        if done { return }
        try watch.watched("MPI_Wait (pair sum)") {
            if !received { try check(CMPI_Wait(&receive), "MPI_Wait (pair sum)") }
            if !sent { try check(CMPI_Wait(&send), "MPI_Wait (pair sum)") }
        }
        (received, sent) = (true, true)
        finish()
    }

    private func finish() {
        let b = buffer.baseAddress!
        for i in 0..<buffer.count { b[i] += scratch[i] }
        scratch.deallocate()
        done = true
    }
}
