"""The warehouse's merge on DuckDB and PostgreSQL alike: only changed rows are written, a full resync flags what
vanished, an unchanged source writes nothing, the unified table follows row for row (and is rewritten for the
connection alone when its mapping changes), and both backends end with identical tables."""

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from integrations_pipeline.fields import FieldInfo, FieldType
from integrations_pipeline.frames import to_frame
from integrations_pipeline.mapping import CAST_ACCEPTS, FieldRule, SourceFields, Transform, ValueType, apply_to_record
from integrations_pipeline.records import ATTENDEE_COLUMNS, ATTENDEE_KEY, CONTACT_COLUMNS, EVENT_COLUMNS
from integrations_pipeline.replica import read_replica_path
from integrations_pipeline.warehouse import (
    DuckDbWarehouse,
    MergeTarget,
    PartitionSlice,
    PostgresWarehouse,
    UnifiedFollow,
    UnifiedSource,
    Warehouse,
    WriteCounts,
)
from integrations_pipeline_tests.conftest import fresh_postgres_url

KEY = ("connection_id", "source_id")
UPPER_COMPANY = {"crm_company": FieldRule(source="company", transform=Transform.UPPERCASE)}


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        yield DuckDbWarehouse(tmp_path / "warehouse.duckdb")
    else:
        yield PostgresWarehouse(fresh_postgres_url(request.getfixturevalue("postgres_server")))


def contact(
    source_id: str, company: str | None = "Acme", deleted: bool = False, connection: str = "hubspot-acme"
) -> dict:
    return {
        "connection_id": connection,
        "source_id": source_id,
        "email": f"{source_id}@example.com",
        "company": company,
        "modified_at": datetime(2026, 1, 1, tzinfo=UTC),
        "is_deleted": deleted,
        "raw": json.dumps({"id": source_id, "properties": {"company": company, "lead_score": "7"}}),
    }


def merge(
    warehouse: Warehouse, records: list[dict], *, full: bool, rules: dict | None = None, chunk: int = 2
) -> WriteCounts:
    connection = records[0]["connection_id"] if records else "hubspot-acme"
    follow = UnifiedFollow("contacts", connection.split("-")[1], "hubspot", rules or {})
    target = MergeTarget(PartitionSlice("hubspot.contacts", connection), CONTACT_COLUMNS, KEY, full, follow)
    with warehouse.staging(CONTACT_COLUMNS) as staging:
        for start in range(0, len(records), chunk):
            staging.append(to_frame(records[start : start + chunk], CONTACT_COLUMNS))
        return staging.merge(target)


def table(warehouse: Warehouse, name: str, connection: str = "hubspot-acme") -> pd.DataFrame:
    rows = warehouse.read(name, [connection], None, "start_at")
    assert rows is not None
    return rows


def sequence(warehouse: Warehouse) -> list[WriteCounts]:
    """Full, incremental (a change, a new row, a deletion, a duplicate key), unchanged, full with a row gone."""
    counts = [merge(warehouse, [contact(str(n)) for n in range(5)], full=True)]
    merge(warehouse, [contact("x", connection="hubspot-beta")], full=True)  # another tenant, never touched below
    counts.append(
        merge(
            warehouse,
            [contact("1", "Renamed"), contact("5"), contact("2", deleted=True), contact("5", "Later wins")],
            full=False,
        )
    )
    counts.append(merge(warehouse, [contact("1", "Renamed")], full=False))
    counts.append(merge(warehouse, [contact(str(n), "Renamed" if n == 1 else "Acme") for n in (0, 1, 5)], full=True))
    return counts


