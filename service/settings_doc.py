"""The settings table of docs/service.md, written from `Settings.model_fields`, so the docs say
what the code does: a field's docstring is its one description (the `serve --help` text comes
from the same place). `python -m vaeserve.service.settings_doc --write docs/service.md` (`make
docs-settings`) rewrites the table between its markers; a unit test fails when it is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaeserve.service.config import Settings

START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def flag_name(name: str) -> str:
    """`max_batch_size` -> `--max-batch-size`."""
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    """`max_batch_size` -> `VAESERVE_MAX_BATCH_SIZE`."""
    return f"{Settings.model_config.get('env_prefix', '')}{name.upper()}"


def description(name: str) -> str:
    """The field's docstring on one line (the docs table and `serve --help` both show it)."""
    return " ".join((Settings.model_fields[name].description or "").split())


def shown_default(name: str) -> str:
    """The field's default as the docs and `--help` show it."""
    value = Settings.model_fields[name].get_default(call_default_factory=True)
    if value is None:
        return "unset"
    return str(value).lower() if isinstance(value, bool) else str(value)


def markdown_table() -> str:
    """One row per setting: name, flag, variable, default and the field's docstring."""
    rows = [
        "| setting | flag | environment | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        flag = flag_name(name)
        if field.annotation is bool:
            flag = f"{flag}` / `--no-{flag[2:]}"
        cells = [name, f"`{flag}`", f"`{env_name(name)}`", f"`{shown_default(name)}`"]
        meaning = description(name).replace("|", r"\|")  # a pipe would end the cell
        rows.append(f"| {' | '.join(cells)} | {meaning} |")
    return "\n".join(rows)


def with_table(text: str) -> str:
    """`text` with the part between the markers replaced by the current table."""
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"the settings table markers {START} ... {END} are missing")
    return f"{head}{START}\n{markdown_table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="rewrite the table in this Markdown file")
    args = parser.parse_args(argv)
    if args.write is None:
        print(markdown_table())
    else:
        args.write.write_text(with_table(args.write.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
