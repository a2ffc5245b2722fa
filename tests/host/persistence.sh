#!/bin/bash
# Host test: a pool made by rthin-pool survives guest boots on the same disks, a crash with the
# pool active included (three boots; see tests/guest/datapath/host-persistence.sh).
exec "$(dirname "$0")/../guest/datapath/host-persistence.sh" "$@"
