//! Open arbitrary bytes as thin-pool metadata and walk everything: engine open, device and
//! mapping iteration, space-map counts, a small write transaction, then the offline checker
//! and the XML dump.  Any panic is a bug: corrupt metadata must only produce errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rthin_metadata::block::seal;
use rthin_metadata::{BlockKind, BlockManager, Pool, BLOCK_SIZE};
use rthin_metadata_file::{CachedBm, MemDisk};

fn exercise(image: &[u8]) -> Result<(), rthin_metadata::Error> {
    let mut p = Pool::open(CachedBm::new(MemDisk::from_image(image)), None, true)?;
    let mut ids = Vec::new();
    p.for_each_device(&mut |id, _| {
        ids.push(id);
        Ok(ids.len() < 64)
    })?;
    for id in &ids {
        p.for_each_mapping(*id, &mut |_, _, _| Ok(true))?;
        p.lookup(*id, 0)?;
    }
    for b in 0..p.data_nr_blocks().min(2048) {
        p.data_block_count(b)?;
    }
    for b in 0..p.metadata_nr_blocks().min(2048) {
        p.metadata_block_count(b)?;
    }
    if let Some(id) = ids.first() {
        let b = p.alloc_data_block()?;
        p.insert(*id, 1, b)?;
        p.remove(*id, 2)?;
    }
    p.create_thin(0xFF_FFFF)?;
    p.commit()
}

fuzz_target!(|data: &[u8]| {
    // Images are block-sized; pad the input to whole blocks (at most 256 of them).
    let blocks = data.len().div_ceil(BLOCK_SIZE).clamp(1, 256);
    let mut image = vec![0u8; blocks * BLOCK_SIZE];
    let n = data.len().min(image.len());
    image[..n].copy_from_slice(&data[..n]);
    // Checksums stop almost every mutation at the first read.  When the last input byte is
    // odd, re-seal block 0 as a superblock and every block that looks like a btree node, so
    // mutated node contents reach the tree code.
    if data.last().is_some_and(|b| b & 1 == 1) {
        for (i, blk) in image.chunks_exact_mut(BLOCK_SIZE).enumerate() {
            let blk: &mut [u8; BLOCK_SIZE] = blk.try_into().expect("chunk is one block");
            let flags = u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]);
            if i == 0 {
                seal(BlockKind::Superblock, 0, blk);
            } else if flags == 1 || flags == 2 {
                seal(BlockKind::Node, i as u64, blk);
            }
        }
    }
    let _ = exercise(&image);
    let bm = CachedBm::new(MemDisk::from_image(&image));
    let _ = rthinctl::check::check(&bm);
    let mut out = Vec::new();
    let _ = rthinctl::dump::dump(&bm, None, &mut out);
    let _ = bm.nr_blocks();
});
