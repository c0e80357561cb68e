"""Fuzzed text input for the real rating readers (recemb_spark/io/readers.py).

Random bytes, quotes, delimiters, encodings (UTF-8, Latin-1, UTF-16, invalid bytes), line
endings (LF, CRLF, CR, mixed, none at the end) and huge fields. The properties: reading never
raises (no traceback), every line becomes a row that is either parsed or rejected with one of
the stable reasons, the rows read are exactly the lines of the files (as Hadoop's line reader
splits them, less the header lines), and read = ratings + rejects.

Spark is not started per example: each hypothesis example is one small file (hypothesis
generates them fast; a folder of 100 files per example overran its buffer and took minutes),
written into the folder of its (delimiter, header) combination together with the lines it
holds; then one Spark read per folder (8 at most) parses every file, and the properties are
checked per file (the rows of each ``source``). ``RECEMB_FUZZ_FILES`` (default 2,000) sets how
many files. A last test runs the whole ``recemb tables`` command on fuzzed folders.
"""
from __future__ import annotations

import json
import os
import random
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from recemb_spark.cli import main
from recemb_spark.config import load_config
from recemb_spark.io import readers

FILES = int(os.environ.get("RECEMB_FUZZ_FILES", "2000"))  # more locally: a deeper search
HEADER = ["userId", "movieId", "rating", "timestamp"]

_FUZZ = settings(max_examples=FILES, deadline=None, derandomize=True, database=None,
                 phases=[Phase.explicit, Phase.generate],  # properties are checked after
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.large_base_example])

# -- values --------------------------------------------------------------------------------

NASTY = ['"', '""', "'", ",", ";", "|", "\t", "::", "\\", "\x00", "\ufeff", "é", "日本",
         "\u2028", " ", "NaN", "inf", "-0", "1e400", "null", "\x1b[31m"]
ids = st.one_of(st.integers(-5, 10**6).map(str), st.sampled_from(NASTY),
                st.text(min_size=0, max_size=12))
ratings = st.one_of(st.sampled_from(["0.5", "1", "3.5", "5", "5.0", "0", "6", "-1", "", "abc",
                                     "NaN", "Infinity", "1e400", " 4 ", '"4.5"']),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr))
timestamps = st.one_of(st.integers(-10**13, 10**13).map(str),
                       st.sampled_from(["", "yesterday", "964982703", "9649827030000",
                                        "1.5e9", "-1", "NaN", '"964982703"']),
                       st.floats(allow_nan=True).map(repr))
huge = st.integers(10_000, 200_000).map(lambda n: "x" * n)


@st.composite
def field(draw, values) -> str:
    """A value, maybe quoted (RFC 4180, quotes doubled), maybe with a broken quote."""
    value = draw(st.one_of(values, huge) if draw(st.integers(0, 200)) == 0 else values)
    how = draw(st.sampled_from(["plain", "plain", "plain", "quoted", "broken"]))
    if how == "quoted":
        return '"' + value.replace('"', '""') + '"'
    if how == "broken":
        return '"' + value
    return value


@st.composite
def line(draw, delimiter: str) -> str:
    kind = draw(st.sampled_from(["row", "row", "row", "row", "short", "long", "text", "empty"]))
    if kind == "text":
        return draw(st.text(max_size=60))
    if kind == "empty":
        return draw(st.sampled_from(["", " ", "\t", delimiter * 3]))
    fields = [draw(field(ids)), draw(field(ids)), draw(field(ratings)),
              draw(field(timestamps))]
    if kind == "short":
        fields = fields[: draw(st.integers(0, 3))]
    elif kind == "long":
        fields += [draw(field(ids)) for _ in range(draw(st.integers(1, 3)))]
    return delimiter.join(fields)


@st.composite
def text_file(draw, delimiter: str, header: bool) -> bytes:
    """One file's bytes: lines, line endings, an encoding, maybe random bytes or a flipped
    byte; with ``header`` the header line (ASCII) first, as every file of a folder has it."""
    if draw(st.integers(0, 20)) == 0:
        data = draw(st.binary(max_size=300))  # anything at all
    else:
        lines = draw(st.lists(line(delimiter), max_size=12))
        ending = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))
        parts = []
        for i, text in enumerate(lines):
            sep = draw(st.sampled_from(["\n", "\r\n", "\r"])) if ending == "mixed" else ending
            parts.append(text + (sep if i < len(lines) - 1 or draw(st.booleans()) else ""))
        encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1", "utf-16",
                                         "utf-8-sig"]))
        data = "".join(parts).encode(encoding, errors="replace")
        if draw(st.integers(0, 10)) == 0 and data:  # a flipped byte
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes([data[at] ^ 0x80]) + data[at + 1:]
    if header:
        data = (delimiter.join(HEADER) + "\n").encode() + data
    return data


