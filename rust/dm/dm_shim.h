/* SPDX-License-Identifier: GPL-2.0 */
/*
 * dm-rthin C shim: the static inlines and casted macros the Rust device-mapper glue needs.
 *
 * bindgen reads this header (it is in the module-local allowlist), so the Rust prototypes are
 * generated from these declarations rather than written by hand. Every name carries the
 * `rthin_` prefix so it cannot collide with a kernel symbol.
 */
#ifndef RTHIN_DM_SHIM_H
#define RTHIN_DM_SHIM_H

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/device-mapper.h>
#include <linux/dm-bufio.h>
#include <linux/dm-kcopyd.h>
#include <linux/fs.h>
#include <linux/ratelimit.h>
#include <linux/sched/mm.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>

/* Bio helpers (bio.h / blk_types.h inlines and macros). */
unsigned int rthin_bio_op(const struct bio *bio);
bool rthin_bio_is_write(const struct bio *bio);
unsigned int rthin_bio_sectors(const struct bio *bio);
void rthin_bio_set_dev(struct bio *bio, struct block_device *bdev);
void rthin_bio_endio_status(struct bio *bio, blk_status_t status);
void rthin_bio_zero_fill_and_end(struct bio *bio);
void rthin_bio_zero_fill_and_truncate(struct bio *bio, unsigned int sectors);
bool rthin_bio_accept_partial(struct bio *bio, unsigned int n_sectors);

/* Block device helpers. */
sector_t rthin_bdev_nr_sectors(struct block_device *bdev);
dev_t rthin_bdev_devt(struct block_device *bdev);
unsigned int rthin_bdev_max_discard_sectors(struct block_device *bdev);
int rthin_bdev_discard(struct block_device *bdev, sector_t sector, sector_t nr);
unsigned int rthin_dev_major(dev_t dev);
unsigned int rthin_dev_minor(dev_t dev);

/* Device-mapper helpers. */
dev_t rthin_dm_target_md_devt(struct dm_target *ti);
bool rthin_dm_devt_is_mapped_device(dev_t dev);

/* Counted opens of block devices by number (a reference independent of any dm table). */
struct file *rthin_bdev_open_by_dev(dev_t dev, bool write);
void rthin_bdev_file_put(struct file *file);
struct block_device *rthin_file_bdev(struct file *file);

/* Irq-safe spinlock (spin_lock_irqsave is a macro). */
unsigned long rthin_spin_lock_irqsave(spinlock_t *lock);
void rthin_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags);
bool rthin_spin_trylock_irqsave(spinlock_t *lock, unsigned long *flags);
void rthin_assert_spin_locked(spinlock_t *lock);

/* Workqueues and allocation scopes. */
struct workqueue_struct *rthin_alloc_workqueue(const char *name);
void rthin_flush_workqueue(struct workqueue_struct *wq);
unsigned int rthin_memalloc_noio_save(void);
void rthin_memalloc_noio_restore(unsigned int flags);

/*
 * dm-kcopyd: zero and copy without waiting. `fn(read_err, write_err, context)` runs once, on
 * kcopyd's thread, when the job is done.
 */
typedef void (*rthin_kcopyd_done_fn)(int read_err, unsigned long write_err, void *context);
void rthin_kcopyd_zero(struct dm_kcopyd_client *kc, struct block_device *bdev, sector_t sector,
		       sector_t count, rthin_kcopyd_done_fn fn, void *context);
void rthin_kcopyd_copy(struct dm_kcopyd_client *kc, struct block_device *from,
		       sector_t from_sector, struct block_device *to, sector_t to_sector,
		       sector_t count, rthin_kcopyd_done_fn fn, void *context);

/* Module parameters defined in C (writable through sysfs). */
unsigned int rthin_no_space_timeout_secs(void);

/* Rate limiting for log messages on the I/O path. */
void rthin_ratelimit_init(struct ratelimit_state *rs);
bool rthin_ratelimit_allow(struct ratelimit_state *rs);

#ifdef __BINDGEN__
/*
 * Casted macros bindgen cannot evaluate. Only bindgen sees these: it turns each into a Rust
 * `pub const` with the value the C compiler computes.
 */
const blk_mode_t RTHIN_BLK_OPEN_READ = BLK_OPEN_READ;
const blk_mode_t RTHIN_BLK_OPEN_WRITE = BLK_OPEN_WRITE;
const blk_opf_t RTHIN_REQ_PREFLUSH = REQ_PREFLUSH;
const blk_opf_t RTHIN_REQ_FUA = REQ_FUA;
const blk_status_t RTHIN_BLK_STS_OK = BLK_STS_OK;
const blk_status_t RTHIN_BLK_STS_IOERR = BLK_STS_IOERR;
const blk_status_t RTHIN_BLK_STS_NOSPC = BLK_STS_NOSPC;
const unsigned int RTHIN_REQ_OP_READ = REQ_OP_READ;
const unsigned int RTHIN_REQ_OP_WRITE = REQ_OP_WRITE;
const unsigned int RTHIN_REQ_OP_FLUSH = REQ_OP_FLUSH;
const unsigned int RTHIN_REQ_OP_DISCARD = REQ_OP_DISCARD;
const unsigned int RTHIN_REQ_OP_SECURE_ERASE = REQ_OP_SECURE_ERASE;
const unsigned int RTHIN_REQ_OP_WRITE_ZEROES = REQ_OP_WRITE_ZEROES;
/* Status flag from drivers/md/dm.h, which is private to dm core. */
const unsigned int RTHIN_DM_STATUS_NOFLUSH_FLAG = 1 << 0;
const blk_status_t RTHIN_BLK_STS_AGAIN = BLK_STS_AGAIN;
const blk_status_t RTHIN_BLK_STS_DM_REQUEUE = BLK_STS_DM_REQUEUE;
#endif

#endif /* RTHIN_DM_SHIM_H */
