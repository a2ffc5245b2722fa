//! `rthinctl`: thin pools and volumes on dm-rthin (or the kernel's dm-thin), and offline tools
//! for their metadata.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use rthin_metadata::Pool;

use rthinctl::error::{exit, Error, Result};
use rthinctl::pool::{self, Backing, CreateArgs, NewSize};
use rthinctl::size::{clap_block_size, clap_bytes};
use rthinctl::sys::{Mode, Sys};
use rthinctl::tables::Target;
use rthinctl::{listing, monitor, thin, thin_ls};

const AFTER_HELP: &str = "\
Sizes are in binary units, as dd, LVM and Docker read them: 64K, 512M, 10G (= 10 x 2^30 bytes).
Pools live in sparse files (nothing is allocated until written) on loop devices, or on block
devices; a small state file beside the files remembers names, sizes and origins, so
`rthinctl pool activate NAME --dir DIR` brings a pool back after a reboot.

Typical session:
  rthinctl pool create pool0 --data-size 10G          # files in /var/lib/rthinctl/pool0
  rthinctl thin create vol0 --size 1G                 # /dev/mapper/vol0
  mkfs.ext4 /dev/mapper/vol0
  rthinctl thin snapshot snap0 --from vol0            # /dev/mapper/snap0
  rthinctl thin list; rthinctl pool status pool0
  rthinctl --dry-run thin delete snap0                # the dmsetup commands, not run

Exit codes: 0 ok, 1 failure, 2 usage or bad size, 3 not root, 4 target/module missing,
5 device busy, 6 name exists, 7 no such pool or volume, 8 pool full, 9 backing files missing,
10 state and kernel disagree (see the message).";

