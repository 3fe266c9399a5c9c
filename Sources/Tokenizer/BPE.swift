// Byte-pair encoding of one pre-tokenized piece: start from one token per byte and merge the
// adjacent pair with the lowest merge rank (the leftmost of equals) until no pair has a rank,
// as Hugging Face's BPE model does (without dropout). Pieces repeat, so each piece's ids are cached.

/// A BPE vocabulary over byte strings with its ranked merges.
struct BPEModel {
    /// idOf[bytes]: the token spelled by `bytes` (the vocabulary, decoded from the alphabet).
    let idOf: [[UInt8]: Int]
    /// byteToken[b]: the token of the single byte b (-1 if the vocabulary lacks it).
    let byteToken: [Int]
    /// merge[(a << 32) | b]: (rank << 32) | merged id.
    let merges: [UInt64: UInt64]
    /// Llama 3's `ignore_merges`: a piece that is itself a token is that token.
    let ignoreMerges: Bool

    init(idOf: [[UInt8]: Int], merges: [(Int, Int, Int)], ignoreMerges: Bool) {
        self.idOf = idOf
        byteToken = (0..<256).map { idOf[[UInt8($0)]] ?? -1 }
        var m: [UInt64: UInt64] = [:]
        for (rank, (a, b, merged)) in merges.enumerated() where m[Self.key(a, b)] == nil {
            m[Self.key(a, b)] = UInt64(rank) << 32 | UInt64(merged)
        }
        self.merges = m
        self.ignoreMerges = ignoreMerges
    }

    @inline(__always) static func key(_ a: Int, _ b: Int) -> UInt64 { UInt64(a) << 32 | UInt64(b) }

    /// The ids of one piece's bytes; nil names a byte the vocabulary cannot spell.
    func encode(_ bytes: ArraySlice<UInt8>) -> [Int]? {
        if ignoreMerges, let id = idOf[Array(bytes)] { return [id] }
        var ids = [Int]()
        ids.reserveCapacity(bytes.count)
        for b in bytes {
            let t = byteToken[Int(b)]
            if t < 0 { return nil }
            ids.append(t)
        }
        while ids.count > 1 {
            var best = UInt64.max, at = -1
            for i in 0..<(ids.count - 1) {
                if let m = merges[Self.key(ids[i], ids[i + 1])], m < best { best = m; at = i }
            }
            if at < 0 { break }
            ids[at] = Int(best & 0xffff_ffff)
            ids.remove(at: at + 1)
        }
        return ids
    }
}
