// TensorBoard's event files without a package: the TFRecord framing and the few protobuf fields
// of `Event` and `Summary` that scalars need, written from their published definitions
// (tensorflow/core/util/event.proto, framework/summary.proto; TFRecord's record_writer).
// A record is: uint64 length (little endian), masked CRC32C of those 8 bytes, the data, masked
// CRC32C of the data; mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8.
import Checkpoint

/// A record that does not frame or check: where it starts and what is wrong.
public struct TFRecordError: Error, CustomStringConvertible, Sendable {
    public let offset: Int
    public let message: String
    public var description: String { "record at byte \(offset): \(message)" }
}

public enum TFRecord {
    /// TFRecord's masked CRC32C.
    public static func masked(_ crc: UInt32) -> UInt32 { ((crc >> 15) | (crc << 17)) &+ 0xa282_ead8 }

    /// The masked CRC32C of `bytes`.
    public static func maskedCRC(_ bytes: [UInt8]) -> UInt32 {
        masked(bytes.withUnsafeBytes { $0.isEmpty ? 0 : CRC32C.checksum($0.baseAddress!, count: $0.count) })
    }

    /// `data` framed as one record.
    public static func frame(_ data: [UInt8]) -> [UInt8] {
        let length = littleEndian(UInt64(data.count))
        return length + littleEndian(maskedCRC(length)) + data + littleEndian(maskedCRC(data))
    }

    /// The records of a file's bytes, every length and CRC checked; a truncated or corrupt
    /// record throws, naming its offset.
    public static func records(_ bytes: [UInt8]) throws -> [[UInt8]] {
        var out: [[UInt8]] = [], at = 0
        while at < bytes.count {
            guard bytes.count - at >= 12 else {
                throw TFRecordError(offset: at, message: "truncated header (\(bytes.count - at) of 12 bytes)")
            }
            let header = Array(bytes[at..<(at + 8)])
            guard readUInt32(bytes, at + 8) == maskedCRC(header) else {
                throw TFRecordError(offset: at, message: "length CRC mismatch")
            }
            let length = readUInt64(bytes, at)
            guard length <= UInt64(bytes.count - at - 16) else {
                throw TFRecordError(offset: at, message: "truncated data (length \(length), file ends sooner)")
            }
            let data = Array(bytes[(at + 12)..<(at + 12 + Int(length))])
            guard readUInt32(bytes, at + 12 + Int(length)) == maskedCRC(data) else {
                throw TFRecordError(offset: at, message: "data CRC mismatch")
            }
            out.append(data)
            at += 16 + Int(length)
        }
        return out
    }

    static func littleEndian<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        (0..<(T.bitWidth / 8)).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) }
    }

    static func readUInt64(_ b: [UInt8], _ at: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) }
    }

    static func readUInt32(_ b: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[at + $1]) << (8 * UInt32($1)) }
    }
}
