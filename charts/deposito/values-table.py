#!/usr/bin/env python3
"""Print the chart's values as a markdown table (name, default, description), from values.yaml.

Each value's description is the comment block right above it; a map whose children have no
comments of their own (such as `resources`) is one value. A documented map whose children are
documented too (such as `operator.rebalance`) gets a row of its own, without a default. A value
without a comment is an error: every value must be documented.

Usage: values-table.py            print the table
       values-table.py --check    exit 1 when README.md does not hold the current table
       values-table.py --write    put the current table into README.md

The table sits in README.md between the markers `<!-- values:start -->` and
`<!-- values:end -->`. Standard library only: values.yaml is read by a small parser of the YAML
subset it uses (block maps and sequences, flow collections, plain and quoted scalars). When
PyYAML happens to be importable, the parsed defaults are checked against it.
"""

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VALUES = HERE / "values.yaml"
README = HERE / "README.md"
START = "<!-- values:start -->"
END = "<!-- values:end -->"


class ParseError(Exception):
    pass


class Node:
    """One key of values.yaml: its default, its comment, and its children when a block map."""

    def __init__(self, value, comment, children=None):
        self.value = value
        self.comment = comment
        self.children = children


# ---- scalars and flow collections ---------------------------------------------------------

INT = re.compile(r"^[-+]?[0-9]+$")
FLOAT = re.compile(r"^[-+]?([0-9]*\.[0-9]+|[0-9]+\.[0-9]*)([eE][-+]?[0-9]+)?$")


def scalar(text):
    """A plain scalar, typed like YAML 1.1 does for the forms values.yaml uses."""
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if text in ("null", "Null", "NULL", "~", ""):
        return None
    if INT.match(text):
        return int(text)
    if FLOAT.match(text):
        return float(text)
    return text


class Flow:
    """A recursive-descent reader of one flow value: `{a: b, c: [d]}`, `"x"`, `plain`."""

    def __init__(self, text):
        self.s = text
        self.i = 0

    def fail(self, what):
        raise ParseError(f"{what} at column {self.i} of {self.s!r}")

    def ws(self):
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1

    def peek(self):
        return self.s[self.i] if self.i < len(self.s) else ""

    def value(self, stops):
        self.ws()
        c = self.peek()
        if c == "{":
            return self.mapping()
        if c == "[":
            return self.sequence()
        if c in "\"'":
            return self.quoted()
        return scalar(self.plain(stops))

    def plain(self, stops):
        start = self.i
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in stops:
                break
            if c == ":" and ":" in stops and self.s[self.i + 1 : self.i + 2] in ("", " "):
                break
            if c == "#" and self.i > start and self.s[self.i - 1] == " ":
                break
            self.i += 1
        return self.s[start : self.i].strip()

    def quoted(self):
        q = self.peek()
        j = self.i + 1
        out = []
        while True:
            if j >= len(self.s):
                self.fail("unterminated string")
            c = self.s[j]
            if q == "'" and c == "'":
                if self.s[j + 1 : j + 2] == "'":
                    out.append("'")
                    j += 2
                    continue
                break
            if q == '"' and c == "\\":
                out.append(self.s[j : j + 2])
                j += 2
                continue
            if q == '"' and c == '"':
                break
            out.append(c)
            j += 1
        self.i = j + 1
        text = "".join(out)
        return json.loads('"' + text + '"') if q == '"' else text

    def mapping(self):
        self.i += 1
        out = {}
        self.ws()
        if self.peek() == "}":
            self.i += 1
            return out
        while True:
            self.ws()
            key = self.quoted() if self.peek() in "\"'" else self.plain(",}:")
            self.ws()
            if self.peek() != ":":
                self.fail("expected ':'")
            self.i += 1
            out[key] = self.value(",}")
            self.ws()
            c = self.peek()
            self.i += 1
            if c == "}":
                return out
            if c != ",":
                self.fail("expected ',' or '}'")

    def sequence(self):
        self.i += 1
        out = []
        self.ws()
        if self.peek() == "]":
            self.i += 1
            return out
        while True:
            out.append(self.value(",]"))
            self.ws()
            c = self.peek()
            self.i += 1
            if c == "]":
                return out
            if c != ",":
                self.fail("expected ',' or ']'")


def inline_value(text):
    """The value written after `key: ` (or `- `) on one line."""
    f = Flow(text)
    v = f.value("")
    f.ws()
    rest = f.s[f.i :]
    if rest and not rest.startswith("#"):
        raise ParseError(f"trailing text {rest!r} after value {text!r}")
    return v


# ---- block structure --------------------------------------------------------------------------


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def split_key(text):
    """`key: value` or `key:` -> (key, value text), else None."""
    m = re.match(r'^("[^"]*"|\'[^\']*\'|[^\s#"\'][^:#]*?)\s*:(\s+(.*))?$', text)
    if not m:
        return None
    key = m.group(1)
    if key[0] in "\"'":
        key = key[1:-1]
    return key, (m.group(3) or "").strip()


