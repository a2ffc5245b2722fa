//! The byte layout of device-mapper's ioctl buffers (include/uapi/linux/dm-ioctl.h), encoded and
//! decoded by hand so that every offset is visible and unit-tested; no system call here.
//!
//! A buffer is a 312-byte `struct dm_ioctl` header followed by a payload at `data_start`.  The
//! buffer is kept in `u64`s so that the `u64` fields inside it are naturally aligned, as the
//! kernel's copy expects.

/// Size of `struct dm_ioctl`.
pub const HEADER_SIZE: usize = 312;
/// Size of `struct dm_target_spec`.
pub const SPEC_SIZE: usize = 40;
/// `DM_MAX_TYPE_NAME`: target type names are at most 15 bytes.
pub const TYPE_NAME_SIZE: usize = 16;
/// `DM_NAME_LEN`.
pub const NAME_SIZE: usize = 128;
/// Interface version we speak (4.37 added DEV_ARM_POLL; nothing we send needs more).
pub const VERSION: [u32; 3] = [4, 37, 0];

// Field offsets in struct dm_ioctl.
const OFF_VERSION: usize = 0;
const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_OPEN_COUNT: usize = 24;
const OFF_FLAGS: usize = 28;
const OFF_EVENT_NR: usize = 32;
const OFF_DEV: usize = 40;
const OFF_NAME: usize = 48;

/// Command numbers (the `nr` of `_IOWR(0xfd, nr, struct dm_ioctl)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Cmd {
    Version = 0,
    ListDevices = 2,
    DevCreate = 3,
    DevRemove = 4,
    DevSuspend = 6,
    DevStatus = 7,
    DevWait = 8,
    TableLoad = 9,
    TableClear = 10,
    TableStatus = 12,
    ListVersions = 13,
    TargetMsg = 14,
    DevArmPoll = 16,
}

impl Cmd {
    /// The ioctl request number: direction read|write, size 312, type 0xfd.
    pub fn request(self) -> u32 {
        (3 << 30) | ((HEADER_SIZE as u32) << 16) | (0xfd << 8) | self as u32
    }
}

/// Header flags we use.
pub mod flags {
    pub const SUSPEND: u32 = 1 << 1;
    pub const STATUS_TABLE: u32 = 1 << 4;
    pub const ACTIVE_PRESENT: u32 = 1 << 5;
    pub const INACTIVE_PRESENT: u32 = 1 << 6;
    pub const BUFFER_FULL: u32 = 1 << 8;
    pub const NOFLUSH: u32 = 1 << 11;
    pub const DATA_OUT: u32 = 1 << 16;
}

/// One line of a table: `<start> <length> <type> <params>`, in sectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetLine {
    pub start: u64,
    pub length: u64,
    pub target_type: String,
    pub params: String,
}

/// An ioctl buffer.
pub struct Buffer {
    words: Vec<u64>,
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}

fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().unwrap())
}

