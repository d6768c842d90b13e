#!/usr/bin/env python3
"""Check that a failing `moegen run` failed cleanly.

    expect_run_error.py DIR MESSAGE -- CMD [ARGS...]

Runs CMD and fails unless it exits with code 2, prints nothing on stdout
and exactly one line on stderr containing MESSAGE, and leaves DIR as it was:
absent if it was absent, else with the same files, sizes and times.
"""
import os
import subprocess
import sys


def snapshot(directory):
    if not os.path.lexists(directory):
        return None
    entries = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            entries[os.path.relpath(path, directory)] = (info.st_size,
                                                         info.st_mtime_ns)
    return entries


def main():
    directory, message, separator = sys.argv[1:4]
    assert separator == "--", "usage: expect_run_error.py DIR MESSAGE -- CMD"
    command = sys.argv[4:]
    before = snapshot(directory)
    result = subprocess.run(command, capture_output=True, text=True)
    sys.stderr.write(result.stderr)
    problems = []
    if result.returncode != 2:
        problems.append("exit code %d, expected 2" % result.returncode)
    if result.stdout:
        problems.append("unexpected stdout: %r" % result.stdout)
    lines = result.stderr.splitlines()
    if len(lines) != 1:
        problems.append("%d lines on stderr, expected 1" % len(lines))
    if message not in result.stderr:
        problems.append("stderr lacks %r" % message)
    after = snapshot(directory)
    if after != before:
        problems.append("%s changed: %s -> %s" % (directory, before, after))
    for problem in problems:
        sys.stderr.write("expect_run_error: %s\n" % problem)
    sys.exit(1 if problems else 0)


main()
