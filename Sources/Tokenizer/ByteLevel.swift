// GPT-2's byte-level alphabet: each of the 256 byte values gets a printable character (the
// printable Latin-1 bytes stand for themselves; the rest take U+0100 upwards in byte order),
// so that a vocabulary of byte strings can be written as JSON text. `tokenizer.json` files of
// byte-level BPEs (GPT-2, Llama 3, Qwen, OLMoE) spell every token in this alphabet.

/// The byte <-> character table of byte-level BPE.
public enum ByteLevel {
    /// symbol[b]: the character that stands for byte b.
    public static let symbols: [Character] = {
        var bytes = Array(33...126) + Array(161...172) + Array(174...255)
        var chars = bytes
        var extra = 0
        for b in 0..<256 where !bytes.contains(b) {
            bytes.append(b)
            chars.append(256 + extra)
            extra += 1
        }
        var symbol = [Character](repeating: " ", count: 256)
        for (b, c) in zip(bytes, chars) { symbol[b] = Character(Unicode.Scalar(UInt32(c))!) }
        return symbol
    }()

    /// byteOf[scalar]: the byte a symbol stands for (scalars 0..<324 cover the alphabet).
    static let byteOf: [Int16] = {
        var table = [Int16](repeating: -1, count: 324)
        for (b, c) in symbols.enumerated() { table[Int(c.unicodeScalars.first!.value)] = Int16(b) }
        return table
    }()

    /// A token's bytes spelled in the alphabet.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        String(bytes.map { symbols[Int($0)] })
    }

    /// The bytes a string of symbols stands for; nil if any character is not a symbol.
    public static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        for s in text.unicodeScalars {
            guard s.value < 324, case let b = byteOf[Int(s.value)], b >= 0 else { return nil }
            out.append(UInt8(b))
        }
        return out
    }
}
