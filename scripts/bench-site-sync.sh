#!/usr/bin/env bash
# site_sync throughput (docs/benchmarks.md, "Site sync"): two sites on one
# machine (tests/hub_sites.rs's rig: btrfs subvolumes in mount namespaces,
# a directory endpoint, the hub over REST), the first sync of a tree and
# the sync after 10 % of its files were rewritten, each against
# `rsync -aHAX` of the same tree in the same run. Prints one JSON line.
#
#   scripts/bench-site-sync.sh
#   FERRY_BENCH_FILES=20000 FERRY_BENCH_KB=16 scripts/bench-site-sync.sh
#
# Needs root, RabbitMQ (scripts/rabbitmq-up) and btrfs-progs.
set -euo pipefail
cd "$(dirname "$0")/.."
CI=true cargo test --release --test hub_sites site_sync_throughput -- --ignored --nocapture 2>&1 |
  grep '^{"files"'
