//! `rthinctl`: dm-rthin userspace tool.
//!
//! Metadata subcommands work on an image or an inactive metadata device.  Pool and volume
//! lifecycle subcommands are added as further variants of [`Command`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rthin_metadata::Pool;

#[derive(Parser)]
#[command(name = "rthinctl", version, about = "dm-rthin thin-provisioning tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check metadata structure and reference counts.
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
    },
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
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
            let xml = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let bm = rthin_metadata_file::open_file(&output, true)
                .with_context(|| format!("opening {}", output.display()))?;
            rthinctl::restore::restore(&xml, bm)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { image } => {
            let bm = rthin_metadata_file::open_file(&image, false)
                .with_context(|| format!("opening {}", image.display()))?;
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
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rthinctl: {e:#}");
            ExitCode::from(2)
        }
    }
}
