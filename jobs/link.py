"""Step 2 as a Ray job: `ray job submit --working-dir . -- python jobs/link.py --heatmap_data_path ...`."""
from _entry import run

if __name__ == "__main__":
    run("link")