def test_a_merge_writes_only_what_changed_and_the_unified_rows_follow(warehouse: Warehouse) -> None:
    full, incremental, unchanged, resync = sequence(warehouse)
    assert (full.inserted, full.written) == (5, 5)
    assert (incremental.inserted, incremental.updated, incremental.deleted) == (1, 1, 1)
    assert incremental.unified == incremental.written == 3
    assert unchanged == WriteCounts()  # the same values again: nothing written, here or in unified
    # 3 and 4 no longer returned (2 was deleted already), 5 back to the value the resync fetched
    assert (resync.written, resync.updated, resync.deleted) == (3, 1, 2)

    contacts = table(warehouse, "hubspot.contacts")
    assert contacts["source_id"].tolist() == ["0", "1", "2", "3", "4", "5"]
    assert contacts["is_deleted"].tolist() == [False, False, True, True, True, False]
    assert contacts.loc[contacts.source_id == "5", "company"].item() == "Acme"  # the resync's value
    assert table(warehouse, "hubspot.contacts", "hubspot-beta")["source_id"].tolist() == ["x"]
    unified = table(warehouse, "unified.contacts")
    assert "raw" not in unified.columns  # the raw record stays in the provider table
    pd.testing.assert_frame_equal(unified[list(CONTACT_COLUMNS[:-1])], contacts.drop(columns="raw"), check_dtype=False)
    assert set(unified["tenant"]) == {"acme"} and set(unified["mapped"]) == {"{}"}


def test_a_mapping_change_rewrites_that_connections_unified_rows_only(warehouse: Warehouse) -> None:
    sequence(warehouse)
    counts = merge(warehouse, [contact("1", "Renamed")], full=False, rules=UPPER_COMPANY)
    assert counts.written == 0 and counts.unified_rewritten and counts.unified == 6
    unified = table(warehouse, "unified.contacts")
    assert unified.loc[unified.source_id == "1", "mapped"].str.replace(" ", "").item() == '{"crm_company":"RENAMED"}'
    assert table(warehouse, "unified.contacts", "hubspot-beta")["mapped"].tolist() == ["{}"]
    again = merge(warehouse, [contact("1", "Again")], full=False, rules=UPPER_COMPANY)
    assert (again.written, again.unified, again.unified_rewritten) == (1, 1, False)


def test_an_empty_partition_creates_its_table_with_the_real_column_types(warehouse: Warehouse) -> None:
    assert merge(warehouse, [], full=True).written == 0
    assert table(warehouse, "hubspot.contacts").empty
    summary = warehouse.summarize(PartitionSlice("hubspot.contacts", "hubspot-acme"), KEY, KEY)
    assert summary.row_count == 0 and list(summary.column_types)[:2] == ["connection_id", "source_id"]
    assert summary.column_types["modified_at"].lower() in ("timestamp with time zone", "timestamptz")


DAY = (datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC))


def attendee(event: str, email: str, status: str = "accepted") -> dict:
    return {
        "connection_id": "google-acme",
        "event_source_id": event,
        "email": email,
        "name": email.split("@")[0].title(),
        "response_status": status,
        "is_organizer": email.startswith("org"),
        "start_at": datetime(2026, 1, 2, 9, tzinfo=UTC),
        "is_deleted": False,
    }


def merge_attendees(warehouse: Warehouse, records: list[dict], refetched: set[str] | None = None) -> WriteCounts:
    """As the events sync merges a day's attendees: full, or incremental naming the events fetched again."""
    target = MergeTarget(
        PartitionSlice("google.event_attendees", "google-acme", DAY),
        ATTENDEE_COLUMNS,
        ATTENDEE_KEY,
        full=refetched is None,
        unified=UnifiedFollow("event_attendees", "acme", "google", {}),
        parents=None if refetched is None else ("event_source_id", frozenset(refetched)),
    )
    with warehouse.staging(ATTENDEE_COLUMNS) as staging:
        staging.append(to_frame(records, ATTENDEE_COLUMNS))
        return staging.merge(target)


