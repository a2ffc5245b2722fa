#!/usr/bin/env bash
# Seed corpus for the open_and_walk fuzz target: small valid metadata images (64 blocks) built
# with `rthinctl restore`, so the fuzzer starts from real structures instead of noise.
#   make-corpus.sh [OUTDIR]     (default: corpus/open_and_walk beside this script)
# Uses the release rthinctl ($CARGO_TARGET_DIR/release, built if needed: the one make check and
# the guest use, so no second build of the workspace).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus/open_and_walk}
mkdir -p "$out"
cd "$here/.."
cargo build -q --release --locked -p rthinctl
rthinctl=${CARGO_TARGET_DIR:-$here/../target}/release/rthinctl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  echo '<superblock uuid="" time="2" transaction="3" version="2" data_block_size="128" nr_data_blocks="2000">'
  echo '  <device dev_id="1" mapped_blocks="300" transaction="0" creation_time="0" snap_time="1">'
  echo '    <range_mapping origin_begin="0" data_begin="0" length="300" time="0"/>'
  echo '  </device>'
  echo '  <device dev_id="2" mapped_blocks="3" transaction="1" creation_time="1" snap_time="2">'
  echo '    <range_mapping origin_begin="5" data_begin="400" length="3" time="1"/>'
  echo '  </device>'
  echo '</superblock>'
} > "$tmp/a.xml"
printf '<superblock uuid="" time="0" transaction="0" version="2" data_block_size="128" nr_data_blocks="10">\n</superblock>' > "$tmp/b.xml"
for x in a b; do
  truncate -s $((64 * 4096)) "$out/$x.img"
  "$rthinctl" restore -i "$tmp/$x.xml" -o "$out/$x.img"
done
echo "corpus in $out"
