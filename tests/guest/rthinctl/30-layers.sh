#!/bin/bash
# shellcheck disable=SC2015 # `a && pass || fail` on purpose (pass cannot fail)
# Docker-style image layers with rthinctl (the README's recipe), on both target families: a
# base volume with ext4, a chain of LAYERS (100) image layers, each a snapshot of its parent
# with one file of its own added, and two container snapshots of the top layer. The C
# reference target gets a shorter chain, LAYERS_C (25): under TCG each layer costs ~1.7 s of
# guest time, and the long chain is what dm-rthin must prove. Every layer
# must see exactly its ancestors' files and its own; containers see the image plus only their
# own changes.
# shellcheck source=lib.sh
. "${RTHIN_TESTS:-/rthin/tests}/guest/rthinctl/lib.sh"

LAYERS=${LAYERS:-100}
LAYERS_C=${LAYERS_C:-25}
mnt=$RC_WORK/mnt

# files_in DIR: the file names in DIR, sorted, on one line.
files_in() {
  local f
  for f in "$1"/*; do
    [ -f "$f" ] && echo "${f##*/}"
  done | sort | tr '\n' ' '
}

layers() {
  local t=$1 i parent want got bad=
  local LAYERS=$LAYERS
  [ "$t" = thin ] && LAYERS=$LAYERS_C
  rc_reset
  mkdir -p "$mnt"
  rthinctl pool create images --data-size 1G --dir "$RC_WORK/files" --target "$t" >/dev/null &&
    rthinctl thin create base --size 64M >/dev/null &&
    mkfs.ext4 -q /dev/mapper/base && mount /dev/mapper/base "$mnt" &&
    echo base >"$mnt/base" && umount "$mnt" || { fail "layers-base-$t" "set-up failed"; return; }
  pass "layers-base-$t"
  parent=base
  for i in $(seq 1 "$LAYERS"); do
    if ! rthinctl thin snapshot "layer$i" --from "$parent" >/dev/null ||
      ! mount /dev/mapper/"layer$i" "$mnt" || ! echo "$i" >"$mnt/layer$i" || ! umount "$mnt"; then
      fail "layers-build-$t" "layer $i failed"
      return
    fi
    parent=layer$i
  done
  pass "layers-build-$LAYERS-$t"
  for c in c1 c2; do
    rthinctl thin snapshot "$c" --from "layer$LAYERS" >/dev/null && mount /dev/mapper/"$c" "$mnt" &&
      echo "$c" >"$mnt/$c" && rm "$mnt/base" && umount "$mnt" || { fail "layers-containers-$t" "$c failed"; return; }
  done
  # Each layer: base + layer1..layerI, nothing more.
  want=base
  for i in $(seq 1 "$LAYERS"); do
    want="$want layer$i"
    mount -o ro,noload /dev/mapper/"layer$i" "$mnt" || { bad="$bad layer$i:mount"; continue; }
    got=$(files_in "$mnt")
    [ "$got" = "$(echo "$want" | tr ' ' '\n' | sort | tr '\n' ' ')" ] || bad="$bad layer$i:[$got]"
    [ "$(cat "$mnt/layer$i")" = "$i" ] || bad="$bad layer$i:content"
    umount "$mnt"
  done
  [ -z "$bad" ] && pass "layers-see-their-ancestors-$t" || fail "layers-see-their-ancestors-$t" "$bad"
  for c in c1 c2; do
    mount -o ro,noload /dev/mapper/"$c" "$mnt"
    got=$(files_in "$mnt")
    umount "$mnt"
    [ "$got" = "$(echo "$want $c" | tr ' ' '\n' | grep -vx base | sort | tr '\n' ' ')" ] ||
      bad="$bad $c:[$got]"
  done
  [ -z "$bad" ] && pass "layers-containers-$t" || fail "layers-containers-$t" "$bad"
  [ "$(vol_field "layer$LAYERS" origin)" = "layer$((LAYERS - 1))" ] && [ "$(vol_field c2 origin)" = "layer$LAYERS" ] &&
    e2fsck -fn /dev/mapper/c1 >/dev/null 2>&1 && pass "layers-listed-$t" ||
    fail "layers-listed-$t" "origin of layer$LAYERS: $(vol_field "layer$LAYERS" origin)"
  rthinctl pool remove images >/dev/null || fail "layers-remove-$t" "pool remove failed"
}

for t in $TARGETS; do
  layers "$t"
done
rc_reset
finish
