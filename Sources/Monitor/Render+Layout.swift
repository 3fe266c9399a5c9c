// Laying the dashboard out for a terminal of any size: items packed into lines of at most the
// terminal's width (joined by " | " or spaces, never wrapped by the terminal), a line too long
// for it cut (its colour codes kept and reset), and no more lines than the terminal has rows.

extension Render {
    /// The text's width in columns: characters other than ANSI colour sequences.
    public static func visibleWidth(_ s: String) -> Int {
        var n = 0, escaped = false
        for c in s {
            if escaped {
                if c.isLetter { escaped = false }
            } else if c == "\u{1B}" {
                escaped = true
            } else {
                n += 1
            }
        }
        return n
    }

    /// `s` cut to `width` columns (colour sequences kept, and reset when a cut leaves one open).
    public static func fit(_ s: String, width: Int) -> String {
        guard visibleWidth(s) > width else { return s }
        var out = "", n = 0, escaped = false, coloured = false
        for c in s {
            if escaped {
                out.append(c)
                if c.isLetter { escaped = false }
            } else if c == "\u{1B}" {
                out.append(c)
                escaped = true
                coloured = true
            } else {
                guard n < width else { break }
                out.append(c)
                n += 1
            }
        }
        return coloured ? out + "\u{1B}[0m" : out
    }

    /// `items` in order, as few lines as fit `width` with `separator` between items on a line;
    /// an item wider than `width` alone on its line, cut.
    public static func pack(_ items: [String], width: Int, separator: String = " | ") -> [String] {
        var lines: [String] = [], current = ""
        for item in items {
            let joined = current.isEmpty ? item : current + separator + item
            if visibleWidth(joined) <= width || current.isEmpty {
                current = joined
            } else {
                lines.append(current)
                current = item
            }
        }
        if !current.isEmpty { lines.append(current) }
        return lines.map { fit($0, width: width) }
    }

    /// The step line's items: progress, loss, learning rate, throughput, MFU, gradient norm.
    static func stepItems(_ s: RunState) -> [String] {
        let step = s.step ?? 0
        let frac = s.totalSteps > 0 ? Double(step + 1) / Double(s.totalSteps) : 0
        return [
            "step \(step + 1)/\(s.totalSteps) [\(bar(frac, width: 20))] " + String(format: "%3.0f%%", 100 * frac)
                + " ETA " + (s.eta.map(duration) ?? "?"),
            String(format: "loss %.4f (avg %.4f)", s.loss ?? .nan, s.lossAverage ?? .nan),
            String(format: "lr %.2e", s.lr ?? .nan), String(format: "%.0f tok/s", s.tokensPerSec ?? .nan),
            String(format: "mfu %.2f", s.mfu ?? .nan), String(format: "gnorm %.3f", s.gradNorm ?? .nan)
        ]
    }
}