def attendee_sequence(warehouse: Warehouse) -> list[WriteCounts]:
    """Full; e1 fetched again with b gone, a's answer changed and d added; e2 fetched again with no attendees."""
    return [
        merge_attendees(
            warehouse, [attendee("e1", "org@x.example"), attendee("e1", "b@x.example"), attendee("e2", "c@x.example")]
        ),
        merge_attendees(
            warehouse,
            [attendee("e1", "org@x.example", "declined"), attendee("e1", "d@x.example", "needs_action")],
            {"e1"},
        ),
        merge_attendees(warehouse, [], {"e2"}),
    ]


def test_an_attendee_a_refetched_event_no_longer_lists_is_flagged_deleted(warehouse: Warehouse) -> None:
    full, refetched, emptied = attendee_sequence(warehouse)
    assert (full.inserted, refetched.inserted, refetched.updated, refetched.deleted) == (3, 1, 1, 1)
    assert (emptied.deleted, emptied.written, emptied.unified) == (1, 1, 1)
    rows = table(warehouse, "google.event_attendees", "google-acme").sort_values(["event_source_id", "email"])
    assert rows[["event_source_id", "email", "response_status", "is_deleted"]].values.tolist() == [
        ["e1", "b@x.example", "accepted", True],
        ["e1", "d@x.example", "needs_action", False],
        ["e1", "org@x.example", "declined", False],
        ["e2", "c@x.example", "accepted", True],
    ]
    unified = table(warehouse, "unified.event_attendees", "google-acme").sort_values(["event_source_id", "email"])
    assert set(unified["tenant"]) == {"acme"} and set(unified["provider"]) == {"google"}
    pd.testing.assert_frame_equal(
        unified[list(ATTENDEE_COLUMNS)].reset_index(drop=True), rows.reset_index(drop=True), check_dtype=False
    )


def test_a_unified_rebuild_of_events_rebuilds_their_attendees(warehouse: Warehouse) -> None:
    """Materializing a tenant's unified events (the explicit rebuild) restores the day's unified attendees too, in
    one transaction, from the provider's attendee table: deletions flagged there stay flagged."""
    attendee_sequence(warehouse)
    with warehouse.transaction() as execute:
        execute("DELETE FROM unified.event_attendees", [])
    follow = UnifiedFollow("events", "acme", "google", {})
    events = [UnifiedSource("google.events", EVENT_COLUMNS, "google-acme", follow)]
    attendees = UnifiedSource(
        "google.event_attendees",
        ATTENDEE_COLUMNS,
        "google-acme",
        replace(follow, entity="event_attendees"),
        ATTENDEE_KEY,
    )
    assert warehouse.rebuild_unified("events", "acme", DAY, events, {"event_attendees": [attendees]}) == 0
    rows = table(warehouse, "google.event_attendees", "google-acme")
    unified = table(warehouse, "unified.event_attendees", "google-acme")
    assert len(unified) == 4 and set(unified["tenant"]) == {"acme"}
    pd.testing.assert_frame_equal(
        unified[list(ATTENDEE_COLUMNS)].reset_index(drop=True), rows.reset_index(drop=True), check_dtype=False
    )


def test_duckdb_and_postgres_end_with_identical_tables(postgres_server: object, tmp_path: Path) -> None:
    backends = [DuckDbWarehouse(tmp_path / "w.duckdb"), PostgresWarehouse(fresh_postgres_url(postgres_server))]
    counts = [sequence(backend) for backend in backends]
    assert counts[0] == counts[1]
    assert attendee_sequence(backends[0]) == attendee_sequence(backends[1])
    for name in ("google.event_attendees", "unified.event_attendees"):
        duck, postgres = (table(backend, name, "google-acme") for backend in backends)
        pd.testing.assert_frame_equal(duck, postgres, check_dtype=False)
    for name in ("hubspot.contacts", "unified.contacts"):
        duck, postgres = (table(backend, name) for backend in backends)
        pd.testing.assert_frame_equal(duck, postgres, check_dtype=False)


# Text as providers send it, including what no cast can read: every cast must answer as mapping.cast does.
AWKWARD_TEXTS = [
    "42",
    " 3.5 ",
    "abc",
    "",
    "nan",
    "1e999999",
    "true",
    "No",
    "2026-03-04",
    "2026-03-04T05:06:07Z",
    "2026-03-04 05:06:07",
    "1700000000000",
    "1700000000",
]


