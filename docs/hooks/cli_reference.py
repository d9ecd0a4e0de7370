"""MkDocs hook: the command-line reference page, ``reference/cli.md``, generated from the parsers at build time.

The page is rendered from ``imagine_ros.cli.build_parser()`` (the parser ``imagine-ros`` itself runs), so it cannot
drift from the code: every subcommand with its usage line, description and each flag with its help text and default.
The committed ``docs/reference/cli.md`` is a placeholder for readers of the repository; the site replaces it.
"""

from __future__ import annotations

import argparse
import contextlib
import io

from mkdocs.structure.files import File, Files

PAGE = "reference/cli.md"


def _escape(text: str) -> str:
    """Plain text (help strings) as Markdown table-cell text: no emphasis, links, raw HTML or cell breaks."""
    text = " ".join(str(text).split())
    for char in "\\`*_[]|":
        text = text.replace(char, "\\" + char)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    """``text`` as an inline code span (Python-Markdown keeps a pipe inside a code span in its table cell)."""
    return "`" + text + "`"


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "off" if isinstance(action, argparse._StoreTrueAction) else "on"
    if action.default in (None, argparse.SUPPRESS, [], ()):
        return "—"
    if isinstance(action.default, (list, tuple)):
        return _code(" ".join(map(str, action.default)))
    return _code(str(action.default))


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
            continue
        invocation = formatter._format_action_invocation(action)
        help_text = formatter._expand_help(action) if action.help else ""
        if isinstance(action, (argparse._AppendAction, argparse._ExtendAction)):
            help_text += "" if "repeat" in help_text else " (repeatable)"
        rows.append(f"| {_code(invocation)} | {_default(action)} | {_escape(help_text)} |")
    if not rows:
        return []
    return ["| option | default | meaning |", "| --- | --- | --- |", *rows]


def _usage(parser: argparse.ArgumentParser) -> list[str]:
    """The usage line, wrapped at 100 columns whatever the terminal building the site."""
    formatter = parser.formatter_class(prog=parser.prog, width=100)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return ["```text", formatter.format_help().strip(), "```"]


def render() -> str:
    """The whole page, as Markdown."""
    with contextlib.redirect_stdout(io.StringIO()):  # pybullet prints its build time when imported
        from imagine_ros.cli import build_parser

        parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    summaries = {a.dest: a.help for a in sub._choices_actions}
    out = [
        "# Command-line reference",
        "",
        "Generated from the parsers of `imagine-ros` (`imagine_ros.cli.build_parser()`) each time the documentation is "
        "built, so it always matches the installed code. The guides explain when and why to use each command; "
        "`imagine-ros COMMAND --help` prints the same text in a terminal.",
        "",
        "## `imagine-ros`",
        "",
        _escape(parser.description or ""),
        "",
        *_usage(parser),
        "",
        *_options_table(parser),
        "",
        "| command | what it does |",
        "| --- | --- |",
        *(f"| [`{name}`](#imagine-ros-{name}) | {_escape(summaries.get(name) or '')} |" for name in sub.choices),
        "",
    ]
    for name, command in sub.choices.items():
        out += [f"## `imagine-ros {name}`", ""]
        if summaries.get(name):
            out += [f"**{_escape(summaries[name])}**", ""]
        if command.description and command.description != summaries.get(name):
            out += [_escape(command.description), ""]
        out += [*_usage(command), "", *_options_table(command), ""]
    return "\n".join(out)


def on_files(files: Files, config) -> Files:
    placeholder = files.get_file_from_path(PAGE)
    if placeholder is not None:
        files.remove(placeholder)
    files.append(File.generated(config, PAGE, content=render()))
    return files
