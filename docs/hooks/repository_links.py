"""MkDocs hook: pages that read the same on GitHub and in the built site.

- A table cell may hold a code span with a pipe, written ``\\|`` as GitHub needs (`` `a\\|b` ``); Python-Markdown
  keeps pipes inside code spans in their cell and would show the backslash, so the backslash is dropped there.
- Headings get GitHub's anchors (lower case, punctuation dropped, each space a hyphen), so a link such as
  ``planning.md#imagine-ros-demo-one-command-a-few-minutes-on-a-cpu`` works in both places.
- A page may link or show a file of the repository outside ``docs/`` (a results GIF, a JSON table) by its relative
  path, e.g. ``![](../results/ground_truth/plan5k_test_gt.gif)``. Such files are copied into the site under
  ``repository/`` and the links rewritten to the copies. A link to a Markdown file outside ``docs/`` or to a path that
  does not exist is reported as a warning, which ``mkdocs build --strict`` turns into an error.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.repository_links")

PREFIX = "repository"
#: an inline link or image target: ``[text](target)`` / ``![alt](target "title")``
LINK = re.compile(r"(!?\[[^\]\n]*\]\()([^)\s]+)((?:\s+\"[^\"\n]*\")?\))")
FENCE = re.compile(r"^(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def gfm_slugify(value: str, separator: str = "-") -> str:
    """GitHub's heading anchor: lower case, characters other than letters, digits, ``_``, ``-`` and spaces dropped,
    each space replaced by ``separator`` (runs are not collapsed)."""
    value = re.sub(r"[^\w\- ]", "", value.strip().lower())
    return value.replace(" ", separator)


def on_config(config):
    config.mdx_configs.setdefault("toc", {})["slugify"] = gfm_slugify
    return config


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _outside_target(page_path: Path, target: str, docs_dir: Path, root: Path) -> Path | None:
    """The repository file a relative link outside docs/ points at, else None."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("#", "/")):
        return None
    path = (page_path.parent / target.split("#", 1)[0]).resolve()
    if path == docs_dir or docs_dir in path.parents:
        return None
    return path


def _lines(text: str):
    """(line, is_code) for every line of ``text``: is_code for fenced code blocks and their fences."""
    fence = None
    for line in text.splitlines(keepends=True):
        m = FENCE.match(line.lstrip())
        if fence is not None:
            if m and m.group(1) == fence:
                fence = None
            yield line, True
        elif m:
            fence = m.group(1)
            yield line, True
        else:
            yield line, False


def _outside_code_spans(line: str, edit) -> str:
    """``edit`` applied to the parts of ``line`` that are not code spans."""
    pieces, last = [], 0
    for span in CODE_SPAN.finditer(line):
        pieces += [edit(line[last : span.start()]), span.group(0)]
        last = span.end()
    return "".join([*pieces, edit(line[last:])])


def _rewrite_prose(text: str, replace) -> str:
    """Apply ``replace`` to the link targets of ``text`` outside fenced code blocks and code spans."""
    return "".join(
        line if code else _outside_code_spans(line, lambda part: LINK.sub(replace, part)) for line, code in _lines(text)
    )


def on_files(files: Files, config) -> Files:
    docs_dir, root = Path(config.docs_dir).resolve(), _root(config)
    wanted: set[Path] = set()
    for f in files.documentation_pages():
        if f.abs_src_path is None:  # a generated page (the command-line reference)
            continue
        page_path = Path(f.abs_src_path)

        def collect(m, page_path=page_path):
            path = _outside_target(page_path, m.group(2), docs_dir, root)
            if path is not None and path.is_file() and root in path.parents and path.suffix != ".md":
                wanted.add(path)
            return m.group(0)

        _rewrite_prose(page_path.read_text(encoding="utf-8"), collect)
    for path in sorted(wanted):
        files.append(File.generated(config, f"{PREFIX}/{path.relative_to(root).as_posix()}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files):
    if page.file.abs_src_path is None:
        return markdown
    docs_dir, root = Path(config.docs_dir).resolve(), _root(config)
    page_path = Path(page.file.abs_src_path)

    def replace(m):
        target = m.group(2)
        path = _outside_target(page_path, target, docs_dir, root)
        if path is None:
            return m.group(0)
        if root not in path.parents or not path.exists():
            log.warning("%s links to %s, which is not a file of this repository", page.file.src_uri, target)
            return m.group(0)
        if path.suffix == ".md" or not path.is_file():
            log.warning("%s links to %s outside docs/: link a page of docs/ or a data file", page.file.src_uri, target)
            return m.group(0)
        anchor = "#" + target.split("#", 1)[1] if "#" in target else ""
        copy = docs_dir / PREFIX / path.relative_to(root)
        new = os.path.relpath(copy, page_path.parent).replace(os.sep, "/")
        return f"{m.group(1)}{new}{anchor}{m.group(3)}"

    return _unescape_table_code(_rewrite_prose(markdown, replace))


def _unescape_table_code(markdown: str) -> str:
    """``\\|`` -> ``|`` inside the code spans of table rows (outside fenced code)."""
    return "".join(
        CODE_SPAN.sub(lambda c: c.group(0).replace("\\|", "|"), line)
        if not code and line.lstrip().startswith("|")
        else line
        for line, code in _lines(markdown)
    )
