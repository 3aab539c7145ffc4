"""Lists what mgmt documents for its YAML graphs and its `run` command: the
meta parameters, every resource kind with its fields, the top-level graph
keys, and the flags of `mgmt run`. Names only, read from mgmt's Go sources.

    .venv/bin/python scripts/mgmt_inventory.py MGMT > tests/data/mgmt_inventory.json

MGMT is a checkout of mgmt, or its bare git repository (then HEAD is read).
tests/unit/test_mgmt_compat.py checks that docs/yaml.md's "Compatibility with
mgmt" table has one row for each name listed, and that mgmtd does what the
row says; run this again on a newer mgmt to see what it added."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

TAG = re.compile(r'yaml:"([^"]+)"')
FLAG = re.compile(r'arg:"(--[a-z0-9-]+)')
REGISTER = re.compile(r'RegisterResource\(\s*("?[A-Za-z0-9:_.]+"?)\s*,\s*func\(\)\s*engine\.Res\s*\{\s*'
                      r'return\s*&(\w+)\s*\{')
CONSTANT = re.compile(r'^\s*(\w+)\s*=\s*(?:(\w+)\s*\+\s*)?"([a-z0-9:_]+)"', re.M)
META_CASE = re.compile(r'case "([a-z]+)":')


class Source:
    """mgmt's files, from a checkout or from a bare repository's HEAD."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.bare = (where / "HEAD").is_file() and (where / "objects").is_dir()

    def read(self, path: str) -> str:
        if self.bare:
            return subprocess.run(["git", f"--git-dir={self.where}", "show", f"HEAD:{path}"],
                                  check=True, capture_output=True, text=True).stdout
        return (self.where / path).read_text()

    def listing(self, folder: str) -> list[str]:
        if self.bare:
            out = subprocess.run(["git", f"--git-dir={self.where}", "ls-tree", "--name-only",
                                  f"HEAD:{folder}"], check=True, capture_output=True, text=True).stdout
            return sorted(out.split())
        return sorted(p.name for p in (self.where / folder).iterdir())

    def commit(self) -> str:
        args = ["git", f"--git-dir={self.where}"] if self.bare else ["git", "-C", str(self.where)]
        result = subprocess.run([*args, "rev-parse", "HEAD"], capture_output=True, text=True)
        return result.stdout.strip() or "unknown"


def struct_fields(text: str, struct: str) -> list[str]:
    """The yaml names of a Go struct's own fields (one tab deep, not nested
    structs' fields, not commented-out ones)."""
    match = re.search(rf"^type {struct} struct \{{\n(.*?)^\}}", text, re.S | re.M)
    if match is None:
        return []
    names = []
    for line in match.group(1).splitlines():
        if line.startswith("\t") and not line.startswith("\t\t") and not line.lstrip().startswith("//"):
            tag = TAG.search(line)
            if tag and tag.group(1) != "-":
                names.append(tag.group(1).split(",")[0])
    return names


def kind_constants(texts: list[str]) -> dict[str, str]:
    """Go string constants naming kinds, ``httpServerKind = httpKind + ":server"`` included."""
    parts = [match for text in texts for match in CONSTANT.findall(text)]
    values: dict[str, str] = {}
    for _ in range(5):  # chains are short: http -> http:server -> http:server:ui -> ...:input
        for name, base, literal in parts:
            if not base:
                values[name] = literal
            elif base in values:
                values[name] = values[base] + literal
    return values


def kinds(source: Source) -> dict[str, list[str]]:
    """Every registered kind and its fields (not mgmt's internal ones: test, _panic)."""
    folder = "engine/resources"
    texts = [source.read(f"{folder}/{name}") for name in source.listing(folder)
             if name.endswith(".go") and not name.endswith("_test.go")]
    constants = kind_constants(texts)
    found: dict[str, list[str]] = {}
    for text in texts:
        for kind, struct in REGISTER.findall(text):
            kind = kind.strip('"') if kind.startswith('"') else constants.get(kind.split(".")[-1], "")
            if kind and kind != "test":
                found[kind] = struct_fields(text, struct)
    return dict(sorted(found.items()))


def meta_params(source: Source) -> list[str]:
    """The meta parameters mcl accepts (its switch names every one, the traits'
    autoedge/autogroup/reverse included); metaparams.go's own tags as a check."""
    text = source.read("lang/ast/structs.go")
    start = text.index('case "noop":')
    names = META_CASE.findall(text[start:start + 20000])
    own = struct_fields(source.read("engine/metaparams.go"), "MetaParams")
    return sorted(set(names) | set(own))


def run_flags(source: Source) -> list[str]:
    text = source.read("lib/main.go")
    match = re.search(r"^type Config struct \{\n(.*?)^\}", text, re.S | re.M)
    assert match, "lib/main.go has no Config struct"
    return sorted(set(FLAG.findall(match.group(1))))


def graph_keys(source: Source) -> dict[str, list[str]]:
    """The YAML graph's own keys: top level, an edge and its ends, a collect rule."""
    text = source.read("yamlgraph/gconfig.go")
    return {"top_level": struct_fields(text, "GraphConfigData") + struct_fields(text, "Resources"),
            "edge": struct_fields(text, "Edge"), "edge_end": struct_fields(text, "Vertex"),
            "collect": struct_fields(text, "collectorResConfig")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mgmt", type=Path, help="mgmt checkout or bare git repository")
    source = Source(parser.parse_args().mgmt)
    inventory = {
        "mgmt_commit": source.commit(),
        **graph_keys(source),
        "meta": meta_params(source),
        "run_flags": run_flags(source),
        "kinds": kinds(source),
    }
    json.dump(inventory, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
