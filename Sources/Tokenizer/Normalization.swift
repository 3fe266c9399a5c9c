// Unicode normalization for the tokenizer.json normalizers Switchyard runs (Qwen's NFC).
import Foundation

enum Normalization {
    /// Canonical composition (NFC).
    static func nfc(_ text: String) -> String { text.precomposedStringWithCanonicalMapping }
}
