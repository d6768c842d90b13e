"""What moegen.Router.route costs per call beyond the kernels (docs/benchmarks.md,
"The Python package's cost per call"): DeepSeek-V3 route only, torch tensors
and NumPy arrays, median of repeated calls. Compare with
`moegen bench templates/deepseek-v3.yaml --tokens 64,4096,65536` run in the
same minute.

    PYTHONPATH=build/python python3 tests/bench/python_overhead.py
"""
import time

import moegen
import torch

r = moegen.Router("templates/deepseek-v3.yaml")
for t in (64, 4096, 65536):
    torch.manual_seed(0)
    x, b = torch.randn(t, 256), torch.randn(256) * 0.1
    xn, bn = x.numpy(), b.numpy()
    for name, args in (("torch", (x, b)), ("numpy", (xn, bn))):
        for _ in range(5): r.route(*args, dispatch=False)
        reps = 200 if t < 65536 else 30
        ts = []
        for _ in range(reps):
            s = time.perf_counter(); r.route(*args, dispatch=False); ts.append(time.perf_counter() - s)
        ts.sort()
        print(f"T={t:6d} {name}: median {ts[len(ts)//2]*1e6:9.2f} us  p10 {ts[len(ts)//10]*1e6:9.2f}  p90 {ts[len(ts)*9//10]*1e6:9.2f}")
