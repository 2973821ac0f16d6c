"""Step 0: raw per-frame pose files of the public data sets -> pose sequences (pkl tree + Parquet).

formats.py parses one file per format and detects the format; layout.py groups files into
sequences `<id>/<type>/<view>`; tracking.py picks the walking subject when a frame holds several
people; shards.py turns a shard of sequences into its outputs.  No Ray here: the Ray Data job is
`ray_gait.ray_layer.ingest_job`.
"""