/// The NUL-terminated string at the start of `b` (all of `b` if there is no NUL).
fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl Buffer {
    /// A buffer of `size` bytes (at least the header) for device `name` (may be empty), with
    /// `payload` copied at `data_start`.
    pub fn new(name: &str, flags: u32, payload: &[u8], size: usize) -> Buffer {
        let size = align8(size.max(HEADER_SIZE + payload.len()));
        let mut buf = Buffer {
            words: vec![0; size / 8],
        };
        let b = buf.bytes_mut();
        for (i, v) in VERSION.iter().enumerate() {
            put_u32(b, OFF_VERSION + 4 * i, *v);
        }
        put_u32(b, OFF_DATA_SIZE, size as u32);
        put_u32(b, OFF_DATA_START, HEADER_SIZE as u32);
        put_u32(b, OFF_FLAGS, flags);
        let n = name.len().min(NAME_SIZE - 1);
        b[OFF_NAME..OFF_NAME + n].copy_from_slice(&name.as_bytes()[..n]);
        b[HEADER_SIZE..HEADER_SIZE + payload.len()].copy_from_slice(payload);
        buf
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY-free view: a u64 slice reinterpreted as bytes through a copy-free helper.
        bytemuck_bytes(&self.words)
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck_bytes_mut(&mut self.words)
    }

    /// Pointer handed to the kernel.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.words.as_mut_ptr().cast()
    }

    pub fn set_target_count(&mut self, n: u32) {
        put_u32(self.bytes_mut(), OFF_TARGET_COUNT, n);
    }

    pub fn set_event_nr(&mut self, n: u32) {
        put_u32(self.bytes_mut(), OFF_EVENT_NR, n);
    }

    pub fn set_dev(&mut self, dev: u64) {
        put_u64(self.bytes_mut(), OFF_DEV, dev);
    }

    pub fn flags(&self) -> u32 {
        get_u32(self.bytes(), OFF_FLAGS)
    }

    pub fn open_count(&self) -> i32 {
        get_u32(self.bytes(), OFF_OPEN_COUNT) as i32
    }

    pub fn event_nr(&self) -> u32 {
        get_u32(self.bytes(), OFF_EVENT_NR)
    }

    pub fn target_count(&self) -> u32 {
        get_u32(self.bytes(), OFF_TARGET_COUNT)
    }

    pub fn dev(&self) -> u64 {
        get_u64(self.bytes(), OFF_DEV)
    }

    pub fn version(&self) -> [u32; 3] {
        let b = self.bytes();
        [get_u32(b, 0), get_u32(b, 4), get_u32(b, 8)]
    }

    /// The kernel's output area: from `data_start` to `data_size`.
    pub fn output(&self) -> &[u8] {
        let b = self.bytes();
        let start = get_u32(b, OFF_DATA_START) as usize;
        let end = (get_u32(b, OFF_DATA_SIZE) as usize).min(b.len());
        if start >= end {
            &[]
        } else {
            &b[start..end]
        }
    }
}

// A Vec<u64> as bytes.  Written with the standard library only: `align_to` on a u64 slice
// viewed as u8 never has a prefix or suffix.
fn bytemuck_bytes(w: &[u64]) -> &[u8] {
    // SAFETY: u8 has no alignment or validity requirements; the length covers the same memory.
    unsafe { std::slice::from_raw_parts(w.as_ptr().cast(), w.len() * 8) }
}

fn bytemuck_bytes_mut(w: &mut [u64]) -> &mut [u8] {
    // SAFETY: as above; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr().cast(), w.len() * 8) }
}

/// DM_TABLE_LOAD payload: each target's spec, then its NUL-terminated parameters padded to 8
/// bytes; `next` is the distance from this spec to the next one (the load rule).
pub fn encode_table(lines: &[TargetLine]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for l in lines {
        if l.target_type.is_empty() || l.target_type.len() >= TYPE_NAME_SIZE {
            return Err(format!(
                "target type {:?} must be 1-15 bytes",
                l.target_type
            ));
        }
        let params_len = align8(l.params.len() + 1);
        let mut spec = [0u8; SPEC_SIZE];
        put_u64(&mut spec, 0, l.start);
        put_u64(&mut spec, 8, l.length);
        put_u32(&mut spec, 20, (SPEC_SIZE + params_len) as u32);
        spec[24..24 + l.target_type.len()].copy_from_slice(l.target_type.as_bytes());
        out.extend_from_slice(&spec);
        let mut p = l.params.as_bytes().to_vec();
        p.resize(params_len, 0);
        out.extend_from_slice(&p);
    }
    Ok(out)
}

/// Decode TABLE_STATUS / DEV_WAIT output: `count` specs whose `next` is measured from the start
/// of the output area (the status rule, unlike the load rule).
pub fn decode_table(out: &[u8], count: u32) -> Vec<TargetLine> {
    let mut lines = Vec::new();
    let mut pos = 0usize;
    for _ in 0..count {
        if pos + SPEC_SIZE > out.len() {
            break;
        }
        let spec = &out[pos..pos + SPEC_SIZE];
        lines.push(TargetLine {
            start: get_u64(spec, 0),
            length: get_u64(spec, 8),
            target_type: c_str(&spec[24..40]),
            params: c_str(&out[pos + SPEC_SIZE..]),
        });
        let next = get_u32(spec, 20) as usize;
        if next <= pos {
            break;
        }
        pos = next;
    }
    lines
}

