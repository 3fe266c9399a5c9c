// How sample turns prompt text into token ids and ids back into text: the job's tokenizer
// (data.tokenizer), or for byte-level models trained on text, a byte per token.
import Checkpoint
import Tokenizer
import Training

/// Prompt text <-> token ids for one model.
struct TextCodec {
    let tokenizer: Tokenizer?

    /// The codec of a checkpoint's job; refuses a token model without a tokenizer.
    init(job: Job) throws {
        let m = job.model
        if !job.data.tokenizer.isEmpty {
            let t = try Tokenizer.load(path: job.data.tokenizer)
            guard t.vocabSize <= m.vocabSize else {
                throw TokenizerError(
                    t.path,
                    "has \(t.vocabSize) ids but model.vocabSize is \(m.vocabSize); is it this model's tokenizer?")
            }
            tokenizer = t
            return
        }
        if TokenData.resolvedFormat(path: job.data.path, format: job.data.format) != "text" || m.vocabSize < 256 {
            throw CheckpointError(
                "this model was trained on token ids (data.path \(job.data.path), model.vocabSize \(m.vocabSize)) and "
                    + "its job names no tokenizer: pass --set data.tokenizer=FILE (the tokenizer.json that made "
                    + "the data)")
        }
        tokenizer = nil
    }

    func encode(_ text: [UInt8]) throws -> [Int32] {
        guard let t = tokenizer else { return text.map { Int32($0) } }
        return try t.encode(String(decoding: text, as: UTF8.self)).map { Int32($0) }
    }

    func decode(_ ids: [Int32]) -> [UInt8] {
        guard let t = tokenizer else { return ids.map { UInt8(truncatingIfNeeded: $0) } }
        return t.decodeBytes(ids.map { Int($0) })
    }
}
