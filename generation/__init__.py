"""Model backends, prompting, decoding and live streaming."""
import os

# libgomp threads spin while they wait for work. With generation in a worker thread beside the UI
# thread, and other processes on the same 2 cores, spinning made decoding 1.5x-30x slower here;
# passive waiting restored it (bench/bench_streaming.py). It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