@st.composite
def one_file(draw) -> tuple[str, bool, bytes]:
    """``(delimiter, header, bytes)`` of one generated file."""
    delimiter = draw(st.sampled_from([",", ";", "|", "\t"]))
    header = draw(st.booleans())
    return delimiter, header, draw(text_file(delimiter, header))


# -- what the files hold, independently of Spark ---------------------------------------------


def hadoop_lines(data: bytes) -> list[str]:
    """The lines of a file as Hadoop's LineRecordReader (Spark's text source) cuts them — at
    LF, CR or CRLF, no empty line after a final line end — decoded as Spark decodes them."""
    if data.startswith(b"\xef\xbb\xbf"):  # LineRecordReader skips a UTF-8 byte order mark
        data = data[3:]
    if not data:
        return []
    parts = re.split(rb"\r\n|\r|\n", data)
    if parts[-1] == b"":
        parts = parts[:-1]
    return [p.decode("utf-8", errors="replace") for p in parts]


def one_mark(text: str) -> str:
    """``text`` with each run of U+FFFD (the mark for bytes that are not UTF-8) as one: how
    many marks an invalid sequence becomes differs between decoders (Python marks
    ``X\\xb0\\xf2\\xed\\xa6#`` four times, Java's three), the lines' text does not."""
    return re.sub("\ufffd+", "\ufffd", text)


def input_config(delimiter: str, header: bool):
    """The input settings for a folder of these files (tab: the tsv format)."""
    sets = ["input.format=tsv"] if delimiter == "\t" else \
        ["input.format=csv", f"input.csv_delimiter='{delimiter}'"]  # quoted: a bare | is YAML's
    # quoted: a bare true/false is a YAML boolean, which input.header (a string) refuses
    sets.append(f"input.header='{'true' if header else 'false'}'")
    if not header:
        sets.append(f"input.columns=[{', '.join(HEADER)}]")
    return load_config(overrides=sets).input


# -- the properties --------------------------------------------------------------------------


def test_every_fuzzed_line_is_parsed_or_rejected_with_a_reason(spark, tmp_path):
    written: dict[tuple[str, bool], dict[str, bytes]] = {}

    @_FUZZ
    @given(one_file())
    def generate(sample: tuple[str, bool, bytes]) -> None:
        delimiter, header, data = sample
        files = written.setdefault((delimiter, header), {})
        folder = tmp_path / f"{'tab' if delimiter == chr(9) else ord(delimiter)}-{header}"
        folder.mkdir(exist_ok=True)
        name = f"part-{len(files):05d}.csv"
        (folder / name).write_bytes(data)
        files[(folder / name).as_uri()] = data

    generate()
    assert sum(len(f) for f in written.values()) >= FILES
    for (delimiter, header), files in written.items():
        check_folder(spark, next(iter(files)).rsplit("/", 1)[0], delimiter, header, files)


