"""vae.proto is the contract every language's generated code is built from, so it is held to buf's
checks: `buf lint` (STANDARD and COMMENTS, with only the exceptions buf.yaml gives reasons for),
`buf format`, and `buf breaking` (FILE rules) against the proto of the baseline commit, so a
changed field number, type or name fails here rather than in another language's client.

The baseline is $VAESERVE_PROTO_BASE if set (a git revision, e.g. the branch a change merges
into); otherwise HEAD when the work tree's proto differs from it (a change not yet committed),
else HEAD~1 (a fresh clone checks its last commit). A shallow clone is deepened by one commit
when HEAD~1 is missing.

Needs the buf CLI: `npm ci --prefix tools/proto` installs the pinned one (or buf on PATH, or
$BUF); without it these tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO = "protos/vaeserve/v1/vae.proto"  # in the repository
IN_MODULE = "vaeserve/v1/vae.proto"  # in the buf module rooted at protos/
BASE_ENV = "VAESERVE_PROTO_BASE"
TOOLS = ROOT / "tools" / "proto" / "node_modules"

# What STANDARD says of vae.proto without buf.yaml's ignore_only: exactly these, each explained
# there. A new finding (a new enum or RPC breaking the rules) fails test_lint_ignores_...
IGNORED = sorted(
    [
        ("ENUM_VALUE_PREFIX", f'Enum value name "DTYPE_{v}" should be prefixed with "D_TYPE_".')
        for v in ("UNSPECIFIED", "FLOAT32", "UINT8")
    ]
    + [
        (
            "RPC_REQUEST_RESPONSE_UNIQUE",
            f'"vaeserve.v1.{t}" is used as the request or response type for multiple RPCs.',
        )
        for t in ("SampleRequest", "SampleResponse")
        for _ in ("Sample", "SampleStream")
    ]
    + [
        (
            "RPC_REQUEST_STANDARD_NAME",
            'RPC request type "SampleRequest" should be named "SampleStreamRequest" or '
            '"VaeServiceSampleStreamRequest".',
        ),
        (
            "RPC_RESPONSE_STANDARD_NAME",
            'RPC response type "SampleResponse" should be named "SampleStreamResponse" or '
            '"VaeServiceSampleStreamResponse".',
        ),
    ]
)


def find_buf() -> str | None:
    """$BUF, the pinned npm package's native binary (no node needed), its node shim, or PATH."""
    candidates = [os.environ.get("BUF", "")]
    candidates += [str(p) for p in sorted(TOOLS.glob("@bufbuild/buf-*/bin/buf*"))]
    candidates += [str(TOOLS / ".bin" / "buf"), shutil.which("buf") or ""]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def buf() -> str:
    path = find_buf()
    if path is None:
        pytest.skip(
            "buf CLI not installed (looked at $BUF, tools/proto/node_modules, PATH): "
            "run `npm ci --prefix tools/proto`"
        )
    return path


