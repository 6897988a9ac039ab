"""Label formats: First Impressions V2 pickles (and a malicious one), V1 CSVs, generic CSVs."""

from __future__ import annotations

import pickle
import pickletools
from pathlib import Path

import pytest

from core.training.datasets import (
    FORMAT_GENERIC,
    FORMAT_V1,
    FORMAT_V2,
    group_of,
    load_labelled_set,
)
from core.training.labels import (
    DatasetError,
    UnsafePickleError,
    load_plain_pickle,
    read_first_impressions_v1,
    read_first_impressions_v2,
    read_generic_csv,
)
from tests.training.labels_files import (
    RunsCommand,
    python2_pickle,
    touch_videos,
    v2_annotations,
    write_v1_csv,
)

# Distinct values per trait, so any mix-up of the order shows.
LABELS = {
    "J4GQm9j0JZ0.003.mp4": (0.11, 0.22, 0.33, 0.44, 0.55),  # O, C, E, A, N
    "J4GQm9j0JZ0.004.mp4": (0.12, 0.23, 0.34, 0.45, 0.56),
    "caf\xe9Vid0000.001.mp4": (0.61, 0.72, 0.83, 0.94, 0.05),  # a latin-1 byte in the name
}


def test_python2_pickle_helper_writes_a_valid_protocol_2_stream() -> None:
    data = python2_pickle(v2_annotations(LABELS))
    opcodes = {op.name for op, _, _ in pickletools.genops(data)}
    assert {"PROTO", "SHORT_BINSTRING", "BINFLOAT", "SETITEMS"} <= opcodes
    assert "GLOBAL" not in opcodes and "BINUNICODE" not in opcodes


def test_v2_python2_pickle_maps_to_ocean_order(tmp_path: Path) -> None:
    path = tmp_path / "annotation_training.pkl"
    path.write_bytes(python2_pickle(v2_annotations(LABELS)))
    rows = {row.video: row for row in read_first_impressions_v2(path, "train")}
    assert set(rows) == set(LABELS)  # `interview` is not a clip; the latin-1 name decodes
    for video, labels in LABELS.items():
        assert rows[video].labels == labels
        assert rows[video].split == "train"


def test_v2_folder_uses_the_three_files_as_splits_and_finds_videos_anywhere(
    tmp_path: Path,
) -> None:
    names = list(LABELS)
    for split_file, video in zip(
        ("annotation_training.pkl", "annotation_validation.pkl", "annotation_test.pkl"),
        names,
        strict=True,
    ):
        data = python2_pickle(v2_annotations({video: LABELS[video]}))
        (tmp_path / split_file).write_bytes(data)
    touch_videos(tmp_path / "train-1" / "nested", names[:2])
    touch_videos(tmp_path / "test-1", [names[2], "unlabelled.001.mp4"])
    labelled = load_labelled_set(tmp_path)
    assert labelled.format == FORMAT_V2
    by_id = {clip.clip_id: clip for clip in labelled.clips}
    assert {c: by_id[c].split for c in names} == dict(
        zip(names, ("train", "validation", "test"), strict=True)
    )
    assert by_id[names[0]].group == "J4GQm9j0JZ0" == by_id[names[1]].group
    assert labelled.unlabelled_videos == ["test-1/unlabelled.001.mp4"]
    assert labelled.missing_videos == []