class Block:
    def __init__(self, text):
        self.lines = text.split("\n")

    def next_content(self, i):
        """Index of the next line that is neither blank nor a comment."""
        while i < len(self.lines):
            s = self.lines[i].strip()
            if s and not s.startswith("#"):
                return i
            i += 1
        return i

    def mapping(self, i, indent):
        nodes = {}
        comment = []
        while i < len(self.lines):
            line = self.lines[i]
            stripped = line.strip()
            if not stripped:
                comment = []
                i += 1
                continue
            ind = indent_of(line)
            if ind < indent:
                break
            if stripped.startswith("#"):
                comment.append(stripped[1:].strip())
                i += 1
                continue
            if ind > indent or stripped.startswith("- "):
                raise ParseError(f"line {i + 1}: unexpected indentation")
            kv = split_key(stripped)
            if kv is None:
                raise ParseError(f"line {i + 1}: expected `key: value`")
            key, rest = kv
            text = " ".join(comment)
            comment = []
            if key in nodes:
                raise ParseError(f"line {i + 1}: duplicate key {key}")
            if rest:
                nodes[key] = Node(inline_value(rest), text)
                i += 1
                continue
            j = self.next_content(i + 1)
            if j < len(self.lines) and indent_of(self.lines[j]) > indent:
                child = indent_of(self.lines[j])
                if self.lines[j].strip().startswith("- "):
                    value, i = self.sequence(i + 1, child)
                    nodes[key] = Node(value, text)
                else:
                    children, i = self.mapping(i + 1, child)
                    nodes[key] = Node(plain(children), text, children)
            elif j < len(self.lines) and indent_of(self.lines[j]) == indent and self.lines[
                j
            ].strip().startswith("- "):
                value, i = self.sequence(i + 1, indent)
                nodes[key] = Node(value, text)
            else:
                nodes[key] = Node(None, text)
                i += 1
        return nodes, i

    def sequence(self, i, indent):
        out = []
        while True:
            # Comments after the last item belong to the next key: stop before them.
            j = self.next_content(i)
            if j >= len(self.lines):
                break
            line = self.lines[j]
            if indent_of(line) != indent or not line.strip().startswith("- "):
                if indent_of(line) > indent:
                    raise ParseError(f"line {j + 1}: unexpected indentation")
                break
            i = j
            rest = line.strip()[2:].strip()
            kv = split_key(rest) if not rest.startswith(("{", "[", '"', "'")) else None
            if kv is None:
                out.append(inline_value(rest))
                i += 1
            else:
                # A map item: its first key sits on the dash's line, two columns in.
                self.lines[i] = " " * (indent + 2) + rest
                children, i = self.mapping(i, indent + 2)
                out.append(plain(children))
        return out, i


def plain(nodes):
    return {k: n.value for k, n in nodes.items()}


def parse(text):
    nodes, i = Block(text).mapping(0, 0)
    if Block(text).next_content(i) < len(text.split("\n")):
        raise ParseError(f"line {i + 1}: unexpected indentation")
    return nodes


# ---- the table --------------------------------------------------------------------------------


def cell(text):
    return text.replace("|", "\\|")


def default_of(value):
    return "`" + json.dumps(value, separators=(", ", ": "), ensure_ascii=False) + "`"


def rows(nodes, prefix, out, undocumented):
    for key, node in nodes.items():
        name = prefix + key
        kids = node.children
        if kids and any(k.comment or k.children for k in kids.values()):
            if node.comment:
                out.append((name, "", node.comment))
            rows(kids, name + ".", out, undocumented)
            continue
        if not node.comment:
            undocumented.append(name)
        out.append((name, default_of(node.value), node.comment))


def table():
    text = VALUES.read_text(encoding="utf-8")
    nodes = parse(text)
    try:
        import yaml  # noqa: PLC0415 (optional cross-check)
    except ImportError:
        yaml = None
    if yaml is not None:
        expected = yaml.safe_load(text)
        if json.dumps(plain(nodes), sort_keys=True) != json.dumps(expected, sort_keys=True):
            raise ParseError("values.yaml: this parser and PyYAML disagree; extend the parser")
    out = []
    undocumented = []
    rows(nodes, "", out, undocumented)
    if undocumented:
        raise ParseError("values without a comment: " + ", ".join(undocumented))
    lines = ["| Value | Default | Description |", "| --- | --- | --- |"]
    for name, default, description in out:
        lines.append(f"| `{name}` | {cell(default)} | {cell(description)} |")
    return "\n".join(lines) + "\n"


def readme_parts():
    text = README.read_text(encoding="utf-8")
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ParseError(f"{README.name}: needs one {START} and one {END} marker, in that order")
    head, rest = text.split(START)
    body, tail = rest.split(END)
    return head, body, tail


def main(argv):
    mode = argv[1] if len(argv) > 1 else ""
    if mode not in ("", "--check", "--write") or len(argv) > 2:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        current = table()
        if mode == "":
            sys.stdout.write(current)
            return 0
        head, body, tail = readme_parts()
    except (ParseError, OSError) as e:
        print(f"values-table: {e}", file=sys.stderr)
        return 2
    if mode == "--check":
        if body.strip("\n") != current.strip("\n"):
            print(
                f"values-table: {README} is stale: run `python3 {Path(argv[0]).name} --write`"
                " (in charts/deposito)",
                file=sys.stderr,
            )
            return 1
        return 0
    README.write_text(head + START + "\n" + current + END + tail, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
