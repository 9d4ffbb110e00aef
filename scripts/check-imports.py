#!/usr/bin/env python3
"""check-imports.py - no import loop between the crate's modules.

Reads src/**/*.rs (not src/main.rs or src/bin/, which use the library by its name) and
collects, per file, the modules of the crate it refers to:

  * `use` trees starting with `crate::`, `super::`, `self::` or a child module declared in
    the file (`use context::{...}` in a mod.rs), braces and `as` expanded;
  * paths in code: `crate::x::y`, `super::super::x`, `self::x`, and `child::x` for a
    child module the file declares;
  * the `macro_rules!` macros of another file (`log_warning!` is a use of `log`).

A path is resolved to the file module that defines it: `super::` against the file's place
(and the inline `mod` blocks it sits in), an item re-exported by a mod.rs (`pub use
context::TlsSetupError` in tls/mod.rs) to the file it comes from. Test code is left out
(items under `#[cfg(test)]`, and files declared by `#[cfg(test)] mod x;`): a unit test may
drive its module through a higher layer (the option table through `config::parse_bytes`)
without that being a dependency of the code that ships.

Then, for the crate root and for every directory module (tls/, config/, net/, and any
other folder), it draws the graph between that folder's children (a child folder counts as
one node, its mod.rs and everything below it; the folder's own mod.rs is the node
"mod.rs") and fails on any cycle, printing it with the lines that make each arrow.

ALLOWED lists the loops that are known and being removed; each entry must match a loop
exactly (the same set of modules), so a loop that grows is reported. An entry that no
longer matches any loop is reported too, so the list cannot go stale.

Usage: scripts/check-imports.py [--graph] [--self-test] [SRC_DIR]
  --graph      print every folder's arrows, then the layers (leaves first)
  --self-test  run the checker on small made-up trees (a loop, a clean tree)
Exit status: 0 no loop outside ALLOWED, 1 a loop (or a stale ALLOWED entry), 2 usage.
"""

