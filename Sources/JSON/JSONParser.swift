// A strict JSON parser (RFC 8259) over UTF-8 bytes, with line:column in every error.

/// A syntax error, with the 1-based line and column where it was found.
public struct JSONParseError: Error, CustomStringConvertible, Sendable {
    public let line: Int
    public let column: Int
    public let message: String
    public var description: String { "line \(line), column \(column): \(message)" }
}

extension JSONValue {
    /// Parses one JSON document (surrounding whitespace allowed).
    public static func parse(_ text: String) throws -> JSONValue {
        try parse(bytes: Array(text.utf8))
    }

    /// Parses one JSON document from UTF-8 bytes.
    public static func parse(bytes: [UInt8]) throws -> JSONValue {
        var p = Parser(bytes: bytes)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        if p.pos < bytes.count { throw p.error("unexpected text after the JSON value") }
        return v
    }
}

struct Parser {
    let bytes: [UInt8]
    var pos = 0

    func error(_ message: String) -> JSONParseError {
        var line = 1, col = 1
        for b in bytes[0..<min(pos, bytes.count)] {
            if b == UInt8(ascii: "\n") { line += 1; col = 1 } else { col += 1 }
        }
        return JSONParseError(line: line, column: col, message: message)
    }

    mutating func skipSpace() {
        while pos < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[pos]) { pos += 1 }
    }

    mutating func expect(_ c: Character) throws {
        skipSpace()
        guard pos < bytes.count, bytes[pos] == c.asciiValue! else {
            throw error(pos < bytes.count ? "expected '\(c)'" : "expected '\(c)' but the text ended")
        }
        pos += 1
    }

    mutating func value(depth: Int) throws -> JSONValue {
        guard depth < 200 else { throw error("nesting deeper than 200 levels") }
        skipSpace()
        guard pos < bytes.count else { throw error("expected a value but the text ended") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw error("unexpected character '\(Character(Unicode.Scalar(bytes[pos])))'")
        }
    }

    mutating func literal(_ word: String) throws {
        let w = Array(word.utf8)
        guard pos + w.count <= bytes.count, Array(bytes[pos..<(pos + w.count)]) == w else {
            throw error("expected '\(word)'")
        }
        pos += w.count
    }

    mutating func object(depth: Int) throws -> JSONValue {
        pos += 1
        var members: [(String, JSONValue)] = []
        skipSpace()
        if pos < bytes.count && bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object([]) }
        while true {
            skipSpace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else {
                throw error("expected a key in double quotes")
            }
            let key = try string()
            if members.contains(where: { $0.0 == key }) { throw error("duplicate key '\(key)'") }
            try expect(":")
            members.append((key, try value(depth: depth + 1)))
            skipSpace()
            guard pos < bytes.count else { throw error("expected ',' or '}' but the text ended") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
            throw error("expected ',' or '}'")
        }
    }

    mutating func array(depth: Int) throws -> JSONValue {
        pos += 1
        var items: [JSONValue] = []
        skipSpace()
        if pos < bytes.count && bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array([]) }
        while true {
            items.append(try value(depth: depth + 1))
            skipSpace()
            guard pos < bytes.count else { throw error("expected ',' or ']' but the text ended") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            throw error("expected ',' or ']'")
        }
    }

    mutating func string() throws -> String {
        pos += 1
        var out: [UInt8] = []
        while pos < bytes.count {
            let b = bytes[pos]
            pos += 1
            switch b {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard pos < bytes.count else { break }
                let e = bytes[pos]
                pos += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code), pos + 1 < bytes.count,
                        bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u")
                    {
                        pos += 2
                        let low = try hex4()
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    out.append(contentsOf: Array(String(Character(Unicode.Scalar(code) ?? "\u{FFFD}")).utf8))
                default: throw error("invalid escape in string")
                }
            default:
                if b < 0x20 { throw error("control character in string (escape it)") }
                out.append(b)
            }
        }
        throw error("unterminated string")
    }

    mutating func hex4() throws -> UInt32 {
        guard pos + 4 <= bytes.count else { throw error("short \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            pos += 1
            guard let d = Character(Unicode.Scalar(c)).hexDigitValue else { throw error("bad hex digit in \\u escape") }
            v = v * 16 + UInt32(d)
        }
        return v
    }

    /// An integer literal (no fraction, no exponent, fits in an Int) as .integer, any other as .number.
    mutating func number() throws -> JSONValue {
        let start = pos
        if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        func digits() -> Int {
            let s = pos
            while pos < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[pos]) { pos += 1 }
            return pos - s
        }
        let intStart = pos
        let n = digits()
        if n == 0 { throw error("expected digits") }
        if n > 1 && bytes[intStart] == UInt8(ascii: "0") { throw error("leading zero in number") }
        var fractionOrExponent = false
        if pos < bytes.count && bytes[pos] == UInt8(ascii: ".") {
            fractionOrExponent = true
            pos += 1
            if digits() == 0 { throw error("expected digits after '.'") }
        }
        if pos < bytes.count && (bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E")) {
            fractionOrExponent = true
            pos += 1
            if pos < bytes.count && (bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-")) { pos += 1 }
            if digits() == 0 { throw error("expected digits in exponent") }
        }
        let text = String(decoding: bytes[start..<pos], as: UTF8.self)
        if !fractionOrExponent, let i = Int(text) { return .integer(i) }
        guard let d = Double(text) else { throw error("bad number") }
        return .number(d)
    }
}
