#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a cycle.

For each crate root given (a folder holding lib.rs), every top-level module is one node:
`src/foo.rs`, or the folder `src/foo/` with all it holds. An edge A -> B is any `crate::B`
path written in A (in `use` lists too, `use crate::{B, C::x}`), doc-comment links
included. Inside a folder, files may refer to each other freely; between folders the
graph must be a DAG. Plain comments are ignored. Prints each crate's layers (what each
node imports) and any cycle found.

    python3 .ci/module-cycles.py src actors/src
"""
import os
import re
import sys


def strip_comments(text):
    """Plain comments go; doc comments (`///`, `//!`) stay: their links are references."""
    text = re.sub(r"/\*(?![*!]).*?\*/", "", text, flags=re.S)
    return re.sub(r"//(?![/!])[^\n]*", "", text)


def top_names_in_braces(body):
    """The first path segment of each item of a `{...}` use list, at depth one."""
    names, depth, item = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
            if depth == 1:
                continue
        elif ch == "}":
            depth -= 1
        if depth == 0 and ch == ",":
            names.append(item)
            item = ""
            continue
        item += ch
    names.append(item)
    out = []
    for n in names:
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", n)
        if m:
            out.append(m.group(1))
    return out


def references(text):
    text = strip_comments(text)
    refs = set()
    for m in re.finditer(r"\bcrate::([A-Za-z_][A-Za-z0-9_]*|\{)", text):
        if m.group(1) != "{":
            refs.add(m.group(1))
            continue
        start, depth, i = m.end() - 1, 0, m.end() - 1
        while i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        refs.update(top_names_in_braces(text[start : i + 1]))
    return refs


def graph(root):
    lib = os.path.join(root, "lib.rs")
    with open(lib) as f:
        mods = re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_0-9]+)\s*;", strip_comments(f.read()), re.M)
    edges = {m: set() for m in mods}
    for m in mods:
        files = []
        if os.path.isfile(os.path.join(root, m + ".rs")):
            files.append(os.path.join(root, m + ".rs"))
        folder = os.path.join(root, m)
        if os.path.isdir(folder):
            for dirpath, _, names in os.walk(folder):
                files += [os.path.join(dirpath, n) for n in names if n.endswith(".rs")]
        for path in files:
            with open(path) as f:
                for r in references(f.read()):
                    if r in edges and r != m:
                        edges[m].add(r)
    return edges


def find_cycles(edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main(roots):
    failed = False
    for root in roots:
        edges = graph(root)
        cycles = find_cycles(edges)
        print(f"{root}: {len(edges)} modules, {sum(len(e) for e in edges.values())} imports between them")
        for v in sorted(edges):
            print(f"  {v} -> {', '.join(sorted(edges[v])) or '(nothing)'}")
        for c in cycles:
            failed = True
            print(f"  CYCLE: {' <-> '.join(c)}")
            for v in c:
                back = sorted(w for w in edges[v] if w in c)
                print(f"    {v} imports {', '.join(back)}")
        if not cycles:
            print(f"  no cycle")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["src", "actors/src"]))
