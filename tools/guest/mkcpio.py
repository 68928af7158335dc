#!/usr/bin/env python3
"""Writes a cpio archive in the kernel's initramfs format ("newc") from a directory, without
root: every entry belongs to uid/gid 0, and device nodes are added from the command line
instead of the file system (mknod needs root).

  mkcpio.py ROOT OUT [--node PATH:c|b:MAJOR:MINOR:MODE ...]

Entries are sorted and timestamped with $SOURCE_DATE_EPOCH (default 0), so the same inputs
give the same bytes.
"""
import os
import stat
import sys


def header(ino, mode, nlink, mtime, size, rmajor, rminor, name):
    fields = [ino, mode, 0, 0, nlink, mtime, size, 0, 0, rmajor, rminor, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def pad(n):
    return b"\0" * ((4 - n % 4) % 4)


def entry(out, ino, mode, nlink, mtime, name, data=b"", rdev=(0, 0)):
    name_b = name.encode()
    h = header(ino, mode, nlink, mtime, len(data), rdev[0], rdev[1], name_b) + name_b + b"\0"
    out.write(h + pad(len(h)) + data + pad(len(data)))


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    root, out_path, rest = argv[1], argv[2], argv[3:]
    nodes = []
    while rest:
        if rest[0] != "--node" or len(rest) < 2:
            sys.exit("mkcpio.py: unexpected argument %r" % rest[0])
        path, kind, major, minor, mode = rest[1].split(":")
        nodes.append((path.strip("/"), kind, int(major), int(minor), int(mode, 8)))
        rest = rest[2:]
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in dirnames + sorted(filenames):
            paths.append(os.path.relpath(os.path.join(dirpath, n), root))
    ino = 1
    with open(out_path, "wb") as out:
        for rel in sorted(paths):
            full = os.path.join(root, rel)
            st = os.lstat(full)
            perm = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                entry(out, ino, stat.S_IFDIR | perm, 2, mtime, rel)
            elif stat.S_ISLNK(st.st_mode):
                entry(out, ino, stat.S_IFLNK | 0o777, 1, mtime, rel, os.readlink(full).encode())
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    entry(out, ino, stat.S_IFREG | perm, 1, mtime, rel, f.read())
            else:
                sys.exit("mkcpio.py: %s is not a file, directory or symlink" % full)
            ino += 1
        for path, kind, major, minor, mode in nodes:
            ftype = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
            entry(out, ino, ftype | mode, 1, mtime, path, rdev=(major, minor))
            ino += 1
        entry(out, 0, 0, 1, 0, "TRAILER!!!")


if __name__ == "__main__":
    main(sys.argv)
