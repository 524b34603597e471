#!/usr/bin/env bash
# site_sync throughput (docs/benchmarks.md, "Site sync"): two sites on one
# machine (tests/hub_sites.rs's rig: btrfs subvolumes in mount namespaces,
# a directory endpoint, the hub over REST), the first sync of a tree and
# the sync after 10 % of its files were rewritten, each against
# `rsync -aHAX` of the same tree in the same run. Prints one JSON line.
#
#   scripts/bench-site-sync.sh
#   FERRY_BENCH_FILES=1000 FERRY_BENCH_KB=256 scripts/bench-site-sync.sh
# The rig's btrfs image is 1 GiB and holds A, B and rsync's copy: keep
# files x size x 3 well under it (20,000 files of 8 KiB ran out of room).
#
# Needs root, RabbitMQ (scripts/rabbitmq-up) and btrfs-progs.
set -euo pipefail
cd "$(dirname "$0")/.."
CI=true cargo test --release --test hub_sites site_sync_throughput -- --ignored --nocapture 2>&1 |
  grep '^{"files"'
