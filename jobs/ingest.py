"""Step 0 as a Ray job: `ray job submit --working-dir . -- python jobs/ingest.py --input_path ...`."""
from _entry import run

if __name__ == "__main__":
    run("ingest")
