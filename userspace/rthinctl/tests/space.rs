//! Metadata space: the allocator at the very end of the device, the metadata reserve, free
//! counts as dm-thin reports them, and growing a full metadata device.

mod common;
use common::*;

use rthin_metadata::{Error, Pool, Space};

/// Two metadata bitmaps, the second covering a single block (16,320).  Fill everything the
/// first covers within one transaction, so that the last free block lies in a bitmap this
/// transaction has not copied yet: allocating it must copy that bitmap, and the nested
/// allocation for the copy must not hand out the very block being allocated.
#[test]
fn last_free_metadata_block_is_never_handed_out_twice() {
    let mut p = Pool::format(mem_bm(16_321), 128).unwrap();
    let tx = p.tx();
    let mut got = Vec::new();
    let last = loop {
        match tx.meta_alloc() {
            Ok(b) if b < 16_320 => got.push(b),
            r => break r,
        }
    };
    assert!(got.len() > 16_000, "{} blocks allocated", got.len());
    match last {
        // The only block left cannot hold both itself and the copy of its bitmap.
        Err(Error::NoSpace(Space::Metadata)) => {}
        Ok(b) => {
            let c = tx.meta_count(b).unwrap();
            panic!("block {b} handed out with count {c} (also used as a bitmap copy?)");
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}
