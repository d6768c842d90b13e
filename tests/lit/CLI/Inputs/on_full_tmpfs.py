#!/usr/bin/env python3
"""Run a command against a full file system.

    on_full_tmpfs.py DIR FILE -- CMD [ARGS...]

Mounts an 8 KiB tmpfs on DIR (created if missing), writes "previous" into
DIR/FILE, fills the rest with DIR/filler, runs CMD, and fails unless CMD
succeeds and DIR/FILE still holds "previous". The tmpfs is unmounted
whatever happens. Needs the lit feature `tmpfs-mount`.
"""
import errno
import os
import subprocess
import sys


def main():
    directory, name, separator = sys.argv[1:4]
    assert separator == "--", "usage: on_full_tmpfs.py DIR FILE -- CMD"
    os.makedirs(directory, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs",
                    directory], check=True)
    try:
        previous = os.path.join(directory, name)
        with open(previous, "w") as f:
            f.write("previous\n")
        try:
            with open(os.path.join(directory, "filler"), "wb") as f:
                while True:
                    f.write(b"\0" * 1024)
                    f.flush()
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        code = subprocess.call(sys.argv[4:])
        with open(previous) as f:
            text = f.read()
        if text != "previous\n":
            sys.stderr.write("on_full_tmpfs: %s changed to %r\n" %
                             (previous, text[:80]))
            code = code or 1
    finally:
        subprocess.run(["umount", directory], check=True)
    sys.exit(code)


main()
