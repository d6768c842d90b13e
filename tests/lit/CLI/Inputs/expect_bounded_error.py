#!/usr/bin/env python3
"""Check that moegen refuses endless or huge input cleanly and boundedly.

    expect_bounded_error.py [--feed FILE] [--zeros] DIR MESSAGE -- CMD [ARGS...]

Runs CMD with its address space limited (so reading an endless stream to
its end fails the check by crashing, not by exhausting the machine) and a
time limit. Under a sanitizer build (MOEGEN_SANITIZED=1), whose shadow
memory needs a vast address space, AddressSanitizer's resident-memory
limit stands in for the address-space limit. With --feed, CMD's standard input is a pipe carrying FILE and
then zero bytes without end; with --zeros, only the zeros. Fails unless CMD
exits with code 2, prints nothing on stdout and exactly one line on stderr
containing MESSAGE, and leaves DIR absent.
"""
import os
import resource
import subprocess
import sys
import threading

MEMORY_LIMIT = 4 << 30
TIME_LIMIT_S = 120


SANITIZED = os.environ.get("MOEGEN_SANITIZED") == "1"


def limit():
    if not SANITIZED:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def environment():
    env = dict(os.environ)
    if SANITIZED:
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") +
                               ":hard_rss_limit_mb=%d" % (MEMORY_LIMIT >> 20))
    return env


def feed(pipe, prefix):
    zeros = bytes(1 << 16)
    try:
        pipe.write(prefix)
        while True:
            pipe.write(zeros)
    except (BrokenPipeError, OSError, ValueError):
        pass


def main():
    args = sys.argv[1:]
    prefix = None
    while args and args[0].startswith("--") and args[0] != "--":
        if args[0] == "--feed":
            with open(args[1], "rb") as f:
                prefix = f.read()
            args = args[2:]
        elif args[0] == "--zeros":
            prefix = b""
            args = args[1:]
        else:
            sys.exit("expect_bounded_error: unknown option %s" % args[0])
    directory, message, separator = args[:3]
    assert separator == "--", "usage: see the docstring"
    command = args[3:]
    stdin = subprocess.DEVNULL
    if prefix is not None:
        read_end, write_end = os.pipe()
        stdin = read_end
    process = subprocess.Popen(command, preexec_fn=limit, stdin=stdin,
                               env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    if prefix is not None:
        os.close(read_end)
        threading.Thread(target=feed, args=(os.fdopen(write_end, "wb"), prefix),
                         daemon=True).start()
    problems = []
    try:
        stdout, stderr = process.communicate(timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        problems.append("still running after %d s" % TIME_LIMIT_S)
    stderr = stderr.decode(errors="replace")
    sys.stderr.write(stderr)
    if process.returncode != 2:
        problems.append("exit code %d, expected 2" % process.returncode)
    if stdout:
        problems.append("unexpected stdout: %r" % stdout[:200])
    lines = stderr.splitlines()
    if len(lines) != 1:
        problems.append("%d lines on stderr, expected 1" % len(lines))
    if message not in stderr:
        problems.append("stderr lacks %r" % message)
    if os.path.lexists(directory):
        problems.append("%s was created" % directory)
    for problem in problems:
        sys.stderr.write("expect_bounded_error: %s\n" % problem)
    sys.exit(1 if problems else 0)


main()
