import Checkpoint
import Foundation
import JSON
import XCTest

func tempDir() -> String {
    let d = NSTemporaryDirectory() + "switchyard-ckpt-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

final class FormatTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = tempDir() }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testCRC32CKnownVector() {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([]), 0)
        // Slicing-by-8 and the byte loop agree on every length and alignment.
        let bytes = (0..<77).map { UInt8(($0 * 37) & 0xFF) }
        for n in 0..<bytes.count {
            let whole = CRC32C.checksum(Array(bytes[0..<n]))
            var c: UInt32 = 0
            for b in bytes[0..<n] { c = [b].withUnsafeBytes { CRC32C.checksum($0.baseAddress!, count: 1, crc: c) } }
            XCTAssertEqual(whole, c, "length \(n)")
            let soft = bytes.withUnsafeBytes { CRC32C.software($0.baseAddress!, count: n) }
            XCTAssertEqual(whole, soft, "hardware and table paths, length \(n)")
        }
        XCTAssertEqual(
            Array("123456789".utf8).withUnsafeBytes { CRC32C.software($0.baseAddress!, count: 9) }, 0xE306_9283)
    }

    func write(_ path: String, _ tensors: [(String, [Int], [Float])]) throws -> [(SafeTensorEntry, UInt32)] {
        let bufs = tensors.map { $0.2 }
        let ptrs = bufs.map { b -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(b.count, 1)); p.update(from: b, count: b.count);
            return p
        }
        defer { ptrs.forEach { $0.deallocate() } }
        return try SafeTensors.write(
            zip(tensors, ptrs).map { SafeTensorSource(name: $0.0.0, shape: $0.0.1, data: $0.1) }, to: path)
    }

    func testSafeTensorsRoundTrip() throws {
        let path = dir + "/a.safetensors"
        let out = try write(path, [("w", [2, 3], [1, 2, 3, 4, 5, 6]), ("b", [2], [7, 8])])
        XCTAssertEqual(out.map(\.0.name), ["w", "b"])
        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(f.entries["w"]?.shape, [2, 3])
        var got = [Float](repeating: 0, count: 2)
        try got.withUnsafeMutableBufferPointer { try f.read("w", first: 4, count: 2, into: $0.baseAddress!) }
        XCTAssertEqual(got, [5, 6])
        XCTAssertEqual(try f.checksum("b"), out[1].1)
        // The header is JSON after an 8-byte little-endian length, padded to 8 bytes.
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let n = data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(n % 8, 0)
        XCTAssertEqual(Int(n) + 8 + 4 * 8, data.count)
    }

    /// Nothing read from disk is trusted: each kind of damage is a clear error naming the file.
    func testDamagedFilesGiveClearErrors() throws {
        let path = dir + "/good.safetensors"
        _ = try write(path, [("w", [4], [1, 2, 3, 4])])
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        func damaged(_ name: String, _ bytes: Data, _ text: String, file: StaticString = #filePath, line: UInt = #line)
        {
            let p = dir + "/" + name
            try! bytes.write(to: URL(fileURLWithPath: p))
            XCTAssertThrowsError(try SafeTensorsFile(path: p), file: file, line: line) {
                XCTAssertTrue("\($0)".hasPrefix(p), "\($0)", file: file, line: line)
                XCTAssertTrue("\($0)".contains(text), "\($0)", file: file, line: line)
            }
        }
        damaged("empty", Data(), "too short")
        damaged("truncated", good.prefix(good.count - 3), "outside the")
        var hugeLen = good
        hugeLen.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Data($0) })
        damaged("badlen", hugeLen, "bad header length")
        var garbage = good
        for i in 8..<16 { garbage[i] = 0x7B }
        damaged("garbage", garbage, "not valid JSON")
        func withHeader(_ h: String) -> Data {
            var b = Array(h.utf8)
            while b.count % 8 != 0 { b.append(0x20) }
            return withUnsafeBytes(of: UInt64(b.count).littleEndian) { Data($0) } + Data(b) + Data(count: 16)
        }
        damaged(
            "past", withHeader(#"{"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}"#), "outside the 16 data bytes"
        )
        damaged("dtype", withHeader(#"{"w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#), "is not F32")
        damaged("shape", withHeader(#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#), "needs 12 bytes")
        damaged("appended", good + Data([1, 2, 3]), "3 bytes after the last tensor's data")
    }

    func testManifestRoundTripAndErrors() throws {
        let m = Manifest(
            step: 20, adamStep: 19, job: ["name": "x"], world: 2, dp: 2, tp: 1, placement: [[[0], [1, 0]]],
            createdAt: 1,
            tensors: [
                TensorRecord(
                    name: "w", shape: [4, 2],
                    slices: [
                        SliceRecord(file: "rank-00000.safetensors", key: "w", ranges: [[0, 2], [0, 2]], crc32c: 7),
                        SliceRecord(file: "rank-00001.safetensors", key: "w", ranges: [[2, 4], [0, 2]], crc32c: 9)
                    ])
            ])
        XCTAssertEqual(try Manifest.parse(m.bytes, path: "m"), m)
        XCTAssertThrowsError(try Manifest.parse(Array("{".utf8), path: "m.json")) {
            XCTAssertTrue("\($0)".contains("m.json: not valid JSON"), "\($0)")
        }
        // Format 2 carries its checksum: any change to the text, or a missing checksum, is corruption.
        let text = String(decoding: m.bytes, as: UTF8.self)
        XCTAssertTrue(text.hasSuffix(",\"manifestCrc32c\":\(CRC32C.checksum(Array(m.json.compact.utf8)))}"), text)
        for (edit, says) in [
            (text.replacingOccurrences(of: "\"createdAt\":1", with: "\"createdAt\":2"), "checksum mismatch"),
            (text.replacingOccurrences(of: "\"name\":\"x\"", with: "\"name\":\"y\""), "checksum mismatch"),
            (m.json.compact, "no manifestCrc32c")
        ] {
            XCTAssertThrowsError(try Manifest.parse(Array(edit.utf8), path: "m.json")) {
                XCTAssertTrue("\($0)".contains(says) && "\($0)".contains("corrupt"), "\($0)")
            }
        }
        // Format 1 (no checksum) is still read; its fields are checked as before.
        let v1 = m.json.compact.replacingOccurrences(of: "\"format\":2", with: "\"format\":1")
        XCTAssertEqual(try Manifest.parse(Array(v1.utf8), path: "m"), m)
        var j = v1.replacingOccurrences(of: "\"format\":1", with: "\"format\":9")
        XCTAssertThrowsError(try Manifest.parse(Array(j.utf8), path: "m.json")) {
            XCTAssertTrue("\($0)".contains("format version 9"), "\($0)")
        }
        j = v1.replacingOccurrences(of: "[[2,4],[0,2]]", with: "[[2,5],[0,2]]")
        XCTAssertThrowsError(try Manifest.parse(Array(j.utf8), path: "m.json")) {
            XCTAssertTrue("\($0)".contains("outside dimension 0"), "\($0)")
        }
        j = v1.replacingOccurrences(of: "rank-00001.safetensors", with: "../etc/passwd")
        XCTAssertThrowsError(try Manifest.parse(Array(j.utf8), path: "m.json")) {
            XCTAssertTrue("\($0)".contains("bad slice file"), "\($0)")
        }
    }
}
