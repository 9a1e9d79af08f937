#!/usr/bin/env python3
"""Makes DEST an exact copy of the repository's files, for .ci/run.

usage: copy.py REPO DEST

The files are the ones git lists in REPO (tracked, and untracked but not ignored), as they
are in the work tree; symlinks stay symlinks. DEST ends up holding exactly those files:
anything else in it is deleted.

DEST is kept from one run to the next, and a file whose content, mode and kind are already
right is left alone, so its modification time stays old; a file written now gets a new
one. Cargo decides what to rebuild from modification times: copying every file anew would
rebuild the whole workspace on every run, and restoring the work tree's times (tar, cp -p)
could give a changed file an older time than the last build, which cargo would not rebuild.
"""
import os
import stat
import subprocess
import sys


def listed(repo):
    out = subprocess.run(
        ["git", "-C", repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, stdout=subprocess.PIPE).stdout
    names = set()
    for name in out.decode("utf-8", "surrogateescape").split("\0"):
        if name and os.path.lexists(os.path.join(repo, name)):
            names.add(name)
    return names


def same(src, dst):
    """True if dst already is what copying src would make."""
    if not os.path.lexists(dst):
        return False
    s, d = os.lstat(src), os.lstat(dst)
    if stat.S_IFMT(s.st_mode) != stat.S_IFMT(d.st_mode):
        return False
    if stat.S_ISLNK(s.st_mode):
        return os.readlink(src) == os.readlink(dst)
    if stat.S_IMODE(s.st_mode) != stat.S_IMODE(d.st_mode) or s.st_size != d.st_size:
        return False
    with open(src, "rb") as a, open(dst, "rb") as b:
        return a.read() == b.read()


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        for entry in os.listdir(path):
            remove(os.path.join(path, entry))
        os.rmdir(path)
    else:
        os.unlink(path)


def main():
    if len(sys.argv) != 3:
        print("usage: copy.py REPO DEST", file=sys.stderr)
        return 2
    repo, dest = sys.argv[1], sys.argv[2]
    names = listed(repo)
    dirs = {""}
    for name in names:
        parent = os.path.dirname(name)
        while parent not in dirs:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    # Delete what is not listed (deepest first), and what is in the way of a listed file.
    for root, subdirs, files in os.walk(dest, topdown=False):
        rel = os.path.relpath(root, dest)
        rel = "" if rel == "." else rel
        for entry in files + subdirs:
            name = os.path.join(rel, entry)
            path = os.path.join(dest, name)
            if name in names:
                continue
            if name in dirs and os.path.isdir(path) and not os.path.islink(path):
                continue
            remove(path)
    written = 0
    for name in sorted(names):
        src, dst = os.path.join(repo, name), os.path.join(dest, name)
        if same(src, dst):
            continue
        if os.path.lexists(dst):
            remove(dst)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        else:
            with open(src, "rb") as a, open(dst, "wb") as b:
                b.write(a.read())
            os.chmod(dst, stat.S_IMODE(os.lstat(src).st_mode))
        written += 1
    print(f"copy: {len(names)} files in {dest}, {written} written anew")
    return 0


if __name__ == "__main__":
    sys.exit(main())