def run(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def findings(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    """buf's --error-format json findings (one JSON object per line); anything else on stdout or
    a failure without findings (a build error) is reported as it came."""
    out = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert out or result.returncode == 0, f"buf failed: {result.stdout}{result.stderr}"
    return out


def shown(found: list[dict[str, object]]) -> str:
    return "\n".join(
        f"{f.get('path')}:{f.get('start_line')}: {f['type']}: {f['message']}" for f in found
    )


def module_copy(root: Path, text: str) -> Path:
    """A buf module (a folder) holding only vae.proto with `text`."""
    path = root / IN_MODULE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return root


def test_lint_is_clean(buf):
    result = run(buf, "lint", "--error-format", "json")
    found = findings(result)
    assert not found, f"buf lint (buf.yaml) finds:\n{shown(found)}"
    assert result.returncode == 0, result.stderr


def test_lint_ignores_only_the_documented_findings(buf, tmp_path):
    """buf.yaml's ignore_only is per file: without it, STANDARD finds exactly IGNORED."""
    listed = run(buf, "config", "ls-lint-rules", "--configured-only", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rules = [json.loads(line)["id"] for line in listed.stdout.splitlines() if line.strip()]
    assert "ENUM_VALUE_PREFIX" in rules and "PACKAGE_VERSION_SUFFIX" in rules  # STANDARD
    module = module_copy(tmp_path, (ROOT / PROTO).read_text())
    config = json.dumps({"version": "v2", "lint": {"use": rules}})
    found = findings(run(buf, "lint", str(module), "--config", config, "--error-format", "json"))
    assert sorted((str(f["type"]), str(f["message"])) for f in found) == IGNORED, shown(found)


def test_format_is_clean(buf):
    result = run(buf, "format", "--diff", "--exit-code")
    assert result.returncode == 0, f"run `buf format -w`:\n{result.stdout}{result.stderr}"


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return run("git", *args, timeout=60)


def resolves(ref: str) -> bool:
    return git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode == 0


def baseline() -> tuple[str, str | None]:
    """The revision to compare with, and vae.proto there (None: it has no vae.proto yet)."""
    if git("rev-parse", "--git-dir").returncode != 0:
        pytest.fail(f"{ROOT} is not a git checkout: the breaking check needs the baseline commit")
    ref = os.environ.get(BASE_ENV, "")
    if not ref:
        head = git("show", f"HEAD:{PROTO}")
        changed = head.returncode != 0 or head.stdout != (ROOT / PROTO).read_text()
        ref = "HEAD" if changed else "HEAD~1"
        if ref == "HEAD~1" and not resolves(ref):
            shallow = git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"
            if not shallow:
                return "HEAD (the first commit)", None
            git("fetch", "--quiet", "--deepen=1")
    if not resolves(ref):
        pytest.fail(
            f"baseline {ref!r} is not in this clone: clone with history (fetch-depth 2 or more, "
            f"or `git fetch --deepen=1`) or set {BASE_ENV} to a revision that is"
        )
    old = git("show", f"{ref}:{PROTO}")
    return ref, old.stdout if old.returncode == 0 else None


def with_first_options(old: str, new: str) -> str:
    """The language options (go_package, java_package, ...) came all at once, to a proto that had
    none: a baseline without any file option gets the current ones, so introducing them is
    allowed once, and changing them later is caught."""
    if any(line.startswith("option ") for line in old.splitlines()):
        return old
    options = "".join(f"{line}\n" for line in new.splitlines() if line.startswith("option "))
    package = next(line for line in old.splitlines() if line.startswith("package "))
    return old.replace(f"{package}\n", f"{package}\n{options}", 1)


def breaking(buf: str, against: Path, cwd: Path = ROOT) -> list[dict[str, object]]:
    return findings(
        run(buf, "breaking", "--against", str(against), "--error-format", "json", cwd=cwd)
    )


def test_no_breaking_change_from_the_baseline(buf, tmp_path):
    ref, old = baseline()
    if old is None:  # nothing published before: nothing to break
        return
    new = (ROOT / PROTO).read_text()
    against = module_copy(tmp_path / "baseline", with_first_options(old, new))
    found = breaking(buf, against)
    assert not found, f"breaking changes against {ref}:\n{shown(found)}"


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ("  uint64 seed = 4;\n  // Index", "  uint64 seed = 14;\n  // Index", "FIELD_NO_DELETE"),
        ("  uint32 steps = 7;", "  uint64 steps = 7;", "FIELD_SAME_TYPE"),
        ("  Tensor z_mean = 1;", "  Tensor z_means = 1;", "FIELD_SAME_NAME"),
        ('option java_package = "dev.', 'option java_package = "com.', "FILE_SAME_JAVA_PACKAGE"),
    ],
    ids=["field-number", "field-type", "field-name", "java-package"],
)
def test_the_breaking_check_catches(buf, tmp_path, old, new, rule):
    """The repository's buf.yaml, on a copy of vae.proto with one change, against the original."""
    text = (ROOT / PROTO).read_text()
    assert text.count(old) == 1, f"{old!r} is no longer in {PROTO}: pick another example"
    changed = tmp_path / "changed"
    (changed / "protos").mkdir(parents=True)
    shutil.copy(ROOT / "buf.yaml", changed / "buf.yaml")
    module_copy(changed / "protos", text.replace(old, new))
    found = breaking(buf, module_copy(tmp_path / "original", text), cwd=changed)
    assert rule in {f["type"] for f in found}, shown(found)
