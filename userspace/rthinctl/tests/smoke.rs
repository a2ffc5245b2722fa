mod common;
use common::*;

#[test]
fn basic_lifecycle_is_compatible() {
    let mut p = mem_pool(1024, 100_000);
    p.create_thin(0).unwrap();
    for v in 0..1000u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert(0, v * 3, b).unwrap();
    }
    p.commit().unwrap();
    p.create_snap(1, 0).unwrap();
    for v in 0..300u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert(0, v * 7, b).unwrap();
    }
    for v in 0..200u64 {
        p.remove(1, v * 5).unwrap();
    }
    p.commit().unwrap();
    let p = reopen(p);
    assert_compatible(&image_of(&p), "smoke");
}
