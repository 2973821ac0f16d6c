"""`ray-gait demo` as a Ray job: `ray job submit --working-dir . -- python jobs/demo.py --out DIR`."""
from _entry import run

if __name__ == "__main__":
    run("demo")
