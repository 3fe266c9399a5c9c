// The protobuf messages of a scalar event file, encoded and decoded by hand (wire format:
// varint keys `field << 3 | type`; 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32):
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }

/// One scalar of a summary.
public struct Scalar: Equatable, Sendable {
    public let tag: String
    public let value: Float
    public init(_ tag: String, _ value: Float) {
        self.tag = tag
        self.value = value
    }
}

/// A decoded event: its time and step, and its file version or scalars.
public struct DecodedEvent: Equatable, Sendable {
    public var wallTime = 0.0
    public var step = 0
    public var fileVersion: String?
    public var scalars: [Scalar] = []
}

public enum EventProto {
    /// The first event of every file.
    public static let fileVersion = "brain.Event:2"

    /// Event{wall_time, file_version}.
    public static func versionEvent(wallTime: Double) -> [UInt8] {
        fixed64(1, wallTime.bitPattern) + bytes(3, Array(fileVersion.utf8))
    }

    /// Event{wall_time, step, summary{value{tag, simple_value}...}}.
    public static func scalarEvent(wallTime: Double, step: Int, scalars: [Scalar]) -> [UInt8] {
        let values = scalars.flatMap { bytes(1, bytes(1, Array($0.tag.utf8)) + fixed32(2, $0.value.bitPattern)) }
        return fixed64(1, wallTime.bitPattern) + varint(2, UInt64(bitPattern: Int64(step))) + bytes(5, values)
    }

    /// An event's fields; unknown fields are skipped, malformed bytes throw.
    public static func decode(_ b: [UInt8]) throws -> DecodedEvent {
        var e = DecodedEvent()
        try fields(b) { field, value in
            switch (field, value) {
            case (1, .fixed64(let v)): e.wallTime = Double(bitPattern: v)
            case (2, .varint(let v)): e.step = Int(Int64(bitPattern: v))
            case (3, .bytes(let s)): e.fileVersion = String(decoding: s, as: UTF8.self)
            case (5, .bytes(let summary)):
                try fields(summary) { f, v in
                    if f == 1, case .bytes(let value) = v { e.scalars.append(try scalar(value)) }
                }
            default: break
            }
        }
        return e
    }

    static func scalar(_ b: [UInt8]) throws -> Scalar {
        var tag = "", value: Float = .nan
        try fields(b) { f, v in
            switch (f, v) {
            case (1, .bytes(let s)): tag = String(decoding: s, as: UTF8.self)
            case (2, .fixed32(let x)): value = Float(bitPattern: x)
            default: break
            }
        }
        return Scalar(tag, value)
    }

    // MARK: the wire format

    enum Value {
        case varint(UInt64), fixed64(UInt64), bytes([UInt8]), fixed32(UInt32)
    }

    struct ProtoError: Error, CustomStringConvertible {
        let description: String
    }

    static func key(_ field: Int, _ type: Int) -> [UInt8] { varintBytes(UInt64(field << 3 | type)) }

    static func varintBytes(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        repeat {
            out.append(UInt8(v & 0x7F) | (v >= 0x80 ? 0x80 : 0))
            v >>= 7
        } while v > 0
        return out
    }

    static func varint(_ field: Int, _ v: UInt64) -> [UInt8] { key(field, 0) + varintBytes(v) }
    static func fixed64(_ field: Int, _ v: UInt64) -> [UInt8] { key(field, 1) + TFRecord.littleEndian(v) }
    static func fixed32(_ field: Int, _ v: UInt32) -> [UInt8] { key(field, 5) + TFRecord.littleEndian(v) }
    static func bytes(_ field: Int, _ b: [UInt8]) -> [UInt8] {
        key(field, 2) + varintBytes(UInt64(b.count)) + b
    }

    /// Calls `body` with each (field, value) of a message.
    static func fields(_ b: [UInt8], _ body: (Int, Value) throws -> Void) throws {
        var at = 0
        func readVarint() throws -> UInt64 {
            var v: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard at < b.count, shift < 64 else { throw ProtoError(description: "varint runs past the message") }
                let byte = b[at]
                at += 1
                v |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return v }
                shift += 7
            }
        }
        func take(_ n: Int) throws -> [UInt8] {
            guard n >= 0, n <= b.count - at else { throw ProtoError(description: "field runs past the message") }
            defer { at += n }
            return Array(b[at..<(at + n)])
        }
        while at < b.count {
            let k = try readVarint()
            let field = Int(k >> 3)
            switch k & 7 {
            case 0: try body(field, .varint(try readVarint()))
            case 1: try body(field, .fixed64(TFRecord.readUInt64(try take(8), 0)))
            case 2:
                let n = try readVarint()
                guard n <= UInt64(b.count) else { throw ProtoError(description: "length runs past the message") }
                try body(field, .bytes(try take(Int(n))))
            case 5: try body(field, .fixed32(TFRecord.readUInt32(try take(4), 0)))
            default: throw ProtoError(description: "wire type \(k & 7) is not one an event uses")
            }
        }
    }
}
