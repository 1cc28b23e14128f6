"""Transcripts: cue timestamps and speakers survive merging; corpus subtitle files never crash."""

from pathlib import Path

import pytest

from scoutdoc.ingest.document import SKIP_CODES
from scoutdoc.ingest import load_sources
from scoutdoc.ingest.transcript import parse_timed_text

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

VTT = """WEBVTT

00:00:01.000 --> 00:00:03.500
<v Alice>Welcome to the budget review.

00:00:03.600 --> 00:00:06.000
<v Alice>We start with the north region.

00:00:06.500 --> 00:00:09.250
<v Bob>North grew twelve percent.

00:01:02.000 --> 00:01:05.000
Bob: After a long pause, south was flat.
"""


def test_vtt_speakers_and_timestamps(tmp_path):
    path = tmp_path / "meeting.vtt"
    path.write_text(VTT, encoding="utf-8")
    (document,) = load_sources([path]).documents
    assert document.kind == "transcript"
    cues = document.meta["cues"]
    assert [(c["start"], c["end"], c["speaker"]) for c in cues] == [
        ("00:00:01.000", "00:00:03.500", "Alice"),
        ("00:00:03.600", "00:00:06.000", "Alice"),
        ("00:00:06.500", "00:00:09.250", "Bob"),
        ("00:01:02.000", "00:01:05.000", "Bob"),
    ]
    segments = [(s.where, s.text) for s in document.segments]
    assert segments == [
        ("00:00:01.000-00:00:06.000", "Alice: [00:00:01] Welcome to the budget review. [00:00:03] We start with the north region."),
        ("00:00:06.500-00:00:09.250", "Bob: [00:00:06] North grew twelve percent."),
        ("00:01:02.000-00:01:05.000", "Bob: [00:01:02] After a long pause, south was flat."),
    ]


def test_srt_and_sbv_formats(tmp_path):
    (tmp_path / "a.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nHello\n\n2\n00:00:02,500 --> 00:00:04,000\nWorld\n", encoding="utf-8")
    (tmp_path / "b.sbv").write_text("0:00:01.000,0:00:02.000\nHi there\n\n0:00:03.000,0:00:04.000\nAgain\n", encoding="utf-8")
    result = load_sources([tmp_path / "a.srt", tmp_path / "b.sbv"])
    assert [d.segments[0].where for d in result.documents] == ["00:00:01.000-00:00:04.000", "00:00:01.000-00:00:04.000"]


def test_whisper_style_plain_text(tmp_path):
    path = tmp_path / "talk.txt"
    path.write_text("[00:00.000 --> 00:04.000]  Good morning.\n[00:04.000 --> 00:09.500]  Carol: Thanks for coming.\n", encoding="utf-8")
    (document,) = load_sources([path]).documents
    assert document.kind == "transcript"
    assert [(c["start"], c["end"], c["speaker"]) for c in document.meta["cues"]] == [
        ("00:00:00.000", "00:00:04.000", ""),
        ("00:00:04.000", "00:00:09.500", "Carol"),
    ]


def test_prose_is_not_mistaken_for_a_transcript():
    assert parse_timed_text("Meeting at 10:30 today.\nBring the slides.\nAnd coffee.\n") is None


def test_a_table_or_a_log_with_times_keeps_its_lines(tmp_path):
    rows = "time,train,platform\n08:15,Express A,2\n08:45,Local B,3\n09:10,Express C,1\n"
    (tmp_path / "timetable.csv").write_text(rows)
    (tmp_path / "app.log").write_text("10:15:05 ERROR Database: down\n10:15:09 INFO Database: up\n")
    table, log = load_sources([tmp_path / "timetable.csv", tmp_path / "app.log"]).documents
    assert table.kind == log.kind == "text"
    assert table.text.startswith("time,train,platform\n08:15,Express A,2") and "ERROR Database: down" in log.text


def test_the_lines_before_a_transcripts_first_time_are_kept(tmp_path):
    path = tmp_path / "minutes.txt"
    path.write_text("Weekly sync, all present\n[00:00:01] Ana: Morning.\n[00:00:05] Tom: Hi.\n")
    (document,) = load_sources([path]).documents
    assert document.kind == "transcript" and "Weekly sync, all present" in document.text.splitlines()[0]
    assert [c["speaker"] for c in document.meta["cues"]] == ["", "Ana", "Tom"]


CORPUS_SUBS = sorted(p for p in CORPUS.joinpath("subtitles").iterdir()) if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", CORPUS_SUBS, ids=lambda p: p.name)
def test_every_corpus_subtitle_yields_text_or_a_clear_skip(path):
    result = load_sources([path])
    assert len(result.documents) + len(result.skipped) == 1
    if result.documents:
        document = result.documents[0]
        assert document.kind == "transcript" and document.chars > 0
        assert all(s.where for s in document.segments)
    else:
        reason = result.skipped[0].reason
        assert result.skipped[0].code in SKIP_CODES
        assert reason and "\n" not in reason


