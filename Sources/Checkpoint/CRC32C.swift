// CRC32C (Castagnoli), the checksum of every checkpoint slice: the SSE4.2 instruction where the
// CPU has it (CChecksum), else slicing-by-8 tables in Swift (about 1 GB/s). Both are tested
// against each other and the standard check value.
import CChecksum

public enum CRC32C {
    /// Whether the hardware path is used on this machine.
    public static let hardware = cchecksum_has_hardware_crc32c() == 1

    /// CRC32C of `count` bytes, continuing from `crc` (0 for a fresh checksum).
    public static func checksum(_ bytes: UnsafeRawPointer, count: Int, crc: UInt32 = 0) -> UInt32 {
        hardware ? cchecksum_crc32c_hw(crc, bytes, count) : software(bytes, count: count, crc: crc)
    }

    static let tables: [[UInt32]] = {
        var t = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[0][i] = c
        }
        for i in 0..<256 {
            for k in 1..<8 { t[k][i] = (t[k - 1][i] >> 8) ^ t[0][Int(t[k - 1][i] & 0xFF)] }
        }
        return t
    }()

    /// The table-driven implementation (used without SSE4.2; tests compare it with the hardware).
    public static func software(_ bytes: UnsafeRawPointer, count: Int, crc: UInt32 = 0) -> UInt32 {
        var c = ~crc
        var p = bytes, n = count
        tables.withUnsafeBufferPointer { tb in
            let t0 = tb[0], t1 = tb[1], t2 = tb[2], t3 = tb[3], t4 = tb[4], t5 = tb[5], t6 = tb[6], t7 = tb[7]
            t0.withUnsafeBufferPointer { t0 in
                t1.withUnsafeBufferPointer { t1 in
                    t2.withUnsafeBufferPointer { t2 in
                        t3.withUnsafeBufferPointer { t3 in
                            t4.withUnsafeBufferPointer { t4 in
                                t5.withUnsafeBufferPointer { t5 in
                                    t6.withUnsafeBufferPointer { t6 in
                                        t7.withUnsafeBufferPointer { t7 in
                                            while n >= 8 {
                                                let lo = p.loadUnaligned(as: UInt32.self).littleEndian ^ c
                                                let hi = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
                                                    .littleEndian
                                                c =
                                                    t7[Int(lo & 0xFF)] ^ t6[Int((lo >> 8) & 0xFF)]
                                                    ^ t5[Int((lo >> 16) & 0xFF)] ^ t4[Int(lo >> 24)]
                                                    ^ t3[Int(hi & 0xFF)] ^ t2[Int((hi >> 8) & 0xFF)]
                                                    ^ t1[Int((hi >> 16) & 0xFF)] ^ t0[Int(hi >> 24)]
                                                p += 8; n -= 8
                                            }
                                            while n > 0 {
                                                c = t0[Int((c ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (c >> 8)
                                                p += 1; n -= 1
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return ~c
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0.baseAddress!, count: $0.count) }
    }
}
