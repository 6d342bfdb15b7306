"""Frames: fixed dtypes, missing text as None, equal strings held once."""

import math

from integrations_pipeline.frames import TIMESTAMP_DTYPE, to_frame

COLUMNS = ("connection_id", "source_id", "company", "modified_at", "is_deleted")


def test_text_is_objects_with_none_for_missing_and_one_object_per_distinct_string() -> None:
    # json.loads gives every occurrence its own string object; the frame keeps one per distinct value.
    records = [
        {"connection_id": "c", "source_id": str(i), "company": "".join(["Acme", " Inc"]), "is_deleted": 0}
        for i in range(3)
    ]
    records.append({"connection_id": "c", "source_id": "3", "company": math.nan, "modified_at": None})
    records.append({"connection_id": "c", "source_id": "4", "company": None, "modified_at": "2025-01-02T03:04:05Z"})
    assert records[0]["company"] is not records[1]["company"]

    frame = to_frame(records, COLUMNS)

    companies = list(frame["company"])
    assert companies[:3] == ["Acme Inc"] * 3 and companies[3:] == [None, None]
    assert companies[0] is companies[1] is companies[2]
    assert frame["company"].dtype == object and frame["is_deleted"].dtype == bool
    assert str(frame["modified_at"].dtype) == TIMESTAMP_DTYPE
    assert frame["modified_at"].isna().tolist() == [True, True, True, True, False]


def test_a_column_with_no_value_at_all_is_none_throughout() -> None:
    frame = to_frame([{"connection_id": "c", "source_id": "1"}, {"connection_id": "c", "source_id": "2"}], COLUMNS)
    assert list(frame["company"]) == [None, None]
    assert to_frame([], COLUMNS).empty


def test_the_same_records_make_equal_frames() -> None:
    records = [{"connection_id": "c", "source_id": str(i), "company": f"Co {i % 3}"} for i in range(10)]
    assert to_frame(records, COLUMNS).equals(to_frame([dict(r) for r in records], COLUMNS))
