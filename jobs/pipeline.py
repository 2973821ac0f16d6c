"""`ray-gait pipeline` as a Ray job: `ray job submit --working-dir . -- python jobs/pipeline.py ...`."""
from _entry import run

if __name__ == "__main__":
    run("pipeline")
