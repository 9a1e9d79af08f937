#!/usr/bin/env python3
"""Checks the workspace's manifests for publishing, from `cargo metadata`.

For every crate that is published (no `publish = false`):
  * the metadata crates.io shows is there (description, license, repository, readme,
    keywords, categories, rust-version) and the license texts sit beside Cargo.toml;
  * no dependency it builds with (normal and build dependencies, transitively, as locked
    in Cargo.lock) declares a `rust-version` above the crate's own: clippy's
    `incompatible_msrv` checks our code against rust-version, this checks what we pull in.

`--published` prints the published crates' names, one a line, and checks nothing.
Exit 1 with one line per problem.
"""
import json
import os
import subprocess
import sys

FIELDS = ["description", "license", "repository", "readme", "keywords", "categories",
          "rust_version"]
LICENSES = ["LICENSE-MIT", "LICENSE-APACHE"]


def version(v):
    return tuple(int(x) for x in v.split(".")) + (0,) * (3 - len(v.split(".")))


def main():
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True, stdout=subprocess.PIPE).stdout)
    packages = {p["id"]: p for p in meta["packages"]}
    members = [packages[i] for i in meta["workspace_members"]]
    published = [p for p in members if p["publish"] != []]
    if sys.argv[1:] == ["--published"]:
        for p in published:
            print(p["name"])
        return 0
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    problems = []
    for p in published:
        name = p["name"]
        for field in FIELDS:
            if not p.get(field):
                problems.append(f"{name}: no {field.replace('_', '-')} in Cargo.toml")
        crate_dir = os.path.dirname(p["manifest_path"])
        for lic in LICENSES:
            if not os.path.isfile(os.path.join(crate_dir, lic)):
                problems.append(f"{name}: no {lic} beside Cargo.toml (a symlink to ../{lic})")
        msrv = p.get("rust_version")
        if not msrv:
            continue
        seen, todo = set(), [p["id"]]
        while todo:
            for dep in nodes[todo.pop()]["deps"]:
                if dep["pkg"] in seen:
                    continue
                if all(k["kind"] == "dev" for k in dep["dep_kinds"]):
                    continue
                seen.add(dep["pkg"])
                todo.append(dep["pkg"])
        for dep_id in sorted(seen, key=lambda i: packages[i]["name"]):
            dep = packages[dep_id]
            need = dep.get("rust_version")
            if need and version(need) > version(msrv):
                problems.append(
                    f"{name}: rust-version {msrv}, but its dependency {dep['name']} "
                    f"{dep['version']} needs Rust {need}")
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print(f"manifests: {len(published)} published crates, metadata and dependency "
              "MSRV ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
