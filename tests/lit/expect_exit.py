#!/usr/bin/env python3
"""Run a command and check its exit code: expect_exit.py N cmd [args...].

lit's `not` only tells zero from non-zero; the CLI promises exit code 2 for
bad input, so the tests check the exact code. Output passes through.
"""
import subprocess
import sys

expected = int(sys.argv[1])
code = subprocess.call(sys.argv[2:])
if code != expected:
    sys.stderr.write("expect_exit: '%s' exited with %d, expected %d\n"
                     % (" ".join(sys.argv[2:]), code, expected))
    sys.exit(1)