#[derive(Parser)]
#[command(
    name = "rthinctl",
    version,
    about = "Thin-provisioned pools and volumes on dm-rthin or dm-thin, and their metadata",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Print the equivalent losetup/dmsetup commands instead of running anything.
    #[arg(long, global = true)]
    dry_run: bool,
    /// Print the equivalent losetup/dmsetup commands (as # comments) while running them.
    #[arg(long, global = true, conflicts_with = "dry_run")]
    explain: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pools: where thin volumes get their space.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Thin volumes and snapshots.
    #[command(subcommand)]
    Thin(ThinCmd),
    /// Check metadata structure and reference counts (offline, on an image or inactive device).
    Check {
        /// Metadata image or device.
        image: PathBuf,
        /// Only set the exit code.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Dump metadata as thin_dump-compatible XML.
    Dump {
        /// Metadata image or device.
        image: PathBuf,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Dump the metadata snapshot at this block instead of the live metadata.
        #[arg(short = 'm', long = "metadata-snap")]
        metadata_snap: Option<u64>,
    },
    /// Write metadata from XML into an existing image or device.
    Restore {
        /// XML input.
        #[arg(short, long)]
        input: PathBuf,
        /// Metadata image or device (must exist; its size is the metadata size).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// List thin devices with mapped, exclusive and shared block counts.
    Ls {
        /// Metadata image or device.
        image: PathBuf,
        /// `thin_ls` prints thin_ls's default columns, the same way; `-o` picks its fields.
        #[arg(long, value_enum, default_value = "rthinctl")]
        format: LsFormat,
        /// thin_ls fields, comma-separated (with --format thin_ls), e.g. DEV,MAPPED_BLOCKS.
        #[arg(short = 'o', long = "fields")]
        fields: Option<String>,
        /// No header line (with --format thin_ls).
        #[arg(long)]
        no_headers: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LsFormat {
    Rthinctl,
    #[value(name = "thin_ls")]
    ThinLs,
}

#[derive(Subcommand)]
enum PoolCmd {
    /// Create a pool: sparse backing files on loop devices (or given block devices), fresh
    /// metadata, the pool table loaded.
    Create(PoolCreate),
    /// Space used, mode and transaction id of one pool (or all).
    Status {
        name: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// All pools rthinctl knows.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Bring a pool back (after a reboot): re-attach the same files, load the same table,
    /// activate the volumes that were active.
    Activate {
        name: String,
        /// Directory holding NAME's state file, for a pool this system does not know yet.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Remove the pool's devices (volumes first); files and state stay.
    Deactivate { name: String },
    /// Grow the pool: absolute sizes, or +SIZE to add.
    Extend {
        name: String,
        #[arg(long, value_parser = pool::parse_new_size)]
        data_size: Option<NewSize>,
        #[arg(long, value_parser = pool::parse_new_size)]
        metadata_size: Option<NewSize>,
    },
    /// Remove the pool, its volumes, its files and state.
    Remove {
        name: String,
        /// Keep the backing files and state file (re-activate later with --dir).
        #[arg(long)]
        keep_files: bool,
    },
    /// Watch the pool's events and extend it before it fills (like LVM's dmeventd).
    Monitor {
        name: String,
        /// Extend when data or metadata use reaches this percentage (100 disables).
        #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u64).range(50..=100))]
        autoextend_threshold: u64,
        /// Grow by this percentage of the current size.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
        autoextend_percent: u64,
        /// Longest time between two looks at the pool, in seconds.
        #[arg(long, default_value_t = 10)]
        interval: u64,
        /// Exit after this many extensions.
        #[arg(long)]
        max_extends: Option<u64>,
    },
}

#[derive(Args)]
struct PoolCreate {
    name: String,
    /// Data size (pool capacity), e.g. 10G.  Default with --data-dev: the device's size.
    #[arg(long, value_parser = clap_bytes)]
    data_size: Option<u64>,
    /// Metadata size.  Default: 48 bytes per data block, at least 2M.
    #[arg(long, value_parser = clap_bytes)]
    metadata_size: Option<u64>,
    /// Directory for the backing files and state (default /var/lib/rthinctl/NAME).
    #[arg(long, conflicts_with_all = ["data_dev", "metadata_dev"])]
    dir: Option<PathBuf>,
    /// Block device for data (instead of files).
    #[arg(long, requires = "metadata_dev")]
    data_dev: Option<PathBuf>,
    /// Block device for metadata (instead of files); its first 4K is zeroed.
    #[arg(long, requires = "data_dev")]
    metadata_dev: Option<PathBuf>,
    /// Data block size: 64K..1G, a multiple of 64K.
    #[arg(long, default_value = "64K", value_parser = clap_block_size)]
    block_size: u64,
    /// Free data blocks at which the kernel raises an event.
    #[arg(long, default_value_t = 0)]
    low_water_mark: u64,
    /// Do not zero newly provisioned blocks (faster; old data on the device shows through).
    #[arg(long)]
    no_zeroing: bool,
    /// Fail writes at once when out of data space (default: queue for 60 s).
    #[arg(long)]
    error_if_no_space: bool,
    /// rthin: dm-rthin's rthin-pool/rthin; thin: the kernel's C thin-pool/thin.
    #[arg(long, value_enum, default_value = "rthin")]
    target: Target,
}

#[derive(Subcommand)]
enum ThinCmd {
    /// Create a thin volume (/dev/mapper/NAME).
    Create {
        name: String,
        /// Virtual size, e.g. 1G.
        #[arg(long, value_parser = clap_bytes)]
        size: u64,
        /// Pool (needed when there are several).
        #[arg(long)]
        pool: Option<String>,
        /// Do not activate it.
        #[arg(long)]
        inactive: bool,
    },
    /// Snapshot a volume (an active origin is suspended around it, as dm-thin asks).
    Snapshot {
        name: String,
        /// The volume to snapshot.
        #[arg(long)]
        from: String,
        /// Virtual size (default: the origin's).
        #[arg(long, value_parser = clap_bytes)]
        size: Option<u64>,
        /// Do not activate it.
        #[arg(long)]
        inactive: bool,
    },
    /// Load a volume's table (/dev/mapper/NAME appears).
    Activate {
        name: String,
        #[arg(long)]
        pool: Option<String>,
    },
    /// Remove a volume's device (its data stays in the pool).
    Deactivate {
        name: String,
        #[arg(long)]
        pool: Option<String>,
    },
    /// Delete a volume and its data (snapshots of it keep theirs).
    Delete {
        name: String,
        #[arg(long)]
        pool: Option<String>,
    },
    /// Volumes with size, mapped, exclusive and shared blocks, highest mapped block, origin.
    List {
        #[arg(long)]
        pool: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn sys(cli_dry: bool, explain: bool) -> Sys {
    Sys::new(if cli_dry {
        Mode::DryRun
    } else if explain {
        Mode::Explain
    } else {
        Mode::Quiet
    })
}

fn run_pool(s: &mut Sys, c: PoolCmd) -> Result<()> {
    match c {
        PoolCmd::Create(a) => {
            let backing = match (a.data_dev, a.metadata_dev) {
                (Some(data), Some(metadata)) => Backing::Devices { metadata, data },
                _ => Backing::Files(a.dir),
            };
            pool::create(
                s,
                CreateArgs {
                    name: a.name,
                    data_size: a.data_size,
                    metadata_size: a.metadata_size,
                    backing,
                    block_sectors: a.block_size,
                    low_water_mark: a.low_water_mark,
                    zeroing: !a.no_zeroing,
                    error_if_no_space: a.error_if_no_space,
                    target: a.target,
                },
            )
        }
        PoolCmd::Status { name, json } => pool::status(s, name.as_deref(), json),
        PoolCmd::List { json } => pool::list(s, json),
        PoolCmd::Activate { name, dir } => pool::activate(s, &name, dir.as_deref()),
        PoolCmd::Deactivate { name } => pool::deactivate(s, &name),
        PoolCmd::Extend {
            name,
            data_size,
            metadata_size,
        } => pool::extend(s, &name, data_size, metadata_size),
        PoolCmd::Remove { name, keep_files } => pool::remove(s, &name, keep_files),
        PoolCmd::Monitor {
            name,
            autoextend_threshold,
            autoextend_percent,
            interval,
            max_extends,
        } => monitor::run(
            s,
            &name,
            &monitor::Settings {
                threshold: autoextend_threshold,
                percent: autoextend_percent,
                interval: Duration::from_secs(interval.max(1)),
                max_extends,
            },
        ),
    }
}

fn run_thin(s: &mut Sys, c: ThinCmd) -> Result<()> {
    match c {
        ThinCmd::Create {
            name,
            size,
            pool,
            inactive,
        } => thin::create(s, &name, size, pool.as_deref(), !inactive),
        ThinCmd::Snapshot {
            name,
            from,
            size,
            inactive,
        } => thin::snapshot(s, &name, &from, size, !inactive),
        ThinCmd::Activate { name, pool } => thin::activate(s, &name, pool.as_deref()),
        ThinCmd::Deactivate { name, pool } => thin::deactivate(s, &name, pool.as_deref()),
        ThinCmd::Delete { name, pool } => thin::delete(s, &name, pool.as_deref()),
        ThinCmd::List { pool, json } => listing::list(s, pool.as_deref(), json),
    }
}

fn run_offline(c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Check { image, quiet } => {
            let bm = rthin_metadata_file::open_file(&image, false)
                .with_context(|| format!("opening {}", image.display()))?;
            let r = rthinctl::check::check(&bm);
            if !quiet {
                for e in &r.errors {
                    eprintln!("error: {e}");
                }
                println!("TRANSACTION_ID={}", r.transaction_id);
                println!("METADATA_FREE_BLOCKS={}", r.metadata_free_blocks);
                println!("DEVICES={} MAPPINGS={}", r.devices, r.mappings);
            }
            Ok(if r.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Dump {
            image,
            output,
            metadata_snap,
        } => {
            let bm = rthin_metadata_file::open_file(&image, false)
                .with_context(|| format!("opening {}", image.display()))?;
            match output {
                Some(p) => {
                    let mut w = BufWriter::new(File::create(&p)?);
                    rthinctl::dump::dump(&bm, metadata_snap, &mut w)?;
                    w.flush()?;
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut w = BufWriter::new(stdout.lock());
                    rthinctl::dump::dump(&bm, metadata_snap, &mut w)?;
                    w.flush()?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { input, output } => {
            let xml = std::io::BufReader::with_capacity(
                1 << 16,
                File::open(&input).with_context(|| format!("reading {}", input.display()))?,
            );
            let bm = rthin_metadata_file::open_file(&output, true)
                .with_context(|| format!("opening {}", output.display()))?;
            rthinctl::restore::restore_from(xml, bm)
                .with_context(|| format!("restoring {}", input.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls {
            image,
            format,
            fields,
            no_headers,
        } => {
            let bm = rthin_metadata_file::open_file(&image, false)
                .with_context(|| format!("opening {}", image.display()))?;
            if let LsFormat::ThinLs = format {
                let sb = rthinctl::raw::live_superblock(&bm)?;
                let usage = rthinctl::usage::usage(&bm, 0)?;
                let fields = thin_ls::parse_fields(fields.as_deref())?;
                print!(
                    "{}",
                    thin_ls::render(&usage, sb.data_block_size as u64, &fields, !no_headers)
                );
                return Ok(ExitCode::SUCCESS);
            }
            let mut pool = Pool::open(bm, None, false)?;
            let rows = rthinctl::ls::ls(&mut pool)?;
            println!(
                "{:>8} {:>12} {:>12} {:>12} {:>11} {:>9}",
                "DEV", "MAPPED", "EXCLUSIVE", "SHARED", "CREATE_TIME", "SNAP_TIME"
            );
            for r in rows {
                println!(
                    "{:>8} {:>12} {:>12} {:>12} {:>11} {:>9}",
                    r.dev,
                    r.mapped,
                    r.exclusive,
                    r.shared,
                    r.details.creation_time,
                    r.details.snapshotted_time
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pool(_) | Command::Thin(_) => unreachable!("handled by run"),
    }
}

fn run(cli: Cli) -> ExitCode {
    let mut s = sys(cli.dry_run, cli.explain);
    // The monitor runs for days: it takes the lock only around each change it makes.
    let needs_lock = !cli.dry_run
        && matches!(&cli.command, Command::Pool(_) | Command::Thin(_))
        && !matches!(&cli.command, Command::Pool(PoolCmd::Monitor { .. }));
    let _lock = if needs_lock {
        match rthinctl::lock::hold() {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("rthinctl: {e}");
                return ExitCode::from(e.exit_code());
            }
        }
    } else {
        None
    };
    let r: Result<()> = match cli.command {
        Command::Pool(c) => run_pool(&mut s, c),
        Command::Thin(c) => run_thin(&mut s, c),
        other => {
            return match run_offline(other) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("rthinctl: {e:#}");
                    ExitCode::from(exit::USAGE)
                }
            }
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                Error::Other(inner) => eprintln!("rthinctl: {inner:#}"),
                _ => eprintln!("rthinctl: {e}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// clap's usage errors on one line (the README's promise), keeping help and version output.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let line: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let line = line.join(" ");
    eprintln!(
        "rthinctl: {} (see --help)",
        line.strip_prefix("error: ").unwrap_or(&line)
    );
    ExitCode::from(exit::USAGE)
}

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => run(cli),
        Err(e) => usage_error(e),
    }
}
