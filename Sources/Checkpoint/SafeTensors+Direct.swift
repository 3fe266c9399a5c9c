// Writing a safetensors file with O_DIRECT: the bytes go from the caller's buffer to the disk
// without a copy into the page cache, which on these machines is most of a buffered write's time
// (115 MB + fsync: 35-40 ms direct, 58-77 ms buffered). O_DIRECT needs the memory address, the
// file offset and the length aligned to the device's block; the writer keeps them aligned to
// `SafeTensors.directAlignment` (the header is padded with spaces to it, as the format allows),
// carries a run's unaligned tail into the next run where the runs lie back to back in memory,
// and writes the rest buffered: after the last run, at a gap in memory, on a misaligned buffer,
// and on a file system that refuses O_DIRECT. The file's bytes are the same either way.
import CChecksum
import Foundation

extension SafeTensors {
    /// The alignment of address, offset and length for O_DIRECT writes (covers 512 and 4096 blocks).
    public static let directAlignment = 4096
    /// open(2)'s O_DIRECT (not exported to Swift by Glibc); 0 where the platform has none.
    public static let oDirect = cchecksum_o_direct_flag()

    /// Writes `count` bytes at `p` to `path` (created or truncated), fsynced when `sync`; with
    /// O_DIRECT where `direct`, the file system and `p`'s alignment allow (the last partial block
    /// buffered). Returns whether O_DIRECT was still in use before that last block.
    @discardableResult
    public static func writeBytes(
        _ p: UnsafeRawPointer, count: Int, to path: String, direct: Bool, sync: Bool = true
    ) throws -> Bool {
        let out = try DirectOutput(path: path, direct: direct)
        try out.append(p, count)
        let wentDirect = out.direct
        try out.finish(sync: sync)
        return wentDirect
    }
}

/// An output file taking appends of byte runs, written with O_DIRECT while they stay aligned.
/// Used by one thread at a time (Sendable so that the write thread of `SafeTensors.write` can take it).
final class DirectOutput: @unchecked Sendable {
    let fd: Int32
    let path: String
    /// Whether the descriptor is still in O_DIRECT mode (false once anything went out buffered).
    private(set) var direct: Bool
    /// Bytes appended but not yet written: the unaligned tail of the last run.
    private var pending: UnsafeRawPointer?
    private var pendingCount = 0

    /// Opens `path` (created or truncated), with O_DIRECT when `direct` and the file system allows it.
    init(path: String, direct: Bool) throws {
        self.path = path
        var fd: Int32 = -1
        if direct && SafeTensors.oDirect != 0 {
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | SafeTensors.oDirect, 0o644)
        }
        self.direct = fd >= 0
        if fd < 0 { fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
        guard fd >= 0 else { throw CheckpointError("\(path): cannot create: \(String(cString: strerror(errno)))") }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Appends `count` bytes at `p`; they may stay pending until the next append or `finish`.
    func append(_ p: UnsafeRawPointer, _ count: Int) throws {
        if let q = pending, q + pendingCount != p { try flushBuffered() }
        if pending == nil { pending = p }
        pendingCount += count
        guard direct else { return try flushBuffered() }
        let a = SafeTensors.directAlignment
        guard Int(bitPattern: pending!) % a == 0 else { return try flushBuffered() }
        let aligned = pendingCount / a * a
        guard aligned > 0 else { return }
        let n = try writeDirect(pending!, aligned)
        pendingCount -= n
        pending = pendingCount == 0 ? nil : pending! + n
        if n < aligned { try flushBuffered() }
    }

    /// Writes whatever is pending (buffered) and fsyncs the file when `sync`.
    func finish(sync: Bool = true) throws {
        try flushBuffered()
        guard !sync || fsync(fd) == 0 else {
            throw CheckpointError("\(path): fsync failed: \(String(cString: strerror(errno)))")
        }
    }

    /// O_DIRECT writes of an aligned range; the bytes written before the kernel refused one (EINVAL).
    private func writeDirect(_ p: UnsafeRawPointer, _ count: Int) throws -> Int {
        var done = 0
        while done < count {
            let n = Foundation.write(fd, p + done, count - done)
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EINVAL { break }
            guard n > 0 else { throw SafeTensors.writeError(path) }
            done += n
        }
        return done
    }

    /// Leaves O_DIRECT for good and writes the pending bytes through the page cache.
    private func flushBuffered() throws {
        if direct {
            direct = false
            let flags = fcntl(fd, F_GETFL)
            guard flags >= 0, fcntl(fd, F_SETFL, flags & ~SafeTensors.oDirect) == 0 else {
                throw CheckpointError("\(path): cannot leave O_DIRECT: \(String(cString: strerror(errno)))")
            }
        }
        guard let p = pending else { return }
        try SafeTensors.writeAll(fd, p, pendingCount, path)
        pending = nil
        pendingCount = 0
    }
}