def as_json(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime | date) else value


def test_typed_mappings_in_sql_answer_as_mapping_cast_does(warehouse: Warehouse) -> None:
    """The unified write renders each rule in SQL; its values must equal `mapping.apply_to_record`'s (the preview's),
    for every cast, on text, flag and timestamp columns, with and without a default."""
    records = [contact(f"c{index:02}", company=text) for index, text in enumerate(AWKWARD_TEXTS)]
    rules = {
        f"{source}_{transform.value}{'_or_default' if default is not None else ''}": FieldRule(
            source=source, transform=transform, default=default
        )
        for source, kind in (
            ("company", FieldType.STRING),
            ("is_deleted", FieldType.BOOLEAN),
            ("modified_at", FieldType.DATETIME),
        )
        for transform in Transform
        if kind in CAST_ACCEPTS[transform]  # what saving a mapping accepts for a normalized column of that kind
        # saving refuses an untransformed default on a field that is not text
        for default in (None, *(["7"] if transform == Transform.TO_NUMBER or kind == FieldType.STRING else []))
    }
    merge(warehouse, records, full=True, rules=rules)
    unified = table(warehouse, "unified.contacts")
    for record, mapped in zip(records, unified["mapped"], strict=True):
        expected = {target: as_json(value) for target, value in apply_to_record(record, rules).items()}
        assert json.loads(mapped) == expected, record["company"]


def test_typed_mappings_of_raw_paths_and_catalog_fields_in_sql_answer_as_mapping_does(warehouse: Warehouse) -> None:
    """Raw paths and catalog names read the `raw` JSON column in SQL (json_extract_string / #>>), then cast: the
    values must equal `apply_to_record`'s on the same record, nested objects, lists and JSON types included."""
    values: list[object] = [*AWKWARD_TEXTS, 42, 3.5, True, None, {"nested": 1}]
    records = [
        contact(f"r{index:02}") | {"raw": json.dumps({"properties": {"score": value}, "tags": [{"v": value}]})}
        for index, value in enumerate(values)
    ]
    records.append(contact("r99") | {"raw": None})  # a row synced before the raw column existed
    score = FieldInfo(
        "contacts", "score", "Score", FieldType.STRING, "string", is_custom=True, raw_path="properties.score"
    )
    fields = SourceFields(columns={"company": ValueType.STRING}, catalog={"score": score})
    rules = {
        f"{name}_{transform.value}{'_or_default' if default is not None else ''}": FieldRule(
            source=source, transform=transform, default=default
        )
        for name, source in (("catalog", "score"), ("path", "raw.tags.0.v"), ("absent", "raw.properties.nothing"))
        for transform in Transform
        for default in (None, *(["7"] if transform in (Transform.TO_NUMBER, Transform.NONE) else []))
    }
    target = MergeTarget(
        PartitionSlice("hubspot.contacts", "hubspot-acme"),
        CONTACT_COLUMNS,
        KEY,
        True,
        UnifiedFollow("contacts", "acme", "hubspot", rules, fields),
    )
    with warehouse.staging(CONTACT_COLUMNS) as staging:
        staging.append(to_frame(records, CONTACT_COLUMNS))
        staging.merge(target)
    unified = table(warehouse, "unified.contacts")
    assert len(unified) == len(records)
    for record, mapped in zip(records, unified["mapped"], strict=True):
        parsed = json.loads(record["raw"]) if record["raw"] else None
        expected = {k: as_json(v) for k, v in apply_to_record({**record, "raw": parsed}, rules, fields).items()}
        assert json.loads(mapped) == expected, record["raw"]