/// DM_TARGET_MSG payload: the sector, then the NUL-terminated message.
pub fn encode_message(sector: u64, msg: &str) -> Vec<u8> {
    let mut out = sector.to_ne_bytes().to_vec();
    out.extend_from_slice(msg.as_bytes());
    out.push(0);
    out
}

/// DM_LIST_DEVICES output: records `{u64 dev; u32 next; char name[]}` chained by `next`
/// (relative to the record, 0 ends); a lone record with dev 0 means "no devices".
pub fn decode_name_list(out: &[u8]) -> Vec<(String, u64)> {
    let mut devs = Vec::new();
    let mut pos = 0usize;
    while pos + 12 <= out.len() {
        let dev = get_u64(out, pos);
        let next = get_u32(out, pos + 8) as usize;
        let name = c_str(&out[pos + 12..]);
        if dev == 0 && name.is_empty() {
            break;
        }
        devs.push((name, dev));
        if next == 0 {
            break;
        }
        pos += next;
    }
    devs
}

/// DM_LIST_VERSIONS output: records `{u32 next; u32 version[3]; char name[]}`.
pub fn decode_versions(out: &[u8]) -> Vec<(String, [u32; 3])> {
    let mut v = Vec::new();
    let mut pos = 0usize;
    while pos + 16 <= out.len() {
        let next = get_u32(out, pos) as usize;
        let ver = [
            get_u32(out, pos + 4),
            get_u32(out, pos + 8),
            get_u32(out, pos + 12),
        ];
        v.push((c_str(&out[pos + 16..]), ver));
        if next == 0 {
            break;
        }
        pos += next;
    }
    v
}

/// The text after the header when DM_DATA_OUT is set (message replies).
pub fn decode_string(out: &[u8]) -> String {
    c_str(out)
}

