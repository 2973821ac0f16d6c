"""Step 1 as a Ray job: `ray job submit --working-dir . -- python jobs/heatmap.py --pose_data_path ...`."""
from _entry import run

if __name__ == "__main__":
    run("heatmap")
