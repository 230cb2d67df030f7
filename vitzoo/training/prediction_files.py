"""Prediction files: CSV, JSON Lines or Parquet, written as rows arrive and resumable.

CSV and JSONL rows are appended and flushed batch by batch, so an interrupted run leaves every
finished row on disk. ``resume`` reads the paths already written (dropping a last line the
interruption cut short) and the run skips them, so each input ends up in the file exactly once.
Parquet cannot be appended to, so its rows stream into ``NAME.parquet.partial.jsonl`` (resumed the
same way) and become ``NAME.parquet`` in one atomic step at the end; resuming a finished Parquet
file (new inputs since) streams its rows back first, so the new file holds the old rows and the
new ones. Parquet needs ``pyarrow``, and without it the run stops before doing any work, in one
plain line. Rows are matched to inputs by absolute path (:func:`path_key`), so a resume that
spells the folder another way (relative, absolute) still skips what is written.

CSV columns: ``path``, ``class_1``, ``probability_1`` ... ``class_k``, ``probability_k``,
``error`` (empty unless the input could not be read). JSONL: ``{"path", "top": [{"class",
"index", "probability"}]}`` or ``{"path", "error"}``. Parquet: ``path``, ``classes``,
``probabilities``, ``indices`` (lists, best first) and ``error``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vitzoo.errors import InputError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}


def output_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"--output {path}: the suffix names the format; allowed: {', '.join(FORMATS)}"
        )
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError(
                f"--output {path}: Parquet needs pyarrow (pip install pyarrow); or write "
                f"{path.with_suffix('.csv')}"
            ) from None
    return fmt


def partial_stream(path: Path) -> Path:
    """Where the rows of a Parquet output stream until the run completes (the file itself for
    CSV / JSONL)."""
    return (
        path.with_name(path.name + ".partial.jsonl") if output_format(path) == "parquet" else path
    )


def path_key(path: str | Path) -> str:
    """The key a written row and an input are matched by: the absolute, normalised path."""
    return os.path.abspath(os.fspath(path))


def csv_header(k: int) -> list[str]:
    columns = ["path"]
    for i in range(1, k + 1):
        columns += [f"class_{i}", f"probability_{i}"]
    return [*columns, "error"]


def csv_row(row: dict[str, Any], k: int) -> list[str]:
    cells = [row["path"]]
    top = row.get("top") or []
    for i in range(k):
        if i < len(top):
            cells += [top[i]["class"], f"{top[i]['probability']:.6g}"]
        else:
            cells += ["", ""]
    return [*cells, row.get("error") or ""]


def _complete_lines(path: Path) -> list[str]:
    """The file's complete lines; a last line without its newline (cut by an interruption) is
    removed from the file too, so appending continues on a clean line."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(end)
    return data[:end].decode("utf-8").splitlines()


class PredictionFile:
    """Where rows go; ``done`` holds the paths a resumed run must skip."""

    def __init__(self, path: Path, k: int, *, resume: bool = False) -> None:
        self.path, self.k = path, k
        self.format = output_format(path)
        self.stream = partial_stream(path)
        #: keys (:func:`path_key`) of the inputs already written
        self.done: set[str] = set()
        if resume:
            self._read_done()
        else:
            for old in {self.path, self.stream}:
                old.unlink(missing_ok=True)
        new = not self.stream.exists() or self.stream.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.stream.open("a", encoding="utf-8", newline="")
        if new and self.format == "csv":
            self._write_csv([csv_header(k)])

    def _read_done(self) -> None:
        if self.format == "parquet" and self.path.exists() and not self.stream.exists():
            self._stream_parquet_back()
        if not self.stream.exists():
            return
        lines = _complete_lines(self.stream)
        if self.format == "csv":
            rows = list(csv.reader(lines))
            if rows and rows[0] != csv_header(self.k):
                raise InputError(
                    f"{self.path}: its columns are not those of --top-k {self.k} "
                    f"({', '.join(rows[0][:3])} ...); resume with the --top-k it was started with"
                )
            self.done = {path_key(r[0]) for r in rows[1:] if r}
        else:
            self.done = {path_key(json.loads(line)["path"]) for line in lines if line.strip()}

    def _stream_parquet_back(self) -> None:
        """A finished Parquet file's rows, written back as the stream a run appends to."""
        import pyarrow.parquet as pq

        table = pq.read_table(self.path).to_pylist()
        with self.stream.open("w", encoding="utf-8") as handle:
            for row in table:
                top = [
                    {"class": c, "index": i, "probability": p}
                    for c, i, p in zip(
                        row["classes"] or [],
                        row["indices"] or [],
                        row["probabilities"] or [],
                        strict=True,
                    )
                ]
                plain = _plain({"path": row["path"], "top": top or None, "error": row["error"]})
                handle.write(json.dumps(plain) + "\n")

    def _write_csv(self, rows: Iterable[list[str]]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        self.handle.write(buffer.getvalue())

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows`` and flush them to disk."""
        if not rows:
            return
        if self.format == "csv":
            self._write_csv(csv_row(r, self.k) for r in rows)
        else:
            self.handle.write("".join(json.dumps(_plain(r)) + "\n" for r in rows))
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self, complete: bool = True) -> None:
        """Close; a complete Parquet run turns its stream into the Parquet file."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if complete and self.format == "parquet":
            self._write_parquet()

    def _write_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        lines = self.stream.read_text(encoding="utf-8").splitlines() if self.stream.exists() else []
        rows = [json.loads(line) for line in lines if line.strip()]
        table = pa.table(
            {
                "path": [r["path"] for r in rows],
                "classes": [[t["class"] for t in r.get("top") or []] for r in rows],
                "probabilities": [[t["probability"] for t in r.get("top") or []] for r in rows],
                "indices": [[t["index"] for t in r.get("top") or []] for r in rows],
                "error": [r.get("error") for r in rows],
            }
        )
        partial = self.path.with_name(self.path.name + ".tmp")
        pq.write_table(table, partial)
        os.replace(partial, self.path)
        self.stream.unlink(missing_ok=True)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None}