def test_corpus_known_files(corpus):
    (document,) = load_sources([corpus / "subtitles" / "sample.vtt"]).documents
    assert document.meta["cues"][0]["start"] == "00:00:00.500"
    assert load_sources([corpus / "subtitles" / "invalid.vtt"]).skipped[0].reason.startswith("not a valid VTT file")
    assert load_sources([corpus / "subtitles" / "captions_with_bom.vtt"]).documents


def test_srt_without_cue_numbers_is_read(tmp_path):
    path = tmp_path / "unnumbered.srt"
    path.write_text("00:00:01,000 --> 00:00:02,000\nHello\n\n00:00:02,500 --> 00:00:04,000\nWorld\n", encoding="utf-8")
    (document,) = load_sources([path]).documents
    assert [(c["start"], c["text"]) for c in document.meta["cues"]] == [("00:00:01.000", "Hello"), ("00:00:02.500", "World")]


def test_corpus_srt_with_its_numbers_removed_reads_the_same(corpus, tmp_path):
    numbered = (corpus / "subtitles" / "sample.srt").read_text(encoding="utf-8")
    path = tmp_path / "sample.srt"
    path.write_text("\n".join(line for line in numbered.splitlines() if not line.strip().isdigit()) + "\n", encoding="utf-8")
    (expected,) = load_sources([corpus / "subtitles" / "sample.srt"]).documents
    (document,) = load_sources([path]).documents
    assert document.meta["cues"] == expected.meta["cues"] and len(expected.meta["cues"]) >= 5


def test_subtitles_inside_a_codebase_are_packed_as_written(tmp_path):
    repo = tmp_path / "player"
    (repo / "fixtures").mkdir(parents=True)
    (repo / "fixtures" / "styled.vtt").write_text(VTT.replace("WEBVTT\n", "WEBVTT\n\nSTYLE\n::cue { color: red }\n"), encoding="utf-8")
    (repo / "fixtures" / "timed.txt").write_text("[00:00.000 --> 00:04.000] Good morning.\n[00:04.000 --> 00:09.500] Bye.\n", encoding="utf-8")
    documents = {d.source: d for d in load_sources([repo]).documents}
    vtt, timed = documents["fixtures/styled.vtt"], documents["fixtures/timed.txt"]
    assert vtt.kind == "text" and vtt.language == "vtt"
    assert "::cue { color: red }" in vtt.text and "<v Alice>Welcome" in vtt.text
    assert timed.kind == "text" and timed.text.startswith("[00:00.000 --> 00:04.000] Good morning.")
    (alone,) = load_sources([repo / "fixtures" / "styled.vtt"]).documents  # named on its own: a transcript
    assert alone.kind == "transcript"


def test_cues_out_of_order_are_not_merged_into_a_range_that_runs_backwards(tmp_path):
    path = tmp_path / "jumbled.srt"
    path.write_text("1\n00:05:00,000 --> 00:05:02,000\nLater line.\n\n2\n00:00:00,500 --> 00:00:02,000\nEarlier line.\n")
    (document,) = load_sources([path]).documents
    assert [s.where for s in document.segments] == ["00:05:00.000-00:05:02.000", "00:00:00.500-00:00:02.000"]


def test_subtitles_whose_times_cannot_be_read_say_so(tmp_path):
    path = tmp_path / "odd.vtt"
    path.write_text("WEBVTT\n\n00:01,000 --> 00:02,000\nHello there.\n")
    result = load_sources([path])
    assert not result.documents and "cue times could not be read" in result.skipped[0].reason


def test_subtitles_with_times_but_no_text_say_that(tmp_path):
    path = tmp_path / "blank.vtt"
    path.write_text("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<i></i>\n")
    result = load_sources([path])
    assert not result.documents and result.skipped[0].code == "no_text" and "no cues with text" in result.skipped[0].reason


def test_character_references_and_ssa_overrides_are_not_left_in_the_text(tmp_path):
    vtt, srt = tmp_path / "a.vtt", tmp_path / "b.srt"
    vtt.write_text("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nSmith &amp; Sons &lt;Ltd&gt;\n")
    srt.write_text("1\n00:00:01,000 --> 00:00:02,000\n{\\an8}Up here.\n")
    first, second = load_sources([vtt, srt]).documents
    assert "Smith & Sons <Ltd>" in first.text and "&amp;" not in first.text
    assert "Up here." in second.text and "an8" not in second.text
