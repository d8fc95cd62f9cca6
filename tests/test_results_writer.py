"""The shared results writer (hetsearch.utils.results): one JSON format for every bench, with the
standard Markdown table or a bench's own report (bench/bct.py)."""

from __future__ import annotations

import json

import pytest

from hetsearch.utils.results import write_results

ROW = {"method": "bct", "query_model": "q", "gallery_model": "g", "recall_at_1": 0.5, "map_at_r": 0.25,
       "query_mflops": 1.0, "gallery_mflops": 50.0}


def test_standard_table_and_payload_format(tmp_path):
    json_path, md_path = write_results("x", protocol={"split": "test"}, rows=[ROW], timings_s={"total": 1.5},
                                       columns=["method", "recall_at_1"], title="X", extra={"quick": True},
                                       results_dir=tmp_path)
    payload = json.loads(json_path.read_text())
    assert list(payload) == ["command", "machine", "protocol", "rows", "timings_s", "quick"]
    assert payload["rows"] == [ROW] and payload["quick"] is True
    md = md_path.read_text()
    assert md.startswith("# X\n") and "| bct | 0.5000 |" in md and "Timings (s): total 1.5" in md


def test_own_markdown_report_gets_the_written_payload(tmp_path):
    seen = []

    def report(payload: dict) -> str:
        seen.append(payload)
        return f"# own report\n{payload['rows'][0]['recall_at_1']}\n"

    json_path, md_path = write_results("y", protocol={}, rows=[ROW], timings_s={}, extra={"open_set": None},
                                       results_dir=tmp_path, markdown=report)
    assert md_path.read_text() == "# own report\n0.5\n"
    assert seen == [json.loads(json_path.read_text())]


def test_rows_without_the_shared_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        write_results("z", protocol={}, rows=[{"method": "bct"}], timings_s={}, results_dir=tmp_path)
    assert not (tmp_path / "z.json").exists()


def test_revision_is_uncommitted_for_code_changes_not_for_results(tmp_path):
    import subprocess

    from hetsearch.utils.revision import git_revision

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "x.json").write_text("{}")
    (tmp_path / "code.py").write_text("a = 1\n")
    git("init", "-q"); git("add", "."); git("commit", "-qm", "one")
    head = git_revision(tmp_path)
    assert len(head) == 40 and git_revision(tmp_path, short=True) == head[:len(git_revision(tmp_path, short=True))]
    (tmp_path / "docs" / "results" / "x.json").write_text('{"rows": []}')   # a study rewriting its results
    assert git_revision(tmp_path / "docs") == head
    (tmp_path / "code.py").write_text("a = 2\n")
    assert git_revision(tmp_path) == head + " + uncommitted changes"
    assert git_revision(tmp_path.parent / "no-such-checkout-here") == "unknown"
