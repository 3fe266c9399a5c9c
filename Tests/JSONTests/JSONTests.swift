import JSON
import XCTest

final class JSONTests: XCTestCase {
    func testParsesAllValueKindsAndKeepsKeyOrder() throws {
        let v = try JSONValue.parse(#" { "b": [1, -2.5e0, true, null], "a": "x\n\u00e9\ud83d\ude00", "c": {} } "#)
        XCTAssertEqual(v["b"], [1, -2.5, true, .null])
        XCTAssertEqual(v["a"]?.stringValue, "x\né😀")
        if case .object(let m) = v { XCTAssertEqual(m.map { $0.0 }, ["b", "a", "c"]) } else { XCTFail() }
        XCTAssertEqual(v["b"]?.arrayValue?[0].intValue, 1)
        XCTAssertNil(v["b"]?.arrayValue?[1].intValue)
    }

    /// The header's promise: integers are told from fractions by the literal, not by the value.
    func testIntegerLiteralsAreToldFromFractionsExactly() throws {
        let v = try JSONValue.parse("[300, 300.0, 3e2, -7, 12345678901234567890]")
        let items = v.arrayValue!
        XCTAssertEqual(items[0].intValue, 300, "300 is an integer")
        XCTAssertNil(items[1].intValue, "300.0 is a number, not an integer")
        XCTAssertNil(items[2].intValue, "3e2 is a number, not an integer")
        XCTAssertEqual(items[3].intValue, -7)
        XCTAssertNil(items[4].intValue, "an integer literal beyond Int is a number")
        XCTAssertEqual(items.map(\.doubleValue), [300, 300, 300, -7, 12345678901234567890.0], "all read as numbers")
        XCTAssertEqual(items[1].typeName, "a number (300.0)")
        XCTAssertEqual(items[0], items[1], "equal as numbers")
        XCTAssertEqual(JSONValue.integer(300).compact, "300")
    }

    func testErrorsCarryLineAndColumn() {
        XCTAssertThrowsError(try JSONValue.parse("{\n  \"a\": 1,\n  \"b\" 2\n}")) {
            let e = $0 as! JSONParseError
            XCTAssertEqual(e.line, 3)
            XCTAssertEqual(e.column, 7)
            XCTAssertTrue(e.message.contains("':'"), e.message)
        }
        for bad in ["", "{", "[1,]", "01", "{\"a\":1,\"a\":2}", "\"abc", "tru", "1 2", "{\"a\" : .5}"] {
            XCTAssertThrowsError(try JSONValue.parse(bad), "should reject \(bad)")
        }
    }

    func testRoundTripsThroughCompactAndPretty() throws {
        let v: JSONValue = [
            "step": 12, "loss": 2.718281828459045, "tiny": 1e-300, "s": "q\"\\\t", "arr": [[1, 2], []], "o": [:]
        ]
        XCTAssertEqual(try JSONValue.parse(v.compact), v)
        XCTAssertEqual(try JSONValue.parse(v.pretty), v)
        XCTAssertEqual(JSONValue.number(3).compact, "3")
        XCTAssertEqual(JSONValue.number(0.1).compact, "0.1")
        XCTAssertEqual(JSONValue.number(.nan).compact, "null")
        // Float values survive the Double round trip bitwise.
        let f: Float = 5.5451774
        let back = try JSONValue.parse(JSONValue.number(Double(f)).compact).doubleValue!
        XCTAssertEqual(Float(back).bitPattern, f.bitPattern)
    }
}
