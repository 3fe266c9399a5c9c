// A small JSON value type with an exact parser and a serializer.
// Why not Foundation's JSONSerialization: job files need errors with line and column, exact
// knowledge of integers vs fractions vs booleans (to reject wrong types: the parser reads `300`
// as an integer and `300.0` or `3e2` as a number, and only integers pass `intValue`), and key
// order kept for readable output. Log lines need shortest round-trip numbers.

/// A JSON document. Objects keep their key order.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case integer(Int)  // a literal without fraction or exponent that fits in an Int
    case number(Double)  // any other number
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.integer(x), .integer(y)): return x == y
        case (.integer, .number), (.number, .integer), (.number, .number):  // equal as numbers
            let (x, y) = (a.doubleValue!, b.doubleValue!)
            return x == y || (x.isNaN && y.isNaN)
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// The member `key` of an object, or nil.
    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members.first { $0.0 == key }?.1 }
        return nil
    }

    public var doubleValue: Double? {
        switch self {
        case .integer(let i): return Double(i)
        case .number(let d): return d
        default: return nil
        }
    }
    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    /// The integer, if the value is one (`300`; not `300.0`, which is a number).
    public var intValue: Int? {
        if case .integer(let i) = self { return i }
        return nil
    }

    /// A short name of the value's type, for error messages.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .integer: return "an integer"
        case .number(let d): return "a number (\(JSONValue.format(d, keepFraction: true)))"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral v: String) { self = .string(v) }
    public init(integerLiteral v: Int) { self = .integer(v) }
    public init(floatLiteral v: Double) { self = .number(v) }
    public init(booleanLiteral v: Bool) { self = .bool(v) }
    public init(arrayLiteral v: JSONValue...) { self = .array(v) }
    public init(dictionaryLiteral v: (String, JSONValue)...) { self = .object(v) }
}

// MARK: - Serialization

extension JSONValue {
    /// One line, no spaces: the form of a log.jsonl line.
    public var compact: String {
        var out = ""
        write(into: &out, indent: nil, level: 0)
        return out
    }

    /// Indented with two spaces, for files people read (job.json).
    public var pretty: String { prettyText(keepFractions: false) }

    /// `pretty`, and with `keepFractions` an integral number keeps ".0" (`10000.0`), so that a
    /// reader that tells integers from floats (Python's json) reads a float back.
    public func prettyText(keepFractions: Bool) -> String {
        var out = ""
        write(into: &out, indent: "  ", level: 0, keepFractions: keepFractions)
        return out + "\n"
    }

    func write(into out: inout String, indent: String?, level: Int, keepFractions: Bool = false) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .integer(let i): out += String(i)
        case .number(let d): out += JSONValue.format(d, keepFraction: keepFractions)
        case .string(let s): JSONValue.quote(s, into: &out)
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            // Arrays of numbers stay on one line even when pretty.
            let flat =
                indent == nil
                || items.allSatisfy {
                    if case .number = $0 { return true }; return false
                }
            out += "["
            for (i, v) in items.enumerated() {
                if i > 0 { out += flat && indent != nil ? ", " : "," }
                if !flat, let ind = indent { out += "\n" + String(repeating: ind, count: level + 1) }
                v.write(into: &out, indent: flat ? nil : indent, level: level + 1, keepFractions: keepFractions)
            }
            if !flat, let ind = indent { out += "\n" + String(repeating: ind, count: level) }
            out += "]"
        case .object(let members):
            if members.isEmpty { out += "{}"; return }
            out += "{"
            for (i, (k, v)) in members.enumerated() {
                if i > 0 { out += "," }
                if let ind = indent { out += "\n" + String(repeating: ind, count: level + 1) }
                JSONValue.quote(k, into: &out)
                out += indent == nil ? ":" : ": "
                v.write(into: &out, indent: indent, level: level + 1, keepFractions: keepFractions)
            }
            if let ind = indent { out += "\n" + String(repeating: ind, count: level) }
            out += "}"
        }
    }

    /// Shortest text that reads back as the same Double; integral values without ".0" (unless
    /// `keepFraction`); non-finite values (not JSON) as null.
    public static func format(_ d: Double, keepFraction: Bool = false) -> String {
        guard d.isFinite else { return "null" }
        if d.rounded() == d && abs(d) < 1e15 { return String(Int64(d)) + (keepFraction ? ".0" : "") }
        return "\(d)"
    }

    static func quote(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out += "\""
    }
}
