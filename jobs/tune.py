"""`ray-gait tune` as a Ray job: `ray job submit --working-dir . -- python jobs/tune.py ...`."""
from _entry import run

if __name__ == "__main__":
    run("tune")
