#!/usr/bin/env bash
# site_sync throughput (docs/benchmarks.md, "Site sync"): two sites on one
# machine (tests/hub_sites.rs's rig: btrfs subvolumes in mount namespaces,
# a directory endpoint, the hub over REST), the first sync of a tree and
# the sync after 10 % of its files were rewritten, each against
# `rsync -aHAX` of the same tree in the same run. Prints one JSON line.
#
#   scripts/bench-site-sync.sh
#   FERRY_BENCH_FILES=1000 FERRY_BENCH_KB=256 scripts/bench-site-sync.sh
#   FERRY_BENCH_ROUNDS=5 ...   # five rewrite-and-sync rounds after one first sync
#   # 1 GiB in 4 files:
#   FERRY_BENCH_FILES=4 FERRY_BENCH_KB=262144 FERRY_BENCH_FS_MB=4096 scripts/bench-site-sync.sh
#   # 1 % of 200,000 files changed:
#   FERRY_BENCH_FILES=200000 FERRY_BENCH_KB=1 FERRY_BENCH_DIRS=2000 FERRY_BENCH_PERCENT=1 \
#     FERRY_BENCH_FS_MB=8192 scripts/bench-site-sync.sh
# Sites A and B are on two btrfs images (FERRY_BENCH_FS_MB each, 1 GiB by
# default; FERRY_BENCH_ONE_FS=1 puts both on one); B's also holds rsync's
# copy: keep files x size x 2 well under it. The directory endpoint is on
# an ext4 image of its own of the same size (FERRY_BENCH_EP_ON_ROOT=1 puts
# it on the host's filesystem, beside the hub's database and the broker's
# queues, which each of its flushes then writes too; 2026-12-07,
# docs/benchmarks.md). FERRY_BENCH_BATCH=N fixes the
# site's batch size (no dynamic sizing); FERRY_BENCH_BATCHES=dyn,100 sets
# it for each round in turn (dyn: the default dynamic sizing), so that two
# sizings compare in one run. ferry's time is each job's own
# span at the hub (created to completed); each timed run, ferry's or
# rsync's, starts after a `sync`.
#
# Needs root, RabbitMQ (scripts/rabbitmq-up) and btrfs-progs.
set -euo pipefail
cd "$(dirname "$0")/.."
CI=true cargo test --release --test hub_sites site_sync_throughput -- --ignored --nocapture 2>&1 |
  grep '^{"files"'
