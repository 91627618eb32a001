"""benchkit: the code of scripts/bench, one concern per module (the entry point keeps the CLI
and the user-facing reference: cases, readers, rows, targets, JSON keys).

  common        units, logging, child processes under deadlines, the page cache, /proc
  cluster       the benchmark's AIStore cluster; host and version facts for the JSON
  datasets      buckets of a known shape, built once and reused; a copy of one on tmpfs
  peers         the comparator interface and the catalogue (all_peers)
  fuse_peers    rclone mount and s3fs-fuse over AIStore's S3 API
  client_peers  the SDK's GetBatch, 16 SDK GETs, curl per object, GetBatch by curl (wire)
  selftest      `scripts/bench_peers.py`: every peer reads exactly the bytes put
  systems       what a row measures: our daemon, a tmpfs copy, a peer
  trials        a row and one trial of it: mount, mark, measure, counters, unmount
  measures      how a mount is read (the reader programs are files in readers/)
  cases         which rows each case has
  disk          P5-disk: the daemon's disk cache over three epochs and a remount, beside rclone's
                VFS cache; its systems, run loop, per-epoch figures, targets and epoch table
  fleet         F8: 8 mounts on a 2-target cluster of its own, a fault proxy per mount, bursts,
                its run loop, targets and per-mount table
  targets       the targets, computed from the rows' medians
  report        row summaries, the printed tables, the JSON document
  runner        Bench: runs the selected cases and writes the results
"""
