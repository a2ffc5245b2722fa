// SPDX-License-Identifier: GPL-2.0
/*
 * dm-rthin C shim: out-of-line wrappers around static inlines and macros, so the Rust glue in
 * rust/dm/ calls the kernel's own definitions instead of re-implementing them (a re-implementation
 * would silently diverge when the inline changes).
 *
 * This file owns no module init/exit: the Rust crate root (`module!`) does.
 */
#include "dm_shim.h"

#include <linux/moduleparam.h>

/*
 * dm-thin's no_space_timeout, with its name, type and 0644 permissions: writable at run time in
 * /sys/module/dm_rthin/parameters/. (The kernel's Rust `module!` parameters are not exposed in
 * sysfs in 7.2.) Read with rthin_no_space_timeout_secs().
 */
static unsigned int no_space_timeout_secs = 60;
#ifndef RTHIN_GLUE_TEST_MODULE /* dm_shim_test.c: the glue test module has no such parameter */
module_param_named(no_space_timeout, no_space_timeout_secs, uint, 0644);
MODULE_PARM_DESC(no_space_timeout, "Out of data space queue IO timeout in seconds");
#endif

unsigned int rthin_no_space_timeout_secs(void)
{
	return READ_ONCE(no_space_timeout_secs);
}

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

/* Zero the remaining data of @bio and complete it successfully (a read of a hole). */
void rthin_bio_zero_fill_and_end(struct bio *bio)
{
	zero_fill_bio(bio);
	bio->bi_status = BLK_STS_OK;
	bio_endio(bio);
}

/*
 * Zero all data of @bio, then shorten it to its first @sectors (a read whose tail lies past
 * the end of the device it is sent to: the tail stays zero, as dm-thin does for external
 * origins).
 */
void rthin_bio_zero_fill_and_truncate(struct bio *bio, unsigned int sectors)
{
	zero_fill_bio(bio);
	if (sectors < bio_sectors(bio))
		bio->bi_iter.bi_size = sectors << SECTOR_SHIFT;
}

/*
 * dm_accept_partial_bio() BUG()s on bios it does not allow (see its comment in dm.c): refuse those
 * here instead. Only plain reads and writes qualify (dm core never duplicates them, which rules
 * out flushes and the abnormal operations), without REQ_PREFLUSH or REQ_ATOMIC, and not on a zoned
 * device. n_sectors must keep at least one sector and not exceed the bio.
 */
bool rthin_bio_accept_partial(struct bio *bio, unsigned int n_sectors)
{
	enum req_op op = bio_op(bio);

	if (op != REQ_OP_READ && op != REQ_OP_WRITE)
		return false;
	if (bio->bi_opf & (REQ_PREFLUSH | REQ_ATOMIC))
		return false;
	if (bdev_is_zoned(bio->bi_bdev))
		return false;
	if (n_sectors == 0 || n_sectors > bio_sectors(bio))
		return false;
	dm_accept_partial_bio(bio, n_sectors);
	return true;
}

sector_t rthin_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}

unsigned int rthin_bdev_max_discard_sectors(struct block_device *bdev)
{
	return bdev_max_discard_sectors(bdev);
}

/* Synchronous discard, allocating with GFP_NOIO (callers sit on the I/O path). */
int rthin_bdev_discard(struct block_device *bdev, sector_t sector, sector_t nr)
{
	return blkdev_issue_discard(bdev, sector, nr, GFP_NOIO);
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

/*
 * A counted, non-exclusive open of a block device: the pool object keeps its metadata and data
 * devices open this way, because it outlives the tables whose dm_get_device() opened them.
 */
struct file *rthin_bdev_open_by_dev(dev_t dev, bool write)
{
	blk_mode_t mode = BLK_OPEN_READ | (write ? BLK_OPEN_WRITE : 0);

	return bdev_file_open_by_dev(dev, mode, NULL, NULL);
}

void rthin_bdev_file_put(struct file *file)
{
	/*
	 * Synchronously, as dm core closes its table devices (close_table_device): with fput()
	 * the close would wait for the ioctl to return to user space, and `dmsetup remove_all`
	 * could not remove the devices below a pool in the same call.
	 */
	might_sleep();
	__fput_sync(file);
}

struct block_device *rthin_file_bdev(struct file *file)
{
	return file_bdev(file);
}

unsigned long rthin_spin_lock_irqsave(spinlock_t *lock)
{
	unsigned long flags;

	spin_lock_irqsave(lock, flags);
	return flags;
}

void rthin_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags)
{
	spin_unlock_irqrestore(lock, flags);
}

bool rthin_spin_trylock_irqsave(spinlock_t *lock, unsigned long *flags)
{
	return spin_trylock_irqsave(lock, *flags);
}

void rthin_assert_spin_locked(spinlock_t *lock)
{
	lockdep_assert_held(lock);
}

/*
 * An ordered (one work item at a time, unbound), reclaim-safe queue: the pool worker must make
 * progress under memory pressure, and its runs must not overlap.
 */
struct workqueue_struct *rthin_alloc_workqueue(const char *name)
{
	return alloc_ordered_workqueue("%s", WQ_MEM_RECLAIM, name);
}

void rthin_flush_workqueue(struct workqueue_struct *wq)
{
	flush_workqueue(wq);
}

unsigned int rthin_memalloc_noio_save(void)
{
	return memalloc_noio_save();
}

void rthin_memalloc_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

void rthin_kcopyd_zero(struct dm_kcopyd_client *kc, struct block_device *bdev, sector_t sector,
		       sector_t count, rthin_kcopyd_done_fn fn, void *context)
{
	struct dm_io_region to = { .bdev = bdev, .sector = sector, .count = count };

	dm_kcopyd_zero(kc, 1, &to, 0, fn, context);
}

void rthin_kcopyd_copy(struct dm_kcopyd_client *kc, struct block_device *from,
		       sector_t from_sector, struct block_device *to, sector_t to_sector,
		       sector_t count, rthin_kcopyd_done_fn fn, void *context)
{
	struct dm_io_region src = { .bdev = from, .sector = from_sector, .count = count };
	struct dm_io_region dst = { .bdev = to, .sector = to_sector, .count = count };

	dm_kcopyd_copy(kc, &src, 1, &dst, 0, fn, context);
}
