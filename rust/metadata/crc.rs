//! CRC32C (Castagnoli), table driven, as the kernel's `crc32c()` computes it.
//!
//! dm-persistent-data checksums with `crc32c(~0, data)` and does *not* invert the result
//! (`dm_bm_checksum`), then XORs a per-block-type salt.  The table is built at compile time so
//! the engine needs no initialisation and no heap.

const POLY_REFLECTED: u32 = 0x82F6_3B78;

const fn make_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ POLY_REFLECTED
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static TABLE: [u32; 256] = make_table();

/// Continue a raw (non-inverted) CRC32C over `data`, starting from `seed`.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    let mut crc = seed;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// dm-persistent-data block checksum: raw CRC32C from `0xFFFF_FFFF` XOR `salt`.
pub fn dm_checksum(data: &[u8], salt: u32) -> u32 {
    crc32c_raw(0xFFFF_FFFF, data) ^ salt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_value() {
        // The standard CRC32C check value of "123456789" is 0xE3069283 (with final inversion).
        assert_eq!(
            crc32c_raw(0xFFFF_FFFF, b"123456789") ^ 0xFFFF_FFFF,
            0xE306_9283
        );
    }
}
