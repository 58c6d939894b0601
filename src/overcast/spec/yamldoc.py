"""YAML text -> plain Python data plus a map from each field path to its line in the file.

PyYAML composes the text into nodes (which carry marks) before it builds Python objects. We keep both:
the objects for translation and validation, and ``path -> line`` so that any later error, including
one pydantic raises deep inside a model, can point at the line the user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from overcast.spec.errors import Problem, SpecError

Path = tuple[str | int, ...]


@dataclass(slots=True)
class Document:
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)  # 1-based line of each key or list item
    duplicates: list[tuple[Path, int]] = field(default_factory=list)  # repeated keys: path, line
    # the node at each path, for what must be read as written rather than as YAML 1.1 types it (env)
    nodes: dict[Path, yaml.Node] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def parse_yaml(text: str, source: str) -> Document:
    """Parse one YAML document. Malformed YAML raises SpecError with the parser's line."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character is refused before any parsing
        line = text[: exc.position].count("\n") + 1
        raise SpecError(
            source, [Problem(f"invalid YAML: character {exc.character!r} is not allowed", line=line)]
        ) from None
    doc = Document(data=None)
    try:
        node = loader.get_single_node()
        if node is not None:
            # Walked before construction, which flattens merge keys (``<<``) into each mapping: a key
            # written beside a merge overrides the merged one (YAML's rule), it is not a duplicate.
            doc.lines[()] = node.start_mark.line + 1
            _walk(node, (), doc, 0, set())
            doc.data = loader.construct_document(node)
            # again over the flattened nodes: keys merged in get their lines and nodes (env read as
            # written), where none was set yet; duplicates were counted on the walk above
            _walk(node, (), doc, 0, set(), duplicates=False)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "malformed YAML"
        if exc.problem and exc.context and exc.problem.startswith("but "):  # "expected X, but found Y"
            what = f"{exc.context}, {exc.problem}"
        elif exc.problem and exc.context and exc.context_mark is not None:
            what += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise SpecError(source, [Problem(f"invalid YAML: {what}", line=line)]) from None
    except yaml.YAMLError as exc:  # e.g. a second document in the file
        raise SpecError(source, [Problem(f"invalid YAML: {exc}")]) from None
    except RecursionError:  # PyYAML composes recursively: "[[[[..." deeper than the stack
        raise SpecError(source, [Problem("invalid YAML: nested too deeply")]) from None
    finally:
        loader.dispose()
    return doc


def _walk(
    node: yaml.Node, path: Path, doc: Document, depth: int, seen: set[int], *, duplicates: bool = True
) -> None:
    # An alias is the anchored node itself, met again: walking it once per use is exponential in a
    # ten-line file of nested aliases ("billion laughs"), and a path under a second use still gets the
    # line of the key that holds the alias (``Document.line`` falls back to the nearest ancestor).
    if depth > 64 or id(node) in seen:  # (nothing sane is nested 64 deep)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()  # this mapping's keys, for duplicates; ``seen`` stays the walked nodes
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value
            child = (*path, key)
            line = key_node.start_mark.line + 1
            if duplicates and key in keys:
                doc.duplicates.append((child, line))
            keys.add(key)
            doc.lines.setdefault(child, line)
            doc.nodes.setdefault(child, value_node)
            _walk(value_node, child, doc, depth + 1, seen, duplicates=duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            doc.lines.setdefault(child, item.start_mark.line + 1)
            _walk(item, child, doc, depth + 1, seen, duplicates=duplicates)