import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ALLOWED: known loops, tolerated until they are removed. (folder, the set of nodes in the
# loop, why it is still here); folder "" is the crate root. Empty: there is none. A loop
# added here must say why, and the check fails once it is gone (a stale entry).
ALLOWED: list = []

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_code(text):
    """The text with comments, string and char literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        return "".join(c if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif re.match(r'(?:br|r)#*"', text[i:i + 260]) and (i == 0 or not re.match(r"[A-Za-z0-9_]", text[i - 1])):
            m = re.match(r'(b?r)(#*)"', text[i:])
            end = '"' + m.group(2)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(blank(text[i:j]))
            i = j
        elif c == '"' or (c == "b" and text.startswith('b"', i) and (i == 0 or not re.match(r"[A-Za-z0-9_]", text[i - 1]))):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(blank(text[i:j + 1]))
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}', b'x' handled by the same rule), or a lifetime.
            m = re.match(r"'(?:\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'\n])'", text[i:])
            if m:
                out.append(blank(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def blank_tests(file, code):
    """`code` with every item under `#[cfg(test)]` blanked; records `#[cfg(test)] mod x;`."""
    out = list(code)
    for m in re.finditer(r"#\[cfg\(test\)\]", code):
        j = m.end()
        while j < len(code) and code[j] not in "{;":
            j += 1
        decl = re.match(r"\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*$", code[m.end():j])
        if j < len(code) and code[j] == ";" and decl:
            file.test_children.add(decl.group(1))
        if j < len(code) and code[j] == "{":
            depth, j = 1, j + 1
            while j < len(code) and depth:
                depth += {"{": 1, "}": -1}.get(code[j], 0)
                j += 1
        for k in range(m.start(), min(j + 1, len(code))):
            if out[k] != "\n":
                out[k] = " "
    return "".join(out)


def parse_use_tree(s, pos, prefix, found):
    """Parses one use tree at s[pos:], appending full paths (lists of segments) to found.
    Returns the position after the tree."""
    segs = list(prefix)
    while True:
        m = re.compile(r"\s*(::)?\s*").match(s, pos)
        pos = m.end()
        if s.startswith("{", pos):
            pos += 1
            while True:
                m = re.compile(r"\s*").match(s, pos)
                pos = m.end()
                if s.startswith("}", pos):
                    return pos + 1
                pos = parse_use_tree(s, pos, segs, found)
                m = re.compile(r"\s*,?").match(s, pos)
                pos = m.end()
        if s.startswith("*", pos):
            found.append((segs, None))
            return pos + 1
        m = re.compile(r"\$?" + IDENT).match(s, pos)
        if not m:
            found.append((segs, None))
            return pos
        segs = segs + [m.group(0)]
        pos = m.end()
        m = re.compile(r"\s*::").match(s, pos)
        if m and not re.compile(r"\s*::\s*$").match(s, pos):
            pos = m.end()
            continue
        alias = None
        m = re.compile(r"\s+as\s+(" + IDENT + r")").match(s, pos)
        if m:
            alias = m.group(1)
            pos = m.end()
        found.append((segs, alias))
        return pos


class File:
    def __init__(self, path, modpath, is_mod_file):
        self.path = path
        self.modpath = modpath  # tuple of segments from the crate root
        self.is_mod_file = is_mod_file  # lib.rs or a mod.rs: its children are its folder's
        self.refs = []  # (absolute segments, line)
        self.reexports = {}  # name -> absolute segments
        self.children = set()  # `mod x;` / `mod x {` names declared at file level
        self.macros = set()
        self.test_children = set()  # `#[cfg(test)] mod x;`: x's file is test code


def module_of(rel):
    """('tls', 'ocsp') and whether the file is a lib.rs/mod.rs, for a path under src/."""
    parts = rel[:-3].split("/")
    if parts == ["lib"]:
        return (), True
    if parts[-1] == "mod":
        return tuple(parts[:-1]), True
    return tuple(parts), False


def read_tree(src):
    files = {}
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, src)
        if rel_dir == "bin" or rel_dir.startswith("bin/"):
            continue
        for name in sorted(filenames):
            if not name.endswith(".rs"):
                continue
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel == "main.rs":
                continue
            modpath, is_mod = module_of(rel)
            with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                files[modpath] = (File(rel, modpath, is_mod), f.read())
    return files


def scan(file, text):
    """Fills file.refs (unresolved: the module path the code is in, segments, line)."""
    code = blank_tests(file, strip_code(text))
    line_of = lambda pos: code.count("\n", 0, pos) + 1
    # Inline modules: (start, end, name) so that `super::` inside `mod tests { }` is right.
    inline = []
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*([;{])", code):
        name = m.group(1)
        if m.group(2) == ";":
            file.children.add(name)
            continue
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        inline.append((m.end(), j, name))
        file.children.add(name)

    def place(pos):
        mp = list(file.modpath)
        for start, end, name in inline:
            if start <= pos < end:
                mp.append(name)
        return mp

    for m in re.finditer(r"macro_rules!\s*(" + IDENT + r")", code):
        file.macros.add(m.group(1))

    uses = []
    for m in re.finditer(r"(?:^|[;{}\]\s])((?:pub(?:\s*\([^)]*\))?\s+)?)use\s+", code):
        start = m.end()
        found = []
        end = parse_use_tree(code, start, [], found)
        uses.append((m.start(), end))
        public = bool(m.group(1).strip())
        for segs, alias in found:
            file_refs_add(file, place(m.end()), segs, alias, line_of(m.end()), public)
    # Paths outside `use` items.
    masked = list(code)
    for a, b in uses:
        for k in range(a, b):
            if masked[k] != "\n":
                masked[k] = " "
    rest = "".join(masked)
    path_re = re.compile(r"(?<![A-Za-z0-9_:])(\$?crate|super|self)((?:\s*::\s*" + IDENT + r")+)")
    for m in path_re.finditer(rest):
        if rest.startswith("!", m.end()):
            file.refs.append(("macro", re.findall(IDENT, m.group(2))[-1], line_of(m.start())))
            continue
        segs = [m.group(1)] + re.findall(IDENT, m.group(2))
        file_refs_add(file, place(m.start()), segs, None, line_of(m.start()), False)
    # A child module named in code (`ffi::as_time(..)` in a mod.rs that declares `mod ffi`).
    child_re = re.compile(r"(?<![A-Za-z0-9_:$])(" + IDENT + r")((?:\s*::\s*" + IDENT + r")+)")
    for m in child_re.finditer(rest):
        if m.group(1) in file.children and m.group(1) not in ("crate", "super", "self"):
            segs = [m.group(1)] + re.findall(IDENT, m.group(2))
            file_refs_add(file, place(m.start()), segs, None, line_of(m.start()), False)
    for m in re.finditer(r"(?<![A-Za-z0-9_:])(" + IDENT + r")!", rest):
        file.refs.append(("macro", m.group(1), line_of(m.start())))


def file_refs_add(file, here, segs, alias, line, public):
    """Turns a path seen at module `here` into an absolute one and records it."""
    if not segs:
        return
    head = segs[0]
    if head in ("crate", "$crate"):
        absolute = segs[1:]
    elif head in ("super", "self"):
        base = list(here)
        k = 0
        while k < len(segs) and segs[k] in ("super", "self"):
            if segs[k] == "super":
                if not base:
                    return
                base.pop()
            k += 1
        absolute = base + segs[k:]
    elif tuple(here) == file.modpath and head in file.children:
        absolute = list(here) + segs
    else:
        return  # std, an external crate, or a name in scope
    if not absolute:
        return
    file.refs.append(("path", absolute, line))
    if public and tuple(here) == file.modpath:
        name = alias or absolute[-1]
        if name != "self":
            file.reexports[name] = absolute if absolute[-1] != "self" else absolute[:-1]


def resolve(files, absolute):
    """The file module that defines the thing at `absolute`."""
    path = list(absolute)
    for _ in range(10):
        if path and path[-1] == "self":
            path = path[:-1]
        best = ()
        for k in range(len(path), -1, -1):
            if tuple(path[:k]) in files:
                best = tuple(path[:k])
                break
        rest = path[len(best):]
        if rest and rest[0] in files[best][0].reexports:
            target = files[best][0].reexports[rest[0]]
            new = list(target) + rest[1:]
            if new == path:
                break
            path = new
            continue
        return best
    return tuple(best)


def edges_of(files):
    """{(from module, to module): [(file, line)]}."""
    macros = {}
    for modpath, (f, _) in files.items():
        for name in f.macros:
            macros[name] = modpath
    edges = {}
    for modpath, (f, _) in files.items():
        for kind, what, line in f.refs:
            if kind == "macro":
                if what not in macros:
                    continue
                target = macros[what]
            else:
                target = resolve(files, what)
            if target != modpath:
                edges.setdefault((modpath, target), []).append((f.path, line))
    return edges


def folder_graphs(files, edges):
    """{folder: {(node, node): [(file, line)]}} for the root and every directory module."""
    folders = {mp for mp, (f, _) in files.items() if f.is_mod_file}
    graphs = {folder: {} for folder in folders}
    for (a, b), where in edges.items():
        for folder in folders:
            k = len(folder)
            if a[:k] != folder or b[:k] != folder:
                continue
            na = a[k] if len(a) > k else "mod.rs"
            nb = b[k] if len(b) > k else "mod.rs"
            if na != nb:
                graphs[folder].setdefault((na, nb), []).extend(where)
    return graphs


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    nodes = sorted({n for e in graph for n in e})
    succ = {n: sorted({b for (a, b) in graph if a == n}) for n in nodes}
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ[v]:
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

    for n in nodes:
        if n not in index:
            visit(n)
    return out


def simple_loops(graph, comp, limit=20):
    """The elementary loops inside a component (each once, from its smallest node), at most
    `limit` of them, shortest first."""
    members = sorted(comp)
    succ = {n: sorted(b for (a, b) in graph if a == n and b in comp) for n in members}
    found = []

    def walk(start, v, path):
        for w in succ[v]:
            if w == start:
                found.append(path + [start])
            elif w > start and w not in path and len(found) < 10 * limit:
                walk(start, w, path + [w])

    for start in members:
        walk(start, start, [start])
    found.sort(key=lambda p: (len(p), p))
    return found[:limit]


def layers(graph):
    """Nodes by layer: 0 uses no sibling, n uses only layers below n (graph must be a DAG:
    the caller leaves out the arrows inside an allowed loop)."""
    nodes = sorted({n for e in graph for n in e})
    depth = {}

    def d(n, seen=()):
        if n in depth:
            return depth[n]
        if n in seen:
            return 0
        below = [d(b, seen + (n,)) for (a, b) in graph if a == n]
        depth[n] = 1 + max(below) if below else 0
        return depth[n]

    for n in nodes:
        d(n)
    out = {}
    for n, k in depth.items():
        out.setdefault(k, []).append(n)
    return [sorted(out[k]) for k in sorted(out)]


def folder_name(folder):
    return "src/" + "/".join(folder) + ("/" if folder else "") if folder else "src/ (top level)"


def check(src, show_graph=False, allowed=None, out=sys.stdout):
    allowed = ALLOWED if allowed is None else allowed
    files = read_tree(src)
    for modpath, (f, text) in files.items():
        scan(f, text)
    # Files declared by `#[cfg(test)] mod x;` (and everything below them) are test code.
    tests_only = [mp + (child,) for mp, (f, _) in files.items() for child in f.test_children]
    for modpath in list(files):
        if any(modpath[:len(t)] == t for t in tests_only):
            del files[modpath]
    graphs = folder_graphs(files, edges_of(files))
    failed = False
    used = set()
    for folder in sorted(graphs):
        graph = graphs[folder]
        if show_graph:
            print(f"== {folder_name(folder)}", file=out)
            for (a, b) in sorted(graph):
                where = graph[(a, b)]
                print(f"  {a} -> {b}    ({where[0][0]}:{where[0][1]}"
                      + (f", +{len(where) - 1}" if len(where) > 1 else "") + ")", file=out)
            inside = [nodes for f, nodes, _ in allowed if f == "/".join(folder)]
            dag = {e: w for e, w in graph.items()
                   if not any(e[0] in nodes and e[1] in nodes for nodes in inside)}
            for k, layer in enumerate(layers(dag) if not cycles(dag) else []):
                print(f"  layer {k}: {' '.join(layer)}", file=out)
        for comp in cycles(graph):
            key = "/".join(folder)
            match = [i for i, (f, nodes, _) in enumerate(allowed) if f == key and nodes == set(comp)]
            if match:
                used.update(match)
                print(f"allowed loop in {folder_name(folder)}: {' <-> '.join(comp)} "
                      f"({allowed[match[0]][2]})", file=out)
                continue
            failed = True
            print(f"import loop in {folder_name(folder)} among {', '.join(comp)}:", file=out)
            for path in simple_loops(graph, set(comp)):
                print(f"  {' -> '.join(path)}", file=out)
                for a, b in zip(path, path[1:]):
                    where = graph[(a, b)]
                    more = f" (+{len(where) - 1} more)" if len(where) > 1 else ""
                    print(f"      {a} -> {b}: {where[0][0]}:{where[0][1]}{more}", file=out)
    for i, (folder, nodes, why) in enumerate(allowed):
        if i not in used:
            failed = True
            print(f"stale ALLOWED entry (no such loop any more, remove it): "
                  f"{folder_name(tuple(folder.split('/')) if folder else ())} "
                  f"{' <-> '.join(sorted(nodes))}", file=out)
    if not failed:
        print(f"check-imports: no import loop in {sum(1 for _ in files)} files"
              + (f" ({len(used)} allowed)" if used else ""), file=out)
    return 1 if failed else 0


def self_test():
    """A loop between top-level modules, one between submodules through a re-export and
    `super::`, and a clean tree."""
    import io

    cases = [
        ({"lib.rs": "pub mod a;\npub mod b;\n",
          "a.rs": "use crate::b::thing;\n",
          "b.rs": "pub fn thing() { crate::a::other(); }\n"},
         1, "import loop in src/ (top level) among a, b:\n  a -> b -> a"),
        ({"lib.rs": "pub mod t;\n",
          "t/mod.rs": "pub mod x;\npub mod y;\npub use x::Err;\n",
          "t/x.rs": "// use super::y;  (a comment is not an import)\npub struct Err;\n"
                    "fn f() -> &'static str { \"super::y::g\" }\nfn g() { super::y::h(); }\n",
          "t/y.rs": "use super::Err;\npub fn h() {}\n"},
         1, "import loop in src/t/ among x, y:\n  x -> y -> x"),
        ({"lib.rs": "#[macro_use]\npub mod log;\npub mod a;\npub mod b;\n",
          "log.rs": "#[macro_export]\nmacro_rules! say { () => {} }\n",
          "a.rs": "use crate::{b::{self, B}, log};\nfn f() { say!(); }\n"
                  "#[cfg(test)]\nmod tests { use super::*; }\n",
          "b.rs": "pub struct B;\nfn g() { say!(); }\n"},
         0, "no import loop"),
        ({"lib.rs": "pub mod a;\npub mod b;\n",
          "a.rs": "pub fn f() {}\n#[cfg(test)]\nmod tests { use crate::b::g; }\n",
          "b.rs": "pub fn g() { crate::a::f(); }\n#[cfg(test)]\nmod t2;\n",
          "b/t2.rs": "use crate::a::f;\n"},
         0, "no import loop"),
    ]
    ok = True
    for tree, want_rc, want_text in cases:
        with tempfile.TemporaryDirectory() as tmp:
            for rel, body in tree.items():
                os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
                with open(os.path.join(tmp, rel), "w", encoding="utf-8") as f:
                    f.write(body)
            buf = io.StringIO()
            rc = check(tmp, allowed=[], out=buf)
            if rc != want_rc or want_text not in buf.getvalue():
                ok = False
                print(f"self-test FAILED: want rc {want_rc} and {want_text!r}, got rc {rc}:\n"
                      + buf.getvalue())
    print("check-imports self-test: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    flags = [a for a in argv if a.startswith("--")]
    if any(f not in ("--graph", "--self-test") for f in flags) or len(args) > 1:
        print(__doc__[__doc__.index("Usage:"):].rstrip(), file=sys.stderr)
        return 2
    if "--self-test" in flags:
        return self_test()
    return check(args[0] if args else os.path.join(ROOT, "src"), show_graph="--graph" in flags)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
