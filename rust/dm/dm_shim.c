// SPDX-License-Identifier: GPL-2.0
/*
 * dm-rthin C shim: out-of-line wrappers around static inlines and macros, so the Rust glue in
 * rust/dm/ calls the kernel's own definitions instead of re-implementing them (a re-implementation
 * would silently diverge when the inline changes).
 *
 * This file owns no module init/exit: the Rust crate root (`module!`) does.
 */
#include "dm_shim.h"

unsigned int rthin_bio_op(const struct bio *bio)
{
	return bio_op(bio);
}

bool rthin_bio_is_write(const struct bio *bio)
{
	return op_is_write(bio->bi_opf);
}

unsigned int rthin_bio_sectors(const struct bio *bio)
{
	return bio_sectors(bio);
}

void rthin_bio_set_dev(struct bio *bio, struct block_device *bdev)
{
	bio_set_dev(bio, bdev);
}

void rthin_bio_endio_status(struct bio *bio, blk_status_t status)
{
	bio->bi_status = status;
	bio_endio(bio);
}

sector_t rthin_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}

dev_t rthin_bdev_devt(struct block_device *bdev)
{
	return bdev->bd_dev;
}

unsigned int rthin_dev_major(dev_t dev)
{
	return MAJOR(dev);
}

unsigned int rthin_dev_minor(dev_t dev)
{
	return MINOR(dev);
}

/* The dev_t of the mapped device whose table @ti belongs to. */
dev_t rthin_dm_target_md_devt(struct dm_target *ti)
{
	return disk_devt(dm_disk(dm_table_get_md(ti->table)));
}

/* Whether @dev is a device-mapper device that currently exists. */
bool rthin_dm_devt_is_mapped_device(dev_t dev)
{
	struct mapped_device *md = dm_get_md(dev);

	if (!md)
		return false;
	dm_put(md);
	return true;
}

void rthin_ratelimit_init(struct ratelimit_state *rs)
{
	ratelimit_state_init(rs, DEFAULT_RATELIMIT_INTERVAL, DEFAULT_RATELIMIT_BURST);
}

bool rthin_ratelimit_allow(struct ratelimit_state *rs)
{
	return __ratelimit(rs);
}