def test_the_raw_column_is_json_a_raw_change_alone_is_a_change(warehouse: Warehouse) -> None:
    merge(warehouse, [contact("1"), contact("2")], full=True)
    changed = contact("2") | {"raw": json.dumps({"id": "2", "properties": {"lead_score": "9", "stage": "lead"}})}
    counts = merge(warehouse, [contact("1"), changed], full=False)
    assert (counts.inserted, counts.updated) == (0, 1)
    path = (
        "json_extract_string(raw, '$.properties.lead_score')"
        if warehouse.kind == "duckdb"
        else ("raw #>> '{properties,lead_score}'")
    )
    with warehouse.transaction() as execute:
        rows = execute(f"SELECT source_id, {path} FROM hubspot.contacts ORDER BY source_id", [])
    assert rows == [("1", "7"), ("2", "9")]


def test_a_summary_after_an_incremental_merge_counts_the_partition_and_previews_the_written_keys(
    warehouse: Warehouse,
) -> None:
    sequence(warehouse)
    part = PartitionSlice("hubspot.contacts", "hubspot-acme")
    summary = warehouse.summarize(part, KEY, KEY, written_keys=["1", "5"])
    assert summary.row_count == 6 and summary.duplicate_keys == 0
    assert summary.preview["source_id"].tolist() == ["1", "5"]
    assert warehouse.summarize(part, KEY, KEY, written_keys=[]).preview.empty  # an incremental that fetched nothing
    assert warehouse.summarize(part, KEY, KEY).preview["source_id"].tolist() == ["0", "1", "2", "3", "4", "5"]


def test_duckdb_leaves_replaced_rows_to_a_later_vacuum_and_a_full_resync_vacuums(tmp_path: Path) -> None:
    """An incremental merge's checkpoint does not rewrite the row groups its replaced rows leave (the cost of a
    vacuum is paid once per VACUUM_BACKLOG_ROWS), a full resync's does; the rows read the same either way."""
    warehouse = DuckDbWarehouse(tmp_path / "w.duckdb")

    def replaced_rows() -> int:  # row ids past the live rows: deleted rows no vacuum has dropped yet
        with warehouse.transaction() as execute:
            return int(execute("SELECT max(rowid) + 1 - count(*) FROM hubspot.contacts", [])[0][0])

    merge(warehouse, [contact(str(n)) for n in range(5)], full=True)
    merge(warehouse, [contact("1", "Renamed")], full=False)
    merge(warehouse, [contact("2", "Renamed")], full=False)
    assert replaced_rows() == 2
    resynced = [contact(str(n), "Renamed" if n in (1, 2, 3) else "Acme") for n in range(5)]
    assert merge(warehouse, resynced, full=True).updated == 1  # a checkpoint vacuums the tables it writes
    assert replaced_rows() == 0
    assert table(warehouse, "hubspot.contacts")["company"].tolist() == ["Acme", "Renamed", "Renamed", "Renamed", "Acme"]


def test_merges_publish_the_read_replica_at_most_every_interval_and_the_run_publishes_the_rest(tmp_path: Path) -> None:
    """The replica copy costs the whole file: a merge right after a publish leaves it to `publish()`, which a
    run calls as it ends, so analysts see every write by then."""
    warehouse = DuckDbWarehouse(tmp_path / "w.duckdb")

    def replica_sources() -> list[str]:
        with duckdb.connect(str(read_replica_path(warehouse.path)), read_only=True) as replica:
            return [row[0] for row in replica.execute("SELECT source_id FROM hubspot.contacts ORDER BY 1").fetchall()]

    merge(warehouse, [contact("1")], full=True)  # no replica yet: published at once
    assert replica_sources() == ["1"] and not warehouse.unpublished
    merge(warehouse, [contact("2")], full=False)  # the replica is seconds old: left for later
    assert replica_sources() == ["1"] and warehouse.unpublished
    warehouse.publish()
    assert replica_sources() == ["1", "2"] and not warehouse.unpublished
    published = read_replica_path(warehouse.path).stat().st_ino
    warehouse.publish()  # nothing new: no copy
    assert read_replica_path(warehouse.path).stat().st_ino == published
