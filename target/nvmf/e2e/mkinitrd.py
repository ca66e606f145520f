#!/usr/bin/env python3
"""Writes a newc cpio archive (an initramfs) of the directory given as argv[1] to argv[2]."""
import os
import stat
import sys


def pad(n):
    return b"\0" * ((4 - n % 4) % 4)


def header(ino, mode, size, name):
    fields = (ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0)
    return ("070701" + "".join("%08x" % f for f in fields)).encode()


def main():
    root, dest = sys.argv[1], sys.argv[2]
    with open(dest, "wb") as out:
        ino = 1
        for d, dirs, files in os.walk(root):
            dirs.sort()
            for entry in sorted(dirs) + sorted(files):
                path = os.path.join(d, entry)
                name = os.path.relpath(path, root)
                st = os.lstat(path)
                data = open(path, "rb").read() if stat.S_ISREG(st.st_mode) else b""
                out.write(header(ino, st.st_mode, len(data), name) + name.encode() + b"\0")
                out.write(pad(110 + len(name) + 1))
                out.write(data)
                out.write(pad(len(data)))
                ino += 1
        name = "TRAILER!!!"
        out.write(header(0, 0, 0, name) + name.encode() + b"\0")
        out.write(pad(110 + len(name) + 1))


main()
