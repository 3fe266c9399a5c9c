import Foundation
import XCTest

@testable import Checkpoint

/// SafeTensors+Direct.swift: O_DIRECT appends keep address, offset and length aligned, carry
/// unaligned tails, fall back to buffered writes, and always leave the bytes that were appended.
final class DirectWriteTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = tempDir() }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// Whether this directory's file system takes O_DIRECT opens at all (tmpfs does not).
    func directSupported() -> Bool {
        let fd = open(dir + "/probe", O_WRONLY | O_CREAT | SafeTensors.oDirect, 0o644)
        if fd >= 0 { close(fd); unlink(dir + "/probe") }
        return fd >= 0 && SafeTensors.oDirect != 0
    }

    /// A block-aligned buffer of `count` distinct bytes.
    func pattern(_ count: Int, seed: Int) -> UnsafeMutableRawBufferPointer {
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: SafeTensors.directAlignment)
        for i in 0..<count { b[i] = UInt8(truncatingIfNeeded: (i * 31 + seed * 7 + i / 251) & 0xFF) }
        return b
    }

    /// Appends byte ranges (buffer, from, to) and returns the file's bytes, and whether it was
    /// still writing with O_DIRECT before `finish`.
    func appended(_ runs: [(UnsafeMutableRawBufferPointer, Int, Int)], direct: Bool) throws -> ([UInt8], Bool) {
        let path = dir + "/out-\(direct)"
        let out = try DirectOutput(path: path, direct: direct)
        for (b, from, to) in runs { try out.append(UnsafeRawPointer(b.baseAddress! + from), to - from) }
        let stillDirect = out.direct
        try out.finish()
        return ([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))), stillDirect)
    }

    func testAlignedContiguousRunsGoOutDirectWithTheirTails() throws {
        let a = SafeTensors.directAlignment
        let head = pattern(a, seed: 1), data = pattern(5 * a + 123, seed: 2)
        defer { head.deallocate(); data.deallocate() }
        // Run ends at unaligned offsets: each tail waits for the next run, the last goes buffered.
        let runs = [(head, 0, a), (data, 0, 5000), (data, 5000, 9001), (data, 9001, 3 * a), (data, 3 * a, 5 * a + 123)]
        let expected = [UInt8](head) + [UInt8](data)
        let (buffered, _) = try appended(runs, direct: false)
        XCTAssertEqual(buffered, expected, "buffered appends lost or reordered bytes")
        let (direct, stayedDirect) = try appended(runs, direct: true)
        XCTAssertEqual(direct, expected, "O_DIRECT appends (tails carried) wrote different bytes")
        if directSupported() { XCTAssertTrue(stayedDirect, "aligned back-to-back runs left O_DIRECT before the end") }
    }

    func testGapsAndMisalignedBuffersFallBackToBufferedWrites() throws {
        let a = SafeTensors.directAlignment
        let one = pattern(3 * a, seed: 3), two = pattern(2 * a + 77, seed: 4)
        defer { one.deallocate(); two.deallocate() }
        // A gap in memory (one -> two) with a pending tail, then a run starting off the alignment.
        let gap = [(one, 0, a + 10), (two, 0, a), (two, a, 2 * a + 77)]
        let (g, gapDirect) = try appended(gap, direct: true)
        XCTAssertEqual(g, [UInt8](one[0..<(a + 10)]) + [UInt8](two), "a gap between runs lost the pending tail")
        XCTAssertFalse(gapDirect, "a gap with a pending tail must leave O_DIRECT (the offset is unaligned)")
        let misaligned = [(one, 1, 2 * a + 1), (one, 2 * a + 1, 3 * a)]
        let (m, misDirect) = try appended(misaligned, direct: true)
        XCTAssertEqual(m, [UInt8](one[1..<(3 * a)]), "a misaligned buffer wrote different bytes")
        XCTAssertFalse(misDirect)
    }

    /// A direct save's file: header padded to the block, read back exactly, same checksums.
    func testDirectSafeTensorsFileReadsBack() throws {
        let n = 3000
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 4 * n, alignment: SafeTensors.directAlignment)
            .bindMemory(to: Float.self, capacity: n)
        defer { buf.deallocate() }
        for i in 0..<n { buf[i] = Float(i) * 0.25 - 100 }
        let sources = [
            SafeTensorSource(name: "a", shape: [10, 100], data: buf),
            SafeTensorSource(name: "b", shape: [1999], data: buf + 1000),
            SafeTensorSource(name: "c", shape: [1], data: buf + 2999)
        ]
        let path = dir + "/d.safetensors", plainPath = dir + "/p.safetensors"
        let direct = try SafeTensors.write(sources, to: path, maxRunBytes: 5000, direct: true)
        let plain = try SafeTensors.write(sources, to: plainPath)
        XCTAssertEqual(direct.map(\.1), plain.map(\.1), "checksums depend on the write path")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let len = Int(bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        XCTAssertEqual((8 + len) % SafeTensors.directAlignment, 0, "the data does not start on a block")
        XCTAssertEqual(8 + len + 4 * n, bytes.count)
        let f = try SafeTensorsFile(path: path)
        var got = [Float](repeating: 0, count: 1999)
        try got.withUnsafeMutableBufferPointer { try f.read("b", count: 1999, into: $0.baseAddress!) }
        XCTAssertEqual(got, (1000..<2999).map { Float($0) * 0.25 - 100 })
        XCTAssertEqual(try f.checksum("c"), direct[2].1)
    }
}