def test_malicious_pickle_is_refused_without_running_anything(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = {"openness": {"x.001.mp4": RunsCommand(f"touch {marker}")}}
    path = tmp_path / "annotation_training.pkl"
    path.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refused to load .*(posix|os)\.system"):
        load_plain_pickle(path)
    with pytest.raises(UnsafePickleError):
        load_labelled_set(tmp_path)
    assert not marker.exists()


def test_pickle_of_other_plain_types_is_refused_with_what_was_found(tmp_path: Path) -> None:
    path = tmp_path / "annotation_validation.pkl"
    path.write_bytes(pickle.dumps({"openness": {"a.001.mp4": [0.5]}}, protocol=2))
    with pytest.raises(UnsafePickleError, match="got list"):
        load_plain_pickle(path)


def test_v2_incomplete_or_out_of_range_labels_are_errors(tmp_path: Path) -> None:
    data = v2_annotations(LABELS)
    del data["neuroticism"]["J4GQm9j0JZ0.004.mp4"]
    path = tmp_path / "annotation_test.pkl"
    path.write_bytes(python2_pickle(data))
    with pytest.raises(DatasetError, match=r"J4GQm9j0JZ0\.004\.mp4 has no neuroticism"):
        read_first_impressions_v2(path)
    data = v2_annotations({"a.001.mp4": (0.1, 0.2, 1.7, 0.4, 0.5)})
    path.write_bytes(python2_pickle(data))
    with pytest.raises(DatasetError, match=r"extraversion = 1\.7"):
        read_first_impressions_v2(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="not a readable pickle"):
        read_first_impressions_v2(path)


def test_v1_csv_columns_are_mapped_from_e_a_c_n_o(tmp_path: Path) -> None:
    path = write_v1_csv(tmp_path / "training_gt.csv", LABELS)
    rows = {row.video: row for row in read_first_impressions_v1(path, "train")}
    assert {video: row.labels for video, row in rows.items()} == LABELS
    touch_videos(tmp_path / "videos", list(LABELS)[:2])
    labelled = load_labelled_set(path, videos=tmp_path / "videos")
    assert labelled.format == FORMAT_V1
    assert {c.split for c in labelled.clips} == {"train"}  # from the file name
    assert labelled.missing_videos == ["caf\xe9Vid0000.001.mp4"]


def test_v1_header_must_match_the_official_one(tmp_path: Path) -> None:
    path = tmp_path / "val.csv"
    path.write_text("VideoName,ValueOpenness\nx.001.mp4,0.5\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="V1 header"):
        read_first_impressions_v1(path)


def test_generic_csv_by_column_name_with_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "Neuroticism,path,notes,Agreeableness,openness,EXTRAVERSION,conscientiousness\n"
        "0.5,alice/take1.mp4,first,0.4,0.1,0.3,0.2\n"
        "0.9,bob.x.mp4,,0.8,0.5,0.7,0.6\n"
        "0.1,gone.mp4,,0.1,0.1,0.1,0.1\n",
        encoding="utf-8",
    )
    rows = {row.video: row.labels for row in read_generic_csv(path)}
    assert rows["alice/take1.mp4"] == (0.1, 0.2, 0.3, 0.4, 0.5)
    assert rows["bob.x.mp4"] == (0.5, 0.6, 0.7, 0.8, 0.9)
    touch_videos(tmp_path / "alice", ["take1.mp4", "take2.mp4"])
    touch_videos(tmp_path, ["bob.x.mp4"])
    labelled = load_labelled_set(path)
    assert labelled.format == FORMAT_GENERIC
    assert sorted(c.clip_id for c in labelled.clips) == ["alice/take1.mp4", "bob.x.mp4"]
    assert labelled.missing_videos == ["gone.mp4"]
    assert labelled.unlabelled_videos == ["alice/take2.mp4"]
    assert {c.clip_id: c.group for c in labelled.clips}["bob.x.mp4"] == "bob"


def test_generic_csv_group_and_split_columns(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    header = "video,openness,conscientiousness,extraversion,agreeableness,neuroticism"
    path.write_text(
        f"{header},group,split\n"
        "a.mp4,0.1,0.2,0.3,0.4,0.5,anna,train\n"
        "b.mp4,0.1,0.2,0.3,0.4,0.5,anna,valid\n",
        encoding="utf-8",
    )
    rows = read_generic_csv(path)
    assert [(r.group, r.split) for r in rows] == [("anna", "train"), ("anna", "validation")]


def test_generic_csv_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("video,openness,extraversion\nx.mp4,0.1,0.2\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="lacks the trait columns"):
        read_generic_csv(path)
    path.write_text("clip,openness\nx.mp4,0.1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no video column"):
        read_generic_csv(path)
    header = "video,openness,conscientiousness,extraversion,agreeableness,neuroticism"
    path.write_text(f"{header}\nx.mp4,0.1,0.2,oops,0.4,0.5\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="non-numeric extraversion"):
        read_generic_csv(path)


def test_group_is_the_id_before_the_first_dot() -> None:
    assert group_of("J4GQm9j0JZ0.003.mp4") == "J4GQm9j0JZ0"
    assert group_of("some/folder/person03.seg2.mp4") == "person03"