def check_folder(spark, folder_uri: str, delimiter: str, header: bool,
                 files: dict[str, bytes]) -> None:
    """One Spark read of a folder of generated files; the properties, file by file."""
    header_text = delimiter.join(HEADER)
    expected = {uri: [ln for ln in hadoop_lines(data) if not (header and ln == header_text)]
                for uri, data in files.items()}
    cfg = input_config(delimiter, header)
    folder = folder_uri[len("file://"):]
    if not any(expected.values()):
        with pytest.raises(readers.InputError, match="is empty"):
            readers.read_ratings(spark, cfg, folder)
        return
    parsed = readers.read_ratings(spark, cfg, folder)  # never raises on any bytes
    try:
        assert parsed.cached is not None  # text input: every parsed row, with its source
        rows = parsed.cached.select("source", "line", "reason", "user_id", "item_id",
                                    "rating", "ts").collect()
        n_valid, n_rejects = parsed.valid.count(), parsed.rejects.count()
    finally:
        parsed.unpersist()
    by_source: dict[str, list] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    for uri, lines in expected.items():
        got = by_source.get(uri, []) or by_source.get(uri.replace("file:///", "file:/"), [])
        where = f"{uri}: {files[uri][:300]!r}"
        # every line of the file is one row, kept as it was
        read, want = Counter(one_mark(r["line"]) for r in got), Counter(map(one_mark, lines))
        assert read == want, (where, _difference(read, want, by_source, files))
        for r in got:
            if r["reason"] is None:  # a rating: whole
                assert r["user_id"] and r["item_id"] and r["ts"] is not None, where
                assert cfg.rating_min <= r["rating"] <= cfg.rating_max, where
            else:  # a reject, with a known reason
                assert r["reason"] in readers.REJECT_REASONS, where
    # read = the files' lines = ratings + rejects
    assert parsed.read == sum(map(len, expected.values())) == n_valid + n_rejects
    assert parsed.rejected == n_rejects


def _difference(read: Counter, want: Counter, by_source: dict[str, list],
                files: dict[str, bytes]) -> str:
    """What a file's rows lack and hold in excess, and where the lines in excess come from
    (the rows of other sources, the bytes of other files): short enough for a CI log."""
    extra, missing = read - want, want - read
    def origin(text: str) -> list[str]:
        return sorted({u.rsplit("/", 1)[-1] for u, rows in by_source.items()
                       for r in rows if r["line"] == text}
                      | {u.rsplit("/", 1)[-1] + " (bytes)" for u, data in files.items()
                         if text.encode("utf-8", "replace") in data})[:5]
    return (f"missing {len(missing)} {[t[:80] for t in missing][:5]}; "
            f"extra {len(extra)} {[(t[:80], origin(t)) for t in extra][:5]}")


def test_recemb_tables_on_fuzzed_folders_ends_in_one_line_or_succeeds(keep_spark, tmp_path,
                                                                      capsys):
    """The whole command on two generated folders (one mostly valid, one mostly garbage):
    exit 0 with read = ratings + rejects in the manifest, or exit 3 naming the reject
    fraction — one line, no traceback."""
    rng = random.Random(7)
    good = [f"{rng.randint(1, 50)},{rng.randint(1, 80)},{rng.choice([1, 2.5, 4, 5])},"
            f"{1_600_000_000 + i}" for i in range(800)]  # 7 bad of 807: under 1%
    bad = ['"1,2', "\x00\x01", "5,5,9,9", "a,b,c", "", "1,,3,4", "1,2,3,nope"]
    for name, lines in (("mostly_valid", good + bad), ("garbage", bad * 20 + good[:5])):
        folder_path = tmp_path / name
        folder_path.mkdir()
        for i in range(0, len(lines), 50):
            (folder_path / f"part-{i:04d}.csv").write_bytes(
                ("\r\n".join(["userId,movieId,rating,timestamp", *lines[i:i + 50]]))
                .encode("utf-8"))
        capsys.readouterr()
        wh = tmp_path / f"wh-{name}"
        rc = main(["tables", "--input", str(folder_path), "--warehouse", str(wh),
                   "--run-date", "2026-11-20", "-q", "--set", "sequences.min_length=1"])
        err = capsys.readouterr().err
        assert "Traceback" not in err and "\tat " not in err
        manifest = json.loads((wh / "_manifests" / "dt=2026-11-20" / "tables.json").read_text())
        if name == "mostly_valid":
            assert rc == 0, err
            rows = manifest["rows"]
            assert rows["read"] == len(lines)
            assert rows["rejected"] == len(bad) and rows["rejects"] == len(bad)
            assert rows["read"] == rows["rejected"] + rows["ratings"] + \
                manifest["details"]["duplicates_dropped"]
        else:
            assert rc == 3 and len(err.strip().splitlines()) == 1, err
            assert f"{len(bad) * 20} of {len(lines)} rows rejected" in err, err
            assert "input.max_reject_fraction" in err
            assert manifest["status"] == "failed"
            rejects = keep_spark.read.parquet(str(wh / "rejects" / "dt=2026-11-20"))
            assert rejects.count() == len(bad) * 20  # the evidence is written