/// Split a `dev_t` as the kernel encodes it in `dm_ioctl.dev` (huge_encode_dev).
pub fn dev_major_minor(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) as u32 | (((dev >> 32) & !0xfff) as u32);
    let minor = (dev & 0xff) as u32 | (((dev >> 12) & !0xff) as u32);
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_uapi_header() {
        assert_eq!(Cmd::Version.request(), 0xC138_FD00);
        assert_eq!(Cmd::TableLoad.request(), 0xC138_FD09);
        assert_eq!(Cmd::TargetMsg.request(), 0xC138_FD0E);
    }

    #[test]
    fn header_fields_sit_at_their_offsets() {
        let mut b = Buffer::new("pool0", flags::SUSPEND, b"xy", 1024);
        b.set_target_count(3);
        b.set_event_nr(7);
        let raw = b.bytes();
        assert_eq!(raw.len(), 1024);
        assert_eq!(get_u32(raw, 0), 4);
        assert_eq!(get_u32(raw, 4), 37);
        assert_eq!(get_u32(raw, 12), 1024);
        assert_eq!(get_u32(raw, 16), 312);
        assert_eq!(get_u32(raw, 20), 3);
        assert_eq!(get_u32(raw, 28), flags::SUSPEND);
        assert_eq!(get_u32(raw, 32), 7);
        assert_eq!(&raw[48..54], b"pool0\0");
        assert_eq!(&raw[312..314], b"xy");
        assert_eq!(b.output().len(), 1024 - 312);
    }

    #[test]
    fn long_names_are_cut_to_fit_with_their_nul() {
        let name = "n".repeat(200);
        let b = Buffer::new(&name, 0, &[], 0);
        assert_eq!(b.bytes()[48 + 126], b'n');
        assert_eq!(b.bytes()[48 + 127], 0);
        assert_eq!(b.bytes().len(), HEADER_SIZE);
    }

    #[test]
    fn table_load_uses_relative_next_and_8_byte_padding() {
        let lines = [
            TargetLine {
                start: 0,
                length: 2048,
                target_type: "rthin-pool".into(),
                params: "7:0 7:1 128 0".into(),
            },
            TargetLine {
                start: 2048,
                length: 8,
                target_type: "zero".into(),
                params: String::new(),
            },
        ];
        let p = encode_table(&lines).unwrap();
        // "7:0 7:1 128 0" is 13 bytes + NUL = 14, padded to 16.
        assert_eq!(get_u32(&p, 20), 40 + 16);
        assert_eq!(&p[24..35], b"rthin-pool\0");
        assert_eq!(&p[40..54], b"7:0 7:1 128 0\0");
        let second = 56;
        assert_eq!(get_u64(&p, second), 2048);
        assert_eq!(get_u32(&p, second + 20), 40 + 8);
        assert_eq!(p.len(), 56 + 48);
    }

    #[test]
    fn too_long_target_types_are_refused() {
        let l = TargetLine {
            start: 0,
            length: 1,
            target_type: "a-very-long-target".into(),
            params: String::new(),
        };
        assert!(encode_table(&[l]).is_err());
    }

    #[test]
    fn status_output_uses_next_from_the_first_spec() {
        // Two specs as the kernel writes them: next is an offset from the output start.
        let mut out = vec![0u8; 200];
        put_u64(&mut out, 8, 100);
        put_u32(&mut out, 20, 64);
        out[24..28].copy_from_slice(b"thin");
        out[40..50].copy_from_slice(b"5 9\0\0\0\0\0\0\0");
        put_u64(&mut out, 64, 100);
        put_u64(&mut out, 72, 50);
        put_u32(&mut out, 84, 128);
        out[88..92].copy_from_slice(b"zero");
        let lines = decode_table(&out, 2);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].params, "5 9");
        assert_eq!(lines[0].length, 100);
        assert_eq!(lines[1].target_type, "zero");
        assert_eq!(lines[1].start, 100);
        assert_eq!(lines[1].params, "");
    }

    #[test]
    fn messages_are_sector_then_text() {
        let p = encode_message(0, "create_thin 1");
        assert_eq!(&p[..8], &[0; 8]);
        assert_eq!(&p[8..], b"create_thin 1\0");
    }

    #[test]
    fn name_lists_and_versions_decode() {
        let mut out = vec![0u8; 64];
        put_u64(&mut out, 0, (253 << 8) | 1);
        put_u32(&mut out, 8, 24);
        out[12..17].copy_from_slice(b"pool\0");
        put_u64(&mut out, 24, (253 << 8) | 2);
        out[36..40].copy_from_slice(b"vol\0");
        assert_eq!(
            decode_name_list(&out),
            vec![("pool".into(), 253 << 8 | 1), ("vol".into(), 253 << 8 | 2)]
        );
        assert!(decode_name_list(&[0u8; 32]).is_empty());

        let mut v = vec![0u8; 64];
        put_u32(&mut v, 0, 32);
        put_u32(&mut v, 4, 1);
        put_u32(&mut v, 8, 24);
        v[16..27].copy_from_slice(b"thin-pool\0\0");
        put_u32(&mut v, 36, 1);
        v[48..54].copy_from_slice(b"rthin\0");
        let vs = decode_versions(&v);
        assert_eq!(vs[0], ("thin-pool".into(), [1, 24, 0]));
        assert_eq!(vs[1], ("rthin".into(), [1, 0, 0]));
    }

    #[test]
    fn dev_numbers_split_like_huge_encode_dev() {
        assert_eq!(dev_major_minor((253 << 8) | 3), (253, 3));
        // minor 300: low byte in bits 0-7, the rest from bit 20.
        let dev = (253u64 << 8) | (300 & 0xff) | ((300 & !0xff) << 12);
        assert_eq!(dev_major_minor(dev), (253, 300));
    }
}
