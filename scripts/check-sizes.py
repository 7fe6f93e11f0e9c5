#!/usr/bin/env python3
"""Size limits of the source tree (DEVELOPERS and issue 13): no file under src/ over 400 lines and
no function over 80 lines, except a parser or a table whose doc says why with the words
"Longer than the size limit because" (in the file's `//!` doc for a file, in the `///` doc
directly above a function for a function).

Assumes: rustfmt-formatted code (a function's closing brace is alone on a line at the
indentation of its `fn`). Usage: scripts/check-sizes.py [DIR] (default src). Prints one line
per breach and exits 1 if there is any; exits 0 and prints a summary otherwise.
"""
import os
import re
import sys

MAX_FILE = 400
MAX_FN = 80
EXEMPT = "Longer than the size limit because"
FN = re.compile(
    r'^(\s*)(?:pub(?:\([^)]*\))?\s+)?(?:default\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?'
    r'(?:extern\s+"[^"]*"\s+)?fn\s+(\w+)'
)


def doc_above(lines, i):
    """The `///` and attribute lines directly above line i, joined."""
    out = []
    j = i - 1
    while j >= 0 and re.match(r'^\s*(///|#\[|//)', lines[j]):
        out.append(lines[j])
        j -= 1
    return "\n".join(reversed(out))


def check_file(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    breaches = []
    module_doc = "\n".join(l for l in lines if l.lstrip().startswith("//!"))
    if len(lines) > MAX_FILE and EXEMPT not in module_doc:
        breaches.append(f"{path}: {len(lines)} lines (limit {MAX_FILE})")
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        indent, name = m.group(1), m.group(2)
        # A declaration without a body (trait item, extern): its signature ends in `;`
        # before any `{`.
        j = i
        while j < len(lines) and "{" not in lines[j] and not lines[j].rstrip().endswith(";"):
            j += 1
        if j >= len(lines) or ("{" not in lines[j]):
            continue
        if lines[j].rstrip().endswith("}") and lines[j].count("{") == lines[j].count("}"):
            continue  # one-line body
        end = None
        for k in range(j + 1, len(lines)):
            if lines[k] == indent + "}" or lines[k].startswith(indent + "}") and lines[k].strip() in ("}", "};", "},", "})", "});"):
                end = k
                break
        if end is None:
            continue
        n = end - i + 1
        if n > MAX_FN and EXEMPT not in doc_above(lines, i):
            breaches.append(f"{path}:{i + 1}: fn {name} is {n} lines (limit {MAX_FN})")
    return breaches, len(lines)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "src"
    breaches = []
    files = 0
    for dirpath, _, names in os.walk(root):
        for n in sorted(names):
            if n.endswith(".rs"):
                files += 1
                b, _ = check_file(os.path.join(dirpath, n))
                breaches.extend(b)
    for b in sorted(breaches):
        print(b)
    if breaches:
        print(f"size limits: {len(breaches)} breaches in {files} files under {root}/")
        return 1
    print(f"size limits: {files} files under {root}/ within {MAX_FILE} lines a file, {MAX_FN} a function")
    return 0


if __name__ == "__main__":
    sys.exit(main())
