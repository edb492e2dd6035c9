"""docs/service.md's settings table is written from Settings (service/settings_doc.py): it must
be current, so a new or changed setting cannot leave the docs behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaeserve.service.config import Settings
from vaeserve.service.settings_doc import END, START, markdown_table, with_table

DOCS = Path(__file__).resolve().parents[2] / "docs" / "service.md"


def test_docs_table_is_current():
    text = DOCS.read_text()
    assert with_table(text) == text, "run `make docs-settings` to rewrite docs/service.md's table"


def test_table_has_one_row_per_setting_with_its_docstring():
    rows = markdown_table().splitlines()[2:]
    assert [r.split(" | ")[0].removeprefix("| ") for r in rows] == list(Settings.model_fields)
    assert "`--no-reflection`" in rows[list(Settings.model_fields).index("reflection")]
    assert "`VAESERVE_MAX_QUEUE` | `4096` |" in rows[list(Settings.model_fields).index("max_queue")]


def test_missing_markers_are_an_error():
    with pytest.raises(ValueError, match="markers"):
        with_table(f"no table here {START}")
    assert with_table(f"a\n{START}\nold\n{END}\nb").endswith(f"{END}\nb")


def test_every_serve_flag_is_derived_from_its_field():
    from vaeserve.cli import build_parser, serve_flags

    flags = serve_flags()
    for name, field in Settings.model_fields.items():
        kind, text = flags[name]
        assert f"env VAESERVE_{name.upper()})" in text, name
        assert (kind is None) == (field.annotation is bool), name
    serve = build_parser().parse_args(["serve", "--no-reflection", "--max-queue", "7"])
    assert serve.serve_reflection is False and serve.serve_max_queue == 7
