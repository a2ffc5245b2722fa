//! CRC32C (Castagnoli), table driven (eight bytes per step), as the kernel's `crc32c()`
//! computes it.
//!
//! dm-persistent-data checksums with `crc32c(~0, data)` and does *not* invert the result
//! (`dm_bm_checksum`), then XORs a per-block-type salt.  The tables are built at compile time so
//! the engine needs no initialisation and no heap.

const POLY_REFLECTED: u32 = 0x82F6_3B78;

/// `TABLES[0]`: the CRC of each byte value; `TABLES[k][i]`: the CRC of byte `i` followed by
/// `k` zero bytes.  Eight tables let [`crc32c_raw`] take eight bytes per step
/// ("slicing-by-8"); 8 KiB, built at compile time.
const fn make_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
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
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

static TABLES: [[u32; 256]; 8] = make_tables();

/// Byte at a time (the tail that does not fill eight bytes, and the reference in tests).
fn crc32c_bytes(seed: u32, data: &[u8]) -> u32 {
    let mut crc = seed;
    for &b in data {
        crc = TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// Continue a raw (non-inverted) CRC32C over `data`, starting from `seed`.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    let t = &TABLES;
    let mut crc = seed;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    crc32c_bytes(crc, chunks.remainder())
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

    #[test]
    fn eight_bytes_at_a_time_equals_byte_at_a_time() {
        let mut data = [0u8; 300];
        let mut x = 0x1234_5678u32;
        for b in data.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (x >> 16) as u8;
        }
        for len in 0..data.len() {
            for start in [0usize, 1, 3, 7] {
                let d = &data[start.min(len)..len];
                assert_eq!(crc32c_raw(0xFFFF_FFFF, d), crc32c_bytes(0xFFFF_FFFF, d));
                assert_eq!(crc32c_raw(0x0BAD_CAFE, d), crc32c_bytes(0x0BAD_CAFE, d));
            }
        }
    }
}
