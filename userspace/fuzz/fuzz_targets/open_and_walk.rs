//! Open arbitrary bytes as thin-pool metadata and walk everything: engine open, device and
//! mapping iteration, space-map counts, a small write transaction, then the offline checker
//! and the XML dump.  Any panic is a bug: corrupt metadata must only produce errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rthin_metadata::{BlockManager, Pool, BLOCK_SIZE};
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
    let _ = exercise(&image);
    let bm = CachedBm::new(MemDisk::from_image(&image));
    let _ = rthinctl::check::check(&bm);
    let mut out = Vec::new();
    let _ = rthinctl::dump::dump(&bm, None, &mut out);
    let _ = bm.nr_blocks();
});
